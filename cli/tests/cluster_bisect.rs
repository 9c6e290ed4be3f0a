//! `loadlab bisect` with its steps on a real cluster (scripts/cluster.sh, run by hand: it boots
//! two kernel nodes under emulation): Debian's 6.1.0-47 and 6.1.0-56 as nodes, the chart
//! installed, and the bisection's steps created as Experiments that the cluster's controller
//! runs on the node of each step's kernel; the bisection is stored beside the steps' results in
//! the controller's Postgres and read back through the cluster's API.
//!   cargo test -p loadlab --test cluster_bisect -- --ignored   (KUBECONFIG and PATH as for
//!   the real-cluster tests: see scripts/test.sh)

#[allow(dead_code)]
#[path = "../../controller/tests/real_cluster/harness.rs"]
mod harness;

use std::process::Command;
use std::time::Instant;

use base64::Engine as _;
use harness::{KernelNode, Release, repo};
use loadlab_engine::bisect::{ClusterSteps, parse_bisection};
use serde_json::Value;

const NAMESPACE: &str = "loadlab-bisect";

/// The Postgres the release's controller writes to, through its Service.
fn database_url(release: &Release) -> String {
    let service = release.kubectl_json(&["get", "service", "loadlab-postgresql"]);
    let secret = release.kubectl_json(&["get", "secret", "loadlab-postgresql"]);
    let encoded = secret["data"]["password"].as_str().unwrap();
    let password = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    format!(
        "postgres://loadlab:{}@{}:5432/loadlab",
        String::from_utf8(password).unwrap(),
        service["spec"]["clusterIP"].as_str().unwrap()
    )
}

/// The bundled example on the two kernels this machine has as nodes, both ends measured, its
/// steps in this test's namespace: as JSON, which `loadlab bisect` reads as the YAML it is.
fn the_example_on_these_nodes() -> String {
    let example =
        std::fs::read_to_string(repo().join("examples/bisect-epoll-refcount-nodes.yaml")).unwrap();
    let mut bisection = parse_bisection(&example).unwrap();
    bisection.spec.kernels = vec!["6.1.0-47-*".into(), "6.1.0-56-*".into()];
    bisection.spec.check_ends = true;
    bisection.spec.cluster = Some(ClusterSteps {
        namespace: NAMESPACE.into(),
    });
    serde_json::to_string(&bisection).unwrap()
}

#[test]
fn the_example_is_changed_only_in_kernels_ends_and_namespace() {
    let example = parse_bisection(
        &std::fs::read_to_string(repo().join("examples/bisect-epoll-refcount-nodes.yaml")).unwrap(),
    )
    .unwrap();
    let changed = parse_bisection(&the_example_on_these_nodes()).unwrap();
    assert_eq!(changed.spec.kernels, ["6.1.0-47-*", "6.1.0-56-*"]);
    assert!(changed.spec.check_ends);
    assert_eq!(changed.spec.cluster.unwrap().namespace, NAMESPACE);
    assert_eq!(changed.spec.holds, example.spec.holds);
    assert_eq!(changed.spec.experiment, example.spec.experiment);
    assert_eq!(changed.metadata, example.metadata);
}

#[tokio::test]
#[ignore = "needs cluster and kernel nodes (by hand)"]
async fn a_bisection_on_a_cluster_runs_each_step_on_the_nodes_of_its_kernel() {
    let began = Instant::now();
    let _unpatched = KernelNode::add("bisect-47", "linux-image-6.1.0-47-cloud-amd64-unsigned");
    let _patched = KernelNode::add("bisect-56", "linux-image-6.1.0-56-cloud-amd64-unsigned");
    let release = Release::install(NAMESPACE, &["agent.perfEvents=sysAdmin"]).await;
    eprintln!(
        "two kernel nodes and the chart ready in {:.0} s",
        began.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bisection.yaml");
    std::fs::write(&file, the_example_on_these_nodes()).unwrap();

    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_loadlab"))
        .args(["bisect", "--json"])
        .arg(&file)
        .env("DATABASE_URL", database_url(&release))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    eprintln!(
        "the bisection took {:.0} s:\n{said}",
        started.elapsed().as_secs_f64()
    );
    let stored: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(stored["status"], "found", "{stored}");
    assert_eq!(stored["first_holding"], "6.1.0-56-*", "{stored}");
    // Both ends measured: 56 holds (no epmutex), 47 does not (about one per connection).
    let steps = stored["steps"].as_array().unwrap();
    let measured: Vec<(&str, bool)> = steps
        .iter()
        .map(|s| (s["kernel"].as_str().unwrap(), s["holds"].as_bool().unwrap()))
        .collect();
    assert_eq!(measured, [("6.1.0-56-*", true), ("6.1.0-47-*", false)]);
    let value = |kernel: &str| {
        steps.iter().find(|s| s["kernel"] == kernel).unwrap()["value"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(value("6.1.0-56-*"), 0.0, "{stored}");
    assert!((900.0..=1100.0).contains(&value("6.1.0-47-*")), "{stored}");

    // Each step is an Experiment the controller ran on the node of its kernel ...
    for (step, kernel, other) in [
        (&steps[0], "6.1.0-56-cloud-amd64", "6.1.0-47-cloud-amd64"),
        (&steps[1], "6.1.0-47-cloud-amd64", "6.1.0-56-cloud-amd64"),
    ] {
        let id = step["experiment_id"].as_str().unwrap();
        let comparison = release.get_json(&format!("/api/v1/experiments/{id}/comparison"));
        let cohorts = comparison["cohorts"].as_array().unwrap();
        assert_eq!(cohorts.len(), 1, "{comparison}");
        let kernels: Vec<&str> = comparison["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["kernel_release"].as_str())
            .collect();
        assert!(
            kernels.contains(&kernel) && !kernels.contains(&other),
            "{kernel}: {kernels:?}"
        );
    }
    let objects = release.kubectl_json(&["get", "experiments"]);
    let phases: Vec<&str> = objects["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"]["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["Succeeded", "Succeeded"], "{objects}");
    // ... and the bisection is one result in the cluster's API.
    let id = stored["id"].as_str().unwrap();
    let read = release.get_json(&format!("/api/v1/bisections/{id}"));
    assert_eq!(read["first_holding"], "6.1.0-56-*", "{read}");
    assert_eq!(read["steps"].as_array().map(Vec::len), Some(2), "{read}");
}
