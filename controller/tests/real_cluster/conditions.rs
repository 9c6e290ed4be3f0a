//! What blocks an experiment is a condition that names it, as `kubectl describe` shows it: a
//! cohort no node matches, an experiment in a namespace the chart did not grant, and agent
//! pods whose image this node does not have.

use std::time::Duration;

use loadlab_controller::Experiment;
use loadlab_controller::status::Phase;

use crate::harness::{Release, apply_json, condition, kubectl, real_node_experiment, run, try_run};

fn one_node_experiment(name: &str, namespace: &str, selector: &str) -> String {
    real_node_experiment(
        name,
        namespace,
        serde_json::json!([{ "name": "lonely", "nodeSelector": { "lab/kind": selector } }]),
        1,
    )
}

#[tokio::test]
#[ignore = "needs cluster"]
async fn a_cohort_without_nodes_and_an_image_the_node_lacks_are_named() {
    let release = Release::install("loadlab-conditions", &[]).await;
    let ns = release.namespace.clone();

    apply_json(&one_node_experiment("nowhere", &ns, "absent"));
    let unplanned = release
        .wait_experiment(
            "nowhere",
            Duration::from_secs(300),
            "reported unplanned",
            |e: Option<&Experiment>| {
                e.and_then(|e| condition(e, "NodesPlanned"))
                    .is_some_and(|c| c.status == "False")
            },
        )
        .await;
    let planned = condition(&unplanned, "NodesPlanned").unwrap();
    assert_eq!(planned.reason, "CohortWithoutNodes");
    assert_eq!(unplanned.status.as_ref().unwrap().phase, Phase::Pending);
    let described = release.kubectl(&["describe", "experiment", "nowhere"]);
    assert!(
        described.contains("cohort \"lonely\" has no node: no node matches labels lab/kind=absent"),
        "{described}"
    );

    // An experiment in a namespace the chart granted nothing in (experimentNamespaces is the
    // release's own by default): told why, and nothing is made there.
    let elsewhere = format!("{ns}-elsewhere");
    let _ = try_run(
        "kubectl",
        &["delete", "namespace", &elsewhere, "--wait=true"],
    );
    kubectl(&["create", "namespace", &elsewhere]);
    apply_json(&one_node_experiment("elsewhere", &elsewhere, "real"));
    let waiting = release
        .wait_experiment_in(
            &elsewhere,
            "elsewhere",
            Duration::from_secs(300),
            "told why it waits",
            |e: Option<&Experiment>| {
                e.and_then(|e| condition(e, "PodsReady"))
                    .is_some_and(|c| c.reason == "NamespaceNotAllowed")
            },
        )
        .await;
    let refused = condition(&waiting, "PodsReady").unwrap();
    assert!(
        refused
            .message
            .contains(&format!("only in namespace(s) {ns}, not in {elsewhere}")),
        "{refused:?}"
    );
    assert_eq!(waiting.status.as_ref().unwrap().phase, Phase::Pending);
    let described = kubectl(&["describe", "experiment", "elsewhere", "-n", &elsewhere]);
    assert!(described.contains("NamespaceNotAllowed"), "{described}");
    let made = kubectl(&["get", "pods,secrets", "-n", &elsewhere, "-o", "name"]);
    assert!(
        !made.contains("elsewhere-"),
        "made where not allowed: {made}"
    );
    // The controller may not make them either, as the API server enforces it.
    let account = format!("system:serviceaccount:{ns}:loadlab");
    for resource in ["pods", "secrets"] {
        let (allowed, _) = try_run(
            "kubectl",
            &[
                "auth", "can-i", "create", resource, "--as", &account, "-n", &elsewhere,
            ],
        );
        assert!(
            !allowed,
            "the controller may create {resource} in {elsewhere}"
        );
    }
    run(
        "kubectl",
        &["delete", "namespace", &elsewhere, "--timeout=300s"],
    );

    // An operator points the controller at an image this node does not have.
    release.kubectl(&[
        "set",
        "env",
        "deployment/loadlab",
        "LOADLAB_IMAGE=loadlab/absent:0",
    ]);
    release.kubectl(&["rollout", "status", "deployment/loadlab", "--timeout=300s"]);
    apply_json(&one_node_experiment("bad-image", &ns, "real"));
    let failed = release
        .wait_experiment(
            "bad-image",
            Duration::from_secs(300),
            "failed",
            |e: Option<&Experiment>| {
                e.and_then(|e| e.status.as_ref())
                    .is_some_and(|s| s.phase == Phase::Failed)
            },
        )
        .await;
    let pods = condition(&failed, "PodsReady").unwrap();
    assert_eq!(pods.reason, "PodFailed", "{pods:?}");
    assert!(
        pods.message.contains("bad-image-agent-") && pods.message.contains("ErrImageNeverPull"),
        "{pods:?}"
    );
    let described = release.kubectl(&["describe", "experiment", "bad-image"]);
    assert!(described.contains("ErrImageNeverPull"), "{described}");
}
