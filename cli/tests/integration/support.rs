//! What the tests of the `loadlab` binary share.

use std::process::Output;

use loadlab_results::{Database, Store};

/// A scratch database on `DATABASE_URL`'s server (or loadlab's private Postgres): its URL, for
/// the binary, and a store on it, for the test.
pub async fn scratch() -> (String, Store) {
    Database::from_env()
        .scratch_with_url()
        .await
        .expect("a scratch database")
}

/// How many experiments the scratch database holds.
pub async fn stored_experiments(store: &Store) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM experiments")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// The id of the scratch database's one experiment.
pub async fn only_experiment(store: &Store) -> uuid::Uuid {
    sqlx::query_scalar("SELECT id FROM experiments")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// The command failed with exactly one error line, which says `says`.
pub fn fails_in_one_line(output: &Output, says: &str) {
    assert!(!output.status.success());
    let errors = error_lines(output);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains(says), "{errors:?}");
}

pub fn error_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| l.starts_with("error:"))
        .map(str::to_string)
        .collect()
}
