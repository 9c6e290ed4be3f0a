//! The nginx target's settings, and a cohort's overrides of them.

use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub nginx: NginxSpec,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NginxSpec {
    #[serde(default)]
    pub workers: Workers,
    #[serde(default)]
    pub reuseport: bool,
    /// Listen backlog; the agent's default (4096) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u32>,
}

/// nginx `worker_processes`: a number, or `auto` for one per logical CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Workers {
    #[default]
    Auto,
    Count(u32),
}

impl Workers {
    /// The wire form: 0 means auto.
    pub(crate) fn as_wire(self) -> u32 {
        match self {
            Workers::Auto => 0,
            Workers::Count(n) => n,
        }
    }
}

impl fmt::Display for Workers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workers::Auto => f.write_str("auto"),
            Workers::Count(n) => write!(f, "{n}"),
        }
    }
}

impl JsonSchema for Workers {
    fn schema_name() -> Cow<'static, str> {
        "Workers".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        auto_or_number_schema(
            "nginx worker_processes: `auto` (one per logical CPU) or a number from 1 to 1024",
            WORKERS_VALID,
            "workers must be `auto` or a number from 1 to 1024",
        )
    }
}

impl Serialize for Workers {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Workers::Auto => serializer.serialize_str("auto"),
            Workers::Count(n) => serializer.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(auto_or_number(deserializer, "workers", 1024)?.map_or(Workers::Auto, Workers::Count))
    }
}

/// `auto` or a number from 1 to `max`, as `workers` and `repetitions` take it: `None` for auto.
pub(super) fn auto_or_number<'de, D: Deserializer<'de>>(
    deserializer: D,
    what: &str,
    max: u32,
) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Count(i64),
        Text(String),
    }
    let invalid = |shown: String| {
        serde::de::Error::custom(format!(
            "invalid {what} {shown}: expected `auto` or a number from 1 to {max}"
        ))
    };
    match Raw::deserialize(deserializer)? {
        Raw::Text(text) if text == "auto" => Ok(None),
        Raw::Text(text) => Err(invalid(format!("{text:?}"))),
        Raw::Count(n) if (1..=i64::from(max)).contains(&n) => Ok(Some(n as u32)),
        Raw::Count(n) => Err(invalid(n.to_string())),
    }
}

/// The CRD schema of an `auto`-or-number field, checked by a CEL `rule`.
pub(super) fn auto_or_number_schema(description: &str, rule: &str, message: &str) -> Schema {
    json_schema!({
        "description": description,
        "x-kubernetes-int-or-string": true,
        // Bounds the string case, so the API server can bound the rule's cost.
        "maxLength": 4,
        "x-kubernetes-validations": [{ "rule": rule, "message": message }]
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetOverride {
    pub nginx: NginxOverride,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NginxOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<Workers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuseport: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u32>,
}
