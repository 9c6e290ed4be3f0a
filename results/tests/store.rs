//! The store against a real Postgres (DATABASE_URL, or loadlab's private cluster).

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use loadlab_proto::histogram::{encode_histogram, latency_histogram};
use loadlab_results::report::build_report;
use loadlab_results::stats::Verdict;
use loadlab_results::store::WindowCounters;
use loadlab_results::{
    Database, ExperimentStatus, LockRecord, NewExperiment, NodeRecord, ProfileRecord, RunOutcome,
    RunRecord, Store, SymbolRecord,
};
use uuid::Uuid;

async fn store() -> Store {
    Database::from_env()
        .scratch()
        .await
        .expect("a scratch database")
}

fn node() -> NodeRecord {
    NodeRecord {
        hostname: "lab-1".into(),
        kernel_release: "6.1.0-56-cloud-amd64".into(),
        kernel_version: "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-1".into(),
        cpu_model: "Test CPU".into(),
        logical_cpus: 2,
        memory_bytes: 1 << 30,
        facts: serde_json::json!({"kernel_symbols": {"ep_clear_and_put": "present"}}),
    }
}

fn histogram(values: &[u64]) -> Vec<u8> {
    let mut h = latency_histogram();
    for v in values {
        h.record(*v).unwrap();
    }
    encode_histogram(&h).unwrap()
}

fn run(experiment_id: Uuid, cohort: &str, repetition: i32, conn_per_sec: f64) -> RunRecord {
    RunRecord {
        id: Uuid::new_v4(),
        experiment_id,
        cohort: cohort.into(),
        repetition,
        attempt: 1,
        sequence: repetition * 2,
        node: node(),
        outcome: RunOutcome::Succeeded,
        started_at: Utc.with_ymd_and_hms(2026, 11, 25, 6, 0, 0).unwrap(),
        finished_at: Utc.with_ymd_and_hms(2026, 11, 25, 6, 0, 10).unwrap(),
        target: serde_json::json!({"workers": 1}),
        load: serde_json::json!({"connections": 64}),
        window_seconds: 10.0,
        completed_connections: (conn_per_sec * 10.0) as i64,
        failed_connections: 1,
        warmup_connections: 5,
        connections_per_second: conn_per_sec,
        errors: BTreeMap::from([("reset".to_string(), 1)]),
        connect_histogram: histogram(&[50, 60]),
        first_byte_histogram: histogram(&[150, 160]),
        total_histogram: histogram(&[200, 300]),
        completed_per_second: vec![10, 10],
        counters: WindowCounters {
            nginx_accepts: (conn_per_sec * 10.0) as u64 + 1,
            tcp_passive_opens: (conn_per_sec * 10.0) as u64 + 1,
            cpu_busy_share: 0.9,
            ..WindowCounters::default()
        },
        locks: vec![LockRecord {
            lock: "epmutex".into(),
            lock_type: "mutex".into(),
            caller: "eventpoll_release_file".into(),
            stack: "osq_lock;__mutex_lock;eventpoll_release_file".into(),
            count: 10,
            wait_ns: 1_000_000,
            max_wait_ns: 50_000,
            epoll: true,
        }],
        lock_contention_unavailable: None,
        cpu_profile: Some(ProfileRecord {
            frequency_hz: 499,
            samples: 100,
            idle_samples: 10,
            folded: vec![
                ("nginx;__fput;eventpoll_release_file;osq_lock".into(), 56),
                ("swapper;do_idle;default_idle".into(), 10),
            ],
            top_symbols: vec![SymbolRecord {
                symbol: "osq_lock".into(),
                self_samples: 56,
                total_samples: 56,
            }],
        }),
        cpu_profile_unavailable: None,
    }
}

async fn experiment(store: &Store) -> NewExperiment {
    let experiment = NewExperiment {
        id: Uuid::new_v4(),
        name: "epoll".into(),
        spec: serde_json::json!({"repetitions": 3}),
        baseline: "unpatched".into(),
        cohorts: vec!["unpatched".into(), "patched".into()],
    };
    store.create_experiment(&experiment).await.unwrap();
    experiment
}

#[tokio::test]
async fn runs_round_trip_and_are_written_once() {
    let store = store().await;
    let experiment = experiment(&store).await;
    let first = run(experiment.id, "unpatched", 1, 1000.0);
    assert!(store.record_run(&first).await.unwrap());
    let mut changed = first.clone();
    changed.connections_per_second = 1.0;
    assert!(
        !store.record_run(&changed).await.unwrap(),
        "same id: nothing written"
    );
    let stored = store.experiment_runs(experiment.id).await.unwrap();
    assert_eq!(stored, vec![first]);
}

#[tokio::test]
async fn a_run_of_an_unknown_experiment_writes_nothing() {
    let store = store().await;
    let orphan = run(Uuid::new_v4(), "unpatched", 1, 1000.0);
    assert!(store.record_run(&orphan).await.is_err());
    let nodes: i64 = sqlx::query_scalar("SELECT count(*) FROM nodes")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(nodes, 0, "the node upsert was rolled back with the run");
}

#[tokio::test]
async fn failed_runs_keep_their_reason() {
    let store = store().await;
    let experiment = experiment(&store).await;
    let mut failed = run(experiment.id, "patched", 1, 0.0);
    failed.outcome = RunOutcome::Failed {
        reason: "nginx exited at start".into(),
    };
    store.record_run(&failed).await.unwrap();
    let stored = store.experiment_runs(experiment.id).await.unwrap();
    assert_eq!(stored[0].outcome, failed.outcome);
}

#[tokio::test]
async fn the_report_compares_cohorts_from_stored_runs() {
    let store = store().await;
    let experiment = experiment(&store).await;
    for (repetition, (a, b)) in [(1000.0, 1600.0), (1010.0, 1610.0), (990.0, 1590.0)]
        .into_iter()
        .enumerate()
    {
        let repetition = repetition as i32 + 1;
        store
            .record_run(&run(experiment.id, "unpatched", repetition, a))
            .await
            .unwrap();
        store
            .record_run(&run(experiment.id, "patched", repetition, b))
            .await
            .unwrap();
    }
    store
        .finish_experiment(experiment.id, ExperimentStatus::Completed)
        .await
        .unwrap();
    let row = store.experiment(experiment.id).await.unwrap();
    assert_eq!(row.status, "completed");
    let report = build_report(row, &store.experiment_runs(experiment.id).await.unwrap()).unwrap();
    let [unpatched, patched] = &report.cohorts[..] else {
        panic!("two cohorts expected: {:?}", report.cohorts);
    };
    assert!(unpatched.comparison.is_none());
    let comparison = patched.comparison.as_ref().unwrap();
    assert_eq!(comparison.verdict, Verdict::Improved);
    assert!((comparison.ratio - 1.6).abs() < 0.01);
    assert_eq!(patched.runs_succeeded, 3);
    assert_eq!(patched.errors["reset"], 3);
    assert_eq!(patched.total_latency.max_us, 300);
    assert_eq!(patched.nginx_accepts, patched.completed_connections + 3);
    assert_eq!(report.nodes.len(), 1);
    let epmutex = &patched.locks[0];
    assert_eq!(
        (epmutex.lock.as_str(), epmutex.count, epmutex.wait_ns),
        ("epmutex", 30, 3_000_000)
    );
    assert_eq!(epmutex.top_caller, "eventpoll_release_file");
    // 3 ms of wait over three 10 s windows of 2 CPUs.
    assert!((epmutex.share_of_cpu_time - 3e-3 / 60.0).abs() < 1e-12);
    assert_eq!(patched.epoll_share_of_contention, Some(1.0));
    assert_eq!(patched.cpu_profile_samples, 300);
    assert_eq!(patched.cpu_symbols[0].symbol, "osq_lock");
    assert!((patched.cpu_symbols[0].self_share - 0.56).abs() < 1e-12);
}

#[tokio::test]
async fn unknown_experiments_are_not_found() {
    let store = store().await;
    let error = store.experiment(Uuid::new_v4()).await.unwrap_err();
    assert!(error.to_string().contains("not found"), "{error}");
    assert!(
        store
            .finish_experiment(Uuid::new_v4(), ExperimentStatus::Failed)
            .await
            .is_err()
    );
}
