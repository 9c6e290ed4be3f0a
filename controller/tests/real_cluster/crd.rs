//! The generated CRD on the real API server: it installs, and the API server accepts the seed
//! experiment as the Rust types write it and hands it back unchanged.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
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

/// Installs (or updates) the generated CRD and waits until it is established.
async fn install_crd() -> Client {
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
    client
}

#[tokio::test]
#[ignore = "needs cluster"]
async fn the_crd_installs_and_the_seed_experiment_round_trips() {
    let client = install_crd().await;
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

/// The seed experiment as JSON, named `name`, with `change` applied (a JSON pointer and the
/// value to put there).
fn seed_with(name: &str, change: Option<(&str, serde_json::Value)>) -> DynamicObject {
    let mut object = serde_json::to_value(Experiment::new(name, seed_spec())).unwrap();
    if let Some((pointer, value)) = change {
        *object
            .pointer_mut(pointer)
            .unwrap_or_else(|| panic!("{pointer}")) = value;
    }
    serde_json::from_value(object).unwrap()
}

#[tokio::test]
#[ignore = "needs cluster"]
async fn what_the_controller_would_refuse_the_api_server_refuses_naming_the_field() {
    let client = install_crd().await;
    let experiments: Api<DynamicObject> =
        Api::namespaced_with(client, "default", &Experiment::api_resource());
    let two_cohorts = |first: &str, second: &str| {
        let mut cohorts = serde_json::to_value(&seed_spec().cohorts).unwrap();
        cohorts[0]["name"] = first.into();
        cohorts[1]["name"] = second.into();
        cohorts
    };
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("/spec/load/connections", 0.into(), "spec.load.connections"),
        (
            "/spec/load/connections",
            4_294_967_296u64.into(),
            "spec.load.connections",
        ),
        (
            "/spec/target/nginx/workers",
            0.into(),
            "workers must be `auto` or a number from 1 to 1024",
        ),
        (
            "/spec/load/duration",
            "99999999999999999999s".into(),
            "spec.load.duration",
        ),
        (
            "/spec/load/duration",
            "2h".into(),
            "spec.load.duration must be longer than zero and at most 1h",
        ),
        (
            "/spec/load/duration",
            "0s".into(),
            "spec.load.duration must be longer than zero and at most 1h",
        ),
        ("/spec/load/generators", 500.into(), "spec.load.generators"),
        ("/spec/repetitions", 0.into(), "spec.repetitions"),
        ("/spec/retries", 11.into(), "spec.retries"),
        (
            "/spec/baseline",
            "nobody".into(),
            "spec.baseline must name one of the cohorts",
        ),
        (
            "/spec/cohorts",
            two_cohorts("same", "same"),
            "each cohort needs a name of its own",
        ),
        (
            "/spec/cohorts",
            two_cohorts("Not-A-Label", "b"),
            "spec.cohorts[0].name",
        ),
    ];
    for (pointer, value, says) in cases {
        let name = format!("refused-{}", uuid::Uuid::new_v4().simple());
        let shown = format!("{pointer} = {value}");
        match experiments
            .create(
                &PostParams::default(),
                &seed_with(&name, Some((pointer, value))),
            )
            .await
        {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{shown}: {status:?}");
                assert!(status.message.contains(says), "{shown}: {}", status.message);
            }
            Ok(_) => {
                let _ = experiments.delete(&name, &DeleteParams::default()).await;
                panic!("{shown} was accepted");
            }
            Err(other) => panic!("{shown}: {other}"),
        }
    }

    // A stored experiment's spec stays as applied.
    let name = format!("immutable-{}", uuid::Uuid::new_v4().simple());
    experiments
        .create(&PostParams::default(), &seed_with(&name, None))
        .await
        .unwrap();
    let changed = experiments
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "repetitions": 7 } })),
        )
        .await;
    experiments
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    match changed {
        Err(kube::Error::Api(status)) => assert!(
            status.message.contains("spec cannot change once applied"),
            "{}",
            status.message
        ),
        other => panic!("a spec change was accepted: {other:?}"),
    }
}
