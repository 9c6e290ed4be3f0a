//! The results database goes away between two runs and comes back: the finished run waits,
//! is written once the database answers, and the experiment completes with every run stored.
//! On a Postgres cluster of its own (in a temporary directory), so no other test sees the
//! restart.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use loadlab_results::cluster::PrivateCluster;
use loadlab_results::{RunOutcome, Store};

const EXPERIMENT: &str = r#"
apiVersion: loadlab.dev/v1alpha1
kind: Experiment
metadata: { name: restart }
spec:
  target: { nginx: { workers: 1 } }
  load: { connections: 4, duration: 1s }
  cohorts:
    - { name: only, local: true }
  repetitions: 3
  retries: 0
"#;

/// Stops the cluster when the test ends, however it ends.
struct Stopped<'a>(&'a PrivateCluster);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        let _ = self.0.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_between_runs_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // The cluster's owner (postgres, when the tests run as root) must reach its directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // loadlab creates and starts its private cluster there; the test stops and starts it.
    let cluster = PrivateCluster::in_data_dir(dir.path());
    let _stopped = Stopped(&cluster);
    let file = dir.path().join("restart.yaml");
    std::fs::write(&file, EXPERIMENT).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_loadlab"))
        .arg("run")
        .arg(&file)
        .env_remove("DATABASE_URL")
        .env("LOADLAB_DATA_DIR", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    let mut restarted = false;
    for line in stderr.lines() {
        let line = line.unwrap();
        if line.starts_with("[1/3 rep 1]") {
            // The first run is stored; the database goes away while the second one runs.
            cluster.stop().unwrap();
        }
        if line.starts_with("results database unavailable") {
            cluster.ensure_running().unwrap();
            restarted = true;
        }
        seen.push(line);
    }
    let status = child.wait().unwrap();
    let output = seen.join("\n");
    assert!(status.success(), "{output}");
    assert!(restarted, "the run never waited for the database: {output}");

    let store = Store::connect(cluster.connect_options("loadlab"))
        .await
        .unwrap();
    let experiment: uuid::Uuid = sqlx::query_scalar("SELECT id FROM experiments")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let runs = store.experiment_runs(experiment).await.unwrap();
    assert_eq!(runs.len(), 3, "{output}");
    assert!(runs.iter().all(|r| r.outcome == RunOutcome::Succeeded));
    assert_eq!(
        store.experiment(experiment).await.unwrap().status,
        "completed"
    );
}
