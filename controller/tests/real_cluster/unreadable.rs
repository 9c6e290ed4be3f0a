//! An experiment the controller cannot read (stored under a laxer CRD) is named on itself, and
//! the controller, restarted with it present, goes on running every other experiment.

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::{CustomResourceExt, ResourceExt};
use loadlab_controller::Experiment;
use loadlab_controller::status::Phase;

use crate::harness::{Release, apply_json, real_node_experiment};

/// Applies the CRD as the Rust types generate it, or with a spec that takes anything.
async fn apply_crd(release: &Release, lax: bool) {
    let mut crd = serde_json::to_value(Experiment::crd()).unwrap();
    if lax {
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"] = serde_json::json!({
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true
        });
    }
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(release.client.clone());
    crds.patch(
        Experiment::crd_name(),
        &PatchParams::apply("loadlab-test").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
}

#[tokio::test]
#[ignore = "needs cluster"]
async fn an_unreadable_experiment_is_named_and_the_others_still_run() {
    let release = Release::install("loadlab-unreadable", &[]).await;
    let ns = release.namespace.clone();

    // Stored while the CRD took anything: a count no u32 holds.
    apply_crd(&release, true).await;
    let mut unreadable: serde_json::Value = serde_json::from_str(&real_node_experiment(
        "unreadable",
        &ns,
        serde_json::json!([{ "name": "here", "nodeSelector": { "lab/kind": "real" } }]),
        1,
    ))
    .unwrap();
    unreadable["spec"]["load"]["connections"] = 4_294_967_296u64.into();
    let applied = std::panic::catch_unwind(|| apply_json(&unreadable.to_string()));
    apply_crd(&release, false).await;
    applied.expect("the lax CRD takes the object");

    // A controller (re)started with it present still runs the others.
    release.kubectl(&["rollout", "restart", "deployment/loadlab"]);
    release.kubectl(&["rollout", "status", "deployment/loadlab", "--timeout=300s"]);
    apply_json(&real_node_experiment(
        "readable",
        &ns,
        serde_json::json!([{ "name": "here", "nodeSelector": { "lab/kind": "real" } }]),
        1,
    ));
    release
        .wait_experiment(
            "readable",
            Duration::from_secs(600),
            "succeeded",
            |e: Option<&Experiment>| {
                e.and_then(|e| e.status.as_ref())
                    .is_some_and(|s| s.phase == Phase::Succeeded)
            },
        )
        .await;

    let shown = release.kubectl_json(&["get", "experiment", "unreadable"]);
    let conditions = shown["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let spec_valid = conditions
        .iter()
        .find(|c| c["type"] == "SpecValid")
        .unwrap_or_else(|| panic!("no SpecValid condition: {shown}\n{}", release.diagnose()));
    assert_eq!(spec_valid["reason"], "Unreadable", "{spec_valid}");
    assert!(
        spec_valid["message"]
            .as_str()
            .unwrap()
            .contains("spec.load.connections"),
        "{spec_valid}"
    );
    assert_eq!(shown["status"]["phase"], "Failed", "{shown}");

    // And it can be deleted.
    release.kubectl(&["delete", "experiment", "unreadable", "--timeout=120s"]);
    let left = release
        .experiments()
        .list(&Default::default())
        .await
        .unwrap();
    assert!(
        left.items.iter().all(|e| e.name_any() != "unreadable"),
        "the unreadable experiment stayed"
    );
}
