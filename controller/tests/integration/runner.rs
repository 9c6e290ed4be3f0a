//! The cluster runner end to end, with only the Kubernetes API mocked: a real agent and a real
//! generator behind bearer tokens on loopback (standing in for the pods), real nginx, real
//! Postgres. The runner stores every run under the resource's uid, writes progress and the
//! verdict to the status, deletes the pods, and a second start resumes without repeating runs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{Cluster, client_for};
use loadlab_agent::AgentService;
use loadlab_controller::orchestrator::{Connection, agent_client, rpc_channel};
use loadlab_controller::pod_tls;
use loadlab_controller::reconcile::{ReadyFleet, Runner};
use loadlab_controller::runner::{ProtocolRunner, results_id};
use loadlab_controller::token::TokenKey;
use loadlab_controller::{Experiment, parse_experiment};
use loadlab_loadgen::{LoadgenService, TargetPolicy};
use loadlab_proto::auth::RequireToken;
use loadlab_proto::v1::agent_server::AgentServer;
use loadlab_proto::v1::loadgen_server::LoadgenServer;
use loadlab_results::{Database, RunOutcome, Store};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

const TOKEN: &str = "s3cret-token";
/// The uid the pods' TLS identity is issued for, as the reconciler would for the experiment.
const FLEET_UID: &str = "4b8c5b8e-0d2a-4a49-9a0e-5f3e1c2d7a10";

fn token_key() -> TokenKey {
    TokenKey::new("a key for the runner's tests, 32+ bytes long").unwrap()
}

/// How the runner reaches pods issued for `uid`: the token and that experiment's trust.
fn connection_to(uid: &str) -> Connection {
    let (trust, _) = pod_tls::issue(&token_key(), uid).unwrap();
    Connection::to_pods(TOKEN.into(), trust)
}

const EXPERIMENT: &str = r#"
apiVersion: loadlab.dev/v1alpha1
kind: Experiment
metadata: { name: tiny }
spec:
  target: { nginx: { workers: 1 } }
  load: { connections: 4, duration: 500ms }
  cohorts:
    - { name: unpatched, kernel: "6.1.0-47-*" }
    - { name: patched, kernel: "6.1.0-56-*" }
  repetitions: 2
"#;

/// An agent and a generator on one loopback port, both requiring the token, serving TLS as
/// the pods do.
async fn serve_fleet() -> std::net::SocketAddr {
    serve_fleet_with(AgentService::new()).await
}

async fn serve_fleet_with(agent: AgentService) -> std::net::SocketAddr {
    serve_fleet_as(FLEET_UID, agent).await
}

/// The fleet with the TLS identity the controller issues for experiment `uid`.
async fn serve_fleet_as(uid: &str, agent: AgentService) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(fleet_server(uid, agent).serve_with_incoming(TcpListenerStream::new(listener)));
    address
}

/// An agent and a generator as the pods serve them: behind the token, over TLS.
fn fleet_server(uid: &str, agent: AgentService) -> tonic::transport::server::Router {
    let (_, identity) = pod_tls::issue(&token_key(), uid).unwrap();
    let identity = tonic::transport::Identity::from_pem(identity.cert_pem, identity.key_pem);
    tonic::transport::Server::builder()
        .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
        .unwrap()
        .add_service(AgentServer::with_interceptor(
            agent,
            RequireToken::new(TOKEN),
        ))
        .add_service(LoadgenServer::with_interceptor(
            LoadgenService::new(TargetPolicy::loopback_only()),
            RequireToken::new(TOKEN),
        ))
}

async fn scratch_store() -> Store {
    Database::from_env()
        .scratch()
        .await
        .expect("a scratch database")
}

/// The experiment as the API server would hand it over: namespaced, with a uid.
fn tiny_experiment() -> Experiment {
    let mut experiment = Experiment::new("tiny", parse_experiment(EXPERIMENT).unwrap().spec);
    experiment.metadata.namespace = Some("lab".into());
    experiment.metadata.uid = Some(uuid::Uuid::new_v4().to_string());
    experiment
}

/// The unpatched cohort on node-a, the patched one on node-b; the generator beside node-a.
fn two_node_fleet(node_a: std::net::SocketAddr, node_b: std::net::SocketAddr) -> ReadyFleet {
    ReadyFleet {
        agents: vec![
            vec![("node-a".to_string(), node_a)],
            vec![("node-b".to_string(), node_b)],
        ],
        generators: vec![node_a],
        connection: connection_to(FLEET_UID),
    }
}

/// Starts the runner and waits for it to delete the pods, its last act.
async fn run_to_the_end(
    cluster: &Arc<Mutex<Cluster>>,
    experiment: &Experiment,
    store: &Store,
    fleet: ReadyFleet,
) {
    let (seen, mut requests) = tokio::sync::mpsc::unbounded_channel();
    cluster.lock().unwrap().seen = Some(seen);
    let runner = ProtocolRunner::new(client_for(cluster.clone(), experiment), store.clone());
    runner.start(Arc::new(experiment.clone()), fleet);
    let deleted = async {
        while let Some((method, path)) = requests.recv().await {
            if method == "DELETE" && path.ends_with("/pods") {
                return;
            }
        }
    };
    // A bound for a broken runner, not a timing assumption: the runs take about 2 s.
    if tokio::time::timeout(Duration::from_secs(120), deleted)
        .await
        .is_err()
    {
        let requests = cluster.lock().unwrap().requests.clone();
        panic!("the runner did not finish; requests: {requests:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_experiment_runs_over_grpc_is_stored_reported_and_resumes() {
    let store = scratch_store().await;
    let address = serve_fleet().await;
    let experiment = tiny_experiment();
    let fleet = two_node_fleet(address, address);
    let cluster = Arc::new(Mutex::new(Cluster::default()));
    run_to_the_end(&cluster, &experiment, &store, fleet.clone()).await;

    let id = results_id(&experiment);
    let runs = store.experiment_runs(id).await.unwrap();
    let outcomes: Vec<&RunOutcome> = runs.iter().map(|r| &r.outcome).collect();
    assert_eq!(runs.len(), 4, "{outcomes:?}");
    for run in &runs {
        assert_eq!(run.outcome, RunOutcome::Succeeded, "{:?}", run.outcome);
        assert!(run.completed_connections > 0);
        assert_eq!(
            run.counters.nginx_accepts as i64, run.completed_connections,
            "the generator's count is nginx's"
        );
    }
    let statuses = cluster.lock().unwrap().status_patches();
    let progress: Vec<&str> = statuses
        .iter()
        .filter_map(|s| s["progress"].as_str())
        .collect();
    // The final write repeats the progress: the runner applies its whole part of the status
    // each time, and a field it left out would be removed.
    assert_eq!(progress, vec!["0/4", "1/4", "2/4", "3/4", "4/4", "4/4"]);
    let last = statuses.last().unwrap();
    assert_eq!(last["phase"], "Succeeded");
    assert_eq!(
        (last["runsStored"].as_u64(), last["runsPlanned"].as_u64()),
        (Some(4), Some(4))
    );
    assert_eq!(last["cohorts"].as_array().unwrap().len(), 2);
    assert_eq!(last["cohorts"][1]["nodes"][0], "node-b");
    assert_eq!(last["cohorts"][1]["runs"], 2);
    assert!(
        last["verdict"].as_str().unwrap().starts_with("patched: "),
        "{last}"
    );
    assert_eq!(last["conditions"][0]["type"], "Completed");
    assert_eq!(statuses[0]["resultsId"], id.to_string());

    // A restarted controller starts the runner again: nothing is repeated.
    let again = Arc::new(Mutex::new(Cluster::default()));
    run_to_the_end(&again, &experiment, &store, fleet).await;
    assert_eq!(store.experiment_runs(id).await.unwrap().len(), 4);
    let statuses = again.lock().unwrap().status_patches();
    assert_eq!(statuses[0]["progress"], "4/4");
    assert_eq!(statuses.last().unwrap()["phase"], "Succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cohort_of_two_nodes_runs_every_repetition_on_each_node() {
    let store = scratch_store().await;
    let node =
        |name: &str| serve_fleet_with(AgentService::new().with_node_name(Some(name.to_string())));
    let (a1, a2, b) = (
        node("node-a1").await,
        node("node-a2").await,
        node("node-b").await,
    );
    let experiment = tiny_experiment();
    let fleet = ReadyFleet {
        agents: vec![
            vec![("node-a1".to_string(), a1), ("node-a2".to_string(), a2)],
            vec![("node-b".to_string(), b)],
        ],
        generators: vec![b],
        connection: connection_to(FLEET_UID),
    };
    let cluster = Arc::new(Mutex::new(Cluster::default()));
    run_to_the_end(&cluster, &experiment, &store, fleet).await;

    let id = results_id(&experiment);
    let runs = store.experiment_runs(id).await.unwrap();
    let mut keys: Vec<(String, i32, String)> = runs
        .iter()
        .map(|r| (r.cohort.clone(), r.repetition, r.node.hostname.clone()))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            ("patched".to_string(), 1, "node-b".to_string()),
            ("patched".to_string(), 2, "node-b".to_string()),
            ("unpatched".to_string(), 1, "node-a1".to_string()),
            ("unpatched".to_string(), 1, "node-a2".to_string()),
            ("unpatched".to_string(), 2, "node-a1".to_string()),
            ("unpatched".to_string(), 2, "node-a2".to_string()),
        ]
    );
    assert!(runs.iter().all(|r| r.outcome == RunOutcome::Succeeded));
    assert_eq!(store.experiment(id).await.unwrap().planned_runs, Some(6));
    let statuses = cluster.lock().unwrap().status_patches();
    let last = statuses.last().unwrap();
    assert_eq!(last["phase"], "Succeeded", "{last}");
    assert_eq!(last["progress"], "6/6", "{last}");
    assert_eq!(
        last["cohorts"][0]["nodes"],
        serde_json::json!(["node-a1", "node-a2"])
    );
    assert_eq!(last["cohorts"][0]["runs"], 4, "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_drops_the_first_connections_at_the_start_is_waited_for() {
    let store = scratch_store().await;
    let healthy = serve_fleet().await;
    // The patched cohort's agent: its first two connections are closed at once (a pod whose
    // network is not up yet), then it answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let flaky = listener.local_addr().unwrap();
    let (dropped, mut told) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        for _ in 0..2 {
            let (connection, _) = listener.accept().await.unwrap();
            drop(connection);
            let _ = dropped.send(());
        }
        fleet_server(FLEET_UID, AgentService::new())
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    let experiment = tiny_experiment();
    let cluster = Arc::new(Mutex::new(Cluster::default()));
    run_to_the_end(
        &cluster,
        &experiment,
        &store,
        two_node_fleet(healthy, flaky),
    )
    .await;
    assert_eq!(
        told.recv().await,
        Some(()),
        "the runner met a dropped connection"
    );
    let runs = store
        .experiment_runs(results_id(&experiment))
        .await
        .unwrap();
    let statuses = cluster.lock().unwrap().status_patches();
    let outcomes: Vec<_> = runs.iter().map(|r| &r.outcome).collect();
    assert_eq!(runs.len(), 4, "{outcomes:?} {statuses:?}");
    assert!(runs.iter().all(|r| r.outcome == RunOutcome::Succeeded));
    assert_eq!(statuses.last().unwrap()["phase"], "Succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cohort_without_a_successful_run_fails_the_experiment_and_is_named() {
    let store = scratch_store().await;
    let healthy = serve_fleet().await;
    // nginx on the patched cohort's node is told to listen on an address this machine does
    // not have (TEST-NET-1): every run there fails as nginx does, with nginx's reason, while
    // the node's facts still answer. No load is ever sent to it.
    let broken =
        serve_fleet_with(AgentService::new().with_target_address("192.0.2.1".parse().unwrap()))
            .await;
    let mut experiment = tiny_experiment();
    experiment.spec.retries = 1;
    let fleet = two_node_fleet(healthy, broken);
    let cluster = Arc::new(Mutex::new(Cluster::default()));
    run_to_the_end(&cluster, &experiment, &store, fleet.clone()).await;

    let runs = store
        .experiment_runs(results_id(&experiment))
        .await
        .unwrap();
    let patched: Vec<_> = runs.iter().filter(|r| r.cohort == "patched").collect();
    // Two repetitions, each tried twice (`retries: 1`), every attempt stored with its reason.
    assert_eq!(patched.len(), 4, "{patched:#?}");
    assert!(
        patched
            .iter()
            .all(|r| matches!(&r.outcome, RunOutcome::Failed { reason } if !reason.is_empty())),
        "{patched:#?}"
    );
    assert_eq!(
        runs.iter()
            .filter(|r| r.cohort == "unpatched" && r.outcome == RunOutcome::Succeeded)
            .count(),
        2
    );
    let statuses = cluster.lock().unwrap().status_patches();
    let last = statuses.last().unwrap();
    assert_eq!(last["phase"], "Failed", "{last}");
    let condition = &last["conditions"][0];
    assert_eq!(
        (
            &condition["type"],
            &condition["status"],
            &condition["reason"]
        ),
        (
            &"Completed".into(),
            &"False".into(),
            &"CohortWithoutRuns".into()
        ),
        "{last}"
    );
    let message = condition["message"].as_str().unwrap();
    assert!(
        message.starts_with("patched: no run succeeded (last: ") && !message.contains("unpatched"),
        "{message}"
    );
    assert!(
        message.contains("192.0.2.1"),
        "nginx's own reason: {message}"
    );
    assert_eq!(last["runsFailed"], 4, "{last}");
    // The cohort that did run still reports its figure; no verdict compares against nothing.
    assert_eq!(last["cohorts"][0]["runs"], 2, "{last}");
    assert!(last["verdict"].is_null(), "{last}");

    // Started again (a new leader, a restart): every planned run has had all its attempts, so
    // none is tried again and nothing more is stored.
    let again = Arc::new(Mutex::new(Cluster::default()));
    run_to_the_end(&again, &experiment, &store, fleet).await;
    assert_eq!(
        store
            .experiment_runs(results_id(&experiment))
            .await
            .unwrap()
            .len(),
        runs.len(),
        "attempts are bounded across restarts"
    );
    let statuses = again.lock().unwrap().status_patches();
    assert_eq!(statuses[0]["progress"], "4/4", "{statuses:?}");
}

/// The runner trusts only the experiment's own authority: pods serving another experiment's
/// certificate (or one from another controller key) are refused at the handshake, before the
/// token is sent.
#[tokio::test]
async fn pods_are_reached_over_tls_trusting_only_their_experiments_authority() {
    let pods = serve_fleet_as(FLEET_UID, AgentService::new()).await;
    let describe = |connection: Connection| async move {
        let mut agent = agent_client(rpc_channel(&pods.to_string(), &connection).unwrap());
        agent
            .describe(loadlab_proto::v1::DescribeRequest::default())
            .await
    };
    let facts = describe(connection_to(FLEET_UID)).await.unwrap();
    assert!(!facts.into_inner().kernel_release.is_empty());

    let other_experiment = describe(connection_to("another-experiment")).await;
    let refused = other_experiment.unwrap_err();
    assert!(
        format!("{refused:?}").contains("certificate"),
        "not a certificate refusal: {refused:?}"
    );
    let plaintext = describe(Connection {
        token: Some(TOKEN.into()),
        ..Connection::default()
    })
    .await;
    assert!(plaintext.is_err(), "the pods answered plaintext");
}

/// `repetitions: auto` on a cluster: the status carries the stopping rule's last judgement
/// round by round and, once it stops, why, the verdict it reached and progress that counts
/// what ran (not the budget).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_repetitions_tell_the_status_each_round_and_why_they_stopped() {
    let store = scratch_store().await;
    let address = serve_fleet().await;
    let mut experiment = tiny_experiment();
    experiment.spec.repetitions = loadlab_controller::spec::Repetitions::Auto;
    experiment.spec.stopping = Some(loadlab_controller::spec::StoppingSpec {
        max_repetitions: 4,
        practical_change_percent: 5.0,
        ..Default::default()
    });
    let cluster = Arc::new(Mutex::new(Cluster::default()));
    run_to_the_end(
        &cluster,
        &experiment,
        &store,
        two_node_fleet(address, address),
    )
    .await;
    let statuses = cluster.lock().unwrap().status_patches();
    let stopping: Vec<&str> = statuses
        .iter()
        .filter_map(|s| s["stopping"].as_str())
        .collect();
    assert!(
        stopping
            .iter()
            .any(|s| s.starts_with("round 1 of at most 4: patched: undecided")),
        "{stopping:?}"
    );
    let last = statuses.last().unwrap();
    assert_eq!(last["phase"], "Succeeded", "{last}");
    let line = last["stopping"].as_str().unwrap();
    assert!(
        line.contains(" · stopped after round") || line.contains(" · stopped at the budget"),
        "{line}"
    );
    let runs = store
        .experiment_runs(results_id(&experiment))
        .await
        .unwrap();
    assert_eq!(
        last["progress"],
        format!("{}/{}", runs.len(), runs.len()),
        "{last}"
    );
    let verdict = last["verdict"].as_str().unwrap();
    assert!(verdict.starts_with("patched: "), "{verdict}");
    assert!(
        line.contains(verdict),
        "{verdict} is not the rule's: {line}"
    );
}
