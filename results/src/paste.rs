//! The comparison as plain text to paste into a commit message or a list reply: per cohort
//! against the baseline, each metric as base, ±%stddev, %change, ±%stddev, candidate, in the
//! columns kernel developers read in performance reports, then the evidence (epmutex per 1,000
//! connections, lock wait and CPU symbol shares in percentage points). At most 80 columns.

use std::fmt::Write as _;

use crate::noise::NoiseFlag;
use crate::report::{CohortReport, ExperimentReport};

/// Lines are cut to this, so the text survives mail clients and commit message conventions.
const WIDTH: usize = 80;
/// Locks and CPU symbols shown per comparison: the largest on either side.
const TOP: usize = 3;

pub fn report_text(report: &ExperimentReport) -> String {
    let mut out = String::new();
    let experiment = &report.experiment;
    let short_id = experiment.id.to_string()[..8].to_string();
    line(
        &mut out,
        format!(
            "loadlab · {} ({short_id}) · baseline {} · {}",
            experiment.name, experiment.baseline, experiment.status
        ),
    );
    let Some(base) = report
        .cohorts
        .iter()
        .find(|c| c.name == experiment.baseline)
    else {
        line(&mut out, "the baseline has no report".into());
        return out;
    };
    for cohort in report.cohorts.iter().filter(|c| c.name != base.name) {
        out.push('\n');
        comparison(&mut out, report, base, cohort);
    }
    out
}

fn comparison(
    out: &mut String,
    report: &ExperimentReport,
    base: &CohortReport,
    cohort: &CohortReport,
) {
    for piece in wrapped(
        &format!(
            "{} ({}) vs {} ({})",
            cohort.name,
            described(report, cohort),
            base.name,
            described(report, base)
        ),
        WIDTH,
    ) {
        line(out, piece);
    }
    row(
        out,
        "base",
        "%stddev",
        "%change",
        "%stddev",
        &cohort.name.chars().take(9).collect::<String>(),
        "metric",
    );
    let (Some(b), Some(c)) = (base.summary, cohort.summary) else {
        line(
            out,
            "  no succeeded run on one side: nothing to compare".into(),
        );
        return;
    };
    let change = cohort
        .comparison
        .as_ref()
        .map_or(c.mean / b.mean - 1.0, |comparison| comparison.ratio - 1.0);
    row(
        out,
        &format!("{:.0}", b.mean),
        &format!("±{:.0}%", b.cv * 100.0),
        &percent(change),
        &format!("±{:.0}%", c.cv * 100.0),
        &format!("{:.0}", c.mean),
        "conn/s",
    );
    for (name, of) in [("p50", 0usize), ("p99", 1)] {
        let pick = |r: &CohortReport| {
            let p = &r.total_latency;
            [p.p50_us, p.p99_us][of] as f64 / 1000.0
        };
        let (before, after) = (pick(base), pick(cohort));
        if before > 0.0 {
            row(
                out,
                &format!("{before:.2}"),
                "",
                &percent(after / before - 1.0),
                "",
                &format!("{after:.2}"),
                &format!("latency.{name}.ms"),
            );
        }
    }
    let epmutex = |r: &CohortReport| {
        r.epoll_calls_per_thousand
            .and_then(|e| e.epmutex_acquisitions)
    };
    if let (Some(before), Some(after)) = (base.cpu_per_connection, cohort.cpu_per_connection) {
        row(
            out,
            &format!("{:.1}", before.mean),
            &format!("±{:.0}%", before.cv * 100.0),
            &percent(after.mean / before.mean - 1.0),
            &format!("±{:.0}%", after.cv * 100.0),
            &format!("{:.1}", after.mean),
            "cpu.us_per_connection",
        );
    }
    if let (Some(before), Some(after)) = (epmutex(base), epmutex(cohort)) {
        let change = if before > 0.0 {
            percent(after / before - 1.0)
        } else {
            String::new()
        };
        row(
            out,
            &format!("{before:.0}"),
            "",
            &change,
            "",
            &format!("{after:.0}"),
            "epmutex.per_1k_connections",
        );
    }
    shares(
        out,
        "lock",
        |r| {
            r.locks
                .iter()
                .map(|l| (lock_name(&l.lock, &l.top_caller), l.share_of_cpu_time))
                .collect()
        },
        base,
        cohort,
    );
    shares(
        out,
        "cpu",
        |r| {
            r.cpu_symbols
                .iter()
                .map(|s| (s.symbol.clone(), s.self_share))
                .collect()
        },
        base,
        cohort,
    );
    let judged = report.stopping.as_ref().and_then(|stopping| {
        stopping
            .cohorts
            .iter()
            .find(|c| c.cohort == cohort.name)
            .map(|c| format!("{} ({})", c.text, stopping.reason))
    });
    if let Some(judged) = judged {
        for piece in wrapped(&format!("repetitions auto: {judged}"), WIDTH - 12) {
            line(out, format!("{:12}{piece}", ""));
        }
    }
    if let Some(comparison) = &cohort.comparison {
        let interval = comparison.ci95.map_or_else(String::new, |(low, high)| {
            format!(", 95% CI {} .. {}", percent(low - 1.0), percent(high - 1.0))
        });
        line(
            out,
            format!("{:12}conn/s: {}{interval}", "", comparison.verdict.as_str()),
        );
        if let Some(detectable) = comparison.min_detectable_change {
            let mut said = format!(
                "these runs detect a change of ±{:.1}% (80% of the time)",
                detectable * 100.0
            );
            if let Some(runs) = comparison.runs_for_practical_change {
                said.push_str(&format!("; about {runs} runs per cohort would detect 5%"));
            }
            for piece in wrapped(&said, WIDTH - 12) {
                line(out, format!("{:12}{piece}", ""));
            }
        }
    }
    line(
        out,
        format!(
            "{:12}lock: wait, cpu: self samples, as shares of all CPU time (pp)",
            ""
        ),
    );
    for (side, report) in [("base", base), (cohort.name.as_str(), cohort)] {
        let flags: Vec<String> = report
            .node_noise
            .iter()
            .flat_map(|noise| noise.flags.iter().map(NoiseFlag::describe))
            .collect();
        if !flags.is_empty() {
            let said = format!("noise ({side}): {}", flags.join("; "));
            for piece in wrapped(&said, WIDTH - 12) {
                line(out, format!("{:12}{piece}", ""));
            }
        }
    }
    if let Some(caveat) = cohort
        .throughput_caveat
        .as_ref()
        .or(base.throughput_caveat.as_ref())
    {
        for piece in wrapped(&format!("note: {caveat}"), WIDTH - 12) {
            line(out, format!("{:12}{piece}", ""));
        }
    }
}

/// The kernels and node count behind a cohort, e.g. `6.1.0-47-cloud-amd64, 2 nodes`.
fn described(report: &ExperimentReport, cohort: &CohortReport) -> String {
    let mut kernels: Vec<&str> = report
        .nodes
        .iter()
        .filter(|n| cohort.node_ids.contains(&n.id()))
        .map(|n| n.kernel_release.as_str())
        .collect();
    kernels.sort_unstable();
    kernels.dedup();
    let nodes = cohort.node_ids.len();
    let runs = cohort.runs_succeeded;
    format!(
        "{}, {nodes} node{}, {runs} run{}",
        if kernels.is_empty() {
            "no runs".to_string()
        } else {
            kernels.join(" ")
        },
        if nodes == 1 { "" } else { "s" },
        if runs == 1 { "" } else { "s" }
    )
}

/// The largest shares on either side, each side's as a percentage and the change in points.
fn shares(
    out: &mut String,
    what: &str,
    of: impl Fn(&CohortReport) -> Vec<(String, f64)>,
    base: &CohortReport,
    cohort: &CohortReport,
) {
    let (before, after) = (of(base), of(cohort));
    let mut names: Vec<(String, f64)> = Vec::new();
    for (name, share) in before.iter().chain(&after) {
        match names.iter_mut().find(|(n, _)| n == name) {
            Some((_, largest)) => *largest = largest.max(*share),
            None => names.push((name.clone(), *share)),
        }
    }
    names.sort_by(|a, b| b.1.total_cmp(&a.1));
    names.truncate(TOP);
    let share_of = |side: &[(String, f64)], name: &str| {
        side.iter()
            .find(|(n, _)| n == name)
            .map_or(0.0, |(_, s)| *s)
    };
    for (name, _) in names {
        let (b, c) = (share_of(&before, &name), share_of(&after, &name));
        row(
            out,
            &format!("{:.1}%", b * 100.0),
            "",
            &format!("{:+.1}pp", (c - b) * 100.0),
            "",
            &format!("{:.1}%", c * 100.0),
            &format!("{what}.{name}"),
        );
    }
}

/// Columns: base, its spread, the change, the cohort's spread, the cohort's value, the metric.
/// A metric too long for what is left of the line is cut with `…`.
fn row(
    out: &mut String,
    base: &str,
    base_sd: &str,
    change: &str,
    sd: &str,
    value: &str,
    label: &str,
) {
    let numbers = format!("{base:>8} {base_sd:>7} {change:>8} {sd:>7} {value:>9} ");
    let room = WIDTH - numbers.chars().count();
    let label = if label.chars().count() > room {
        let kept: String = label.chars().take(room - 1).collect();
        format!("{kept}…")
    } else {
        label.to_string()
    };
    line(out, format!("{numbers}{label}"));
}

/// `text` in pieces of at most `width` characters, broken at spaces.
fn wrapped(text: &str, width: usize) -> Vec<String> {
    let mut pieces = vec![String::new()];
    for word in text.split_whitespace() {
        let last = pieces.last_mut().expect("never empty");
        if !last.is_empty() && last.chars().count() + 1 + word.chars().count() > width {
            pieces.push(word.to_string());
        } else {
            if !last.is_empty() {
                last.push(' ');
            }
            last.push_str(word);
        }
    }
    pieces
}

/// A lock and the caller with the most wait on it, `epmutex<-eventpoll_release_file`; a lock
/// the kernel names by where it was taken (`spinlock in __schedule`) already says it.
fn lock_name(lock: &str, caller: &str) -> String {
    if caller.is_empty() || lock.contains(" in ") {
        lock.to_string()
    } else {
        format!("{lock}<-{caller}")
    }
}

fn percent(change: f64) -> String {
    format!("{:+.1}%", change * 100.0)
}

/// Appends `text` cut to `WIDTH` characters.
fn line(out: &mut String, text: String) {
    let cut: String = text.chars().take(WIDTH).collect();
    let _ = writeln!(out, "{}", cut.trim_end());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ExperimentRow;
    use crate::report::{CohortAccumulator, assemble_finished};

    fn cohort(name: &str, rates: &[f64]) -> CohortReport {
        let mut report = CohortAccumulator::new(name).finish();
        report.connections_per_second = rates.to_vec();
        report.runs_succeeded = rates.len();
        report.summary = crate::stats::summarize(rates);
        report.total_latency.p50_us = 1_000;
        report.total_latency.p99_us = 5_000;
        report
    }

    /// A finished experiment of two cohorts, the first the baseline.
    fn experiment(name: &str, [baseline, other]: [&str; 2]) -> ExperimentRow {
        ExperimentRow {
            id: uuid::Uuid::nil(),
            name: name.into(),
            baseline: baseline.into(),
            cohorts: vec![baseline.into(), other.into()],
            status: "completed".into(),
            created_at: chrono::Utc::now(),
            finished_at: None,
            planned_runs: Some(6),
            revision: 0,
            stopping: None,
        }
    }

    #[test]
    fn the_text_fits_80_columns_and_carries_change_spread_and_verdict() {
        let experiment = experiment("epoll-refcount", ["unpatched", "patched"]);
        let mut patched = cohort("patched", &[16_000.0, 16_200.0, 15_900.0]);
        patched.total_latency.p99_us = 3_000;
        let report = assemble_finished(
            experiment,
            vec![
                (
                    Vec::new(),
                    cohort("unpatched", &[10_000.0, 10_100.0, 9_900.0]),
                ),
                (Vec::new(), patched),
            ],
        );
        let text = report_text(&report);
        assert!(text.lines().all(|l| l.chars().count() <= WIDTH), "{text}");
        let conn = text.lines().find(|l| l.ends_with("conn/s")).unwrap();
        assert!(conn.contains("10000") && conn.contains("16033"), "{conn}");
        assert!(conn.contains("+60.3%"), "{conn}");
        assert!(text.contains("conn/s: faster, 95% CI +"), "{text}");
        let p99 = text
            .lines()
            .find(|l| l.ends_with("latency.p99.ms"))
            .unwrap();
        assert!(p99.contains("-40.0%"), "{p99}");
        assert!(!text.contains("noise"), "no flags, no noise line: {text}");
    }

    #[test]
    fn flagged_noise_is_pasted_with_its_size() {
        let experiment = experiment("local", ["one", "two"]);
        let mut two = cohort("two", &[9_000.0, 9_100.0, 8_900.0]);
        two.node_noise = Some(crate::noise::NodeNoise {
            other_work_cpus: 0.2,
            runs: 3,
            flags: vec![
                NoiseFlag::OtherWork { cpus: 0.2 },
                NoiseFlag::Unpinned {
                    reason: "2 cores: below 4, where pinning starts".into(),
                },
            ],
            ..Default::default()
        });
        let report = assemble_finished(
            experiment,
            vec![
                (Vec::new(), cohort("one", &[10_000.0, 10_100.0, 9_900.0])),
                (Vec::new(), two),
            ],
        );
        let text = report_text(&report);
        assert!(text.lines().all(|l| l.chars().count() <= WIDTH), "{text}");
        assert!(
            text.contains("noise (two): other work took 0.20 CPU; nginx shared CPUs"),
            "{text}"
        );
        assert!(!text.contains("noise (base)"), "{text}");
    }
}
