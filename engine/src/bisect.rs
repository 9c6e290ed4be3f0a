//! Bisecting kernels by behaviour: an ordered list of kernels, a condition on what a run
//! measures, and a binary search for the first kernel where the condition holds, each step an
//! experiment of its own. This module holds the file, the search and the judgement of a step;
//! running the steps is the caller's (`loadlab bisect`).

use serde::{Deserialize, Serialize};

use loadlab_results::report::{CohortReport, ExperimentReport};
use loadlab_results::stats::Verdict;

use crate::spec::{
    API_VERSION, ExperimentFile, Metadata, SpecError, check_header, check_name, parse_experiment,
    parse_yaml,
};

pub const KIND: &str = "Bisection";
/// Kernels one bisection may list: 2^12 is twelve steps.
pub(crate) const MAX_KERNELS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BisectionFile {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: BisectionSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BisectionSpec {
    /// Kernels in order, oldest first: Debian kernel package names or kernel image paths, as a
    /// `vm` cohort takes them; with `cluster`, patterns of nodes' kernel versions.
    pub kernels: Vec<String>,
    /// What the first kernel lacks and the kernels from the answer on have.
    pub holds: Condition,
    /// Measure the first and last kernels too rather than take the condition as false at the
    /// first and true at the last (two more steps).
    #[serde(default)]
    pub check_ends: bool,
    /// Every step's virtual machine (`cpus`, `memoryMiB`, `accel`, `network`, ...) without its
    /// kernel, which is the step's.
    #[serde(default)]
    pub vm: serde_yaml::Mapping,
    /// Run the steps on a Kubernetes cluster instead of virtual machines here: each step is an
    /// Experiment object that the cluster's loadlab controller runs on the nodes whose kernel
    /// matches the step's, and each of `kernels` is then a kernel version pattern (`6.1.0-47-*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterSteps>,
    /// An experiment's `spec` without `cohorts` or `baseline`: what every step runs.
    pub experiment: serde_yaml::Mapping,
}

/// Where the steps of a bisection on a cluster go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterSteps {
    /// The namespace the step Experiments are created in: one the controller watches.
    pub namespace: String,
}

/// A condition on one cohort's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Condition {
    pub metric: Metric,
    /// Holds when the metric is below this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// Holds when the metric is above this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// Holds when the metric changed this way against the first kernel, measured in the same
    /// step (the step then runs the first kernel too, as its baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<Direction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Metric {
    /// Acquisitions of the kernel's global `epmutex` per 1,000 connections.
    EpmutexAcquisitionsPer1kConnections,
    ConnectionsPerSecond,
    /// The node's CPU time per connection (µs).
    CpuMicrosecondsPerConnection,
}

impl Metric {
    pub fn describe(self) -> &'static str {
        match self {
            Self::EpmutexAcquisitionsPer1kConnections => {
                "epmutex acquisitions per 1,000 connections"
            }
            Self::ConnectionsPerSecond => "connections per second",
            Self::CpuMicrosecondsPerConnection => "CPU µs per connection",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    Up,
    Down,
    Either,
}

impl Condition {
    fn validate(&self) -> Result<(), SpecError> {
        let given = [
            self.below.is_some(),
            self.above.is_some(),
            self.changed.is_some(),
        ];
        if given.iter().filter(|&&g| g).count() != 1 {
            return Err(SpecError::at(
                "spec.holds",
                "give exactly one of below, above or changed",
            ));
        }
        if self.below.or(self.above).is_some_and(|v| !v.is_finite()) {
            return Err(SpecError::at(
                "spec.holds",
                "the threshold must be a number",
            ));
        }
        if self.changed.is_some() && self.metric == Metric::EpmutexAcquisitionsPer1kConnections {
            return Err(SpecError::at(
                "spec.holds.changed",
                "epmutex acquisitions are zero on patched kernels, so a ratio says nothing: \
                 use below or above",
            ));
        }
        Ok(())
    }

    /// Whether each step also runs the first kernel, as the baseline of a comparison.
    pub(crate) fn needs_baseline(&self) -> bool {
        self.changed.is_some()
    }

    /// The condition in words, e.g. "epmutex acquisitions per 1,000 connections below 100".
    pub fn describe(&self) -> String {
        let metric = self.metric.describe();
        match (self.below, self.above, self.changed) {
            (Some(v), _, _) => format!("{metric} below {v}"),
            (_, Some(v), _) => format!("{metric} above {v}"),
            (_, _, Some(Direction::Up)) => format!("{metric} higher than on the first kernel"),
            (_, _, Some(Direction::Down)) => format!("{metric} lower than on the first kernel"),
            _ => format!("{metric} changed from the first kernel"),
        }
    }
}

/// Parses and validates a bisection file, and every step's experiment with it.
pub fn parse_bisection(yaml: &str) -> Result<BisectionFile, SpecError> {
    let file: BisectionFile = parse_yaml(yaml)?;
    check_header(&file.api_version, &file.kind, KIND)?;
    let kernels = &file.spec.kernels;
    if kernels.len() < 2 || kernels.len() > MAX_KERNELS {
        return Err(SpecError::at(
            "spec.kernels",
            format!("list 2 to {MAX_KERNELS} kernels, oldest first"),
        ));
    }
    if let Some((index, _)) = kernels
        .iter()
        .enumerate()
        .find(|(i, k)| kernels[..*i].contains(k))
    {
        return Err(SpecError::at(
            format!("spec.kernels[{index}]"),
            "listed twice",
        ));
    }
    file.spec.holds.validate()?;
    for field in ["cohorts", "baseline"] {
        if file.spec.experiment.contains_key(field) {
            return Err(SpecError::at(
                format!("spec.experiment.{field}"),
                "each step's cohorts are made from spec.kernels and spec.vm",
            ));
        }
    }
    if let Some(cluster) = &file.spec.cluster {
        check_name("spec.cluster.namespace", &cluster.namespace)?;
        if !file.spec.vm.is_empty() {
            return Err(SpecError::at(
                "spec.vm",
                "steps on a cluster run on its nodes: give `cluster` or `vm`, not both",
            ));
        }
    }
    if file.spec.vm.contains_key("kernel") {
        return Err(SpecError::at(
            "spec.vm.kernel",
            "each step's kernel comes from spec.kernels",
        ));
    }
    // Every step's experiment is checked now, not when its turn comes an hour in.
    for index in 0..kernels.len() {
        file.step_experiment(index, 0)?;
    }
    Ok(file)
}

/// A cohort name for a kernel: `linux-image-6.1.0-47-cloud-amd64-unsigned` is `6-1-0-47-cloud-amd64`.
pub(crate) fn cohort_name(kernel: &str) -> String {
    let base = kernel.rsplit('/').next().unwrap_or(kernel);
    let base = base.strip_prefix("linux-image-").unwrap_or(base);
    let base = base.strip_suffix("-unsigned").unwrap_or(base);
    let mut name = String::new();
    for c in base.chars().map(|c| c.to_ascii_lowercase()) {
        if c.is_ascii_alphanumeric() {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    name.truncate(55);
    let name = name.trim_end_matches('-').to_string();
    if name.is_empty() {
        "kernel".into()
    } else {
        name
    }
}

impl BisectionFile {
    /// The experiment of a step on kernel `index`: one cohort on it (a `vm` cohort, or on a
    /// cluster the nodes whose kernel matches), and with a `changed` condition the first
    /// kernel as the baseline.
    pub fn step_experiment(&self, index: usize, step: usize) -> Result<ExperimentFile, SpecError> {
        let spec = &self.spec;
        let kernel = spec
            .kernels
            .get(index)
            .ok_or_else(|| SpecError::at("spec.kernels", format!("no kernel {index}")))?;
        let cohort = |kernel: &str, name: String| {
            let mut cohort = serde_yaml::Mapping::new();
            cohort.insert("name".into(), name.into());
            if spec.cluster.is_some() {
                cohort.insert("kernel".into(), kernel.into());
            } else {
                let mut vm = spec.vm.clone();
                vm.insert("kernel".into(), kernel.into());
                cohort.insert("vm".into(), vm.into());
            }
            serde_yaml::Value::Mapping(cohort)
        };
        let candidate = cohort_name(kernel);
        let mut cohorts = Vec::new();
        let mut experiment = spec.experiment.clone();
        if spec.holds.needs_baseline() && index != 0 {
            let first = format!("first-{}", cohort_name(&spec.kernels[0]));
            cohorts.push(cohort(&spec.kernels[0], first.clone()));
            experiment.insert("baseline".into(), first.into());
        }
        cohorts.push(cohort(kernel, candidate));
        experiment.insert("cohorts".into(), cohorts.into());
        let mut name = self.metadata.name.clone();
        name.truncate(50);
        let file = serde_yaml::to_string(&serde_json::json!({
            "apiVersion": API_VERSION,
            "kind": crate::spec::KIND,
            "metadata": { "name": format!("{}-step-{}", name.trim_end_matches('-'), step + 1) },
            "spec": experiment,
        }))
        .map_err(|e| SpecError::at("spec.experiment", e.to_string()))?;
        parse_experiment(&file).map_err(|error| {
            SpecError::at(
                format!("spec.experiment (the step on {kernel}): {}", error.field),
                error.message,
            )
        })
    }
}

/// What the search found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "kernel")]
pub enum Answer {
    /// The first kernel (index) where the condition holds.
    FirstHolds(usize),
    /// The condition held at the last kernel measured... not at all: it never holds.
    NeverHolds,
    /// It already holds at the first kernel.
    HoldsFromFirst,
}

/// A binary search over kernels `0..n` for the first where a monotone condition holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    /// What each kernel measured: `None` until its step.
    known: Vec<Option<bool>>,
    check_ends: bool,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Measure(usize),
    Done(Answer),
}

impl Search {
    pub fn new(kernels: usize, check_ends: bool) -> Self {
        Self {
            known: vec![None; kernels],
            check_ends,
        }
    }

    pub fn record(&mut self, index: usize, holds: bool) {
        if let Some(slot) = self.known.get_mut(index) {
            *slot = Some(holds);
        }
    }

    /// The most steps a search over this many kernels takes.
    pub fn most_steps(kernels: usize, check_ends: bool) -> usize {
        let candidates = kernels.saturating_sub(1).max(1);
        let halvings = usize::BITS - (candidates - 1).leading_zeros();
        halvings as usize + if check_ends { 2 } else { 0 }
    }

    pub fn next(&self) -> Next {
        let last = self.known.len().saturating_sub(1);
        if self.check_ends {
            match self.known[last] {
                None => return Next::Measure(last),
                Some(false) => return Next::Done(Answer::NeverHolds),
                Some(true) => {}
            }
            match self.known[0] {
                None => return Next::Measure(0),
                Some(true) => return Next::Done(Answer::HoldsFromFirst),
                Some(false) => {}
            }
        }
        // The latest kernel known not to hold (the first, assumed) and the earliest known to
        // hold (the last, assumed): the answer lies after the one, at or before the other.
        let below = (1..last)
            .rev()
            .find(|&i| self.known[i] == Some(false))
            .unwrap_or(0);
        let above = (below + 1..last)
            .find(|&i| self.known[i] == Some(true))
            .unwrap_or(last);
        if above - below <= 1 {
            Next::Done(Answer::FirstHolds(above))
        } else {
            Next::Measure(below + (above - below) / 2)
        }
    }
}

/// One step's judgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepJudgement {
    /// `None`: the step could not decide (too noisy, or the metric was not measured).
    pub holds: Option<bool>,
    /// The metric's value on the step's kernel, or the ratio against the first kernel.
    pub value: Option<f64>,
    /// In words, for the report and the API.
    pub decision: String,
}

/// Judges a step's report: the kernel's cohort is the last (the baseline, when there is one,
/// comes first).
pub fn judge(condition: &Condition, report: &ExperimentReport) -> StepJudgement {
    judge_cohorts(condition, &report.cohorts)
}

fn judge_cohorts(condition: &Condition, cohorts: &[CohortReport]) -> StepJudgement {
    let Some(cohort) = cohorts.last() else {
        return undecided("the step stored no cohort".into());
    };
    if cohort.runs_succeeded == 0 {
        return undecided(format!(
            "no run succeeded on {}: {}",
            cohort.name,
            cohort.failures.join("; ")
        ));
    }
    if let Some(direction) = condition.changed {
        return judge_change(condition.metric, direction, cohort);
    }
    let Some(value) = metric_value(condition.metric, cohort) else {
        let why = match condition.metric {
            Metric::EpmutexAcquisitionsPer1kConnections
                if cohort.lock_contention_unavailable.is_empty() =>
            {
                "this kernel has no global epmutex or no kprobe on mutex_lock".to_string()
            }
            _ => cohort.lock_contention_unavailable.join("; "),
        };
        return undecided(format!(
            "{} not measured: {why}",
            condition.metric.describe()
        ));
    };
    let (holds, relation) = match (condition.below, condition.above) {
        (Some(threshold), _) => (value < threshold, if value < threshold { "<" } else { "≥" }),
        (_, Some(threshold)) => (value > threshold, if value > threshold { ">" } else { "≤" }),
        _ => return undecided("no threshold".into()),
    };
    let threshold = condition.below.or(condition.above).unwrap_or_default();
    StepJudgement {
        holds: Some(holds),
        value: Some(value),
        decision: format!(
            "{} {value:.1} {relation} {threshold}: {}",
            condition.metric.describe(),
            if holds { "holds" } else { "does not hold" }
        ),
    }
}

fn undecided(why: String) -> StepJudgement {
    StepJudgement {
        holds: None,
        value: None,
        decision: format!("undecided: {why}"),
    }
}

fn metric_value(metric: Metric, cohort: &CohortReport) -> Option<f64> {
    match metric {
        Metric::EpmutexAcquisitionsPer1kConnections => cohort
            .epoll_calls_per_thousand
            .and_then(|rates| rates.epmutex_acquisitions),
        Metric::ConnectionsPerSecond => cohort.summary.as_ref().map(|s| s.mean),
        Metric::CpuMicrosecondsPerConnection => cohort.cpu_per_connection.as_ref().map(|s| s.mean),
    }
}

fn judge_change(metric: Metric, direction: Direction, cohort: &CohortReport) -> StepJudgement {
    let comparison = match metric {
        Metric::ConnectionsPerSecond => cohort.comparison.as_ref(),
        Metric::CpuMicrosecondsPerConnection => cohort.efficiency_comparison.as_ref(),
        Metric::EpmutexAcquisitionsPer1kConnections => None,
    };
    let Some(comparison) = comparison else {
        return undecided(format!(
            "no comparison of {} with the first kernel",
            metric.describe()
        ));
    };
    let up = comparison.ci95.is_some_and(|(low, _)| low > 1.0);
    let down = comparison.ci95.is_some_and(|(_, high)| high < 1.0);
    let ratio = comparison.ratio;
    let shown = match comparison.ci95 {
        Some((low, high)) => format!("ratio {ratio:.3} [{low:.3}, {high:.3}] to the first kernel"),
        None => format!("ratio {ratio:.3} to the first kernel"),
    };
    if comparison.verdict == Verdict::InsufficientData {
        return undecided(format!("{shown}: too few runs to tell"));
    }
    if !up && !down {
        // "No detectable change" is only a decision when the interval excludes what would
        // count; otherwise more runs are needed.
        return StepJudgement {
            holds: None,
            value: Some(ratio),
            decision: format!(
                "undecided: {shown} includes 1; more repetitions (or repetitions: auto) would tell"
            ),
        };
    }
    let holds = match direction {
        Direction::Up => up,
        Direction::Down => down,
        Direction::Either => true,
    };
    StepJudgement {
        holds: Some(holds),
        value: Some(ratio),
        decision: format!(
            "{} {shown}: {}",
            metric.describe(),
            if holds { "holds" } else { "does not hold" }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the search against a fake list where the condition holds from `first` on.
    fn search(kernels: usize, first: Option<usize>, check_ends: bool) -> (Answer, Vec<usize>) {
        let mut search = Search::new(kernels, check_ends);
        let mut measured = Vec::new();
        loop {
            match search.next() {
                Next::Measure(index) => {
                    assert!(!measured.contains(&index), "{index} measured twice");
                    measured.push(index);
                    search.record(index, first.is_some_and(|f| index >= f));
                }
                Next::Done(answer) => return (answer, measured),
            }
        }
    }

    #[test]
    fn the_search_finds_the_first_kernel_that_holds_within_its_step_bound() {
        for kernels in 2..=40 {
            for first in 1..kernels {
                let (answer, measured) = search(kernels, Some(first), false);
                assert_eq!(
                    answer,
                    Answer::FirstHolds(first),
                    "{kernels} kernels, {first}"
                );
                assert!(
                    measured.len() <= Search::most_steps(kernels, false),
                    "{kernels} kernels, first {first}: {measured:?}"
                );
                assert!(!measured.contains(&0) && !measured.contains(&(kernels - 1)));
                let (checked, measured) = search(kernels, Some(first), true);
                assert_eq!(checked, Answer::FirstHolds(first));
                assert!(measured.len() <= Search::most_steps(kernels, true));
                assert_eq!(&measured[..2], &[kernels - 1, 0], "the ends first");
            }
        }
        // Debian's 6.1.0-{47,50,53,54,55,56,57}: at most three steps, four is the issue's bound.
        assert_eq!(Search::most_steps(7, false), 3);
        assert_eq!(Search::most_steps(2, false), 0);
        assert_eq!(search(2, Some(1), false), (Answer::FirstHolds(1), vec![]));
    }

    #[test]
    fn checked_ends_say_when_the_condition_never_changes() {
        assert_eq!(search(7, None, true), (Answer::NeverHolds, vec![6]));
        assert_eq!(
            search(7, Some(0), true),
            (Answer::HoldsFromFirst, vec![6, 0])
        );
        // Unchecked, the ends are assumed: a list where nothing holds ends at the last.
        assert_eq!(search(7, None, false).0, Answer::FirstHolds(6));
    }

    #[test]
    fn kernels_become_cohort_names() {
        assert_eq!(
            cohort_name("linux-image-6.1.0-47-cloud-amd64-unsigned"),
            "6-1-0-47-cloud-amd64"
        );
        assert_eq!(
            cohort_name("/boot/vmlinuz-6.18.0-1-amd64"),
            "vmlinuz-6-18-0-1-amd64"
        );
        assert_eq!(cohort_name("..."), "kernel");
    }

    const FILE: &str = r#"
apiVersion: loadlab.dev/v1alpha1
kind: Bisection
metadata: { name: epoll-refcount }
spec:
  kernels:
    - linux-image-6.1.0-47-cloud-amd64-unsigned
    - linux-image-6.1.0-50-cloud-amd64-unsigned
    - linux-image-6.1.0-56-cloud-amd64-unsigned
  holds: { metric: epmutexAcquisitionsPer1kConnections, below: 100 }
  vm: { cpus: 2, memoryMiB: 1024 }
  experiment:
    target: { nginx: { workers: auto } }
    load: { connections: 8, duration: 2s }
    repetitions: 1
    collect: { lockContention: true }
"#;

    #[test]
    fn each_step_is_an_experiment_on_its_kernel() {
        let file = parse_bisection(FILE).unwrap();
        let step = file.step_experiment(1, 0).unwrap();
        assert_eq!(step.metadata.name, "epoll-refcount-step-1");
        assert_eq!(step.spec.cohorts.len(), 1);
        assert_eq!(step.spec.cohorts[0].name, "6-1-0-50-cloud-amd64");
        let vm = step.spec.cohorts[0].vm.as_ref().unwrap();
        assert_eq!(
            (vm.kernel.as_str(), vm.cpus, vm.memory_mib),
            ("linux-image-6.1.0-50-cloud-amd64-unsigned", 2, 1024)
        );
        // A change against the first kernel runs the first kernel too, as the baseline.
        let relative = FILE.replace(
            "{ metric: epmutexAcquisitionsPer1kConnections, below: 100 }",
            "{ metric: connectionsPerSecond, changed: up }",
        );
        let file = parse_bisection(&relative).unwrap();
        let step = file.step_experiment(2, 1).unwrap();
        let names: Vec<&str> = step.spec.cohorts.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["first-6-1-0-47-cloud-amd64", "6-1-0-56-cloud-amd64"]
        );
        assert_eq!(
            step.spec.baseline.as_deref(),
            Some("first-6-1-0-47-cloud-amd64")
        );
    }

    const CLUSTER_FILE: &str = r#"
apiVersion: loadlab.dev/v1alpha1
kind: Bisection
metadata: { name: epoll-refcount-nodes }
spec:
  kernels: ["6.1.0-47-*", "6.1.0-53-*", "6.1.0-56-*"]
  holds: { metric: connectionsPerSecond, changed: up }
  cluster: { namespace: loadlab }
  experiment:
    target: { nginx: { workers: 2 } }
    load: { connections: 8, duration: 2s }
    collect: { lockContention: true }
"#;

    #[test]
    fn on_a_cluster_each_step_selects_nodes_by_kernel() {
        let file = parse_bisection(CLUSTER_FILE).unwrap();
        let step = file.step_experiment(1, 0).unwrap();
        let cohorts: Vec<(&str, Option<&str>, bool)> = step
            .spec
            .cohorts
            .iter()
            .map(|c| (c.name.as_str(), c.kernel.as_deref(), c.vm.is_some()))
            .collect();
        assert_eq!(
            cohorts,
            [
                ("first-6-1-0-47", Some("6.1.0-47-*"), false),
                ("6-1-0-53", Some("6.1.0-53-*"), false)
            ]
        );
        assert_eq!(step.spec.baseline.as_deref(), Some("first-6-1-0-47"));
    }

    #[test]
    fn bad_files_are_refused_naming_the_field() {
        let cases = [
            (
                FILE.replace("below: 100", "below: 100, above: 5"),
                "spec.holds",
            ),
            (
                FILE.replace("below: 100", "changed: up"),
                "spec.holds.changed",
            ),
            (
                FILE.replace(
                    "    - linux-image-6.1.0-56-cloud-amd64-unsigned\n",
                    "    - linux-image-6.1.0-47-cloud-amd64-unsigned\n",
                ),
                "spec.kernels[2]",
            ),
            (
                FILE.replace("repetitions: 1", "repetitions: 1\n    baseline: x"),
                "spec.experiment.baseline",
            ),
            (
                FILE.replace("cpus: 2,", "cpus: 2, kernel: x,"),
                "spec.vm.kernel",
            ),
            (
                FILE.replace("connections: 8", "connections: 0"),
                "spec.experiment (the step on",
            ),
            (FILE.replace("kind: Bisection", "kind: Experiment"), "kind"),
            (
                FILE.replace("metric: epmutex", "metric: nonsense"),
                "spec.holds.metric",
            ),
            (
                CLUSTER_FILE.replace("  experiment:", "  vm: { cpus: 2 }\n  experiment:"),
                "spec.vm",
            ),
            (
                CLUSTER_FILE.replace("namespace: loadlab", "namespace: Load_Lab"),
                "spec.cluster.namespace",
            ),
            (
                CLUSTER_FILE.replace("namespace: loadlab", "namespace: loadlab, name: x"),
                "spec.cluster",
            ),
        ];
        for (text, field) in cases {
            let error = parse_bisection(&text).expect_err(field);
            assert!(error.field.starts_with(field), "{field}: {error:?}");
        }
    }

    fn measured(epmutex: Option<f64>, comparison: Option<(f64, (f64, f64))>) -> Vec<CohortReport> {
        use loadlab_results::report::EpollRates;
        use loadlab_results::stats::Comparison;
        vec![CohortReport {
            name: "k".into(),
            runs_succeeded: 3,
            epoll_calls_per_thousand: Some(EpollRates {
                ctl_add: 1000.0,
                ctl_del: 0.0,
                ctl_mod: 0.0,
                wait: 900.0,
                epmutex_acquisitions: epmutex,
            }),
            comparison: comparison.map(|(ratio, ci)| Comparison {
                ratio,
                ci95: Some(ci),
                hedges_g: None,
                p_value: None,
                verdict: if ci.0 > 1.0 {
                    Verdict::Improved
                } else if ci.1 < 1.0 {
                    Verdict::Regressed
                } else {
                    Verdict::NoDetectableChange
                },
                flags: Vec::new(),
                min_detectable_change: None,
                runs_for_practical_change: None,
            }),
            ..CohortReport::default()
        }]
    }

    #[test]
    fn a_step_is_judged_by_its_kernels_cohort_or_left_undecided_with_the_reason() {
        let below = parse_bisection(FILE).unwrap().spec.holds;
        let unpatched = judge_cohorts(&below, &measured(Some(991.0), None));
        assert_eq!(
            (unpatched.holds, unpatched.value),
            (Some(false), Some(991.0))
        );
        assert!(
            unpatched.decision.contains("991.0 ≥ 100"),
            "{}",
            unpatched.decision
        );
        assert_eq!(
            judge_cohorts(&below, &measured(Some(0.0), None)).holds,
            Some(true)
        );
        let unmeasured = judge_cohorts(&below, &measured(None, None));
        assert_eq!(unmeasured.holds, None);
        assert!(
            unmeasured.decision.starts_with("undecided: "),
            "{}",
            unmeasured.decision
        );
        let mut failed = measured(Some(0.0), None);
        failed[0].runs_succeeded = 0;
        failed[0].failures = vec!["guest stopped".into()];
        assert!(
            judge_cohorts(&below, &failed)
                .decision
                .contains("guest stopped")
        );

        let faster = Condition {
            metric: Metric::ConnectionsPerSecond,
            below: None,
            above: None,
            changed: Some(Direction::Up),
        };
        let judged = |ratio, ci| judge_cohorts(&faster, &measured(None, Some((ratio, ci)))).holds;
        assert_eq!(judged(1.6, (1.4, 1.8)), Some(true));
        assert_eq!(judged(0.7, (0.6, 0.8)), Some(false));
        assert_eq!(
            judged(1.02, (0.9, 1.1)),
            None,
            "an interval across 1 decides nothing"
        );
        assert_eq!(judge_cohorts(&faster, &measured(None, None)).holds, None);
    }
}
