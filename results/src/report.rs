//! The comparison report of one experiment, computed from its stored runs: per cohort, conn/s
//! over repetitions, merged latency percentiles, errors, the counter cross-check, and the
//! comparison with the baseline.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use loadlab_proto::histogram::{HistogramError, decode_histogram, latency_histogram};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::stats::{Comparison, Summary, compare, summarize};
use crate::store::{ExperimentRow, NodeRecord, RunOutcome, RunRecord};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Self {
        Self {
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            max_us: histogram.max(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohortReport {
    pub name: String,
    pub runs_succeeded: usize,
    pub runs_failed: usize,
    /// Why runs failed, one line each.
    pub failures: Vec<String>,
    /// Per-run conn/s of the succeeded runs, in schedule order.
    pub connections_per_second: Vec<f64>,
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentReport {
    pub experiment: ExperimentRow,
    pub cohorts: Vec<CohortReport>,
    pub nodes: Vec<NodeRecord>,
}

/// Builds the report of an experiment from its runs.
pub fn build_report(
    experiment: ExperimentRow,
    runs: &[RunRecord],
) -> Result<ExperimentReport, Error> {
    let mut cohorts: Vec<CohortReport> = Vec::new();
    for name in &experiment.cohorts {
        cohorts.push(cohort_report(
            name,
            runs.iter().filter(|r| &r.cohort == name),
        )?);
    }
    let baseline_values = cohorts
        .iter()
        .find(|c| c.name == experiment.baseline)
        .map(|c| c.connections_per_second.clone())
        .unwrap_or_default();
    for cohort in cohorts.iter_mut().filter(|c| c.name != experiment.baseline) {
        cohort.comparison = compare(&baseline_values, &cohort.connections_per_second);
    }
    let mut nodes: Vec<NodeRecord> = Vec::new();
    for run in runs {
        if !nodes.iter().any(|n| n.id() == run.node.id()) {
            nodes.push(run.node.clone());
        }
    }
    Ok(ExperimentReport {
        experiment,
        cohorts,
        nodes,
    })
}

fn cohort_report<'a>(
    name: &str,
    runs: impl Iterator<Item = &'a RunRecord>,
) -> Result<CohortReport, Error> {
    let mut report = CohortReport {
        name: name.to_string(),
        runs_succeeded: 0,
        runs_failed: 0,
        failures: Vec::new(),
        connections_per_second: Vec::new(),
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
    };
    let mut connect = latency_histogram();
    let mut total = latency_histogram();
    let mut busy = Vec::new();
    for run in runs {
        if let RunOutcome::Failed { reason } = &run.outcome {
            report.runs_failed += 1;
            report
                .failures
                .push(format!("repetition {}: {reason}", run.repetition));
            continue;
        }
        report.runs_succeeded += 1;
        report
            .connections_per_second
            .push(run.connections_per_second);
        report.completed_connections += run.completed_connections.max(0) as u64;
        report.failed_connections += run.failed_connections.max(0) as u64;
        for (kind, count) in &run.errors {
            *report.errors.entry(kind.clone()).or_default() += count;
        }
        report.nginx_accepts += run.counters.nginx_accepts;
        report.tcp_passive_opens += run.counters.tcp_passive_opens;
        busy.push(run.counters.cpu_busy_share);
        add_encoded(&mut connect, &run.connect_histogram)?;
        add_encoded(&mut total, &run.total_histogram)?;
    }
    report.summary = summarize(&report.connections_per_second);
    report.connect_latency = Percentiles::of(&connect);
    report.total_latency = Percentiles::of(&total);
    report.mean_cpu_busy_share = summarize(&busy).map(|s| s.mean).unwrap_or(0.0);
    Ok(report)
}

fn add_encoded(into: &mut Histogram<u64>, bytes: &[u8]) -> Result<(), Error> {
    let corrupt = |e: HistogramError| Error::Corrupt(e.to_string());
    into.add(decode_histogram(bytes).map_err(corrupt)?)
        .map_err(|e| corrupt(HistogramError::Merge(e)))
}
