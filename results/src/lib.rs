//! loadlab's results: the Postgres store, the private cluster behind it, and the statistics and
//! reports computed from stored runs. Nothing here knows HTTP or gRPC.

pub mod api;
pub mod cluster;
pub mod database;
pub mod flamegraph;
pub mod fleet;
pub mod ingest;
pub mod report;
pub mod stats;
pub mod store;

pub use database::Database;
pub use store::{
    ExperimentStatus, LockRecord, NewExperiment, NodeRecord, ProfileRecord, RunOutcome, RunRecord,
    Store, SymbolRecord,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "PostgreSQL server binaries not found under /usr/lib/postgresql: install them with `apt-get install postgresql`, or set DATABASE_URL"
    )]
    PostgresMissing,
    #[error("private postgres: {0}")]
    Cluster(String),
    #[error("DATABASE_URL is not a valid postgres URL: {0}")]
    BadUrl(String),
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot bring the database schema up to date: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    #[error("{0} not found")]
    NotFound(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
}
