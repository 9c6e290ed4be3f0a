//! Experiments: created, reopened, finished, read and listed.

use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::Store;
use super::summaries::refresh_comparison;
use crate::Error;
use crate::model::{ExperimentRow, ExperimentStatus, NewExperiment, StoppingRule};

impl Store {
    /// Records a new experiment. Returns false when one with this id exists (left as it was).
    pub async fn create_experiment(&self, experiment: &NewExperiment) -> Result<bool, Error> {
        let created = sqlx::query(
            "INSERT INTO experiments (id, name, spec, baseline, cohorts, status, planned_runs)
             VALUES ($1, $2, $3, $4, $5, 'running', $6)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(experiment.id)
        .bind(&experiment.name)
        .bind(&experiment.spec)
        .bind(&experiment.baseline)
        .bind(&experiment.cohorts)
        .bind(experiment.planned_runs)
        .execute(&self.pool)
        .await?;
        Ok(created.rows_affected() == 1)
    }

    /// Marks a stored experiment as running again (it is being resumed), planning
    /// `planned_runs` when given: a resumed cohort may have gained or lost nodes.
    pub async fn reopen_experiment(
        &self,
        id: Uuid,
        planned_runs: Option<i64>,
    ) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(concat!(
            "UPDATE experiments SET status = 'running', finished_at = NULL, revision = revision + 1,
                    planned_runs = coalesce($2, planned_runs)
             WHERE id = $1 RETURNING ",
            experiment_columns!()
        ))
        .bind(id)
        .bind(planned_runs)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = updated {
            refresh_comparison(&mut tx, &experiment_from_row(&row)?).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn finish_experiment(&self, id: Uuid, status: ExperimentStatus) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(concat!(
            "UPDATE experiments SET status = $2, finished_at = now(), revision = revision + 1
                 WHERE id = $1 RETURNING ",
            experiment_columns!()
        ))
        .bind(id)
        .bind(status.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::NotFound(format!("experiment {id}")))?;
        refresh_comparison(&mut tx, &experiment_from_row(&updated)?).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn experiment(&self, id: Uuid) -> Result<ExperimentRow, Error> {
        let mut conn = self.pool.acquire().await?;
        experiment_in(&mut conn, id).await
    }

    /// An experiment and its comparison at its own baseline as written with its current
    /// revision (serialized JSON), when there is one (see `migrations/0009_comparisons.sql`).
    pub async fn experiment_with_comparison(
        &self,
        id: Uuid,
    ) -> Result<(ExperimentRow, Option<Vec<u8>>), Error> {
        let row = sqlx::query(concat!(
            "SELECT ",
            experiment_columns!(),
            ", (SELECT c.body FROM comparisons c
                WHERE c.experiment_id = e.id AND c.revision = e.revision) AS body
             FROM experiments e WHERE e.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("experiment {id}")))?;
        Ok((experiment_from_row(&row)?, row.try_get("body")?))
    }

    /// Experiments, newest first, optionally only those with a given name.
    pub async fn list_experiments(
        &self,
        name: Option<&str>,
        search: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<ExperimentRow>, Error> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            experiment_columns!(),
            " FROM experiments
             WHERE ($1::text IS NULL OR name = $1)
               AND ($4::text IS NULL OR name LIKE $4)
             ORDER BY created_at DESC, id LIMIT $2 OFFSET $3"
        ))
        .bind(name)
        .bind(limit)
        .bind(offset)
        .bind(search.map(|text| format!("%{}%", like_literal(text))))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(experiment_from_row).collect()
    }
}

async fn experiment_in(conn: &mut PgConnection, id: Uuid) -> Result<ExperimentRow, Error> {
    let row = sqlx::query(concat!(
        "SELECT ",
        experiment_columns!(),
        " FROM experiments WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Error::NotFound(format!("experiment {id}")))?;
    experiment_from_row(&row)
}

/// Text matched literally by LIKE: its wildcards escaped.
fn like_literal(text: &str) -> String {
    let mut like = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            like.push('\\');
        }
        like.push(c);
    }
    like
}

pub(super) fn experiment_from_row(row: &sqlx::postgres::PgRow) -> Result<ExperimentRow, Error> {
    Ok(ExperimentRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        baseline: row.try_get("baseline")?,
        cohorts: row.try_get("cohorts")?,
        status: row.try_get("status")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
        revision: row.try_get("revision")?,
        planned_runs: row.try_get("planned_runs")?,
        stopping: StoppingRule::from_spec(
            row.try_get::<Option<bool>, _>("auto_repetitions")?
                .unwrap_or(false),
            row.try_get::<Option<serde_json::Value>, _>("stopping")?
                .as_ref(),
        ),
    })
}
