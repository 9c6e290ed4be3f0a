//! The dashboard in a real browser: a real storm stores real runs in a scratch Postgres, a real
//! `loadlab serve` serves them, and the system's headless Chromium, driven by Playwright
//! (`api/web-tests/dashboard.mjs`), checks that every page shows the API's numbers, that
//! bad input gets a clear page, that axe-core finds no serious accessibility violation and the
//! console no error. Screenshots land in `target/tmp/dashboard/`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use loadlab_results::bisections::{BisectionStatus, BisectionStep, NewBisection};
use loadlab_results::model::ExperimentStatus;
use loadlab_results::{NewExperiment, RunOutcome};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use uuid::Uuid;

use crate::support::scratch;

const STORM: &str = r#"
apiVersion: loadlab.dev/v1alpha1
kind: Experiment
metadata: { name: dashboard-storm }
spec:
  target: { nginx: { workers: 1 } }
  load: { connections: 8, warmup: 300ms, duration: 1s }
  cohorts:
    - { name: one-worker, local: true }
    - { name: two-workers, local: true, target: { nginx: { workers: 2 } } }
  repetitions: 3
  baseline: one-worker
  collect: { lockContention: true, cpuProfile: { frequencyHz: 199 } }
"#;

/// Experiments stored besides the storm's, so pages are timed over a database of this size.
const STORED_EXPERIMENTS: usize = 200;

struct Served(Child, String);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

fn serve(database_url: &str) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadlab"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", database_url)
        .env_remove("LOADLAB_API_TOKEN")
        .stderr(Stdio::piped())
        .spawn()
        .expect("loadlab serve starts");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let url = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "loadlab serve exited before listening"
        );
        if let Some(rest) = line.trim().strip_prefix("loadlab dashboard on ") {
            break rest
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches('/')
                .to_string();
        }
    };
    // Keep reading so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in stderr.lines() {});
    Served(child, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_apis_numbers_in_a_real_browser() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let web_tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/web-tests");
    assert!(
        Path::new(&chromium).exists() && web_tests.join("node_modules/playwright-core").exists(),
        "the browser tests need {chromium} and api/web-tests/node_modules: \
         run scripts/install-deps.sh"
    );
    let (url, store) = scratch().await;
    for n in 0..STORED_EXPERIMENTS {
        let id = Uuid::new_v4();
        store
            .create_experiment(&NewExperiment {
                id,
                name: format!("stored-{n:03}"),
                spec: serde_json::json!({}),
                baseline: "a".into(),
                cohorts: vec!["a".into(), "b".into()],
                planned_runs: None,
            })
            .await
            .unwrap();
        store
            .finish_experiment(id, ExperimentStatus::Completed)
            .await
            .unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("storm.yaml");
    std::fs::write(&file, STORM).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_loadlab"))
        .arg("run")
        .arg(&file)
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let storm = store
        .list_experiments(Some("dashboard-storm"), None, 1, 0)
        .await
        .unwrap()
        .remove(0);

    // An experiment whose every run failed: the storm's first run, stored again as failed.
    let failed = NewExperiment {
        id: Uuid::new_v4(),
        name: "all-failed".into(),
        spec: serde_json::json!({}),
        baseline: "one-worker".into(),
        cohorts: vec!["one-worker".into()],
        planned_runs: None,
    };
    store.create_experiment(&failed).await.unwrap();
    let mut run = store.experiment_runs(storm.id).await.unwrap().remove(0);
    run.id = Uuid::new_v4();
    run.experiment_id = failed.id;
    run.outcome = RunOutcome::Failed {
        reason: "nginx exited during the window".into(),
    };
    store.record_run(&run).await.unwrap();

    // A running experiment of two planned runs with one stored: the browser watches the list
    // until the second run, stored while it waits, shows without a reload.
    let live = NewExperiment {
        id: Uuid::new_v4(),
        name: "live-progress".into(),
        spec: serde_json::json!({"spec": {"repetitions": 2}}),
        baseline: "one-worker".into(),
        cohorts: vec!["one-worker".into()],
        planned_runs: None,
    };
    store.create_experiment(&live).await.unwrap();
    let storm_runs = store.experiment_runs(storm.id).await.unwrap();
    let mut live_runs = storm_runs
        .into_iter()
        .filter(|r| r.cohort == "one-worker")
        .take(2)
        .map(|mut r| {
            r.id = Uuid::new_v4();
            r.experiment_id = live.id;
            r
        });
    store.record_run(&live_runs.next().unwrap()).await.unwrap();

    // A finished bisection over three kernels, its one step the storm.
    let bisection = Uuid::new_v4();
    let kernels: Vec<String> = ["47", "53", "56"]
        .iter()
        .map(|k| format!("linux-image-6.1.0-{k}-cloud-amd64-unsigned"))
        .collect();
    store
        .create_bisection(&NewBisection {
            id: bisection,
            name: "epoll-refcount".into(),
            spec: serde_json::json!({}),
            kernels: kernels.clone(),
            condition: "epmutex acquisitions per 1,000 connections below 100".into(),
        })
        .await
        .unwrap();
    store
        .record_bisection_step(
            bisection,
            &BisectionStep {
                step: 1,
                kernel_index: 1,
                kernel: kernels[1].clone(),
                experiment_id: storm.id,
                holds: Some(true),
                value: Some(0.0),
                decision: "epmutex acquisitions per 1,000 connections 0.0 < 100: holds".into(),
            },
        )
        .await
        .unwrap();
    store
        .finish_bisection(
            bisection,
            BisectionStatus::Found,
            Some(&kernels[1]),
            "linux-image-6.1.0-53-cloud-amd64-unsigned is the first kernel where it holds",
        )
        .await
        .unwrap();

    let (empty_url, _empty) = scratch().await;
    let served = serve(&url);
    let served_empty = serve(&empty_url);
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    let mut drive = Command::new("node")
        .arg(web_tests.join("dashboard.mjs"))
        .env("LOADLAB_URL", &served.1)
        .env("LOADLAB_EMPTY_URL", &served_empty.1)
        .env("LOADLAB_EXPERIMENT", storm.id.to_string())
        .env("LOADLAB_FAILED", failed.id.to_string())
        .env("LOADLAB_LIVE", live.id.to_string())
        .env("LOADLAB_BISECTION", bisection.to_string())
        .env("LOADLAB_ARTIFACTS", &artifacts)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs");
    let mut stdin = drive.stdin.take().unwrap();
    let mut report = String::new();
    for line in BufReader::new(drive.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line == "waiting for the next run" {
            store.record_run(&live_runs.next().unwrap()).await.unwrap();
            store
                .finish_experiment(live.id, ExperimentStatus::Completed)
                .await
                .unwrap();
            writeln!(stdin, "stored").unwrap();
        }
        report.push_str(&line);
        report.push('\n');
    }
    let status = drive.wait().unwrap();
    println!("{report}");
    assert!(
        status.success(),
        "{report}\nscreenshots in {}",
        artifacts.display()
    );
    assert!(report.contains("all checks passed"), "{report}");
}
