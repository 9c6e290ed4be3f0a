//! What the tests of the `loadlab` binary share.

use loadlab_results::{Database, Store};

/// A scratch database on `DATABASE_URL`'s server (or loadlab's private Postgres): its URL, for
/// the binary, and a store on it, for the test.
pub async fn scratch() -> (String, Store) {
    Database::from_env()
        .scratch_with_url()
        .await
        .expect("a scratch database")
}
