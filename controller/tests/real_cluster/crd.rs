//! The generated CRD on the real API server: it installs, and the API server accepts the seed
//! experiment as the Rust types write it and hands it back unchanged.

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
        .expect("KUBECONFIG names the cluster (scripts/cluster.sh up)");
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
    let experiments: Api<Experiment> = Api::namespaced(client, "default");
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
