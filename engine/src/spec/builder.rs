//! Experiments made in code rather than formatted as YAML text, for tests and benchmarks: the
//! spec is assembled as a document and then read by the same parser, with the same checks, as
//! a file a person wrote. A builder that makes an invalid experiment says which field.

use serde_json::{Map, Value, json};

use super::{API_VERSION, ExperimentFile, KIND, SpecError, parse_experiment};

#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentBuilder {
    name: String,
    spec: Map<String, Value>,
}

impl ExperimentBuilder {
    /// One nginx worker, eight connections for one second, no cohorts yet.
    pub fn new(name: &str) -> Self {
        let spec = json!({
            "target": { "nginx": { "workers": 1 } },
            "load": { "connections": 8, "duration": "1s" },
        });
        let Value::Object(spec) = spec else {
            unreachable!("a JSON object literal")
        };
        Self {
            name: name.to_string(),
            spec,
        }
    }

    /// Sets a field of the spec by its path, e.g. `load.duration` or `repetitions`; the
    /// mappings on the way are made when missing.
    pub fn set(mut self, path: &str, value: impl Into<Value>) -> Self {
        let mut keys = path.split('.').peekable();
        let mut at = &mut self.spec;
        while let Some(key) = keys.next() {
            if keys.peek().is_none() {
                at.insert(key.to_string(), value.into());
                break;
            }
            let next = at
                .entry(key.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !next.is_object() {
                *next = Value::Object(Map::new());
            }
            at = next.as_object_mut().expect("made an object just above");
        }
        self
    }

    /// Adds a cohort, e.g. `json!({ "name": "a", "local": true })`.
    pub fn cohort(mut self, cohort: Value) -> Self {
        let cohorts = self
            .spec
            .entry("cohorts")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = cohorts {
            list.push(cohort);
        }
        self
    }

    /// A cohort on this machine.
    pub fn local_cohort(self, name: &str) -> Self {
        self.cohort(json!({ "name": name, "local": true }))
    }

    /// The experiment file as YAML, as `loadlab run` reads it from disk.
    pub fn yaml(&self) -> String {
        let document = json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": { "name": self.name },
            "spec": self.spec,
        });
        serde_yaml::to_string(&document).expect("a JSON document is valid YAML")
    }

    /// The experiment, read and checked as a file would be.
    pub fn build(&self) -> Result<ExperimentFile, SpecError> {
        parse_experiment(&self.yaml())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_experiment_is_the_file_a_person_would_write() {
        let built = ExperimentBuilder::new("two-kernels")
            .set("load.duration", "2s")
            .set("load.warmup", "500ms")
            .set("repetitions", 3)
            .set("baseline", "old")
            .cohort(json!({ "name": "old", "kernel": "6.1.0-47-*" }))
            .cohort(json!({ "name": "new", "kernel": "6.1.0-56-*" }))
            .build()
            .unwrap();
        let written = parse_experiment(
            "apiVersion: loadlab.dev/v1alpha1
kind: Experiment
metadata: { name: two-kernels }
spec:
  target: { nginx: { workers: 1 } }
  load: { connections: 8, warmup: 500ms, duration: 2s }
  cohorts:
    - { name: old, kernel: \"6.1.0-47-*\" }
    - { name: new, kernel: \"6.1.0-56-*\" }
  repetitions: 3
  baseline: old
",
        )
        .unwrap();
        assert_eq!(built, written);
    }

    #[test]
    fn a_built_experiment_is_checked_as_a_file_is() {
        let error = ExperimentBuilder::new("zero")
            .set("load.connections", 0)
            .local_cohort("a")
            .build()
            .unwrap_err();
        assert_eq!(error.field, "spec.load.connections", "{error:?}");
        let error = ExperimentBuilder::new("none").build().unwrap_err();
        assert!(error.field.starts_with("spec"), "{error:?}");
    }
}
