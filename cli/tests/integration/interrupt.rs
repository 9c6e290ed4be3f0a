//! Ctrl-C during `loadlab run`: nginx is stopped, the experiment is marked interrupted, and the
//! process exits with 130. The run's temporary directory is the test's own, so its nginx is
//! told apart from other tests' running beside it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use loadlab_results::Database;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const LONG: &str = r#"
apiVersion: loadlab.dev/v1alpha1
kind: Experiment
metadata: { name: interrupted }
spec:
  target: { nginx: { workers: 1 } }
  load: { connections: 4, duration: 10m }
  cohorts:
    - { name: only, local: true }
  repetitions: 1
"#;

/// nginx masters whose prefix is under `dir` (their command line names their config there).
fn running_targets(dir: &std::path::Path) -> usize {
    let output = Command::new("pgrep")
        .args(["-f", &format!("{}/loadlab-nginx-", dir.display())])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupting_a_run_stops_nginx_and_keeps_the_record_honest() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("long.yaml");
    std::fs::write(&file, LONG).unwrap();
    let (url, store) = Database::from_env().scratch_with_url().await.unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_loadlab"))
        .arg("run")
        .arg(&file)
        .env("DATABASE_URL", &url)
        .env("TMPDIR", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    // "experiment <id>: 1 runs" is printed once the node is described; the run starts after it.
    let mut experiment_id = None;
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        if let Some(rest) = line.strip_prefix("experiment ") {
            experiment_id = rest
                .split(':')
                .next()
                .map(|id| uuid::Uuid::parse_str(id).unwrap());
            break;
        }
        line.clear();
    }
    let experiment_id = experiment_id.expect("the experiment id is announced");
    // Interrupt once the target is up, i.e. while the storm runs (the window is 10 minutes).
    let mut checks = tokio::time::interval(std::time::Duration::from_millis(20));
    while running_targets(dir.path()) == 0 {
        checks.tick().await;
        assert!(
            child.try_wait().unwrap().is_none(),
            "loadlab exited before starting nginx"
        );
    }

    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(running_targets(dir.path()), 0, "nginx was left running");
    let experiment = store.experiment(experiment_id).await.unwrap();
    assert_eq!(experiment.status, "interrupted");
    assert!(
        store
            .experiment_runs(experiment_id)
            .await
            .unwrap()
            .is_empty(),
        "the cut-short run is not stored as measured"
    );
}
