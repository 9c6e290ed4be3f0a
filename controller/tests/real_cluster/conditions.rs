//! What blocks an experiment is a condition that names it, as `kubectl describe` shows it: a
//! cohort no node matches, and agent pods whose image this node does not have.

use std::time::Duration;

use loadlab_controller::Experiment;
use loadlab_controller::status::Phase;

use crate::harness::{Release, apply_json, real_node_experiment};

fn one_node_experiment(name: &str, namespace: &str, selector: &str) -> String {
    real_node_experiment(
        name,
        namespace,
        serde_json::json!([{ "name": "lonely", "nodeSelector": { "lab/kind": selector } }]),
        1,
    )
}

fn condition<'a>(
    experiment: &'a Experiment,
    type_: &str,
) -> Option<&'a loadlab_controller::status::Condition> {
    experiment
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
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
