//! Fixtures shared by the results tests: a scratch database and runs that read like data.
#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use loadlab_proto::histogram::{encode_histogram, latency_histogram};
use loadlab_results::model::WindowCounters;
use loadlab_results::{
    Database, LockRecord, NewExperiment, NodeRecord, ProfileRecord, RunOutcome, RunRecord, Store,
    SymbolRecord,
};
use uuid::Uuid;

pub async fn store() -> Store {
    Database::from_env()
        .scratch()
        .await
        .expect("a scratch database")
}

pub fn node() -> NodeRecord {
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

pub fn histogram(values: &[u64]) -> Vec<u8> {
    let mut h = latency_histogram();
    for v in values {
        h.record(*v).unwrap();
    }
    encode_histogram(&h).unwrap()
}

pub fn run(experiment_id: Uuid, cohort: &str, repetition: i32, conn_per_sec: f64) -> RunRecord {
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
        lock_source: Some("lock tracepoints".into()),
        cpu_profile: Some(ProfileRecord {
            frequency_hz: 499,
            samples: 100,
            idle_samples: 10,
            folded: vec![
                ("nginx;__fput;eventpoll_release_file;osq_lock".into(), 56),
                ("swapper;do_idle;default_idle".into(), 10),
                ("nginx;tcp_v4_rcv".into(), 34),
            ],
            top_symbols: vec![SymbolRecord {
                symbol: "osq_lock".into(),
                self_samples: 56,
                total_samples: 56,
            }],
        }),
        cpu_profile_unavailable: None,
        generator_skew_us: None,
    }
}

pub async fn experiment(store: &Store) -> NewExperiment {
    let experiment = NewExperiment {
        id: Uuid::new_v4(),
        name: "epoll".into(),
        spec: serde_json::json!({"spec": {"repetitions": 3}}),
        baseline: "unpatched".into(),
        cohorts: vec!["unpatched".into(), "patched".into()],
        planned_runs: None,
    };
    store.create_experiment(&experiment).await.unwrap();
    experiment
}

/// An experiment with three repetitions of two cohorts, `patched` 60% faster than `unpatched`.
pub async fn seeded_faster_patched() -> (Store, Uuid) {
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
    (store, experiment.id)
}
