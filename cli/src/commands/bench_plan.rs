//! `loadlab bench plan`: how long planning takes on a large fleet (goal: a 1,000-node fleet
//! well under 100 ms), from node snapshots like the API server's.

use std::time::Instant;

use anyhow::Context;
use loadlab_controller::placement::{NodeView, place};
use loadlab_engine::parse_experiment;

use crate::args::BenchPlanArgs;

/// Four kernels and three hardware labels, some nodes NotReady or cordoned, as in a real lab.
fn fleet(size: usize) -> Vec<NodeView> {
    let kernels = [
        "6.1.0-47-cloud-amd64",
        "6.1.0-56-cloud-amd64",
        "6.12.57+deb12-cloud-amd64",
        "6.18.0-1-amd64",
    ];
    (0..size)
        .map(|i| NodeView {
            name: format!("node-{i:05}"),
            kernel_version: kernels[i % kernels.len()].to_string(),
            labels: [
                ("hw".to_string(), ["epyc", "xeon", "arm"][i % 3].to_string()),
                ("zone".to_string(), format!("z{}", i % 7)),
            ]
            .into(),
            ready: i % 29 != 0,
            unschedulable: i % 31 == 0,
            control_plane: i == 0,
        })
        .collect()
}

const EXPERIMENT: &str = r#"
apiVersion: loadlab.dev/v1alpha1
kind: Experiment
metadata: { name: bench }
spec:
  target: { nginx: {} }
  load: { connections: 64, duration: 10s, generators: 8 }
  cohorts:
    - { name: unpatched, kernel: "6.1.0-47-*", nodeSelector: { hw: epyc } }
    - { name: patched, kernel: "6.1.0-56-*" }
    - { name: trixie, kernel: "6.12.*+deb12-*" }
"#;

pub fn run(args: BenchPlanArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.nodes > 0 && args.rounds > 0,
        "--nodes and --rounds must be above 0"
    );
    let spec = parse_experiment(EXPERIMENT)
        .context("the benchmark's experiment")?
        .spec;
    let nodes = fleet(args.nodes);
    let mut times = Vec::with_capacity(args.rounds);
    let mut placed = 0;
    for _ in 0..args.rounds {
        let started = Instant::now();
        let placement = place(&spec, &nodes);
        times.push(started.elapsed());
        placed = placement
            .cohorts
            .iter()
            .map(|c| c.nodes.len())
            .sum::<usize>()
            + placement.generators.len();
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "planning {} nodes, 3 cohorts, 8 generators ({placed} placements), {} rounds:",
        args.nodes, args.rounds
    );
    println!(
        "  p50 {:.3} ms   p99 {:.3} ms   max {:.3} ms   (goal: under 100 ms)",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    );
    Ok(())
}
