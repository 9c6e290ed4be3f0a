//! The `Experiment` resource's status: what the controller tells `kubectl get experiments`
//! and anyone watching. It is written with server-side apply, so it is always whole.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentStatus {
    #[serde(default)]
    pub phase: Phase,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The experiment's id in the results store (`/api/v1/experiments/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results_id: Option<String>,
    /// Runs stored out of runs planned, e.g. `4/12`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(default)]
    pub runs_planned: u32,
    #[serde(default)]
    pub runs_stored: u32,
    #[serde(default)]
    pub runs_failed: u32,
    /// One line for the whole comparison, e.g. `patched: improved +61.2%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// With `repetitions: auto`: the rounds done, each cohort's interval as the stopping rule
    /// last judged it, and why it stopped once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cohorts: Vec<CohortStatus>,
    /// Keyed by type, so the reconciler and the runner each apply their own conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Accepted; nodes and pods are being arranged.
    #[default]
    Pending,
    /// Runs are in progress.
    Running,
    /// Every planned run is stored.
    Succeeded,
    /// The experiment cannot go on; the conditions say why.
    Failed,
}

impl Phase {
    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CohortStatus {
    pub name: String,
    /// The nodes the cohort runs on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    #[serde(default)]
    pub runs: u32,
    /// Geometric mean of the stored runs' connections per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_per_second: Option<f64>,
    /// Against the baseline, e.g. `improved +61.2% [+55.0%, +67.8%]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versus_baseline: Option<String>,
}

/// A condition in the shape Kubernetes uses everywhere (`type`, `status`, `reason`, `message`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    /// RFC 3339.
    pub last_transition_time: String,
}

impl ExperimentStatus {
    /// Sets a condition, keeping its transition time when its status did not change.
    pub fn set_condition(
        &mut self,
        type_: &str,
        holds: bool,
        reason: &str,
        message: impl Into<String>,
        now: &str,
    ) {
        let status = if holds { "True" } else { "False" };
        let message = message.into();
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(existing) => {
                if existing.status != status {
                    existing.last_transition_time = now.to_string();
                }
                existing.status = status.to_string();
                existing.reason = reason.to_string();
                existing.message = message;
            }
            None => self
                .conditions
                .push(Condition::new(type_, holds, reason, &message, now)),
        }
    }

    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

impl Condition {
    pub fn new(type_: &str, holds: bool, reason: &str, message: &str, now: &str) -> Self {
        Self {
            type_: type_.to_string(),
            status: if holds { "True" } else { "False" }.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            last_transition_time: now.to_string(),
        }
    }
}

/// One field manager's part of the status, as server-side apply takes it: a manager owns exactly
/// the fields it sends, so a field it sent before and leaves out now is removed. The reconciler
/// and the runner each apply their own part; `None` is "not mine".
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusPart {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs_planned: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs_stored: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs_failed: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopping: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cohorts: Option<Vec<CohortStatus>>,
    /// Keyed by type: each manager's own conditions (an empty list gives up all of them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
}

impl StatusPart {
    /// Adds a condition beside those this part already carries.
    pub fn with_condition(&mut self, condition: Condition) {
        self.conditions.get_or_insert_with(Vec::new).push(condition);
    }

    pub fn conditions(&self) -> &[Condition] {
        self.conditions.as_deref().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let mut status = ExperimentStatus::default();
        status.set_condition("NodesPlanned", false, "NoNodes", "none", "t1");
        status.set_condition("NodesPlanned", false, "NoNodes", "still none", "t2");
        let c = status.condition("NodesPlanned").unwrap();
        assert_eq!(
            (c.last_transition_time.as_str(), c.message.as_str()),
            ("t1", "still none")
        );
        status.set_condition("NodesPlanned", true, "Planned", "2 nodes", "t3");
        let c = status.condition("NodesPlanned").unwrap();
        assert_eq!(
            (c.status.as_str(), c.last_transition_time.as_str()),
            ("True", "t3")
        );
        assert_eq!(status.conditions.len(), 1);
    }
}
