//! The store against a real Postgres (DATABASE_URL, or loadlab's private cluster).

use loadlab_results::report::{build_report, comparison_body};
use loadlab_results::stats::Verdict;
use loadlab_results::{ExperimentStatus, RunOutcome};
use uuid::Uuid;

mod common;
use common::{experiment, run, seeded_faster_patched, store};

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
async fn a_read_of_runs_brings_only_the_parts_asked_for() {
    use loadlab_results::store::{Profiles, RunParts};
    let store = store().await;
    let experiment = experiment(&store).await;
    let written = [
        run(experiment.id, "unpatched", 1, 1000.0),
        run(experiment.id, "patched", 1, 1500.0),
    ];
    for run in &written {
        assert!(store.record_run(run).await.unwrap());
    }
    let whole = store.experiment_runs(experiment.id).await.unwrap();
    let by_cohort = |mut runs: Vec<loadlab_results::RunRecord>| {
        runs.sort_by(|a, b| a.cohort.cmp(&b.cohort));
        runs
    };
    assert_eq!(by_cohort(whole.clone()), by_cohort(written.to_vec()));
    assert!(
        whole
            .iter()
            .all(|r| !r.locks.is_empty() && r.cpu_profile.is_some())
    );
    // Rows only: the same runs without locks or profiles.
    let rows = store
        .runs_with(experiment.id, RunParts::ROWS)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert!(row.locks.is_empty() && row.cpu_profile.is_none());
        let mut bare = whole.iter().find(|r| r.id == row.id).unwrap().clone();
        bare.locks.clear();
        bare.cpu_profile = None;
        assert_eq!(row, &bare);
    }
    // One cohort's profiles.
    let patched = ["patched".to_string()];
    let parts = RunParts {
        locks: false,
        profiles: Profiles::OfCohorts(&patched),
    };
    let one = store.runs_with(experiment.id, parts).await.unwrap();
    for run in &one {
        assert_eq!(
            run.cpu_profile.is_some(),
            run.cohort == "patched",
            "{}",
            run.cohort
        );
    }
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
    let (store, id) = seeded_faster_patched().await;
    let experiment = store.experiment(id).await.unwrap();
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

#[tokio::test]
async fn cohort_summaries_give_the_report_the_runs_give() {
    let (store, id) = seeded_faster_patched().await;
    let mut failed = run(id, "patched", 4, 0.0);
    failed.outcome = RunOutcome::Failed {
        reason: "storm: connection refused".into(),
    };
    store.record_run(&failed).await.unwrap();
    // Written twice, folded once.
    let again = run(id, "unpatched", 4, 1005.0);
    assert!(store.record_run(&again).await.unwrap());
    assert!(!store.record_run(&again).await.unwrap());

    let experiment = store.experiment(id).await.unwrap();
    let from_runs = build_report(
        experiment.clone(),
        &store.experiment_runs(id).await.unwrap(),
    )
    .unwrap();
    let summarized = store
        .summarized_report(&experiment)
        .await
        .unwrap()
        .expect("every run is in a summary");
    assert_eq!(summarized, from_runs);
    assert_eq!(summarized.cohorts[0].runs_succeeded, 4);
    assert_eq!(summarized.cohorts[1].runs_failed, 1);
}

#[tokio::test]
async fn runs_written_at_once_are_all_folded() {
    let store = store().await;
    let experiment = experiment(&store).await;
    let mut writes = Vec::new();
    for repetition in 1..=12 {
        let store = store.clone();
        let record = run(
            experiment.id,
            "patched",
            repetition,
            1000.0 + f64::from(repetition),
        );
        writes.push(tokio::spawn(async move { store.record_run(&record).await }));
    }
    for write in writes {
        assert!(write.await.unwrap().unwrap());
    }
    let row = store.experiment(experiment.id).await.unwrap();
    let report = store.summarized_report(&row).await.unwrap().unwrap();
    assert_eq!(report.cohorts[1].runs_succeeded, 12);
    assert_eq!(report.cohorts[0].runs_succeeded, 0);
    // Each write's comparison saw the writes committed before it: the last one has them all.
    let written = written_comparison(&store, experiment.id).await;
    assert_eq!(written["cohorts"][1]["runs_succeeded"], 12);
    // Runs folded in the order they committed, read back in another: same values.
    let per_run_sorted = |mut comparison: serde_json::Value| {
        for cohort in comparison["cohorts"].as_array_mut().unwrap() {
            for per_run in ["connections_per_second", "cpu_us_per_connection"] {
                if let Some(values) = cohort[per_run].as_array_mut() {
                    values.sort_by(|a, b| a.as_f64().unwrap().total_cmp(&b.as_f64().unwrap()));
                }
            }
        }
        comparison
    };
    assert_eq!(
        per_run_sorted(written),
        per_run_sorted(computed_comparison(&store, experiment.id).await)
    );
}

/// The comparison written with the experiment's current revision.
async fn written_comparison(store: &loadlab_results::Store, id: Uuid) -> serde_json::Value {
    let (_, body) = store.experiment_with_comparison(id).await.unwrap();
    serde_json::from_slice(&body.expect("a comparison written at the current revision")).unwrap()
}

/// The comparison computed afresh from the stored runs.
async fn computed_comparison(store: &loadlab_results::Store, id: Uuid) -> serde_json::Value {
    let experiment = store.experiment(id).await.unwrap();
    let report = build_report(experiment, &store.experiment_runs(id).await.unwrap()).unwrap();
    serde_json::from_slice(&comparison_body(report).unwrap()).unwrap()
}

#[tokio::test]
async fn the_written_comparison_follows_every_change_of_its_experiment() {
    let (store, id) = seeded_faster_patched().await;
    assert_eq!(
        written_comparison(&store, id).await,
        computed_comparison(&store, id).await
    );
    store
        .finish_experiment(id, ExperimentStatus::Completed)
        .await
        .unwrap();
    let finished = written_comparison(&store, id).await;
    assert_eq!(finished["experiment"]["status"], "completed");
    assert_eq!(finished, computed_comparison(&store, id).await);
    store.reopen_experiment(id, None).await.unwrap();
    let mut failed = run(id, "patched", 4, 0.0);
    failed.outcome = RunOutcome::Failed {
        reason: "refused".into(),
    };
    store.record_run(&failed).await.unwrap();
    let reopened = written_comparison(&store, id).await;
    assert_eq!(reopened["experiment"]["status"], "running");
    assert_eq!(reopened["cohorts"][1]["runs_failed"], 1);
    assert_eq!(reopened, computed_comparison(&store, id).await);
}

#[tokio::test]
async fn runs_without_a_summary_make_the_report_read_the_runs() {
    let (store, id) = seeded_faster_patched().await;
    // As if these runs had been stored before summaries existed.
    sqlx::query("DELETE FROM cohort_summaries WHERE experiment_id = $1")
        .bind(id)
        .execute(store.pool())
        .await
        .unwrap();
    store
        .record_run(&run(id, "patched", 4, 1600.0))
        .await
        .unwrap();
    let experiment = store.experiment(id).await.unwrap();
    assert!(
        store
            .summarized_report(&experiment)
            .await
            .unwrap()
            .is_none()
    );
    let (_, written) = store.experiment_with_comparison(id).await.unwrap();
    assert!(
        written.is_none(),
        "no comparison is written from partial summaries"
    );
}

#[tokio::test]
async fn per_node_sums_agree_with_the_runs_they_sum() {
    let (store, id) = seeded_faster_patched().await;
    let mut failed = run(id, "patched", 4, 0.0);
    failed.outcome = RunOutcome::Failed {
        reason: "refused".into(),
    };
    store.record_run(&failed).await.unwrap();
    // Every run is in the one experiment named "epoll": both ways of summing see the same runs.
    let from_node_sums = store.kernel_runs("*", None).await.unwrap();
    let from_runs = store.kernel_runs("*", Some("epoll")).await.unwrap();
    assert_eq!(from_node_sums.len(), 1);
    assert_eq!(from_runs.len(), 1);
    let (a, b) = (&from_node_sums[0].sums, &from_runs[0].sums);
    assert_eq!(a.n, 6);
    assert_eq!(a.n, b.n);
    for (x, y) in [
        (a.sum, b.sum),
        (a.sum_squares, b.sum_squares),
        (a.sum_logs, b.sum_logs),
        (a.sum_log_squares, b.sum_log_squares),
    ] {
        assert!((x - y).abs() <= 1e-9 * x.abs().max(1.0), "{x} vs {y}");
    }
}

/// The schema as it was before runs were keyed per node (every migration before 0011).
async fn database_before_runs_per_node() -> (sqlx::PgPool, sqlx::postgres::PgConnectOptions) {
    use std::str::FromStr;
    let url = loadlab_results::Database::from_env()
        .scratch_url()
        .await
        .unwrap();
    let options = sqlx::postgres::PgConnectOptions::from_str(&url).unwrap();
    let earlier = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.as_str() < "0011" {
            std::fs::copy(&path, earlier.path().join(&name)).unwrap();
        }
    }
    let pool = sqlx::PgPool::connect_with(options.clone()).await.unwrap();
    sqlx::migrate::Migrator::new(earlier.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    (pool, options)
}

#[tokio::test]
async fn the_per_node_migration_keeps_every_run_and_a_second_node_of_a_cohort_stores_its_own() {
    let (old, options) = database_before_runs_per_node().await;
    let first = run(Uuid::new_v4(), "unpatched", 1, 1000.0);
    let node_id = first.node.id();
    sqlx::query(
        "INSERT INTO experiments (id, name, spec, baseline, cohorts, status)
         VALUES ($1, 'old', '{\"spec\": {\"repetitions\": 2}}', 'unpatched', '{unpatched,patched}',
                 'completed')",
    )
    .bind(first.experiment_id)
    .execute(&old)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO nodes (id, hostname, kernel_release, kernel_version, cpu_model, logical_cpus,
                            memory_bytes, facts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&node_id)
    .bind(&first.node.hostname)
    .bind(&first.node.kernel_release)
    .bind(&first.node.kernel_version)
    .bind(&first.node.cpu_model)
    .bind(first.node.logical_cpus)
    .bind(first.node.memory_bytes)
    .bind(&first.node.facts)
    .execute(&old)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO runs (id, experiment_id, cohort, repetition, attempt, sequence, node_id, status,
                           started_at, finished_at, target, load, window_seconds,
                           completed_connections, failed_connections, warmup_connections,
                           connections_per_second, errors, connect_histogram, first_byte_histogram,
                           total_histogram, completed_per_second, counters, workload)
         VALUES ($1, $2, 'unpatched', 1, 1, 0, $3, 'succeeded', $4, $5, $6, $7, 10, 10000, 0, 0,
                 1000, '{}', $8, $8, $8, '{}', $9, '{}')",
    )
    .bind(first.id)
    .bind(first.experiment_id)
    .bind(&node_id)
    .bind(first.started_at)
    .bind(first.finished_at)
    .bind(&first.target)
    .bind(&first.load)
    .bind(common::histogram(&[]))
    .bind(serde_json::to_value(&first.counters).unwrap())
    .execute(&old)
    .await
    .unwrap();
    old.close().await;

    // Connecting applies the migration.
    let store = loadlab_results::Store::connect(options).await.unwrap();
    let kept = store.experiment_runs(first.experiment_id).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        (
            kept[0].id,
            kept[0].node.id(),
            kept[0].connections_per_second
        ),
        (first.id, node_id, 1000.0)
    );
    let experiment = store.experiment(first.experiment_id).await.unwrap();
    assert_eq!(
        experiment.planned_runs,
        Some(4),
        "an experiment from before plans repetitions × cohorts"
    );

    // The same cohort, repetition and attempt on another node of the cohort is its own run.
    let mut second_node = first.clone();
    second_node.id = Uuid::new_v4();
    second_node.node.hostname = "lab-2".into();
    assert!(store.record_run(&second_node).await.unwrap());
    // The same node again under another id is the same run twice: refused, nothing written.
    let mut repeated = first.clone();
    repeated.id = Uuid::new_v4();
    assert!(store.record_run(&repeated).await.is_err());
    let runs = store.experiment_runs(first.experiment_id).await.unwrap();
    assert_eq!(runs.len(), 2);
}

/// Every run's node CPU per connection (busy share × window × CPUs ÷ connections), and the
/// cohorts compared on connections per CPU-second: the same busy node serving more
/// connections serves each for less.
#[tokio::test]
async fn cpu_per_connection_is_reported_and_compared() {
    let (store, id) = seeded_faster_patched().await;
    let report = store
        .report(store.experiment(id).await.unwrap())
        .await
        .unwrap();
    let (unpatched, patched) = (&report.cohorts[0], &report.cohorts[1]);
    // 0.9 busy × 10 s × 2 CPUs ÷ (1,000 conn/s × 10 s) = 1,800 µs.
    assert_eq!(unpatched.cpu_us_per_connection[0], 1800.0);
    assert_eq!(patched.cpu_us_per_connection[0], 1125.0);
    let cpu = patched.cpu_per_connection.unwrap();
    assert!((cpu.mean - 1125.0).abs() < 5.0, "{cpu:?}");
    assert!(unpatched.efficiency_comparison.is_none(), "the baseline");
    let cheaper = patched.efficiency_comparison.as_ref().unwrap();
    assert!((cheaper.ratio - 1.6).abs() < 0.01, "{cheaper:?}");
    assert_eq!(cheaper.verdict, loadlab_results::stats::Verdict::Improved);
}

#[tokio::test]
async fn a_bisection_keeps_its_steps_in_order_and_its_answer() {
    use loadlab_results::bisections::{BisectionStatus, BisectionStep, NewBisection};
    let store = store().await;
    let first = experiment(&store).await;
    let second = experiment(&store).await;
    let id = Uuid::new_v4();
    let kernels: Vec<String> = ["47", "50", "53", "56"]
        .iter()
        .map(|k| format!("linux-image-6.1.0-{k}-cloud-amd64-unsigned"))
        .collect();
    store
        .create_bisection(&NewBisection {
            id,
            name: "epoll-refcount".into(),
            spec: serde_json::json!({"kernels": kernels}),
            kernels: kernels.clone(),
            condition: "epmutex acquisitions per 1,000 connections below 100".into(),
        })
        .await
        .unwrap();
    let running = store.bisection(id).await.unwrap();
    assert_eq!(running.status, BisectionStatus::Running);
    assert!(running.steps.is_empty() && running.finished_at.is_none());
    let step = |step: u32, index: u32, experiment_id: Uuid, holds: Option<bool>| BisectionStep {
        step,
        kernel_index: index,
        kernel: kernels[index as usize].clone(),
        experiment_id,
        holds,
        value: holds.map(|h| if h { 0.0 } else { 991.5 }),
        decision: format!("step {step}"),
    };
    // Written out of order, read in order; a step written twice is refused, not replaced.
    store
        .record_bisection_step(id, &step(2, 2, second.id, Some(true)))
        .await
        .unwrap();
    store
        .record_bisection_step(id, &step(1, 1, first.id, Some(false)))
        .await
        .unwrap();
    assert!(
        store
            .record_bisection_step(id, &step(1, 2, first.id, None))
            .await
            .is_err()
    );
    let orphan = step(3, 3, Uuid::new_v4(), None);
    assert!(
        store.record_bisection_step(id, &orphan).await.is_err(),
        "a step names a stored experiment"
    );
    store
        .finish_bisection(
            id,
            BisectionStatus::Found,
            Some(&kernels[2]),
            "first holds at 6.1.0-53",
        )
        .await
        .unwrap();
    let found = store.bisection(id).await.unwrap();
    assert_eq!(found.status, BisectionStatus::Found);
    assert_eq!(found.first_holding.as_deref(), Some(kernels[2].as_str()));
    assert_eq!(
        found.steps,
        vec![
            step(1, 1, first.id, Some(false)),
            step(2, 2, second.id, Some(true))
        ]
    );
    assert!(found.finished_at.is_some());
    assert_eq!(store.list_bisections(10).await.unwrap(), vec![found]);
    assert!(matches!(
        store.bisection(Uuid::new_v4()).await,
        Err(loadlab_results::Error::NotFound(_))
    ));
}
