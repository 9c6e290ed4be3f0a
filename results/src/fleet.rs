//! The fleet question: across every stored experiment, how do runs on kernel B compare with
//! runs on kernel A, hardware group by hardware group, and only ever between runs of the same
//! workload (load, target settings and collectors): a group never pools runs of different
//! workloads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::report::EMULATED_CAVEAT;
use crate::stats::{Comparison, Summary, Sums, compare_sums};

/// The succeeded runs of one node under one workload, as sums.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetRuns {
    pub node_id: String,
    /// `{"load": ..., "target": ..., "collect": ...}` as the runs were stored.
    pub workload: serde_json::Value,
    pub kernel_release: String,
    pub cpu_model: String,
    pub logical_cpus: i32,
    /// The node's CPUs are emulated (QEMU TCG): its rates measure the emulator.
    pub emulated: bool,
    /// Of connections per second.
    pub sums: Sums,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// CPU model and logical CPU count.
    Cpu,
    CpuModel,
    /// One group: the whole fleet.
    None,
}

impl GroupBy {
    pub fn parse(text: &str) -> Option<GroupBy> {
        match text {
            "cpu" => Some(GroupBy::Cpu),
            "cpu_model" => Some(GroupBy::CpuModel),
            "none" => Some(GroupBy::None),
            _ => None,
        }
    }

    fn key(self, run: &FleetRuns) -> GroupKey {
        // The workload comes first so a workload's groups are listed together.
        let workload = run.workload.to_string();
        match self {
            GroupBy::Cpu => (workload, run.cpu_model.clone(), Some(run.logical_cpus)),
            GroupBy::CpuModel => (workload, run.cpu_model.clone(), None),
            GroupBy::None => (workload, "all".into(), None),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetSide {
    pub runs: usize,
    /// Distinct nodes behind the runs.
    pub nodes: usize,
    /// Kernel releases that matched the pattern in this group.
    pub kernels: Vec<String>,
    pub summary: Option<Summary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetGroup {
    /// What every run in this group ran: the one workload pooled here.
    pub workload: serde_json::Value,
    pub cpu_model: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logical_cpus: Option<i32>,
    pub a: FleetSide,
    pub b: FleetSide,
    /// B against A; absent when a side has no runs.
    pub comparison: Option<Comparison>,
    /// What the rates cannot say: set when a run of the group ran on emulated CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caveat: Option<String>,
}

fn side(runs: &[&FleetRuns]) -> (FleetSide, Sums) {
    let mut kernels: Vec<String> = runs.iter().map(|r| r.kernel_release.clone()).collect();
    kernels.sort();
    kernels.dedup();
    let nodes: std::collections::BTreeSet<&str> = runs.iter().map(|r| r.node_id.as_str()).collect();
    let mut sums = Sums::default();
    for run in runs {
        sums.add(&run.sums);
    }
    let side = FleetSide {
        runs: sums.n as usize,
        nodes: nodes.len(),
        kernels,
        summary: sums.values(),
    };
    (side, sums)
}

/// The workload (as canonical JSON text), the CPU model, and the logical CPU count when
/// grouping by both.
type GroupKey = (String, String, Option<i32>);

/// Groups both sides' runs by workload and hardware and compares B with A in each group.
pub fn compare_fleet(a: &[FleetRuns], b: &[FleetRuns], group_by: GroupBy) -> Vec<FleetGroup> {
    type Sides<'a> = (Vec<&'a FleetRuns>, Vec<&'a FleetRuns>);
    let mut groups: BTreeMap<GroupKey, Sides> = BTreeMap::new();
    for runs in a {
        groups.entry(group_by.key(runs)).or_default().0.push(runs);
    }
    for runs in b {
        groups.entry(group_by.key(runs)).or_default().1.push(runs);
    }
    groups
        .into_iter()
        .map(|((_, cpu_model, logical_cpus), (a_runs, b_runs))| {
            let (a, a_sums) = side(&a_runs);
            let (b, b_sums) = side(&b_runs);
            let workload = a_runs
                .first()
                .or(b_runs.first())
                .map(|r| r.workload.clone())
                .unwrap_or_default();
            let emulated = a_runs.iter().chain(&b_runs).any(|r| r.emulated);
            FleetGroup {
                workload,
                cpu_model,
                logical_cpus,
                comparison: compare_sums(&a_sums, &b_sums),
                caveat: emulated.then(|| EMULATED_CAVEAT.to_string()),
                a,
                b,
            }
        })
        .collect()
}

/// A kernel pattern (`*` matches anything) as a SQL LIKE pattern.
pub(crate) fn like_pattern(glob: &str) -> String {
    let mut like = String::with_capacity(glob.len() + 4);
    for c in glob.chars() {
        match c {
            '*' => like.push('%'),
            '%' | '_' | '\\' => {
                like.push('\\');
                like.push(c);
            }
            c => like.push(c),
        }
    }
    like
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Verdict;

    fn run(kernel: &str, cpu: &str, cpus: i32, rate: f64) -> FleetRuns {
        FleetRuns {
            node_id: format!("{kernel}/{cpu}/{rate}"),
            workload: serde_json::json!({"load": {"connections": 64}}),
            kernel_release: kernel.into(),
            cpu_model: cpu.into(),
            logical_cpus: cpus,
            emulated: false,
            sums: Sums {
                n: 1,
                sum: rate,
                sum_squares: rate * rate,
                sum_logs: rate.ln(),
                sum_log_squares: rate.ln().powi(2),
            },
        }
    }

    #[test]
    fn each_hardware_group_gets_its_own_verdict() {
        let a = [
            run("6.1.0-47", "EPYC", 64, 1000.0),
            run("6.1.0-47", "EPYC", 64, 1010.0),
            run("6.1.0-47", "EPYC", 64, 990.0),
            run("6.1.0-47", "Xeon", 8, 500.0),
        ];
        let b = [
            run("6.1.0-56", "EPYC", 64, 1600.0),
            run("6.1.0-56", "EPYC", 64, 1610.0),
            run("6.1.0-56", "EPYC", 64, 1590.0),
        ];
        let groups = compare_fleet(&a, &b, GroupBy::Cpu);
        assert_eq!(groups.len(), 2);
        let epyc = &groups[0];
        assert_eq!(
            (epyc.cpu_model.as_str(), epyc.logical_cpus),
            ("EPYC", Some(64))
        );
        assert_eq!(epyc.comparison.as_ref().unwrap().verdict, Verdict::Improved);
        assert_eq!(epyc.a.kernels, vec!["6.1.0-47"]);
        let xeon = &groups[1];
        assert_eq!((xeon.a.runs, xeon.b.runs), (1, 0));
        assert!(xeon.comparison.is_none());
        assert_eq!(compare_fleet(&a, &b, GroupBy::None).len(), 1);
        assert_eq!((epyc.a.nodes, epyc.b.nodes), (3, 3));
        assert_eq!(epyc.caveat, None);
    }

    #[test]
    fn a_group_with_an_emulated_node_carries_the_caveat() {
        let a = [run("6.1.0-47", "QEMU TCG CPU", 2, 500.0)];
        let mut emulated = run("6.1.0-56", "QEMU TCG CPU", 2, 510.0);
        emulated.emulated = true;
        let groups = compare_fleet(&a, &[emulated], GroupBy::Cpu);
        assert_eq!(groups[0].caveat.as_deref(), Some(EMULATED_CAVEAT));
    }

    #[test]
    fn runs_of_different_workloads_are_never_pooled() {
        let mut a = vec![
            run("6.1.0-47", "EPYC", 64, 1000.0),
            run("6.1.0-47", "EPYC", 64, 1010.0),
        ];
        let mut b = vec![
            run("6.1.0-56", "EPYC", 64, 1600.0),
            run("6.1.0-56", "EPYC", 64, 1610.0),
        ];
        let keep_alive =
            serde_json::json!({"load": {"connections": 64, "requestsPerConnection": 100}});
        for runs in [&mut a, &mut b] {
            let mut other = runs[0].clone();
            other.workload = keep_alive.clone();
            other.node_id.push_str("/keep-alive");
            runs.push(other);
        }
        let groups = compare_fleet(&a, &b, GroupBy::None);
        assert_eq!(groups.len(), 2, "{groups:?}");
        let storms = groups.iter().find(|g| g.workload != keep_alive).unwrap();
        assert_eq!((storms.a.runs, storms.b.runs), (2, 2));
        let kept = groups.iter().find(|g| g.workload == keep_alive).unwrap();
        assert_eq!((kept.a.runs, kept.b.runs), (1, 1));
    }

    #[test]
    fn globs_become_like_patterns() {
        assert_eq!(like_pattern("6.1.0-47*"), "6.1.0-47%");
        assert_eq!(like_pattern("a_b%"), "a\\_b\\%");
    }
}
