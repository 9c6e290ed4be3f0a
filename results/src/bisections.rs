//! Stored bisections (`migrations/0013_bisections.sql`): a search over kernels whose steps are
//! ordinary experiments. Written as the search goes, so an interrupted one keeps its steps.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::types::Json;
use uuid::Uuid;

use crate::Error;
use crate::store::Store;

/// How a bisection stands or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BisectionStatus {
    Running,
    /// The first kernel where the condition holds is known.
    Found,
    /// Checked: the condition does not hold even at the last kernel.
    Never,
    /// Checked: the condition already holds at the first kernel.
    FromFirst,
    /// A step could not decide (too noisy, or the metric was not measured).
    Undecided,
    Failed,
    Interrupted,
}

impl BisectionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Found => "found",
            Self::Never => "never",
            Self::FromFirst => "from_first",
            Self::Undecided => "undecided",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
        }
    }

    fn parse(text: &str) -> Result<Self, Error> {
        Ok(match text {
            "running" => Self::Running,
            "found" => Self::Found,
            "never" => Self::Never,
            "from_first" => Self::FromFirst,
            "undecided" => Self::Undecided,
            "failed" => Self::Failed,
            "interrupted" => Self::Interrupted,
            other => return Err(Error::Corrupt(format!("bisection status {other:?}"))),
        })
    }
}

/// A bisection about to start.
#[derive(Debug, Clone)]
pub struct NewBisection {
    pub id: Uuid,
    pub name: String,
    pub spec: serde_json::Value,
    pub kernels: Vec<String>,
    /// The condition in words.
    pub condition: String,
}

/// One step: an experiment on one kernel and what it decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BisectionStep {
    pub step: u32,
    pub kernel_index: u32,
    pub kernel: String,
    pub experiment_id: Uuid,
    /// `None`: the step could not decide.
    pub holds: Option<bool>,
    pub value: Option<f64>,
    pub decision: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BisectionRow {
    pub id: Uuid,
    pub name: String,
    pub kernels: Vec<String>,
    pub condition: String,
    pub status: BisectionStatus,
    pub first_holding: Option<String>,
    pub answer: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub steps: Vec<BisectionStep>,
}

impl Store {
    pub async fn create_bisection(&self, bisection: &NewBisection) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO bisections (id, name, spec, kernels, condition, status)
             VALUES ($1, $2, $3, $4, $5, 'running')",
        )
        .bind(bisection.id)
        .bind(&bisection.name)
        .bind(Json(&bisection.spec))
        .bind(&bisection.kernels)
        .bind(&bisection.condition)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records a step once: the same step again is refused, not overwritten.
    pub async fn record_bisection_step(
        &self,
        bisection: Uuid,
        step: &BisectionStep,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO bisection_steps
               (bisection_id, step, kernel_index, kernel, experiment_id, holds, value, decision)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(bisection)
        .bind(i32::try_from(step.step).map_err(|_| Error::Corrupt("step number".into()))?)
        .bind(i32::try_from(step.kernel_index).map_err(|_| Error::Corrupt("kernel index".into()))?)
        .bind(&step.kernel)
        .bind(step.experiment_id)
        .bind(step.holds)
        .bind(step.value.filter(|v| v.is_finite()))
        .bind(&step.decision)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn finish_bisection(
        &self,
        id: Uuid,
        status: BisectionStatus,
        first_holding: Option<&str>,
        answer: &str,
    ) -> Result<(), Error> {
        let updated = sqlx::query(
            "UPDATE bisections SET status = $2, first_holding = $3, answer = $4, finished_at = now()
             WHERE id = $1",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(first_holding)
        .bind(answer)
        .execute(self.pool())
        .await?;
        if updated.rows_affected() == 0 {
            return Err(Error::NotFound(format!("bisection {id}")));
        }
        Ok(())
    }

    pub async fn bisection(&self, id: Uuid) -> Result<BisectionRow, Error> {
        let mut rows = self.bisections_where(Some(id), 1).await?;
        rows.pop()
            .ok_or_else(|| Error::NotFound(format!("bisection {id}")))
    }

    /// Bisections, newest first.
    pub async fn list_bisections(&self, limit: i64) -> Result<Vec<BisectionRow>, Error> {
        self.bisections_where(None, limit).await
    }

    async fn bisections_where(
        &self,
        id: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<BisectionRow>, Error> {
        let rows = sqlx::query(
            "SELECT b.id, b.name, b.kernels, b.condition, b.status, b.first_holding, b.answer,
                    b.created_at, b.finished_at,
                    COALESCE((SELECT jsonb_agg(jsonb_build_object(
                        'step', s.step, 'kernel_index', s.kernel_index, 'kernel', s.kernel,
                        'experiment_id', s.experiment_id, 'holds', s.holds, 'value', s.value,
                        'decision', s.decision) ORDER BY s.step)
                      FROM bisection_steps s WHERE s.bisection_id = b.id), '[]') AS steps
             FROM bisections b
             WHERE ($1::uuid IS NULL OR b.id = $1)
             ORDER BY b.created_at DESC, b.id LIMIT $2",
        )
        .bind(id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let Json(steps): Json<Vec<BisectionStep>> = row.try_get("steps")?;
                Ok(BisectionRow {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    kernels: row.try_get("kernels")?,
                    condition: row.try_get("condition")?,
                    status: BisectionStatus::parse(row.try_get("status")?)?,
                    first_holding: row.try_get("first_holding")?,
                    answer: row.try_get("answer")?,
                    created_at: row.try_get("created_at")?,
                    finished_at: row.try_get("finished_at")?,
                    steps,
                })
            })
            .collect()
    }
}
