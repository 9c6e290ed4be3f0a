//! Durations as the experiment file writes them: `10s`, `500ms`, `2m`, `1h`.

use super::*;

/// A length of time written as `10s`, `500ms`, `2m` or `1h` (decimals allowed: `1.5s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WrittenDuration(pub Duration);

impl WrittenDuration {
    pub fn parse(text: &str) -> Result<WrittenDuration, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let value: f64 = number.parse().map_err(|_| {
            format!("invalid duration {text:?}: write it like 10s, 500ms, 2m or 1h")
        })?;
        if value < 0.0 {
            return Err(format!("invalid duration {text:?}: must not be negative"));
        }
        let seconds = match unit.trim() {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            "" => {
                return Err(format!(
                    "invalid duration {text:?}: add a unit (ms, s, m or h)"
                ));
            }
            other => {
                return Err(format!(
                    "invalid duration {text:?}: unknown unit {other:?} (use ms, s, m or h)"
                ));
            }
        };
        Duration::try_from_secs_f64(seconds)
            .map(WrittenDuration)
            .map_err(|_| format!("invalid duration {text:?}: out of range"))
    }
}

impl fmt::Display for WrittenDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl JsonSchema for WrittenDuration {
    fn schema_name() -> Cow<'static, str> {
        "WrittenDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A length of time such as 10s, 500ms, 2m or 1h",
            "type": "string",
            "maxLength": 20,
            "pattern": "^[0-9]{1,7}(\\.[0-9]{1,9})?(ms|s|m|h)$"
        })
    }
}

impl Serialize for WrittenDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WrittenDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        WrittenDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}
