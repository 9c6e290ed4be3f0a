//! loadlab's results: the Postgres store, the private Postgres server behind it, and the
//! statistics and reports computed from stored runs. Nothing here knows HTTP or gRPC.

pub mod bisections;
pub mod callchains;
pub mod data_dir;
mod database;
pub mod flamegraph;
pub mod fleet;
pub mod ingest;
pub mod model;
pub mod noise;
pub mod paste;
pub mod private_postgres;
pub mod report;
pub mod sequential;
pub mod stats;
pub mod store;

pub use database::Database;
pub use model::{
    ExperimentStatus, LockRecord, NewExperiment, NodeRecord, ProfileRecord, RunOutcome, RunRecord,
    SymbolRecord,
};
pub use store::Store;

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

impl Error {
    /// Whether the error may go away by itself (the connection, not the data, is at fault), so
    /// the same write is worth trying again.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connect(_) => true,
            Error::Query(error) => match error {
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_) => true,
                // Class 08: connection exceptions; class 57: the server is shutting down.
                sqlx::Error::Database(db) => db
                    .code()
                    .is_some_and(|code| code.starts_with("08") || code.starts_with("57")),
                _ => false,
            },
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn only_connection_trouble_is_transient() {
        assert!(Error::Connect(sqlx::Error::PoolTimedOut).is_transient());
        assert!(Error::Query(sqlx::Error::PoolTimedOut).is_transient());
        assert!(
            Error::Query(sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into()))
                .is_transient()
        );
        assert!(!Error::Query(sqlx::Error::RowNotFound).is_transient());
        assert!(!Error::NotFound("experiment x".into()).is_transient());
        assert!(!Error::Corrupt("histogram".into()).is_transient());
    }
}
