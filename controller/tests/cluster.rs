//! Against a real cluster (KUBECONFIG): the generated CRD installs, and the API server accepts
//! the seed experiment as the Rust types write it and hands it back unchanged.
//! `cargo test -p loadlab-controller --test cluster -- --ignored`

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, CustomResourceExt};
use loadlab_controller::{Experiment, parse_experiment};

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

    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/epoll-refcount.yaml"
    ))
    .unwrap();
    let spec = parse_experiment(&text).unwrap().spec;
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
