//! The comparison report of one experiment, computed from its stored runs: per cohort, conn/s
//! over repetitions, merged latency percentiles, errors, the counter cross-check, and the
//! comparison with the baseline.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use loadlab_proto::histogram::{HistogramError, decode_histogram, latency_histogram};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::model::{EpollCounts, ExperimentRow, NodeRecord, RunOutcome, RunRecord};
use crate::noise::{NodeNoise, NoiseTally};
use crate::sequential::{JudgedMetric, Judgement, Rounds, all_decided};
use crate::stats::{Comparison, METHOD, Summary, compare, summarize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Percentiles {
    /// The percentiles every report and output shows, read from a latency histogram (µs).
    pub fn of(histogram: &Histogram<u64>) -> Self {
        Self {
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            max_us: histogram.max(),
        }
    }
}

/// How the agent describes a node whose CPUs QEMU emulates (TCG).
pub const EMULATED_CAVEAT: &str = "ran on emulated CPUs (QEMU TCG): connection rates and latencies measure the emulator more than the kernel; lock evidence (which locks, how often, from where) holds";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CohortReport {
    pub name: String,
    /// Per round, the mean natural log of the cohort's succeeded runs' conn/s: what the
    /// stopping rule of `repetitions: auto` reads.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub round_log_means: BTreeMap<u32, f64>,
    /// Per round, the mean natural log of the runs' CPU µs per connection: what the rule
    /// reads when it judges on CPU per connection.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub round_log_cpu_means: BTreeMap<u32, f64>,
    pub runs_succeeded: usize,
    pub runs_failed: usize,
    /// The nodes behind the cohort's runs, by their ids in the report's `nodes`.
    #[serde(default)]
    pub node_ids: Vec<String>,
    /// Why runs failed, one line each.
    pub failures: Vec<String>,
    /// Per-run conn/s of the succeeded runs, in schedule order.
    pub connections_per_second: Vec<f64>,
    /// Why the cohort's rates and latencies do not describe its kernel, when they do not
    /// (runs on emulated CPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput_caveat: Option<String>,
    pub summary: Option<Summary>,
    /// Against the baseline; absent for the baseline itself.
    pub comparison: Option<Comparison>,
    pub connect_latency: Percentiles,
    pub total_latency: Percentiles,
    pub completed_connections: u64,
    pub failed_connections: u64,
    pub errors: BTreeMap<String, u64>,
    /// Summed over the cohort's succeeded runs, for the cross-check with completed connections.
    pub nginx_accepts: u64,
    pub tcp_passive_opens: u64,
    pub mean_cpu_busy_share: f64,
    /// Per succeeded run, the node's CPU time per completed connection in µs (its busy share
    /// × window × logical CPUs ÷ connections): the service demand, everything on the node
    /// included (nginx, the kernel, a generator on the same node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpu_us_per_connection: Vec<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_per_connection: Option<Summary>,
    /// Per succeeded run, nginx's own CPU time (its processes' user + system) per completed
    /// connection in µs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nginx_cpu_us_per_connection: Vec<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nginx_cpu_per_connection: Option<Summary>,
    /// Per succeeded run, the generators' own CPU time (their storm threads) per completed
    /// connection in µs: part of the node's figure when the generator is local.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generator_cpu_us_per_connection: Vec<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_cpu_per_connection: Option<Summary>,
    /// Connections per CPU-second against the baseline's (the inverse of the above, so a ratio
    /// above 1 and `improved` mean cheaper connections); absent for the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efficiency_comparison: Option<Comparison>,
    /// The most contended kernel locks over the cohort's windows, largest wait first.
    pub locks: Vec<LockSummary>,
    /// Share of all contended wait whose call path runs through eventpoll code.
    pub epoll_share_of_contention: Option<f64>,
    /// Why lock contention was not collected on some runs.
    pub lock_contention_unavailable: Vec<String>,
    /// Where the cohort's lock contention was seen ("lock tracepoints", "kprobes on slow
    /// paths"), each source once.
    #[serde(default)]
    pub lock_sources: Vec<String>,
    /// The target's epoll system calls per 1,000 completed connections, over traced runs.
    pub epoll_calls_per_thousand: Option<EpollRates>,
    /// The symbols with the most CPU samples over the cohort's profiled windows.
    pub cpu_symbols: Vec<CpuSymbolShare>,
    /// All samples (busy and idle) of the cohort's profiles.
    pub cpu_profile_samples: u64,
    /// Why a CPU profile was not collected on some runs.
    pub cpu_profile_unavailable: Vec<String>,
    /// What the cohort's windows could not control, with numbers and flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_noise: Option<NodeNoise>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpollRates {
    pub ctl_add: f64,
    pub ctl_del: f64,
    pub ctl_mod: f64,
    pub wait: f64,
    /// Acquisitions of the kernel's global `epmutex` per 1,000 connections, over the runs of
    /// kernels that have one: non-zero means closes take the global mutex (no refcount patch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epmutex_acquisitions: Option<f64>,
}

/// A symbol's share of all CPU samples (idle included), as `perf report` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuSymbolShare {
    pub symbol: String,
    /// Samples in which the symbol was running.
    pub self_share: f64,
    /// Samples in which the symbol was anywhere on the stack.
    pub total_share: f64,
}

/// How many symbols a cohort report lists.
pub(crate) const TOP_CPU_SYMBOLS: usize = 10;

/// One lock's contention over a cohort's runs, all call paths together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockSummary {
    pub lock: String,
    pub lock_type: String,
    /// The caller (call path head) with the most wait on this lock.
    pub top_caller: String,
    pub count: u64,
    pub wait_ns: u64,
    pub max_wait_ns: u64,
    /// Wait on this lock as a share of all CPU time in the windows (wait / (window × CPUs)).
    pub share_of_cpu_time: f64,
    /// Contentions per 1,000 completed connections.
    pub per_thousand_connections: f64,
    pub epoll: bool,
}

/// How many locks a cohort report lists.
pub(crate) const TOP_LOCKS: usize = 8;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentReport {
    pub experiment: ExperimentRow,
    pub cohorts: Vec<CohortReport>,
    pub nodes: Vec<NodeRecord>,
    /// With `repetitions: auto`: each cohort as the stopping rule judges it, and why the
    /// rounds stopped (or how far they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping: Option<StoppingReport>,
}

/// The stopping rule's view of an experiment (`sequential.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoppingReport {
    /// Rounds with stored runs.
    pub rounds: u32,
    /// The most rounds allowed.
    pub budget: u32,
    /// The smallest change that matters, as a fraction (0.05 for 5%).
    pub practical_change: f64,
    pub cohorts: Vec<CohortJudgement>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohortJudgement {
    pub cohort: String,
    pub judgement: Judgement,
    /// E.g. "slower by 12.3% [-18.0%, -6.2%]".
    pub text: String,
}

/// The comparison of an experiment's cohorts as the API serves it: its report and the method
/// behind its statistics.
#[derive(Debug, Serialize)]
struct ComparisonDocument {
    #[serde(flatten)]
    report: ExperimentReport,
    method: &'static str,
}

/// The comparison document of a report, serialized.
pub fn comparison_body(report: ExperimentReport) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(&ComparisonDocument {
        report,
        method: METHOD,
    })
    .map_err(|e| Error::Corrupt(format!("comparison not serializable: {e}")))
}

/// Builds the report of an experiment from its runs.
pub fn build_report(
    experiment: ExperimentRow,
    runs: &[RunRecord],
) -> Result<ExperimentReport, Error> {
    let mut cohorts: Vec<CohortAccumulator> = experiment
        .cohorts
        .iter()
        .map(|name| CohortAccumulator::new(name))
        .collect();
    for run in runs {
        if let Some(cohort) = cohorts.iter_mut().find(|c| c.report.name == run.cohort) {
            cohort.add(run)?;
        }
    }
    Ok(assemble_report(experiment, cohorts))
}

/// The report from each cohort's folded runs, in the experiment's cohort order (a cohort
/// without an accumulator has no runs yet).
pub(crate) fn assemble_report(
    experiment: ExperimentRow,
    accumulators: Vec<CohortAccumulator>,
) -> ExperimentReport {
    let finished = accumulators
        .into_iter()
        .map(|a| (a.nodes.clone(), a.finish()))
        .collect();
    assemble_finished(experiment, finished)
}

/// The report from each cohort's finished report and the nodes of its runs, in the
/// experiment's cohort order (a cohort missing here has no runs yet).
pub(crate) fn assemble_finished(
    experiment: ExperimentRow,
    mut finished: Vec<(Vec<NodeRecord>, CohortReport)>,
) -> ExperimentReport {
    let mut nodes: Vec<NodeRecord> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut cohorts: Vec<CohortReport> = Vec::new();
    for name in &experiment.cohorts {
        let (cohort_nodes, mut report) = match finished.iter().position(|(_, r)| &r.name == name) {
            Some(index) => finished.swap_remove(index),
            None => (Vec::new(), CohortAccumulator::new(name).finish()),
        };
        report.node_ids = cohort_nodes.iter().map(NodeRecord::id).collect();
        for node in cohort_nodes {
            if seen.insert(node.id()) {
                nodes.push(node);
            }
        }
        cohorts.push(report);
    }
    let baseline_values = cohorts
        .iter()
        .find(|c| c.name == experiment.baseline)
        .map(|c| c.connections_per_second.clone())
        .unwrap_or_default();
    let per_cpu_second = |c: &CohortReport| -> Vec<f64> {
        c.cpu_us_per_connection.iter().map(|us| 1e6 / us).collect()
    };
    let baseline_efficiency = cohorts
        .iter()
        .find(|c| c.name == experiment.baseline)
        .map(per_cpu_second)
        .unwrap_or_default();
    for cohort in &mut cohorts {
        // Derived here, not kept with the cohort's summary: what is kept goes through
        // Postgres's JSON, whose numbers need not come back to the last bit.
        cohort.cpu_per_connection = summarize(&cohort.cpu_us_per_connection);
        cohort.nginx_cpu_per_connection = summarize(&cohort.nginx_cpu_us_per_connection);
        cohort.generator_cpu_per_connection = summarize(&cohort.generator_cpu_us_per_connection);
    }
    for cohort in cohorts.iter_mut().filter(|c| c.name != experiment.baseline) {
        cohort.comparison = compare(&baseline_values, &cohort.connections_per_second);
        cohort.efficiency_comparison = compare(&baseline_efficiency, &per_cpu_second(cohort));
    }
    let stopping = stopping_report(&experiment, &cohorts);
    ExperimentReport {
        experiment,
        cohorts,
        nodes,
        stopping,
    }
}

/// What the stopping rule of `repetitions: auto` says over every round stored; `None` for a
/// fixed number of repetitions.
fn stopping_report(experiment: &ExperimentRow, cohorts: &[CohortReport]) -> Option<StoppingReport> {
    let rule = experiment.stopping?;
    let (budget, threshold) = (rule.max_repetitions, rule.practical_change);
    let mut rounds = Rounds::of(rule.metric);
    for cohort in cohorts {
        let log_means = match rule.metric {
            JudgedMetric::ConnectionsPerSecond => &cohort.round_log_means,
            JudgedMetric::CpuPerConnection => &cohort.round_log_cpu_means,
        };
        for (round, log_mean) in log_means {
            rounds.add(&cohort.name, *round, log_mean.exp());
        }
    }
    let through = rounds.last_round();
    let names: Vec<String> = cohorts.iter().map(|c| c.name.clone()).collect();
    let judgements = rounds.judge(&names, &experiment.baseline, through, budget, threshold);
    let reason = if all_decided(&judgements) {
        format!("every cohort decided after {through} of at most {budget} rounds")
    } else if through >= budget {
        format!("the budget of {budget} rounds is spent")
    } else {
        format!("{through} of at most {budget} rounds so far")
    };
    Some(StoppingReport {
        rounds: through,
        budget,
        practical_change: threshold,
        cohorts: judgements
            .into_iter()
            .map(|(cohort, judgement)| CohortJudgement {
                text: judgement.describe(threshold),
                cohort,
                judgement,
            })
            .collect(),
        reason,
    })
}

/// A cohort's runs folded so far: everything its report is computed from. Adding a run is
/// constant work whatever came before, so the store keeps one per cohort, updated in the same
/// transaction as each run it writes, and a report needs no run read back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CohortAccumulator {
    /// The counts and lists, complete; the derived figures are filled in by `finish`.
    report: CohortReport,
    /// Runs folded in, succeeded or not.
    runs: u64,
    /// Self and total samples by symbol.
    symbol_samples: BTreeMap<String, (u64, u64)>,
    epoll: EpollCounts,
    /// Completed connections of the runs whose epoll calls were traced.
    epoll_connections: u64,
    /// Global epmutex acquisitions and the connections of the runs that counted them.
    epmutex: Option<(u64, u64)>,
    /// Window × CPUs of the runs whose lock contention was traced.
    cpu_time_ns: f64,
    lock_runs: u64,
    /// Per lock: its summary so far and wait by caller.
    locks: Vec<(LockSummary, BTreeMap<String, u64>)>,
    #[serde(with = "histogram_base64")]
    connect: Histogram<u64>,
    #[serde(with = "histogram_base64")]
    total: Histogram<u64>,
    busy: Vec<f64>,
    /// The nodes the runs ran on, first seen first.
    nodes: Vec<NodeRecord>,
    /// Per round: the sum of the succeeded runs' log conn/s and their count, for the stopping
    /// rule of `repetitions: auto`.
    #[serde(default)]
    rounds: BTreeMap<u32, (f64, u32)>,
    /// Per round, the sum of log CPU µs per connection and the runs behind it.
    #[serde(default)]
    cpu_rounds: BTreeMap<u32, (f64, u32)>,
    #[serde(default)]
    noise: NoiseTally,
}

impl CohortAccumulator {
    pub fn new(name: &str) -> Self {
        Self {
            report: CohortReport {
                name: name.to_string(),
                round_log_means: BTreeMap::new(),
                round_log_cpu_means: BTreeMap::new(),
                runs_succeeded: 0,
                runs_failed: 0,
                node_ids: Vec::new(),
                failures: Vec::new(),
                connections_per_second: Vec::new(),
                throughput_caveat: None,
                summary: None,
                comparison: None,
                connect_latency: Percentiles::default(),
                total_latency: Percentiles::default(),
                completed_connections: 0,
                failed_connections: 0,
                errors: BTreeMap::new(),
                nginx_accepts: 0,
                tcp_passive_opens: 0,
                mean_cpu_busy_share: 0.0,
                cpu_us_per_connection: Vec::new(),
                cpu_per_connection: None,
                nginx_cpu_us_per_connection: Vec::new(),
                nginx_cpu_per_connection: None,
                generator_cpu_us_per_connection: Vec::new(),
                generator_cpu_per_connection: None,
                efficiency_comparison: None,
                locks: Vec::new(),
                epoll_share_of_contention: None,
                lock_contention_unavailable: Vec::new(),
                lock_sources: Vec::new(),
                epoll_calls_per_thousand: None,
                cpu_symbols: Vec::new(),
                cpu_profile_samples: 0,
                cpu_profile_unavailable: Vec::new(),
                node_noise: None,
            },
            noise: NoiseTally::default(),
            runs: 0,
            symbol_samples: BTreeMap::new(),
            epoll: EpollCounts::default(),
            epoll_connections: 0,
            epmutex: None,
            cpu_time_ns: 0.0,
            lock_runs: 0,
            locks: Vec::new(),
            connect: latency_histogram(),
            total: latency_histogram(),
            busy: Vec::new(),
            nodes: Vec::new(),
            rounds: BTreeMap::new(),
            cpu_rounds: BTreeMap::new(),
        }
    }

    pub fn cohort(&self) -> &str {
        &self.report.name
    }

    /// How many runs were folded in.
    pub fn runs(&self) -> u64 {
        self.runs
    }

    /// The nodes the runs ran on, first seen first.
    pub fn nodes(&self) -> &[NodeRecord] {
        &self.nodes
    }

    pub fn add(&mut self, run: &RunRecord) -> Result<(), Error> {
        self.runs += 1;
        let id = run.node.id();
        if !self.nodes.iter().any(|n| n.id() == id) {
            self.nodes.push(run.node.clone());
        }
        let report = &mut self.report;
        if let RunOutcome::Failed { reason } = &run.outcome {
            report.runs_failed += 1;
            report.failures.push(format!(
                "repetition {} on {}: {reason}",
                run.repetition, run.node.hostname
            ));
            return Ok(());
        }
        report.runs_succeeded += 1;
        self.noise.add(&run.counters);
        report
            .connections_per_second
            .push(run.connections_per_second);
        // To a millionth of a µs: few enough digits to come back unchanged from Postgres's
        // JSON, where the report is kept.
        let per_connection_us = |seconds: Option<f64>| {
            seconds
                .filter(|s| s.is_finite() && run.completed_connections > 0)
                .map(|s| (s * 1e12 / run.completed_connections as f64).round() / 1e6)
        };
        report
            .nginx_cpu_us_per_connection
            .extend(per_connection_us(run.counters.nginx_cpu_seconds));
        report
            .generator_cpu_us_per_connection
            .extend(per_connection_us(run.counters.generator_cpu_seconds));
        let round = u32::try_from(run.repetition).unwrap_or(0);
        if let Some(per_connection) = run.cpu_us_per_connection() {
            report
                .cpu_us_per_connection
                .push((per_connection * 1e6).round() / 1e6);
            let sums = self.cpu_rounds.entry(round).or_default();
            sums.0 += per_connection.ln();
            sums.1 += 1;
        }
        if run.connections_per_second > 0.0 && run.connections_per_second.is_finite() {
            let sums = self.rounds.entry(round).or_default();
            sums.0 += run.connections_per_second.ln();
            sums.1 += 1;
        }
        if run.node.emulated() {
            report.throughput_caveat = Some(EMULATED_CAVEAT.into());
        }
        report.completed_connections += run.completed_connections.max(0) as u64;
        report.failed_connections += run.failed_connections.max(0) as u64;
        for (kind, count) in &run.errors {
            *report.errors.entry(kind.clone()).or_default() += count;
        }
        report.nginx_accepts += run.counters.nginx_accepts;
        report.tcp_passive_opens += run.counters.tcp_passive_opens;
        self.busy.push(run.counters.cpu_busy_share);
        if let Some(reason) = &run.lock_contention_unavailable
            && !report.lock_contention_unavailable.contains(reason)
        {
            report.lock_contention_unavailable.push(reason.clone());
        }
        if let Some(source) = &run.lock_source
            && !report.lock_sources.contains(source)
        {
            report.lock_sources.push(source.clone());
        }
        if let Some(reason) = &run.cpu_profile_unavailable
            && !report.cpu_profile_unavailable.contains(reason)
        {
            report.cpu_profile_unavailable.push(reason.clone());
        }
        if let Some(epoll) = run.counters.epoll {
            self.epoll.ctl_add += epoll.ctl_add;
            self.epoll.ctl_del += epoll.ctl_del;
            self.epoll.ctl_mod += epoll.ctl_mod;
            self.epoll.wait += epoll.wait;
            if let Some(taken) = epoll.epmutex_acquisitions {
                let (acquisitions, traced) = self.epmutex.get_or_insert((0, 0));
                *acquisitions += taken;
                *traced += run.completed_connections.max(0) as u64;
            }
            self.epoll_connections += run.completed_connections.max(0) as u64;
        }
        if let Some(profile) = &run.cpu_profile {
            report.cpu_profile_samples += profile.samples.max(0) as u64;
            for symbol in &profile.top_symbols {
                let entry = self
                    .symbol_samples
                    .entry(symbol.symbol.clone())
                    .or_default();
                entry.0 += symbol.self_samples.max(0) as u64;
                entry.1 += symbol.total_samples.max(0) as u64;
            }
        }
        if run.lock_contention_unavailable.is_none() {
            self.lock_runs += 1;
            self.cpu_time_ns += run.window_seconds * 1e9 * f64::from(run.node.logical_cpus.max(1));
        }
        for lock in &run.locks {
            let index = match self.locks.iter().position(|(l, _)| l.lock == lock.lock) {
                Some(index) => index,
                None => {
                    self.locks.push((
                        LockSummary {
                            lock: lock.lock.clone(),
                            lock_type: lock.lock_type.clone(),
                            top_caller: String::new(),
                            count: 0,
                            wait_ns: 0,
                            max_wait_ns: 0,
                            share_of_cpu_time: 0.0,
                            per_thousand_connections: 0.0,
                            epoll: false,
                        },
                        BTreeMap::new(),
                    ));
                    self.locks.len() - 1
                }
            };
            let (summary, callers) = &mut self.locks[index];
            summary.count += lock.count.max(0) as u64;
            summary.wait_ns += lock.wait_ns.max(0) as u64;
            summary.max_wait_ns = summary.max_wait_ns.max(lock.max_wait_ns.max(0) as u64);
            summary.epoll |= lock.epoll;
            *callers.entry(lock.caller.clone()).or_default() += lock.wait_ns.max(0) as u64;
        }
        add_encoded(&mut self.connect, &run.connect_histogram)?;
        add_encoded(&mut self.total, &run.total_histogram)?;
        Ok(())
    }

    /// The cohort's report (its comparison with the baseline is the experiment's to add).
    pub fn finish(self) -> CohortReport {
        let Self {
            mut report,
            symbol_samples,
            epoll,
            epoll_connections,
            epmutex,
            cpu_time_ns,
            lock_runs,
            mut locks,
            connect,
            total,
            busy,
            rounds,
            cpu_rounds,
            noise,
            nodes,
            ..
        } = self;
        report.node_noise = noise.finish(&nodes);
        // Twelve decimals (a part in 10^12 of the rate), few enough digits to come back
        // unchanged from Postgres's JSON, where the report is kept.
        let log_means = |rounds: BTreeMap<u32, (f64, u32)>| {
            rounds
                .into_iter()
                .map(|(round, (sum, n))| {
                    let mean = sum / f64::from(n.max(1));
                    (round, (mean * 1e12).round() / 1e12)
                })
                .collect()
        };
        report.round_log_means = log_means(rounds);
        report.round_log_cpu_means = log_means(cpu_rounds);
        report.summary = summarize(&report.connections_per_second);
        report.connect_latency = Percentiles::of(&connect);
        report.total_latency = Percentiles::of(&total);
        report.mean_cpu_busy_share = summarize(&busy).map(|s| s.mean).unwrap_or(0.0);
        let all_wait: u64 = locks.iter().map(|(l, _)| l.wait_ns).sum();
        let epoll_wait: u64 = locks
            .iter()
            .filter(|(l, _)| l.epoll)
            .map(|(l, _)| l.wait_ns)
            .sum();
        if lock_runs > 0 {
            report.epoll_share_of_contention =
                (all_wait > 0).then(|| epoll_wait as f64 / all_wait as f64);
        }
        for (summary, callers) in &mut locks {
            summary.top_caller = callers
                .iter()
                .max_by_key(|(_, wait)| **wait)
                .map(|(c, _)| c.clone())
                .unwrap_or_default();
            if cpu_time_ns > 0.0 {
                summary.share_of_cpu_time = summary.wait_ns as f64 / cpu_time_ns;
            }
            if report.completed_connections > 0 {
                summary.per_thousand_connections =
                    summary.count as f64 * 1000.0 / report.completed_connections as f64;
            }
        }
        locks.sort_by(|a, b| {
            b.0.wait_ns
                .cmp(&a.0.wait_ns)
                .then_with(|| a.0.lock.cmp(&b.0.lock))
        });
        report.locks = locks.into_iter().take(TOP_LOCKS).map(|(l, _)| l).collect();
        if epoll_connections > 0 {
            let per_thousand = |calls: u64| calls as f64 * 1000.0 / epoll_connections as f64;
            report.epoll_calls_per_thousand = Some(EpollRates {
                ctl_add: per_thousand(epoll.ctl_add),
                ctl_del: per_thousand(epoll.ctl_del),
                ctl_mod: per_thousand(epoll.ctl_mod),
                wait: per_thousand(epoll.wait),
                epmutex_acquisitions: epmutex
                    .filter(|(_, traced)| *traced > 0)
                    .map(|(taken, traced)| taken as f64 * 1000.0 / traced as f64),
            });
        }
        if report.cpu_profile_samples > 0 {
            let all = report.cpu_profile_samples as f64;
            let mut symbols: Vec<CpuSymbolShare> = symbol_samples
                .into_iter()
                .map(|(symbol, (self_samples, total_samples))| CpuSymbolShare {
                    symbol,
                    self_share: self_samples as f64 / all,
                    total_share: total_samples as f64 / all,
                })
                .collect();
            symbols.sort_by(|a, b| {
                b.self_share
                    .total_cmp(&a.self_share)
                    .then_with(|| a.symbol.cmp(&b.symbol))
            });
            symbols.truncate(TOP_CPU_SYMBOLS);
            report.cpu_symbols = symbols;
        }
        report
    }
}

/// A histogram in an accumulator's JSON: its HdrHistogram V2 encoding, base64.
mod histogram_base64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use hdrhistogram::Histogram;
    use loadlab_proto::histogram::{decode_histogram, encode_histogram};
    use serde::{Deserialize, Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(
        histogram: &Histogram<u64>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let bytes = encode_histogram(histogram).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Histogram<u64>, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes = STANDARD.decode(text).map_err(de::Error::custom)?;
        decode_histogram(&bytes).map_err(de::Error::custom)
    }
}

fn add_encoded(into: &mut Histogram<u64>, bytes: &[u8]) -> Result<(), Error> {
    let corrupt = |e: HistogramError| Error::Corrupt(e.to_string());
    into.add(decode_histogram(bytes).map_err(corrupt)?)
        .map_err(|e| corrupt(HistogramError::Merge(e)))
}
