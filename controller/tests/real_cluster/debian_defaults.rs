//! The agent with the chart's default capabilities (CAP_PERFMON and CAP_BPF, not
//! CAP_SYS_ADMIN) on a Debian kernel at Debian's default `kernel.perf_event_paranoid` (3):
//! conn/s is measured, and the status says why there is no CPU evidence and what to set.
//!
//! By hand (`bash scripts/fault-tests.sh debian_defaults::`), not in `scripts/test.sh`: in two
//! of the last seven runs of this check (then the seed test's last phase; one on CI, one on
//! this machine, 2026-12-05) the emulated 6.1.0-47 guest stopped transmitting during the
//! warm-up storm, for good (its console: `virtio_net ... NETDEV WATCHDOG: CPU: 1: transmit
//! queue 0 timed out`, every 5 s for minutes), so the node left the network and the run failed
//! with "tcp connect error". The cause is not found yet; the lock and CPU evidence of the seed
//! test never met it, nor did this check on its own (seven runs in a row, 2026-12-05), ten
//! rounds of the soak below on one guest (325 s) or six with both kernels' guests (44-49 s each).

use std::time::{Duration, Instant};

use loadlab_controller::Experiment;
use loadlab_controller::status::Phase;

use crate::harness::{KernelNode, Release, condition, finished, repo};
use crate::kernel_seed::EXAMPLE;

/// Applies the example with one repetition, named `name`, cut to its unpatched cohort unless
/// `patched` is the guest for the other, and waits until it has succeeded; on anything else,
/// says why, with the guests' consoles.
async fn run_example(
    release: &Release,
    unpatched: &KernelNode,
    patched: Option<&KernelNode>,
    name: &str,
) -> Experiment {
    let mut manifest = std::fs::read_to_string(repo().join(EXAMPLE))
        .unwrap()
        .replace(
            "name: epoll-refcount-kernel-nodes",
            &format!("name: {name}"),
        )
        .replace("repetitions: 2", "repetitions: 1");
    if patched.is_none() {
        manifest = manifest.replace("    - { name: patched, kernel: \"6.1.0-56-*\" }\n", "");
    }
    assert!(
        manifest.contains(&format!("name: {name}"))
            && manifest.contains("6.1.0-56-*") == patched.is_some(),
        "{manifest}"
    );
    let file = std::env::temp_dir().join(format!("{name}.yaml"));
    std::fs::write(&file, manifest).unwrap();
    release.kubectl(&["apply", "-f", file.to_str().unwrap()]);
    let measured = release
        .wait_experiment(name, Duration::from_secs(900), "finished", finished)
        .await;
    let status = measured.status.as_ref().unwrap();
    assert_eq!(
        status.phase,
        Phase::Succeeded,
        "{name}: {status:?}\n{}{}{}",
        release.diagnose(),
        unpatched.console_tail(),
        patched.map(KernelNode::console_tail).unwrap_or_default()
    );
    measured
}

#[tokio::test]
#[ignore = "needs cluster, by hand"]
async fn on_debian_defaults_the_status_names_perf_event_paranoid_and_what_to_set() {
    let began = Instant::now();
    let node = KernelNode::add("kernel-47", "linux-image-6.1.0-47-cloud-amd64-unsigned");
    let release = Release::install("loadlab-debian-defaults", &["agent.perfEvents=perfmon"]).await;
    let measured = run_example(&release, &node, None, "debian-default").await;
    let status = measured.status.as_ref().unwrap();
    let evidence = condition(&measured, "EvidenceCollected")
        .unwrap_or_else(|| panic!("no EvidenceCollected condition: {status:?}"));
    assert_eq!(evidence.status, "False", "{evidence:?}");
    assert!(
        evidence.message.contains("perf_event_paranoid") && evidence.message.contains("sysAdmin"),
        "{evidence:?}"
    );
    eprintln!(
        "on Debian's default without CAP_SYS_ADMIN: {}",
        evidence.message
    );
    drop(release);
    drop(node);
    eprintln!(
        "the Debian-defaults check took {:.0} s",
        began.elapsed().as_secs_f64()
    );
}

/// The same experiment again and again on one guest (`LOADLAB_SOAK_ROUNDS`, 8 unless set):
/// where the transmit stall above has been met, a guest that had already carried storms. With
/// `LOADLAB_SOAK_BOTH_KERNELS=1`, a 6.1.0-56 guest beside it runs the patched cohort too, as in
/// the seed test, where both stalls came: two emulated guests on this machine's two cores.
#[tokio::test]
#[ignore = "needs cluster, by hand"]
async fn a_kernel_node_keeps_its_network_over_many_experiments() {
    let rounds: u32 = std::env::var("LOADLAB_SOAK_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(8);
    let node = KernelNode::add("kernel-47", "linux-image-6.1.0-47-cloud-amd64-unsigned");
    let patched = (std::env::var("LOADLAB_SOAK_BOTH_KERNELS").as_deref() == Ok("1"))
        .then(|| KernelNode::add("kernel-56", "linux-image-6.1.0-56-cloud-amd64-unsigned"));
    let release = Release::install("loadlab-soak", &["agent.perfEvents=perfmon"]).await;
    for round in 1..=rounds {
        let began = Instant::now();
        run_example(&release, &node, patched.as_ref(), &format!("soak-{round}")).await;
        eprintln!(
            "round {round} of {rounds}: succeeded in {:.0} s",
            began.elapsed().as_secs_f64()
        );
    }
}
