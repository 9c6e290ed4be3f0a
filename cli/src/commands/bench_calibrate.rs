//! `loadlab bench calibrate`: does `repetitions: auto` keep its word on real storms? Many A/A
//! experiments (the same nginx twice, as two cohorts) count how often the stopping rule calls a
//! change where there is none, which must stay at or under its stated error rate; A/B
//! experiments with a real difference (two nginx workers against one) count how many rounds it
//! takes to say so. Each experiment is a whole `loadlab run` on this machine, stored in a
//! scratch database.

use anyhow::{Context, bail};
use loadlab_engine::spec::ExperimentBuilder;
use loadlab_results::sequential::ALPHA;
use serde_json::json;
use tokio::process::Command;

use super::bench_support::{median, scratch_database_url};
use crate::args::BenchCalibrateArgs;

/// How one experiment's candidate cohort ended.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    decision: String,
    rounds: u64,
    text: String,
}

fn experiment(args: &BenchCalibrateArgs, name: &str, candidate_workers: u32) -> String {
    ExperimentBuilder::new(name)
        .set("load.connections", args.connections)
        .set("load.warmup", args.warmup.to_string())
        .set("load.duration", args.duration.to_string())
        .local_cohort("a")
        .cohort(json!({
            "name": "b",
            "local": true,
            "target": { "nginx": { "workers": candidate_workers } },
        }))
        .set("repetitions", "auto")
        .set("stopping.maxRepetitions", args.max_rounds)
        .set(
            "stopping.practicalChangePercent",
            args.practical_change_percent,
        )
        .set("baseline", "a")
        .yaml()
}

async fn run_once(file: &std::path::Path, database_url: &str) -> anyhow::Result<Outcome> {
    let output = Command::new(std::env::current_exe()?)
        .args(["run", "--json"])
        .arg(file)
        .env("DATABASE_URL", database_url)
        .output()
        .await?;
    if !output.status.success() {
        bail!(
            "loadlab run failed: {}",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("loadlab run printed no JSON report")?;
    let stopping = &report["stopping"];
    let judged = stopping["cohorts"]
        .as_array()
        .and_then(|cohorts| cohorts.iter().find(|c| c["cohort"] == "b"))
        .context("the report judged no candidate cohort")?;
    Ok(Outcome {
        decision: judged["judgement"]["decision"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        rounds: stopping["rounds"].as_u64().unwrap_or(0),
        text: judged["text"].as_str().unwrap_or("").to_string(),
    })
}

fn changed(outcome: &Outcome) -> bool {
    matches!(outcome.decision.as_str(), "faster" | "slower")
}

pub async fn run(args: BenchCalibrateArgs) -> anyhow::Result<()> {
    if args.same == 0 && args.different == 0 {
        bail!("bench calibrate needs at least one experiment (--same or --different)");
    }
    let url = scratch_database_url().await?;
    let dir = tempfile::tempdir()?;
    let (same_file, different_file) = (dir.path().join("aa.yaml"), dir.path().join("ab.yaml"));
    std::fs::write(&same_file, experiment(&args, "calibrate-aa", 1))?;
    std::fs::write(&different_file, experiment(&args, "calibrate-ab", 2))?;
    println!(
        "bench calibrate · {} A/A and {} A/B experiments · repetitions: auto, at most {} rounds, practical change ±{}% · {} connections · {} + {} warm-up per run · stated error rate {:.0}%",
        args.same,
        args.different,
        args.max_rounds,
        args.practical_change_percent,
        args.connections,
        args.duration,
        args.warmup,
        ALPHA * 100.0
    );
    let mut same = Vec::new();
    let mut different = Vec::new();
    // Alternated, so drift on the machine over the hour touches both kinds alike.
    let total = args.same.max(args.different);
    for i in 0..total {
        if i < args.same {
            let outcome = run_once(&same_file, &url).await?;
            println!(
                "A/A {:>3}: {:<15} after {:>2} rounds · {}",
                i + 1,
                outcome.decision,
                outcome.rounds,
                outcome.text
            );
            same.push(outcome);
        }
        if i < args.different {
            let outcome = run_once(&different_file, &url).await?;
            println!(
                "A/B {:>3}: {:<15} after {:>2} rounds · {}",
                i + 1,
                outcome.decision,
                outcome.rounds,
                outcome.text
            );
            different.push(outcome);
        }
    }
    if !same.is_empty() {
        let false_changes = same.iter().filter(|o| changed(o)).count();
        let equivalent = same
            .iter()
            .filter(|o| o.decision == "no_large_change")
            .count();
        let (low, high) = wilson_interval(false_changes, same.len());
        println!(
            "A/A: {false_changes} of {} called a change ({:.1}%, 95% interval {:.1}%-{:.1}%; stated at most {:.0}%) · {equivalent} equivalent · {} undecided at the budget · median rounds {}",
            same.len(),
            100.0 * false_changes as f64 / same.len() as f64,
            100.0 * low,
            100.0 * high,
            ALPHA * 100.0,
            same.len() - false_changes - equivalent,
            median(&mut same.iter().map(|o| o.rounds as f64).collect::<Vec<_>>())
        );
    }
    if !different.is_empty() {
        let found = different.iter().filter(|o| changed(o)).count();
        let mut rounds: Vec<f64> = different
            .iter()
            .filter(|o| changed(o))
            .map(|o| o.rounds as f64)
            .collect();
        println!(
            "A/B: {found} of {} called the change · median rounds to decide {}",
            different.len(),
            if rounds.is_empty() {
                "–".to_string()
            } else {
                format!("{}", median(&mut rounds))
            }
        );
    }
    Ok(())
}

/// The Wilson score interval (95%) of a proportion: honest for few trials and for zero.
fn wilson_interval(successes: usize, trials: usize) -> (f64, f64) {
    if trials == 0 {
        return (0.0, 1.0);
    }
    let (n, z) = (trials as f64, 1.959_963_985);
    let p = successes as f64 / n;
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z / (1.0 + z * z / n) * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wilson_interval_matches_its_reference_values() {
        // R: prop.test-free Wilson bounds, e.g. binom::binom.wilson(0, 20) = [0, 0.1611].
        let (low, high) = wilson_interval(0, 20);
        assert_eq!(low, 0.0);
        assert!((high - 0.1611).abs() < 1e-3, "{high}");
        let (low, high) = wilson_interval(1, 20);
        assert!(
            (low - 0.0089).abs() < 1e-3 && (high - 0.2361).abs() < 1e-3,
            "{low} {high}"
        );
        assert_eq!(wilson_interval(0, 0), (0.0, 1.0));
    }
}
