//! `loadlab bench agent`: the same storm with the agent's capture on and off, alternating which
//! goes first, several rounds; prints the conn/s ratio on/off and the CPU the capture costs.
//! Each run is a whole `loadlab run` of a one-cohort experiment on this machine, stored in a
//! scratch database.

use anyhow::{Context, bail};
use loadlab_engine::spec::ExperimentBuilder;
use tokio::process::Command;

use super::bench_support::{measure_child, median, scratch_database_url, spread};
use crate::args::BenchAgentArgs;

/// One run as measured: its rate and the CPU the whole run used per second of its window.
#[derive(Debug, Clone, Copy)]
struct Round {
    per_second: f64,
    cpu_per_window_second: f64,
}

fn experiment(args: &BenchAgentArgs, capture: bool) -> String {
    let mut experiment = ExperimentBuilder::new(&format!(
        "bench-agent-{}",
        if capture { "on" } else { "off" }
    ))
    .set("target.nginx.workers", args.nginx_workers)
    .set("load.connections", args.connections)
    .set("load.warmup", "1s")
    .set("load.duration", args.duration.to_string())
    .set("repetitions", 1)
    .local_cohort("node");
    if capture && args.lock_contention {
        experiment = experiment.set("collect.lockContention", true);
    }
    if capture && args.cpu_profile_hz > 0 {
        experiment = experiment.set("collect.cpuProfile.frequencyHz", args.cpu_profile_hz);
    }
    experiment.yaml()
}

async fn run_once(
    file: &std::path::Path,
    database_url: &str,
    window_seconds: f64,
) -> anyhow::Result<Round> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["run", "--json"])
        .arg(file)
        .env("DATABASE_URL", database_url);
    let (out, measured) = measure_child(command).await?;
    let report: serde_json::Value =
        serde_json::from_str(&out).context("loadlab run printed no JSON report")?;
    let cohort = &report["cohorts"][0];
    for unavailable in ["lock_contention_unavailable", "cpu_profile_unavailable"] {
        if let Some(reason) = cohort[unavailable].as_array().and_then(|r| r.first()) {
            bail!("the capture was not collected, so there is nothing to compare: {reason}");
        }
    }
    let per_second = cohort["connections_per_second"][0]
        .as_f64()
        .context("the run measured no rate")?;
    Ok(Round {
        per_second,
        cpu_per_window_second: (measured.user_seconds + measured.system_seconds) / window_seconds,
    })
}

pub async fn run(args: BenchAgentArgs) -> anyhow::Result<()> {
    if args.rounds == 0 || (!args.lock_contention && args.cpu_profile_hz == 0) {
        bail!("bench agent needs at least one round and something to capture");
    }
    let url = scratch_database_url().await?;
    let dir = tempfile::tempdir()?;
    let (off_file, on_file) = (dir.path().join("off.yaml"), dir.path().join("on.yaml"));
    std::fs::write(&off_file, experiment(&args, false))?;
    std::fs::write(&on_file, experiment(&args, true))?;
    let window = args.duration.0.as_secs_f64();
    println!(
        "bench agent · {} rounds · {} each · {} connections · nginx workers {} · capture: {}{}",
        args.rounds,
        args.duration,
        args.connections,
        args.nginx_workers,
        if args.lock_contention {
            "lock contention "
        } else {
            ""
        },
        if args.cpu_profile_hz > 0 {
            format!("+ CPU profile at {} Hz", args.cpu_profile_hz)
        } else {
            String::new()
        }
    );
    let mut ratios = Vec::new();
    let mut extra_cpu = Vec::new();
    for round in 1..=args.rounds {
        // Alternate which goes first, so drift over the rounds hits both alike.
        let on_first = round % 2 == 0;
        let (first, second) = if on_first {
            (&on_file, &off_file)
        } else {
            (&off_file, &on_file)
        };
        let a = run_once(first, &url, window).await?;
        let b = run_once(second, &url, window).await?;
        let (on, off) = if on_first { (a, b) } else { (b, a) };
        let ratio = on.per_second / off.per_second;
        println!(
            "round {round}: off {:>9.0} conn/s, {:.2} CPU s/s · on {:>9.0} conn/s, {:.2} CPU s/s · ratio {ratio:.3}",
            off.per_second, off.cpu_per_window_second, on.per_second, on.cpu_per_window_second
        );
        ratios.push(ratio);
        extra_cpu.push(on.cpu_per_window_second - off.cpu_per_window_second);
    }
    let (min, median_ratio, max) = spread(&mut ratios);
    println!(
        "conn/s on/off: min {min:.3} · median {median_ratio:.3} · max {max:.3} (goal: median >= 0.98)"
    );
    println!(
        "CPU the capture adds (whole run with capture minus without, per second of window): median {:.3} CPU s/s",
        median(&mut extra_cpu)
    );
    Ok(())
}
