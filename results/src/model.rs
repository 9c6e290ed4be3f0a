//! The records loadlab keeps: experiments, nodes and runs as the store writes and reads them and
//! as the report, the API and ingest take them. Nothing here knows Postgres.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::sequential::JudgedMetric;

/// A new experiment, recorded before its first run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewExperiment {
    pub id: Uuid,
    pub name: String,
    pub spec: serde_json::Value,
    pub baseline: String,
    pub cohorts: Vec<String>,
    /// Repetitions times the nodes of every cohort, when the writer knows its nodes; without
    /// it, repetitions times cohorts (one node each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_runs: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExperimentStatus {
    Running,
    Completed,
    Interrupted,
    Failed,
}

impl ExperimentStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ExperimentStatus::Running => "running",
            ExperimentStatus::Completed => "completed",
            ExperimentStatus::Interrupted => "interrupted",
            ExperimentStatus::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentRow {
    pub id: Uuid,
    pub name: String,
    pub baseline: String,
    pub cohorts: Vec<String>,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Repetitions times the nodes of every cohort (absent when neither the writer nor the
    /// spec says).
    #[serde(default)]
    pub planned_runs: Option<i64>,
    /// Bumped by every write to the experiment or its runs (not part of the API's answers).
    #[serde(skip)]
    pub revision: i64,
    /// With `repetitions: auto`: the stopping rule's budget and practical change.
    #[serde(skip)]
    pub stopping: Option<StoppingRule>,
}

/// `repetitions: auto`'s rule as the spec set it (defaults filled in).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoppingRule {
    pub max_repetitions: u32,
    /// As a fraction: 0.05 for 5%.
    pub practical_change: f64,
    pub metric: JudgedMetric,
}

impl StoppingRule {
    pub(crate) fn from_spec(auto: bool, stopping: Option<&serde_json::Value>) -> Option<Self> {
        auto.then(|| Self {
            max_repetitions: stopping
                .and_then(|s| s["maxRepetitions"].as_u64())
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(20),
            practical_change: stopping
                .and_then(|s| s["practicalChangePercent"].as_f64())
                .unwrap_or(5.0)
                / 100.0,
            metric: match stopping.and_then(|s| s["metric"].as_str()) {
                Some("cpuPerConnection") => JudgedMetric::CpuPerConnection,
                _ => JudgedMetric::ConnectionsPerSecond,
            },
        })
    }
}

impl RunRecord {
    /// The node's CPU time per completed connection in µs (busy share × window × logical CPUs
    /// ÷ connections: the service demand, everything on the node included); `None` when
    /// nothing completed or no CPU time was seen.
    pub fn cpu_us_per_connection(&self) -> Option<f64> {
        let cpu_us = self.counters.cpu_busy_share
            * self.window_seconds
            * f64::from(self.node.logical_cpus.max(1))
            * 1e6;
        (self.completed_connections > 0 && cpu_us > 0.0 && cpu_us.is_finite())
            .then(|| cpu_us / self.completed_connections as f64)
    }

    /// The run's value of what `repetitions: auto` judges.
    pub fn judged_value(&self, metric: JudgedMetric) -> Option<f64> {
        match metric {
            JudgedMetric::ConnectionsPerSecond => Some(self.connections_per_second),
            JudgedMetric::CpuPerConnection => self.cpu_us_per_connection(),
        }
    }
}

/// A node as measured. Its id is derived from the facts that make measurements comparable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub hostname: String,
    pub kernel_release: String,
    pub kernel_version: String,
    pub cpu_model: String,
    pub logical_cpus: i32,
    pub memory_bytes: i64,
    /// Everything else the agent reported.
    #[serde(deserialize_with = "bounded_json::deserialize")]
    pub facts: serde_json::Value,
}

impl NodeRecord {
    /// The node's CPUs were emulated (QEMU TCG). Nodes stored before the agent said so
    /// explicitly said it at the start of their virtualization fact.
    pub fn emulated(&self) -> bool {
        self.facts["emulated"].as_bool().unwrap_or_else(|| {
            self.facts["virtualization"]
                .as_str()
                .is_some_and(|v| v.starts_with("emulated"))
        })
    }

    /// A stable id: the same host, kernel build and CPU give the same node.
    pub fn id(&self) -> String {
        format!(
            "{}/{}/{:016x}",
            self.hostname,
            self.kernel_release,
            fnv1a(&[
                self.kernel_version.as_bytes(),
                self.cpu_model.as_bytes(),
                &self.logical_cpus.to_le_bytes(),
            ])
        )
    }
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter().chain(&[0xff]) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum RunOutcome {
    Succeeded,
    Failed { reason: String },
}

/// One measured window of one cohort, as stored. Its JSON form (the ingest body) carries the
/// histograms as base64 HdrHistogram V2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    pub id: Uuid,
    pub experiment_id: Uuid,
    pub cohort: String,
    pub repetition: i32,
    pub attempt: i32,
    /// Position in the experiment's schedule, from 0.
    pub sequence: i32,
    pub node: NodeRecord,
    pub outcome: RunOutcome,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// The target settings and load this run used.
    #[serde(deserialize_with = "bounded_json::deserialize")]
    pub target: serde_json::Value,
    #[serde(deserialize_with = "bounded_json::deserialize")]
    pub load: serde_json::Value,
    pub window_seconds: f64,
    pub completed_connections: i64,
    pub failed_connections: i64,
    pub warmup_connections: i64,
    pub connections_per_second: f64,
    /// Failed connections by error kind.
    pub errors: BTreeMap<String, u64>,
    #[serde(with = "base64_bytes")]
    pub connect_histogram: Vec<u8>,
    #[serde(with = "base64_bytes")]
    pub first_byte_histogram: Vec<u8>,
    #[serde(with = "base64_bytes")]
    pub total_histogram: Vec<u8>,
    pub completed_per_second: Vec<i64>,
    pub counters: WindowCounters,
    /// Kernel lock contention over the window, largest total wait first.
    #[serde(default)]
    pub locks: Vec<LockRecord>,
    /// Why lock contention was asked for and not collected.
    #[serde(default)]
    pub lock_contention_unavailable: Option<String>,
    /// Where the lock contention was seen ("lock tracepoints", "kprobes on slow paths").
    #[serde(default)]
    pub lock_source: Option<String>,
    #[serde(default)]
    pub cpu_profile: Option<ProfileRecord>,
    /// Why a CPU profile was asked for and not collected.
    #[serde(default)]
    pub cpu_profile_unavailable: Option<String>,
    /// With several generators: how far apart they started (µs), each measured against the
    /// shared start instant on its own clock.
    #[serde(default)]
    pub generator_skew_us: Option<i64>,
}

/// A CPU profile of a run's window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileRecord {
    pub frequency_hz: i32,
    pub samples: i64,
    pub idle_samples: i64,
    /// `comm;outermost;...;innermost` and sample counts.
    pub folded: Vec<(String, i64)>,
    /// Busy samples by symbol, most self samples first.
    pub top_symbols: Vec<SymbolRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SymbolRecord {
    pub symbol: String,
    pub self_samples: i64,
    pub total_samples: i64,
}

impl ProfileRecord {
    /// Folded stacks as text, one `stack count` per line (the flamegraph tools' input).
    pub(crate) fn folded_text(&self) -> String {
        self.folded
            .iter()
            .map(|(stack, count)| format!("{stack} {count}\n"))
            .collect()
    }

    pub(crate) fn parse_folded(text: &str) -> Vec<(String, i64)> {
        text.lines()
            .filter_map(|line| {
                let (stack, count) = line.rsplit_once(' ')?;
                Some((stack.to_string(), count.parse().ok()?))
            })
            .collect()
    }
}

/// The most JSON text a free-form value inside a record (settings, node facts) may take: parsed
/// whole, an array of small numbers takes about twenty times its text in memory.
pub(crate) const MAX_EMBEDDED_JSON_BYTES: usize = 64 * 1024;

/// A free-form JSON value of at most `MAX_EMBEDDED_JSON_BYTES`, checked as text before it is
/// parsed (so only from JSON text: serde_json's readers).
mod bounded_json {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer};
    use serde_json::value::RawValue;

    use super::MAX_EMBEDDED_JSON_BYTES;

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<serde_json::Value, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        if raw.get().len() > MAX_EMBEDDED_JSON_BYTES {
            return Err(D::Error::custom(format!(
                "a JSON value of {} bytes, more than the {MAX_EMBEDDED_JSON_BYTES} taken here",
                raw.get().len()
            )));
        }
        serde_json::from_str(raw.get()).map_err(D::Error::custom)
    }
}

/// Bytes as standard base64 in JSON.
mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD
            .decode(text)
            .map_err(|e| serde::de::Error::custom(format!("not base64 ({e})")))
    }
}

/// Contention on one kernel lock from one call path over a run's window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockRecord {
    pub lock: String,
    pub lock_type: String,
    pub caller: String,
    /// Innermost frame first, joined by `;`.
    pub stack: String,
    pub count: i64,
    pub wait_ns: i64,
    pub max_wait_ns: i64,
    pub epoll: bool,
}

/// Counter deltas over a run's measured window, as the agent captured them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowCounters {
    pub window_seconds: f64,
    pub nginx_accepts: u64,
    pub nginx_handled: u64,
    pub nginx_requests: u64,
    pub tcp_active_opens: u64,
    pub tcp_passive_opens: u64,
    pub tcp_attempt_fails: u64,
    pub tcp_estab_resets: u64,
    pub tcp_out_rsts: u64,
    pub cpu_busy_share: f64,
    pub cpu_user_share: f64,
    pub cpu_system_share: f64,
    pub cpu_softirq_share: f64,
    /// epoll system calls of the target over the window, when traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoll: Option<EpollCounts>,
    /// CPU time (user + system) nginx's own processes used over the window, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nginx_cpu_seconds: Option<f64>,
    /// CPU time (user + system) the generators' storm threads used over the window, in
    /// seconds: the load's own cost, which the node's figure includes when the generator is
    /// local.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_cpu_seconds: Option<f64>,
    /// Share of all CPU time the hypervisor gave to others over the window.
    #[serde(default)]
    pub steal_share: f64,
    /// CPU time of everything but nginx and loadlab's own process on the node (other
    /// processes, kernel threads, interrupts), in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_cpu_seconds: Option<f64>,
    /// Device interrupts on `interrupt_cpus` over the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_interrupts: Option<u64>,
    /// The CPUs whose interrupts were counted: nginx's when it was pinned, else all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interrupt_cpus: Vec<u32>,
    /// Packets the node's connection tracking dropped over the window; absent where its kernel
    /// has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conntrack_dropped: Option<u64>,
    /// Why nginx shared its CPUs with a generator on the same node, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpinned: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpollCounts {
    pub ctl_add: u64,
    pub ctl_del: u64,
    pub ctl_mod: u64,
    pub wait: u64,
    /// Acquisitions of the kernel's global `epmutex`, where it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epmutex_acquisitions: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_emulated_by_its_fact_or_as_nodes_stored_before_it_said_so() {
        let node = |facts: serde_json::Value| NodeRecord {
            hostname: "guest".into(),
            kernel_release: "6.1.0-56-cloud-amd64".into(),
            kernel_version: "#1".into(),
            cpu_model: "QEMU TCG CPU".into(),
            logical_cpus: 2,
            memory_bytes: 1,
            facts,
        };
        let tcg = "emulated (QEMU TCG)";
        assert!(node(serde_json::json!({ "emulated": true, "virtualization": tcg })).emulated());
        assert!(node(serde_json::json!({ "virtualization": tcg })).emulated());
        assert!(
            !node(serde_json::json!({ "emulated": false, "virtualization": "bare metal" }))
                .emulated()
        );
        assert!(
            !node(serde_json::json!({ "virtualization": "virtual machine (QEMU/KVM)" })).emulated()
        );
        assert!(!node(serde_json::json!({})).emulated());
    }
}
