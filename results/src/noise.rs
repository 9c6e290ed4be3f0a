//! What a cohort's windows could not control, summed over its runs and flagged with numbers:
//! stolen CPU time, other work on the node, device interrupts on nginx's CPUs, packets
//! connection tracking dropped, frequency scaling, shared cores, and nginx left unpinned beside
//! a local generator.

use serde::{Deserialize, Serialize};

use crate::model::{NodeRecord, WindowCounters};

/// Stolen CPU time above this share of all CPU time is flagged.
pub(crate) const STEAL_FLAG_SHARE: f64 = 0.01;
/// Other work above this many CPUs' worth (busy time ÷ window) is flagged.
pub(crate) const OTHER_WORK_FLAG_CPUS: f64 = 0.1;
/// Device interrupts on nginx's CPUs above this rate are flagged.
pub(crate) const INTERRUPTS_FLAG_PER_SECOND: f64 = 1000.0;

/// One thing the windows could not control, with its size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NoiseFlag {
    /// The hypervisor took this share of CPU time (the worst run).
    Steal { share: f64 },
    /// Processes other than nginx and loadlab, kernel threads and interrupts used this many
    /// CPUs' worth over the windows (the mean of the runs).
    OtherWork { cpus: f64 },
    /// Device interrupts per second landed on nginx's CPUs (the mean of the runs).
    DeviceInterrupts { per_second: f64 },
    /// The node's connection tracking table was full and dropped this many packets over the
    /// windows (all runs): new connections waited for a SYN retransmission or timed out.
    ConntrackDrops { packets: u64 },
    /// A node's CPU frequency governor may change the clock under load.
    FrequencyScaling { governor: String },
    /// SMT is on: two logical CPUs share a core's execution units.
    SharedCores,
    /// nginx shared its CPUs with a generator on the same node, and why.
    Unpinned { reason: String },
}

impl NoiseFlag {
    /// The flag in words, with its size.
    pub fn describe(&self) -> String {
        match self {
            NoiseFlag::Steal { share } => format!("{:.1}% of CPU time stolen", share * 100.0),
            NoiseFlag::OtherWork { cpus } => format!("other work took {cpus:.2} CPU"),
            NoiseFlag::DeviceInterrupts { per_second } => {
                format!("{per_second:.0} device interrupts/s on nginx's CPUs")
            }
            NoiseFlag::ConntrackDrops { packets } => format!(
                "connection tracking dropped {packets} packets (its table was full: raise \
                 net.netfilter.nf_conntrack_max or stop tracking the target's connections)"
            ),
            NoiseFlag::FrequencyScaling { governor } => {
                format!("frequency governor {governor} (not performance)")
            }
            NoiseFlag::SharedCores => "SMT on (logical CPUs share cores)".into(),
            NoiseFlag::Unpinned { reason } => {
                format!("nginx shared CPUs with the generator: {reason}")
            }
        }
    }
}

/// A cohort's noise over its measured windows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeNoise {
    /// The largest share of CPU time stolen in any run.
    pub steal_share_max: f64,
    /// Mean CPUs' worth of other work over the windows.
    pub other_work_cpus: f64,
    /// Mean device interrupts per second on the watched CPUs.
    pub device_interrupts_per_second: f64,
    /// The CPUs whose interrupts were counted (nginx's when pinned), over all runs.
    pub watched_cpus: Vec<u32>,
    /// Packets connection tracking dropped over all windows; absent where no node tracks
    /// connections (and in reports stored before it was counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conntrack_dropped: Option<u64>,
    /// Runs whose windows carried these measurements.
    pub runs: u64,
    pub flags: Vec<NoiseFlag>,
}

/// Sums a cohort's runs as they are added.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct NoiseTally {
    steal_share_max: f64,
    other_work_cpus: Vec<f64>,
    interrupts_per_second: Vec<f64>,
    watched_cpus: Vec<u32>,
    #[serde(default)]
    conntrack_dropped: Option<u64>,
    unpinned: Vec<String>,
    runs: u64,
}

impl NoiseTally {
    pub fn add(&mut self, counters: &WindowCounters) {
        let seconds = counters.window_seconds;
        let (Some(other), Some(interrupts)) =
            (counters.other_cpu_seconds, counters.device_interrupts)
        else {
            return;
        };
        if !(seconds > 0.0 && seconds.is_finite() && other.is_finite()) {
            return;
        }
        self.runs += 1;
        self.steal_share_max = self.steal_share_max.max(counters.steal_share);
        self.other_work_cpus.push(other / seconds);
        self.interrupts_per_second.push(interrupts as f64 / seconds);
        for cpu in &counters.interrupt_cpus {
            if !self.watched_cpus.contains(cpu) {
                self.watched_cpus.push(*cpu);
            }
        }
        if let Some(dropped) = counters.conntrack_dropped {
            *self.conntrack_dropped.get_or_insert(0) += dropped;
        }
        if let Some(reason) = &counters.unpinned
            && !self.unpinned.contains(reason)
        {
            self.unpinned.push(reason.clone());
        }
    }

    /// The cohort's noise, with the nodes' facts for what does not change between windows;
    /// `None` when no run measured it.
    pub fn finish(mut self, nodes: &[NodeRecord]) -> Option<NodeNoise> {
        if self.runs == 0 {
            return None;
        }
        let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len().max(1) as f64;
        let other_work_cpus = mean(&self.other_work_cpus);
        let interrupts = mean(&self.interrupts_per_second);
        let mut flags = Vec::new();
        if self.steal_share_max > STEAL_FLAG_SHARE {
            flags.push(NoiseFlag::Steal {
                share: self.steal_share_max,
            });
        }
        if other_work_cpus > OTHER_WORK_FLAG_CPUS {
            flags.push(NoiseFlag::OtherWork {
                cpus: other_work_cpus,
            });
        }
        if interrupts > INTERRUPTS_FLAG_PER_SECOND {
            flags.push(NoiseFlag::DeviceInterrupts {
                per_second: interrupts,
            });
        }
        if let Some(packets) = self.conntrack_dropped.filter(|dropped| *dropped > 0) {
            flags.push(NoiseFlag::ConntrackDrops { packets });
        }
        let mut governors: Vec<String> = nodes
            .iter()
            .filter_map(|node| node.facts["scaling_governor"].as_str())
            .filter(|governor| !matches!(*governor, "performance" | "none" | ""))
            .map(str::to_string)
            .collect();
        governors.dedup();
        flags.extend(
            governors
                .into_iter()
                .map(|governor| NoiseFlag::FrequencyScaling { governor }),
        );
        if nodes.iter().any(|node| node.facts["smt"] == "on") {
            flags.push(NoiseFlag::SharedCores);
        }
        flags.extend(
            self.unpinned
                .into_iter()
                .map(|reason| NoiseFlag::Unpinned { reason }),
        );
        self.watched_cpus.sort_unstable();
        // Rounded so the figures come back unchanged from Postgres's JSON, where reports are
        // kept.
        let round = |value: f64| (value * 1e6).round() / 1e6;
        Some(NodeNoise {
            steal_share_max: round(self.steal_share_max),
            other_work_cpus: round(other_work_cpus),
            device_interrupts_per_second: round(interrupts),
            watched_cpus: self.watched_cpus,
            conntrack_dropped: self.conntrack_dropped,
            runs: self.runs,
            flags,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(steal: f64, other: f64, interrupts: u64) -> WindowCounters {
        WindowCounters {
            window_seconds: 10.0,
            steal_share: steal,
            other_cpu_seconds: Some(other),
            device_interrupts: Some(interrupts),
            interrupt_cpus: vec![1],
            ..WindowCounters::default()
        }
    }

    fn node(governor: &str, smt: &str) -> NodeRecord {
        NodeRecord {
            hostname: "n".into(),
            kernel_release: "6.18".into(),
            kernel_version: "#1".into(),
            cpu_model: "cpu".into(),
            logical_cpus: 2,
            memory_bytes: 1,
            facts: serde_json::json!({ "scaling_governor": governor, "smt": smt }),
        }
    }

    #[test]
    fn a_quiet_node_has_numbers_and_no_flags() {
        let mut tally = NoiseTally::default();
        tally.add(&window(0.0, 0.1, 500));
        tally.add(&window(0.002, 0.3, 700));
        let noise = tally.finish(&[node("none", "off")]).unwrap();
        assert_eq!(noise.runs, 2);
        assert_eq!(noise.steal_share_max, 0.002);
        assert_eq!(noise.other_work_cpus, 0.02);
        assert_eq!(noise.device_interrupts_per_second, 60.0);
        assert_eq!(noise.watched_cpus, vec![1]);
        assert_eq!(noise.conntrack_dropped, None, "no node tracked connections");
        assert!(noise.flags.is_empty(), "{:?}", noise.flags);
    }

    #[test]
    fn each_source_is_flagged_above_its_threshold_with_its_size() {
        let mut tally = NoiseTally::default();
        tally.add(&window(0.03, 4.0, 50_000));
        let mut unpinned = window(0.0, 0.0, 0);
        unpinned.unpinned = Some("one core".into());
        unpinned.conntrack_dropped = Some(30);
        tally.add(&unpinned);
        let mut dropped = window(0.0, 0.0, 0);
        dropped.conntrack_dropped = Some(12);
        tally.add(&dropped);
        let noise = tally.finish(&[node("powersave", "on")]).unwrap();
        assert_eq!(
            noise.flags,
            vec![
                NoiseFlag::Steal { share: 0.03 },
                NoiseFlag::OtherWork {
                    cpus: 4.0 / 10.0 / 3.0
                },
                NoiseFlag::DeviceInterrupts {
                    per_second: 5000.0 / 3.0
                },
                NoiseFlag::ConntrackDrops { packets: 42 },
                NoiseFlag::FrequencyScaling {
                    governor: "powersave".into()
                },
                NoiseFlag::SharedCores,
                NoiseFlag::Unpinned {
                    reason: "one core".into()
                },
            ]
        );
    }

    #[test]
    fn tracked_connections_without_drops_are_counted_not_flagged() {
        let mut tally = NoiseTally::default();
        let mut tracked = window(0.0, 0.0, 0);
        tracked.conntrack_dropped = Some(0);
        tally.add(&tracked);
        let noise = tally.finish(&[node("performance", "off")]).unwrap();
        assert_eq!(noise.conntrack_dropped, Some(0));
        assert!(noise.flags.is_empty(), "{:?}", noise.flags);
    }

    #[test]
    fn runs_stored_before_the_measurement_carry_no_noise() {
        let mut tally = NoiseTally::default();
        tally.add(&WindowCounters {
            window_seconds: 10.0,
            ..WindowCounters::default()
        });
        assert_eq!(tally.finish(&[node("performance", "off")]), None);
    }
}
