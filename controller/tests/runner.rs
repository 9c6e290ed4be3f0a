//! The cluster runner end to end, with only the Kubernetes API mocked: a real agent and a real
//! generator behind bearer tokens on loopback (standing in for the pods), real nginx, real
//! Postgres. The runner stores every run under the resource's uid, writes progress and the
//! verdict to the status, deletes the pods, and a second start resumes without repeating runs.

mod common;

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Cluster, client_for};
use loadlab_agent::AgentService;
use loadlab_controller::reconcile::{ReadyFleet, Runner};
use loadlab_controller::runner::{ProtocolRunner, results_id};
use loadlab_controller::{Experiment, parse_experiment};
use loadlab_loadgen::{LoadgenService, TargetPolicy};
use loadlab_proto::auth::RequireToken;
use loadlab_proto::v1::agent_server::AgentServer;
use loadlab_proto::v1::loadgen_server::LoadgenServer;
use loadlab_results::{Database, RunOutcome, Store};
use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

const TOKEN: &str = "s3cret-token";

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

/// An agent and a generator on one loopback port, both requiring the token.
async fn serve_fleet() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentServer::with_interceptor(
                AgentService::new(),
                RequireToken::new(TOKEN),
            ))
            .add_service(LoadgenServer::with_interceptor(
                LoadgenService::new(TargetPolicy::loopback_only()),
                RequireToken::new(TOKEN),
            ))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    address
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
    let url = Database::from_env().scratch_url().await.unwrap();
    let store = Store::connect(PgConnectOptions::from_str(&url).unwrap())
        .await
        .unwrap();
    let address = serve_fleet().await;
    let mut experiment = Experiment::new("tiny", parse_experiment(EXPERIMENT).unwrap().spec);
    experiment.metadata.namespace = Some("lab".into());
    experiment.metadata.uid = Some(uuid::Uuid::new_v4().to_string());
    let fleet = ReadyFleet {
        agents: vec![
            vec![("node-a".to_string(), address)],
            vec![("node-b".to_string(), address)],
        ],
        generators: vec![address],
        token: TOKEN.into(),
    };
    let cluster = Arc::new(Mutex::new(Cluster::default()));
    run_to_the_end(&cluster, &experiment, &store, fleet.clone()).await;

    let id = results_id(&experiment);
    let runs = store.experiment_runs(id).await.unwrap();
    assert_eq!(runs.len(), 4);
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
