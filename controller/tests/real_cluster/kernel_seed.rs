//! The experiment loadlab exists for, as a user runs it on this machine (README: "Compare two
//! kernels on a cluster on this machine"): Debian's 6.1.0-47 (without the epoll refcount patch)
//! and 6.1.0-56 (with it) as real nodes, the chart installed with the agent allowed perf events
//! on Debian's defaults, `examples/epoll-refcount-kernel-nodes.yaml` applied. Then a guest is
//! powered off in the middle of an experiment. The same kernel with the chart's default
//! capabilities is `debian_defaults.rs`, by hand.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use loadlab_controller::Experiment;
use loadlab_controller::status::Phase;
use serde_json::Value;

use crate::harness::{KernelNode, Release, cluster_script, finished, repo};

pub(crate) const EXAMPLE: &str = "examples/epoll-refcount-kernel-nodes.yaml";
const NAME: &str = "epoll-refcount-kernel-nodes";

fn cohort<'a>(comparison: &'a Value, name: &str) -> &'a Value {
    comparison["cohorts"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no cohort {name}: {comparison}"))
}

fn condition<'a>(
    status: &'a loadlab_controller::status::ExperimentStatus,
    type_: &str,
) -> &'a loadlab_controller::status::Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition: {status:?}"))
}

#[tokio::test]
#[ignore = "needs cluster"]
async fn the_seed_experiment_compares_two_debian_kernels_on_real_nodes() {
    let began = Instant::now();
    let unpatched = KernelNode::add("kernel-47", "linux-image-6.1.0-47-cloud-amd64-unsigned");
    let patched = KernelNode::add("kernel-56", "linux-image-6.1.0-56-cloud-amd64-unsigned");
    eprintln!(
        "two kernel nodes Ready in {:.0} s",
        began.elapsed().as_secs_f64()
    );
    let release = Release::install("loadlab-kernels", &["agent.perfEvents=sysAdmin"]).await;
    let example = repo().join(EXAMPLE);
    release.kubectl(&["apply", "-f", example.to_str().unwrap()]);
    let applied = Instant::now();
    let done = release
        .wait_experiment(NAME, Duration::from_secs(1200), "finished", finished)
        .await;
    eprintln!(
        "the seed experiment finished {:.0} s after kubectl apply",
        applied.elapsed().as_secs_f64()
    );
    let status = done.status.clone().unwrap();
    assert_eq!(
        status.phase,
        Phase::Succeeded,
        "{status:?}\n{}",
        release.diagnose()
    );
    assert_eq!((status.runs_stored, status.runs_planned), (4, 4));
    let id = status.results_id.clone().unwrap();

    let comparison = release.get_json(&format!("/api/v1/experiments/{id}/comparison"));
    // Each cohort ran on its kernel, and each node says whether it carries the patch.
    let nodes = comparison["nodes"].as_array().unwrap();
    let facts = |release: &str| {
        nodes
            .iter()
            .find(|n| n["kernel_release"] == release)
            .unwrap_or_else(|| panic!("no node runs {release}: {nodes:?}"))["facts"]
            .clone()
    };
    for (kernel, patch) in [
        ("6.1.0-47-cloud-amd64", "absent"),
        ("6.1.0-56-cloud-amd64", "present"),
    ] {
        let facts = facts(kernel);
        assert_eq!(facts["epoll_refcount_patch"], patch, "{kernel}: {facts}");
        assert_eq!(facts["virtualization"], "emulated (QEMU TCG)", "{facts}");
    }
    // The patch's whole point: every close took the global epmutex; now none does.
    let without = cohort(&comparison, "unpatched");
    let with = cohort(&comparison, "patched");
    let per_thousand = |c: &Value| c["epoll_calls_per_thousand"]["epmutex_acquisitions"].as_f64();
    let before = per_thousand(without).unwrap();
    assert!((900.0..=1100.0).contains(&before), "{without}");
    assert_eq!(per_thousand(with), Some(0.0), "{with}");
    // Where the unpatched kernel waited: the global mutex, taken when a file is released.
    let locks = without["locks"].as_array().unwrap();
    let epmutex = locks
        .iter()
        .find(|l| l["lock"] == "epmutex")
        .unwrap_or_else(|| panic!("no contended epmutex on 6.1.0-47: {locks:?}"));
    assert!(
        epmutex["top_caller"]
            .as_str()
            .unwrap()
            .starts_with("eventpoll_release_file ← __fput"),
        "{epmutex}"
    );
    assert!(
        with["locks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["lock"] != "epmutex")
    );
    assert!(with["comparison"]["ratio"].as_f64().is_some(), "{with}");
    // Rates measured under emulation say so, wherever they are shown.
    let text = String::from_utf8(
        release
            .get(&format!("/api/v1/experiments/{id}/comparison?format=text"))
            .1,
    )
    .unwrap();
    assert!(text.contains("epmutex.per_1k_connections"), "{text}");
    assert!(text.contains("emulated CPUs"), "{text}");
    for cohort in ["unpatched", "patched"] {
        let (status, svg) = release.get(&format!(
            "/api/v1/experiments/{id}/flamegraph?cohort={cohort}"
        ));
        assert_eq!(status, 200, "{cohort}");
        assert!(String::from_utf8_lossy(&svg).contains("<svg"), "{cohort}");
    }
    // The fleet question, across experiments: 6.1.0-56 against 6.1.0-47.
    let fleet = release.get_json("/api/v1/kernels/compare?a=6.1.0-47*&b=6.1.0-56*");
    let group = fleet["groups"]
        .as_array()
        .and_then(|g| {
            g.iter()
                .find(|g| g["a"]["runs"].as_u64() >= Some(2) && g["b"]["runs"].as_u64() >= Some(2))
        })
        .unwrap_or_else(|| panic!("no group with both kernels: {fleet}"));
    assert_eq!(
        group["a"]["kernels"],
        serde_json::json!(["6.1.0-47-cloud-amd64"])
    );
    assert_eq!(
        group["b"]["kernels"],
        serde_json::json!(["6.1.0-56-cloud-amd64"])
    );
    assert!(group["caveat"].as_str().is_some(), "{group}");
    eprintln!(
        "epmutex per 1,000 connections: 6.1.0-47 {before:.1}, 6.1.0-56 0; contended on 6.1.0-47: {epmutex}"
    );

    // A guest powered off while an experiment runs on it.
    let cut = NAME.replace("kernel-nodes", "power-cut");
    let manifest = std::fs::read_to_string(&example)
        .unwrap()
        .replace(&format!("name: {NAME}"), &format!("name: {cut}"))
        .replace("repetitions: 2", "repetitions: 4");
    assert!(manifest.contains(&format!("name: {cut}")));
    let file = std::env::temp_dir().join(format!("{cut}.yaml"));
    std::fs::write(&file, manifest).unwrap();
    release.kubectl(&["apply", "-f", file.to_str().unwrap()]);
    release
        .wait_experiment(
            &cut,
            Duration::from_secs(900),
            "one run stored",
            |e: Option<&Experiment>| {
                e.and_then(|e| e.status.as_ref())
                    .is_some_and(|s| s.runs_stored >= 1 || s.phase.is_finished())
            },
        )
        .await;
    let (ok, said) = cluster_script(&["node", "stop", &patched.name]);
    assert!(ok, "{said}");
    let cut_off = Instant::now();
    let ended = release
        .wait_experiment(&cut, Duration::from_secs(900), "finished", finished)
        .await;
    eprintln!(
        "the experiment ended {:.0} s after the guest was powered off",
        cut_off.elapsed().as_secs_f64()
    );
    let status = ended.status.clone().unwrap();
    assert_eq!(status.phase, Phase::Failed, "{status:?}");
    let completed = condition(&status, "Completed");
    assert!(completed.message.contains(&patched.name), "{completed:?}");
    // What was stored stays: counts in the status, runs in the store, each planned run once.
    assert!(
        status.runs_stored >= 1 && status.runs_planned == 8,
        "{status:?}"
    );
    let id = status.results_id.clone().unwrap();
    let runs = release.get_json(&format!("/api/v1/experiments/{id}/runs"));
    let runs = runs.as_array().unwrap();
    let failed_there = runs.iter().any(|r| {
        r["status"] == "failed" && r["node_id"].as_str().unwrap().starts_with(&patched.name)
    });
    let succeeded: Vec<(String, i64, String)> = runs
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .map(|r| {
            (
                r["cohort"].as_str().unwrap().to_string(),
                r["repetition"].as_i64().unwrap(),
                r["node_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let distinct: BTreeSet<_> = succeeded.iter().collect();
    assert_eq!(
        distinct.len(),
        succeeded.len(),
        "a run was repeated: {runs:?}"
    );
    assert!(
        failed_there,
        "no failed run names {}: {runs:?}",
        patched.name
    );
    // The powered-off node goes first: its pods cannot end until its Node object does.
    drop(patched);

    drop(release);
    drop(unpatched);
    eprintln!(
        "the kernel-node journey took {:.0} s",
        began.elapsed().as_secs_f64()
    );
}
