//! Failures on the real cluster: the leading controller replica deleted mid-experiment.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::runtime::wait::await_condition;
use loadlab_controller::operator::LEASE_NAME;
use loadlab_controller::status::Phase;

use crate::harness::{Release, apply_json, kubectl};

/// Four repetitions of two cohorts on the real node: long enough to lose a leader in the middle.
fn experiment(name: &str, namespace: &str) -> String {
    serde_json::json!({
        "apiVersion": "loadlab.dev/v1alpha1",
        "kind": "Experiment",
        "metadata": { "name": name, "namespace": namespace },
        "spec": {
            "target": { "nginx": { "workers": 1 } },
            "load": {
                "connections": 16, "warmup": "1s", "duration": "3s", "generators": 1,
                "generatorPlacement": { "allowNodesUnderTest": true }
            },
            "cohorts": [
                { "name": "one-worker", "nodeSelector": { "lab/kind": "real" } },
                { "name": "two-workers", "nodeSelector": { "lab/kind": "real" },
                  "target": { "nginx": { "workers": 2 } } }
            ],
            "repetitions": 4,
            "baseline": "one-worker"
        }
    })
    .to_string()
}

fn holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref().and_then(|s| s.holder_identity.clone())
}

#[tokio::test]
#[ignore = "needs cluster"]
async fn a_new_leader_resumes_without_repeating_a_stored_run() {
    let release = Release::install("loadlab-failover", &["controller.replicas=2"]).await;
    let ns = release.namespace.clone();
    apply_json(&experiment("failover", &ns));

    let two_stored = |e: Option<&loadlab_controller::Experiment>| {
        e.and_then(|e| e.status.as_ref())
            .is_some_and(|s| s.runs_stored >= 2 || s.phase.is_finished())
    };
    let midway = release
        .wait_experiment(
            "failover",
            Duration::from_secs(600),
            "two runs in",
            two_stored,
        )
        .await;
    let status = midway.status.unwrap();
    let stored_before = status.runs_stored;
    assert!(
        !status.phase.is_finished(),
        "ended before the leader could be deleted: {status:?}"
    );

    let leases: Api<Lease> = Api::namespaced(release.client.clone(), &ns);
    let leader = holder(&leases.get(LEASE_NAME).await.unwrap()).expect("a leader holds the lease");
    kubectl(&["delete", "pod", &leader, "-n", &ns, "--wait=false"]);
    let taken = tokio::time::timeout(
        Duration::from_secs(180),
        await_condition(leases, LEASE_NAME, |lease: Option<&Lease>| {
            lease.and_then(holder).is_some_and(|h| h != leader)
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("no other replica took the lease\n{}", release.diagnose()))
    .unwrap()
    .unwrap();
    let successor = holder(&taken).unwrap();

    let finished = release
        .wait_experiment(
            "failover",
            Duration::from_secs(900),
            "finished",
            |e: Option<&loadlab_controller::Experiment>| {
                e.and_then(|e| e.status.as_ref())
                    .is_some_and(|s| s.phase.is_finished())
            },
        )
        .await;
    let status = finished.status.unwrap();
    assert_eq!(
        status.phase,
        Phase::Succeeded,
        "{status:?}\n{}",
        release.diagnose()
    );
    assert_eq!(status.runs_stored, 8, "{status:?}");

    // Every planned run succeeded exactly once; a run the old leader had in flight may have
    // been stored as failed and run again, never a stored success.
    let id = status.results_id.unwrap();
    let runs = release.get_json(&format!("/api/v1/experiments/{id}/runs"));
    let mut succeeded: BTreeMap<(String, u64), usize> = BTreeMap::new();
    for run in runs.as_array().unwrap() {
        if run["status"] == "succeeded" {
            let key = (
                run["cohort"].as_str().unwrap().to_string(),
                run["repetition"].as_u64().unwrap(),
            );
            *succeeded.entry(key).or_default() += 1;
        }
    }
    assert_eq!(succeeded.len(), 8, "{succeeded:?}");
    assert!(
        succeeded.values().all(|n| *n == 1),
        "a stored run was repeated: {succeeded:?}"
    );
    eprintln!("leader {leader} deleted after {stored_before} runs; {successor} finished");
}
