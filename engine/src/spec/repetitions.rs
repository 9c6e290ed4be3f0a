//! How many rounds: a number, or `auto` with the stopping rule's budget, practical change and
//! metric.

use super::target::{auto_or_number, auto_or_number_schema};
use super::*;

/// How many rounds an experiment runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repetitions {
    Fixed(u32),
    /// Until decided, within `stopping.maxRepetitions`.
    Auto,
}

impl Default for Repetitions {
    fn default() -> Self {
        Self::Fixed(3)
    }
}

impl fmt::Display for Repetitions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(n) => write!(f, "{n}"),
            Self::Auto => f.write_str("auto"),
        }
    }
}

impl JsonSchema for Repetitions {
    fn schema_name() -> Cow<'static, str> {
        "Repetitions".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        auto_or_number_schema(
            "Rounds of runs: a number from 1 to 1000, or `auto` (until decided; see stopping)",
            REPETITIONS_VALID,
            "repetitions must be `auto` or a number from 1 to 1000",
        )
    }
}

impl Serialize for Repetitions {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => serializer.serialize_str("auto"),
            Self::Fixed(n) => serializer.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Repetitions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(
            auto_or_number(deserializer, "repetitions", MAX_REPETITIONS)?
                .map_or(Self::Auto, Self::Fixed),
        )
    }
}

/// When `repetitions: auto` stops.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StoppingSpec {
    /// The most rounds: the budget the stopping rule's error rate is spread over.
    #[serde(default = "default_max_repetitions")]
    #[schemars(range(min = 3, max = MAX_REPETITIONS))]
    pub max_repetitions: u32,
    /// The smallest change that matters, in percent: a change is reported once the interval
    /// excludes none and the estimate reaches it, no change once the interval lies inside ±it.
    #[serde(default = "default_practical_change")]
    #[schemars(range(min = 0.1, max = 50.0))]
    pub practical_change_percent: f64,
    /// What a cohort is judged on: `connectionsPerSecond` (the default) or `cpuPerConnection`
    /// (the node's CPU time per connection, for a server the load does not saturate, where
    /// conn/s only follows the load).
    #[serde(default)]
    pub metric: StoppingMetric,
}

/// What `repetitions: auto` judges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StoppingMetric {
    #[default]
    ConnectionsPerSecond,
    CpuPerConnection,
}

impl Default for StoppingSpec {
    fn default() -> Self {
        Self {
            max_repetitions: default_max_repetitions(),
            practical_change_percent: default_practical_change(),
            metric: StoppingMetric::default(),
        }
    }
}

fn default_max_repetitions() -> u32 {
    20
}

fn default_practical_change() -> f64 {
    5.0
}

/// A number of rounds, or `auto` with its stopping rule, within their limits.
pub(super) fn validate_rounds(
    repetitions: Repetitions,
    stopping: Option<StoppingSpec>,
) -> Result<(), SpecError> {
    match (repetitions, stopping) {
        (Repetitions::Fixed(n), _) if n == 0 || n > MAX_REPETITIONS => {
            return Err(SpecError::at(
                "spec.repetitions",
                format!("must be between 1 and {MAX_REPETITIONS} or auto, got {n}"),
            ));
        }
        (Repetitions::Fixed(_), Some(_)) => {
            return Err(SpecError::at(
                "spec.stopping",
                "applies to repetitions: auto only (a fixed number of rounds never stops early)",
            ));
        }
        (Repetitions::Auto, Some(stopping))
            if !(3..=MAX_REPETITIONS).contains(&stopping.max_repetitions) =>
        {
            return Err(SpecError::at(
                "spec.stopping.maxRepetitions",
                format!(
                    "must be between 3 and {MAX_REPETITIONS}, got {}",
                    stopping.max_repetitions
                ),
            ));
        }
        (Repetitions::Auto, Some(stopping))
            if !(0.1..=50.0).contains(&stopping.practical_change_percent) =>
        {
            return Err(SpecError::at(
                "spec.stopping.practicalChangePercent",
                format!(
                    "must be between 0.1 and 50, got {}",
                    stopping.practical_change_percent
                ),
            ));
        }
        _ => {}
    }
    Ok(())
}
