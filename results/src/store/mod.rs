//! The results store: experiments, nodes and runs in Postgres, one file per table family
//! (`experiments.rs`, `runs.rs`, `nodes.rs`, and `summaries.rs` for what is kept at ingest: cohort
//! summaries and written comparisons). A run is written once, whole, in one transaction, keyed by
//! its id: writing the same run again changes nothing.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Row};

use crate::Error;

/// The columns `experiment_from_row` reads, for every query that returns an experiment.
macro_rules! experiment_columns {
    () => {
        "id, name, baseline, cohorts, status, created_at, finished_at, revision,
         spec #>> '{spec,repetitions}' = 'auto' AS auto_repetitions,
         spec #> '{spec,stopping}' AS stopping,
         coalesce(planned_runs,
                  CASE WHEN jsonb_typeof(spec #> '{spec,repetitions}') = 'number'
                       THEN (spec #>> '{spec,repetitions}')::numeric::bigint * cardinality(cohorts)
                  END) AS planned_runs"
    };
}

mod experiments;
mod nodes;
mod runs;
mod summaries;

pub use runs::{Profiles, RunParts};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects and brings the schema up to date.
    pub async fn connect(options: PgConnectOptions) -> Result<Self, Error> {
        // One direct attempt first: it fails at once on a refused or unknown server, where the
        // pool would keep retrying until its acquire timeout.
        PgConnection::connect_with(&options)
            .await
            .map_err(Error::Connect)?
            .close()
            .await
            .map_err(Error::Connect)?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(Error::Connect)?;
        Self::from_pool(pool).await
    }

    pub(crate) async fn from_pool(pool: PgPool) -> Result<Self, Error> {
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Answers when the database does.
    pub async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// A value that changes whenever any stored run or experiment does: the number of
    /// experiments and the sum of their revisions, read in one snapshot.
    pub async fn results_revision(&self) -> Result<(i64, i64), Error> {
        let row = sqlx::query(
            "SELECT count(*) AS experiments, coalesce(sum(revision), 0)::bigint AS revisions FROM experiments",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("experiments")?, row.try_get("revisions")?))
    }
}
