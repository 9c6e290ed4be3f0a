//! Failures on the real cluster: the leading controller replica deleted mid-experiment, an
//! agent pod deleted mid-run, and the chart's Postgres stopped mid-experiment.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::runtime::wait::await_condition;
use loadlab_controller::operator::LEASE_NAME;
use loadlab_controller::status::Phase;

use loadlab_controller::runner::RESULTS_STORED;
use loadlab_controller::status::ExperimentStatus;

use crate::harness::{Release, apply_json, finished, kubectl, real_node_experiment};

/// Four repetitions of two cohorts on the real node: long enough to lose a pod in the middle.
pub(crate) fn experiment(name: &str, namespace: &str) -> String {
    real_node_experiment(
        name,
        namespace,
        serde_json::json!([
            { "name": "one-worker", "nodeSelector": { "lab/kind": "real" } },
            { "name": "two-workers", "nodeSelector": { "lab/kind": "real" },
              "target": { "nginx": { "workers": 2 } } }
        ]),
        4,
    )
}

/// Waits for the end: it succeeded with all 8 planned runs, each succeeding exactly once (a
/// run in flight when something was lost may be stored failed and run again, never a stored
/// success twice). The failure reasons stored on the way.
pub(crate) async fn all_eight_succeed_once(
    release: &Release,
    name: &str,
) -> (ExperimentStatus, Vec<String>) {
    let ended = release
        .wait_experiment(name, Duration::from_secs(900), "finished", finished)
        .await;
    let status = ended.status.unwrap();
    assert_eq!(
        status.phase,
        Phase::Succeeded,
        "{status:?}\n{}",
        release.diagnose()
    );
    assert_eq!(status.runs_stored, 8, "{status:?}");
    let id = status.results_id.clone().unwrap();
    let (succeeded, failures) =
        outcomes(&release.get_json(&format!("/api/v1/experiments/{id}/runs")));
    assert_eq!(succeeded.len(), 8, "{succeeded:?}");
    assert!(
        succeeded.values().all(|n| *n == 1),
        "a stored run was repeated: {succeeded:?}"
    );
    (status, failures)
}

/// A release in `namespace` running the experiment `name`, with one run stored and more to go.
async fn one_run_in(namespace: &str, name: &str) -> Release {
    let release = Release::install(namespace, &[]).await;
    apply_json(&experiment(name, namespace));
    let midway = release
        .wait_experiment(
            name,
            Duration::from_secs(600),
            "one run in",
            runs_stored_at_least(1),
        )
        .await;
    assert!(!midway.status.unwrap().phase.is_finished());
    release
}

pub(crate) fn runs_stored_at_least(
    count: u32,
) -> impl Fn(Option<&loadlab_controller::Experiment>) -> bool {
    move |e| {
        e.and_then(|e| e.status.as_ref())
            .is_some_and(|s| s.runs_stored >= count || s.phase.is_finished())
    }
}

/// Per (cohort, repetition): how many runs succeeded, and the failure reasons stored.
pub(crate) fn outcomes(runs: &serde_json::Value) -> (BTreeMap<(String, u64), usize>, Vec<String>) {
    let mut succeeded = BTreeMap::new();
    let mut failures = Vec::new();
    for run in runs.as_array().unwrap() {
        let key = (
            run["cohort"].as_str().unwrap().to_string(),
            run["repetition"].as_u64().unwrap(),
        );
        if run["status"] == "succeeded" {
            *succeeded.entry(key).or_default() += 1;
        } else {
            failures.push(
                run["failure_reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    (succeeded, failures)
}

pub(crate) fn holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref().and_then(|s| s.holder_identity.clone())
}

#[tokio::test]
#[ignore = "needs cluster"]
async fn a_new_leader_resumes_without_repeating_a_stored_run() {
    let release = Release::install("loadlab-failover", &["controller.replicas=2"]).await;
    let ns = release.namespace.clone();
    apply_json(&experiment("failover", &ns));

    let midway = release
        .wait_experiment(
            "failover",
            Duration::from_secs(600),
            "two runs in",
            runs_stored_at_least(2),
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

    all_eight_succeed_once(&release, "failover").await;
    eprintln!("leader {leader} deleted after {stored_before} runs; {successor} finished");
}

#[tokio::test]
#[ignore = "needs cluster"]
async fn an_agent_pod_deleted_mid_run_fails_that_run_and_the_experiment_resumes() {
    let release = one_run_in("loadlab-agent-lost", "agent-lost").await;

    // The next run starts as soon as the last is stored: the pod goes while it is in flight.
    let selector = "loadlab.dev/experiment=agent-lost,app.kubernetes.io/component=agent";
    release.kubectl(&["delete", "pods", "-l", selector, "--wait=false"]);

    let (status, failures) = all_eight_succeed_once(&release, "agent-lost").await;
    assert!(
        status.runs_failed >= 1,
        "the run in flight is stored failed: {status:?}"
    );
    assert!(
        !failures.is_empty() && failures.iter().all(|f| !f.is_empty()),
        "{failures:?}"
    );
    // Every run after the deletion ran on the agent pod made to replace it.
    eprintln!("failures stored: {failures:?}");
}

/// The ResultsStored condition's (status, reason), once the runner has written one.
fn results_stored(e: Option<&loadlab_controller::Experiment>) -> Option<(String, String)> {
    let condition = e?.status.as_ref()?.condition(RESULTS_STORED)?;
    Some((condition.status.clone(), condition.reason.clone()))
}

#[tokio::test]
#[ignore = "needs cluster"]
async fn postgres_stopped_mid_experiment_the_finished_run_waits_and_none_is_lost() {
    let release = one_run_in("loadlab-db-restart", "db-restart").await;

    // The database goes away while the next run is measured; that run cannot be written.
    let postgres = format!("statefulset/{}-postgresql", release.name);
    release.kubectl(&["scale", &postgres, "--replicas=0"]);
    let waiting = release
        .wait_experiment(
            "db-restart",
            Duration::from_secs(300),
            "waiting for the database",
            |e: Option<&loadlab_controller::Experiment>| {
                results_stored(e).is_some_and(|(status, _)| status == "False")
            },
        )
        .await;
    let stored_while_away = waiting.status.as_ref().unwrap().runs_stored;
    // What a person sees: the condition, with the database's error, in `kubectl describe`.
    let described = release.kubectl(&["describe", "experiment", "db-restart"]);
    assert!(described.contains("DatabaseUnavailable"), "{described}");

    release.kubectl(&["scale", &postgres, "--replicas=1"]);
    // The controllers' readiness follows the database; the results are read through them.
    release.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "pod",
        "-l",
        "app.kubernetes.io/component=controller",
        "--timeout=300s",
    ]);
    let (status, failures) = all_eight_succeed_once(&release, "db-restart").await;
    assert!(
        failures.is_empty(),
        "no run failed for the database: {failures:?}"
    );
    let condition = status.condition(RESULTS_STORED).unwrap();
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("True", "DatabaseBack"),
        "{condition:?}"
    );
    eprintln!(
        "database stopped after {stored_while_away} stored runs; {}",
        condition.message
    );
}
