//! Against a real cluster (KUBECONFIG): the generated CRD installs, and the API server accepts
//! the seed experiment as the Rust types write it and hands it back unchanged.
//! `cargo test -p loadlab-controller --test cluster -- --ignored`

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, CustomResourceExt};
use loadlab_controller::{Experiment, parse_experiment};

/// The spec of the bundled seed experiment.
fn seed_spec() -> loadlab_controller::spec::ExperimentSpec {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/epoll-refcount.yaml"
    ))
    .unwrap();
    parse_experiment(&text).unwrap().spec
}

#[tokio::test]
#[ignore = "needs cluster"]
async fn the_crd_installs_and_the_seed_experiment_round_trips() {
    let client = Client::try_default()
        .await
        .expect("a cluster in KUBECONFIG");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = Experiment::crd();
    let name = crd.metadata.name.clone().unwrap();
    crds.patch(
        &name,
        &PatchParams::apply("loadlab-test").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(crds, &name, conditions::is_crd_established()),
    )
    .await
    .expect("the CRD is established within a minute")
    .unwrap();

    let spec = seed_spec();
    let experiments: Api<Experiment> = Api::default_namespaced(client);
    let probe = format!("crd-probe-{}", uuid::Uuid::new_v4().simple());
    let created = experiments
        .create(
            &PostParams::default(),
            &Experiment::new(&probe, spec.clone()),
        )
        .await
        .unwrap();
    assert_eq!(created.spec, spec);
    experiments
        .delete(&probe, &DeleteParams::default())
        .await
        .unwrap();
}

/// With the chart installed (`helm install loadlab helm/loadlab`) and nodes whose kernels match
/// the seed experiment's cohorts, the experiment runs to the end and reports a verdict.
#[tokio::test]
#[ignore = "needs cluster"]
async fn the_seed_experiment_runs_on_the_cluster() {
    let client = Client::try_default()
        .await
        .expect("a cluster in KUBECONFIG");
    let spec = seed_spec();
    let experiments: Api<Experiment> = Api::default_namespaced(client);
    let name = format!(
        "epoll-refcount-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    experiments
        .create(&PostParams::default(), &Experiment::new(&name, spec))
        .await
        .unwrap();
    let finished = |experiment: Option<&Experiment>| {
        experiment
            .and_then(|e| e.status.as_ref())
            .is_some_and(|s| s.phase.is_finished())
    };
    // Five repetitions of two cohorts of 35 s each, plus pod start-up.
    let ended = tokio::time::timeout(
        Duration::from_secs(30 * 60),
        await_condition(experiments.clone(), &name, finished),
    )
    .await
    .expect("the experiment ends within 30 minutes")
    .unwrap()
    .unwrap();
    let status = ended.status.unwrap();
    assert_eq!(
        status.phase,
        loadlab_controller::status::Phase::Succeeded,
        "{:?}",
        status.conditions
    );
    assert!(status.verdict.is_some());
    experiments
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
}
