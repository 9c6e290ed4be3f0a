//! What is kept at ingest: each cohort's summary, folded run by run, and the experiment's
//! comparison written with the revision it belongs to.

use sqlx::types::Json;
use sqlx::{PgConnection, Row};

use super::Store;
use crate::Error;
use crate::model::{ExperimentRow, NodeRecord, RunRecord};
use crate::report::{
    CohortAccumulator, CohortReport, ExperimentReport, assemble_finished, comparison_body,
};

impl Store {
    /// An experiment's report from its cohort summaries, when they hold every stored run of it
    /// (runs written before summaries existed are not in them); `None` otherwise.
    pub async fn summarized_report(
        &self,
        experiment: &ExperimentRow,
    ) -> Result<Option<ExperimentReport>, Error> {
        let mut conn = self.pool.acquire().await?;
        summarized_report_in(&mut conn, experiment).await
    }

    /// An experiment's report: from its cohort summaries when they hold every stored run, else
    /// from the runs themselves (which reads and unpacks every profile).
    pub async fn report(&self, experiment: ExperimentRow) -> Result<ExperimentReport, Error> {
        match self.summarized_report(&experiment).await? {
            Some(report) => Ok(report),
            None => {
                let runs = self.experiment_runs(experiment.id).await?;
                crate::report::build_report(experiment, &runs)
            }
        }
    }
}

async fn summarized_report_in(
    conn: &mut PgConnection,
    experiment: &ExperimentRow,
) -> Result<Option<ExperimentReport>, Error> {
    let rows = sqlx::query(
        "SELECT runs, report, nodes, (SELECT count(*) FROM runs WHERE experiment_id = $1) AS stored
         FROM cohort_summaries WHERE experiment_id = $1",
    )
    .bind(experiment.id)
    .fetch_all(&mut *conn)
    .await?;
    let stored: i64 = match rows.first() {
        Some(row) => row.try_get("stored")?,
        None => {
            let stored: i64 =
                sqlx::query_scalar("SELECT count(*) FROM runs WHERE experiment_id = $1")
                    .bind(experiment.id)
                    .fetch_one(&mut *conn)
                    .await?;
            stored
        }
    };
    let mut folded = 0;
    let mut finished = Vec::with_capacity(rows.len());
    for row in &rows {
        folded += row.try_get::<i64, _>("runs")?;
        let corrupt = |e: sqlx::Error| Error::Corrupt(format!("cohort summary: {e}"));
        let report: CohortReport = row.try_get::<Json<_>, _>("report").map_err(corrupt)?.0;
        let nodes: Vec<NodeRecord> = row.try_get::<Json<_>, _>("nodes").map_err(corrupt)?.0;
        finished.push((nodes, report));
    }
    if folded != stored {
        return Ok(None);
    }
    Ok(Some(assemble_finished(experiment.clone(), finished)))
}

/// Writes the comparison of `experiment`, as its revision bump returned it, in the transaction
/// that bumped it: concurrent writers of one experiment take turns on that row, and each sees
/// what the one before committed.
pub(super) async fn refresh_comparison(
    conn: &mut PgConnection,
    experiment: &ExperimentRow,
) -> Result<(), Error> {
    let (id, revision) = (experiment.id, experiment.revision);
    match summarized_report_in(conn, experiment).await? {
        Some(report) => {
            sqlx::query(
                "INSERT INTO comparisons (experiment_id, revision, body) VALUES ($1, $2, $3)
                 ON CONFLICT (experiment_id) DO UPDATE SET revision = EXCLUDED.revision, body = EXCLUDED.body",
            )
            .bind(id)
            .bind(revision)
            .bind(comparison_body(report)?)
            .execute(&mut *conn)
            .await?;
        }
        None => {
            sqlx::query("DELETE FROM comparisons WHERE experiment_id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// Folds a run just inserted into its cohort's summary, in the run's transaction. The row is
/// created first (an empty accumulator) so that concurrent runs of one cohort wait for each
/// other on it and fold one after another. A cohort whose earlier runs were stored before
/// summaries existed gets none: its reports read its runs.
pub(super) async fn fold_into_cohort_summary(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    run: &RunRecord,
) -> Result<(), Error> {
    let created = sqlx::query(
        "INSERT INTO cohort_summaries (experiment_id, cohort, runs, accumulator, report, nodes)
         VALUES ($1, $2, 0, $3, 'null', '[]') ON CONFLICT (experiment_id, cohort) DO NOTHING",
    )
    .bind(run.experiment_id)
    .bind(&run.cohort)
    .bind(Json(CohortAccumulator::new(&run.cohort)))
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if created {
        let earlier: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM runs WHERE experiment_id = $1 AND cohort = $2 AND id <> $3",
        )
        .bind(run.experiment_id)
        .bind(&run.cohort)
        .bind(run.id)
        .fetch_one(&mut **tx)
        .await?;
        if earlier > 0 {
            sqlx::query("DELETE FROM cohort_summaries WHERE experiment_id = $1 AND cohort = $2")
                .bind(run.experiment_id)
                .bind(&run.cohort)
                .execute(&mut **tx)
                .await?;
            return Ok(());
        }
    }
    let row = sqlx::query(
        "SELECT accumulator FROM cohort_summaries
         WHERE experiment_id = $1 AND cohort = $2 FOR UPDATE",
    )
    .bind(run.experiment_id)
    .bind(&run.cohort)
    .fetch_one(&mut **tx)
    .await?;
    let mut accumulator = row
        .try_get::<Json<CohortAccumulator>, _>("accumulator")
        .map_err(|e| Error::Corrupt(format!("cohort summary: {e}")))?
        .0;
    accumulator.add(run)?;
    let report = accumulator.clone().finish();
    sqlx::query(
        "UPDATE cohort_summaries SET runs = $3, accumulator = $4, report = $5, nodes = $6
         WHERE experiment_id = $1 AND cohort = $2",
    )
    .bind(run.experiment_id)
    .bind(&run.cohort)
    .bind(accumulator.runs() as i64)
    .bind(Json(&accumulator))
    .bind(Json(&report))
    .bind(Json(accumulator.nodes()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}
