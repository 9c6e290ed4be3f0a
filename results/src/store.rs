//! The results store: experiments, nodes and runs in Postgres. A run is written once, whole, in
//! one transaction, keyed by its id: writing the same run again changes nothing.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{Connection, PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::Error;
use crate::fleet::{FleetRuns, like_pattern};
use crate::model::{
    ExperimentRow, ExperimentStatus, LockRecord, NewExperiment, NodeRecord, ProfileRecord,
    RunOutcome, RunRecord, StoppingRule,
};
use crate::report::{
    CohortAccumulator, CohortReport, ExperimentReport, assemble_finished, comparison_body,
};
use crate::stats::Sums;

/// What a read of runs brings besides the runs' own rows.
#[derive(Debug, Clone, Copy)]
pub struct RunParts<'a> {
    /// Lock contention by lock and call path.
    pub locks: bool,
    pub profiles: Profiles<'a>,
}

/// Which runs' CPU profiles a read brings (each is unzipped: the largest part of a run).
#[derive(Debug, Clone, Copy)]
pub enum Profiles<'a> {
    None,
    All,
    /// Only the runs of these cohorts.
    OfCohorts(&'a [String]),
}

impl RunParts<'_> {
    pub const WHOLE: RunParts<'static> = RunParts {
        locks: true,
        profiles: Profiles::All,
    };
    /// The rows and these cohorts' profiles: what a flamegraph draws.
    pub fn profiles_of(cohorts: &[String]) -> RunParts<'_> {
        RunParts {
            locks: false,
            profiles: Profiles::OfCohorts(cohorts),
        }
    }

    /// The runs' rows only: what a list of runs shows.
    pub const ROWS: RunParts<'static> = RunParts {
        locks: false,
        profiles: Profiles::None,
    };
}

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

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

fn gzip(text: &str) -> Result<Vec<u8>, Error> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(text.as_bytes())
        .map_err(|e| Error::Corrupt(e.to_string()))?;
    encoder.finish().map_err(|e| Error::Corrupt(e.to_string()))
}

fn gunzip(bytes: &[u8]) -> Result<String, Error> {
    use std::io::Read as _;
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .map_err(|e| Error::Corrupt(format!("folded stacks: {e}")))?;
    Ok(text)
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

    pub async fn from_pool(pool: PgPool) -> Result<Self, Error> {
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

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

    /// Every node ever measured, with its id.
    pub async fn list_nodes(&self) -> Result<Vec<(String, NodeRecord)>, Error> {
        let rows = sqlx::query(
            "SELECT id, hostname, kernel_release, kernel_version, cpu_model, logical_cpus, memory_bytes, facts
             FROM nodes ORDER BY hostname, kernel_release, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("id")?, node_from_row(row)?)))
            .collect()
    }

    /// Succeeded runs on kernels matching a glob (`*` wildcard), summed per kernel and
    /// hardware in the database, for the fleet comparison.
    pub async fn kernel_runs(
        &self,
        kernel_glob: &str,
        experiment_name: Option<&str>,
    ) -> Result<Vec<FleetRuns>, Error> {
        // Across all experiments the per-node sums answer; one experiment's runs are summed
        // from the runs themselves.
        let query = match experiment_name {
            None => sqlx::query(
                "SELECT n.id AS node_id, s.workload, n.kernel_release, n.cpu_model, n.logical_cpus,
                        coalesce((n.facts->>'emulated')::boolean, n.facts->>'virtualization' LIKE 'emulated%', false) AS emulated,
                        s.runs AS n, s.sum, s.sum_squares, s.sum_logs, s.sum_log_squares
                 FROM node_sums s JOIN nodes n ON n.id = s.node_id
                 WHERE s.runs > 0 AND n.kernel_release LIKE $1",
            )
            .bind(like_pattern(kernel_glob)),
            Some(name) => sqlx::query(
                "SELECT n.id AS node_id, r.workload, n.kernel_release, n.cpu_model, n.logical_cpus,
                        coalesce((n.facts->>'emulated')::boolean, n.facts->>'virtualization' LIKE 'emulated%', false) AS emulated,
                        count(*) AS n,
                        sum(r.connections_per_second) AS sum,
                        sum(r.connections_per_second ^ 2) AS sum_squares,
                        sum(ln(r.connections_per_second)) AS sum_logs,
                        sum(ln(r.connections_per_second) ^ 2) AS sum_log_squares
                 FROM runs r JOIN nodes n ON n.id = r.node_id
                 WHERE r.status = 'succeeded' AND r.connections_per_second > 0
                   AND n.kernel_release LIKE $1
                   AND r.experiment_id IN (SELECT id FROM experiments WHERE name = $2)
                 GROUP BY n.id, r.workload",
            )
            .bind(like_pattern(kernel_glob))
            .bind(name),
        };
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(FleetRuns {
                    node_id: row.try_get("node_id")?,
                    workload: row.try_get::<Json<serde_json::Value>, _>("workload")?.0,
                    kernel_release: row.try_get("kernel_release")?,
                    cpu_model: row.try_get("cpu_model")?,
                    logical_cpus: row.try_get("logical_cpus")?,
                    emulated: row.try_get("emulated")?,
                    sums: Sums {
                        n: row.try_get::<i64, _>("n")?.max(0) as u64,
                        sum: row.try_get("sum")?,
                        sum_squares: row.try_get("sum_squares")?,
                        sum_logs: row.try_get("sum_logs")?,
                        sum_log_squares: row.try_get("sum_log_squares")?,
                    },
                })
            })
            .collect()
    }

    /// Answers when the database does.
    pub async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Writes a run and its node in one transaction. Returns false when a run with this id was
    /// already stored (it is left as it was).
    pub async fn record_run(&self, run: &RunRecord) -> Result<bool, Error> {
        let mut tx = self.pool.begin().await?;
        let node_id = run.node.id();
        sqlx::query(
            "INSERT INTO nodes (id, hostname, kernel_release, kernel_version, cpu_model,
                                logical_cpus, memory_bytes, facts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (id) DO UPDATE
               SET facts = EXCLUDED.facts, memory_bytes = EXCLUDED.memory_bytes, last_seen = now()",
        )
        .bind(&node_id)
        .bind(&run.node.hostname)
        .bind(&run.node.kernel_release)
        .bind(&run.node.kernel_version)
        .bind(&run.node.cpu_model)
        .bind(run.node.logical_cpus)
        .bind(run.node.memory_bytes)
        .bind(&run.node.facts)
        .execute(&mut *tx)
        .await?;
        let failure_reason = match &run.outcome {
            RunOutcome::Succeeded => None,
            RunOutcome::Failed { reason } => Some(reason.as_str()),
        };
        let inserted = sqlx::query(
            "INSERT INTO runs (id, experiment_id, cohort, repetition, attempt, sequence, node_id,
                status, failure_reason, started_at, finished_at, target, load, window_seconds,
                completed_connections, failed_connections, warmup_connections,
                connections_per_second, errors, connect_histogram, first_byte_histogram,
                total_histogram, completed_per_second, counters, lock_contention_unavailable,
                cpu_profile_unavailable, generator_skew_us, lock_source, workload)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                     $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28,
                     jsonb_build_object('load', $13::jsonb, 'target', $12::jsonb, 'collect',
                       coalesce((SELECT spec #> '{spec,collect}' FROM experiments WHERE id = $2),
                                'null'::jsonb)))
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(run.id)
        .bind(run.experiment_id)
        .bind(&run.cohort)
        .bind(run.repetition)
        .bind(run.attempt)
        .bind(run.sequence)
        .bind(&node_id)
        .bind(if failure_reason.is_some() {
            "failed"
        } else {
            "succeeded"
        })
        .bind(failure_reason)
        .bind(run.started_at)
        .bind(run.finished_at)
        .bind(&run.target)
        .bind(&run.load)
        .bind(run.window_seconds)
        .bind(run.completed_connections)
        .bind(run.failed_connections)
        .bind(run.warmup_connections)
        .bind(run.connections_per_second)
        .bind(Json(&run.errors))
        .bind(&run.connect_histogram)
        .bind(&run.first_byte_histogram)
        .bind(&run.total_histogram)
        .bind(&run.completed_per_second)
        .bind(Json(&run.counters))
        .bind(&run.lock_contention_unavailable)
        .bind(&run.cpu_profile_unavailable)
        .bind(run.generator_skew_us)
        .bind(&run.lock_source)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if inserted && let Some(profile) = &run.cpu_profile {
            sqlx::query(
                "INSERT INTO cpu_profiles (run_id, frequency_hz, samples, idle_samples, folded_gzip, top_symbols)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(run.id)
            .bind(profile.frequency_hz)
            .bind(profile.samples)
            .bind(profile.idle_samples)
            .bind(gzip(&profile.folded_text())?)
            .bind(Json(&profile.top_symbols))
            .execute(&mut *tx)
            .await?;
        }
        if inserted {
            for lock in &run.locks {
                sqlx::query(
                    "INSERT INTO lock_contention (run_id, lock, lock_type, caller, stack, count, wait_ns,
                                                  max_wait_ns, epoll)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(run.id)
                .bind(&lock.lock)
                .bind(&lock.lock_type)
                .bind(&lock.caller)
                .bind(&lock.stack)
                .bind(lock.count)
                .bind(lock.wait_ns)
                .bind(lock.max_wait_ns)
                .bind(lock.epoll)
                .execute(&mut *tx)
                .await?;
            }
        }
        if inserted
            && matches!(run.outcome, RunOutcome::Succeeded)
            && run.connections_per_second > 0.0
        {
            let rate = run.connections_per_second;
            sqlx::query(
                "INSERT INTO node_sums (node_id, workload, runs, sum, sum_squares, sum_logs,
                                        sum_log_squares)
                 VALUES ($1, (SELECT workload FROM runs WHERE id = $6), 1, $2, $3, $4, $5)
                 ON CONFLICT (node_id, workload) DO UPDATE SET
                   runs = node_sums.runs + 1,
                   sum = node_sums.sum + EXCLUDED.sum,
                   sum_squares = node_sums.sum_squares + EXCLUDED.sum_squares,
                   sum_logs = node_sums.sum_logs + EXCLUDED.sum_logs,
                   sum_log_squares = node_sums.sum_log_squares + EXCLUDED.sum_log_squares",
            )
            .bind(&node_id)
            .bind(rate)
            .bind(rate * rate)
            .bind(rate.ln())
            .bind(rate.ln() * rate.ln())
            .bind(run.id)
            .execute(&mut *tx)
            .await?;
        }
        if inserted {
            let bumped = sqlx::query(concat!(
                "UPDATE experiments SET revision = revision + 1 WHERE id = $1 RETURNING ",
                experiment_columns!()
            ))
            .bind(run.experiment_id)
            .fetch_one(&mut *tx)
            .await?;
            fold_into_cohort_summary(&mut tx, run).await?;
            refresh_comparison(&mut tx, &experiment_from_row(&bumped)?).await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

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

    /// Every run of an experiment, in schedule order, whole.
    pub async fn experiment_runs(&self, experiment_id: Uuid) -> Result<Vec<RunRecord>, Error> {
        self.runs_with(experiment_id, RunParts::WHOLE).await
    }

    /// Every run of an experiment, in schedule order, with only the parts asked for: the
    /// lock and profile tables are read (and profiles unzipped) only when wanted.
    pub async fn runs_with(
        &self,
        experiment_id: Uuid,
        parts: RunParts<'_>,
    ) -> Result<Vec<RunRecord>, Error> {
        let rows = sqlx::query(
            "SELECT r.*, n.hostname, n.kernel_release, n.kernel_version, n.cpu_model,
                    n.logical_cpus, n.memory_bytes, n.facts
             FROM runs r JOIN nodes n ON n.id = r.node_id
             WHERE r.experiment_id = $1
             ORDER BY r.sequence, r.attempt",
        )
        .bind(experiment_id)
        .fetch_all(&self.pool)
        .await?;
        let mut runs: Vec<RunRecord> = rows.iter().map(run_from_row).collect::<Result<_, _>>()?;
        let lock_rows = if parts.locks {
            sqlx::query(
                "SELECT l.* FROM lock_contention l JOIN runs r ON r.id = l.run_id
                 WHERE r.experiment_id = $1 ORDER BY l.wait_ns DESC, l.lock, l.stack",
            )
            .bind(experiment_id)
            .fetch_all(&self.pool)
            .await?
        } else {
            Vec::new()
        };
        let profile_rows = match parts.profiles {
            Profiles::None => Vec::new(),
            Profiles::All => {
                sqlx::query(
                    "SELECT p.* FROM cpu_profiles p JOIN runs r ON r.id = p.run_id
                     WHERE r.experiment_id = $1",
                )
                .bind(experiment_id)
                .fetch_all(&self.pool)
                .await?
            }
            Profiles::OfCohorts(cohorts) => {
                sqlx::query(
                    "SELECT p.* FROM cpu_profiles p JOIN runs r ON r.id = p.run_id
                     WHERE r.experiment_id = $1 AND r.cohort = ANY($2)",
                )
                .bind(experiment_id)
                .bind(cohorts)
                .fetch_all(&self.pool)
                .await?
            }
        };
        for row in &profile_rows {
            let run_id: Uuid = row.try_get("run_id")?;
            let folded: Vec<u8> = row.try_get("folded_gzip")?;
            let profile = ProfileRecord {
                frequency_hz: row.try_get("frequency_hz")?,
                samples: row.try_get("samples")?,
                idle_samples: row.try_get("idle_samples")?,
                folded: ProfileRecord::parse_folded(&gunzip(&folded)?),
                top_symbols: row.try_get::<Json<_>, _>("top_symbols")?.0,
            };
            if let Some(run) = runs.iter_mut().find(|r| r.id == run_id) {
                run.cpu_profile = Some(profile);
            }
        }
        for row in &lock_rows {
            let run_id: Uuid = row.try_get("run_id")?;
            let lock = LockRecord {
                lock: row.try_get("lock")?,
                lock_type: row.try_get("lock_type")?,
                caller: row.try_get("caller")?,
                stack: row.try_get("stack")?,
                count: row.try_get("count")?,
                wait_ns: row.try_get("wait_ns")?,
                max_wait_ns: row.try_get("max_wait_ns")?,
                epoll: row.try_get("epoll")?,
            };
            if let Some(run) = runs.iter_mut().find(|r| r.id == run_id) {
                run.locks.push(lock);
            }
        }
        Ok(runs)
    }
}

fn node_from_row(row: &sqlx::postgres::PgRow) -> Result<NodeRecord, Error> {
    Ok(NodeRecord {
        hostname: row.try_get("hostname")?,
        kernel_release: row.try_get("kernel_release")?,
        kernel_version: row.try_get("kernel_version")?,
        cpu_model: row.try_get("cpu_model")?,
        logical_cpus: row.try_get("logical_cpus")?,
        memory_bytes: row.try_get("memory_bytes")?,
        facts: row.try_get("facts")?,
    })
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

/// Writes the comparison of `experiment`, as its revision bump returned it, in the transaction
/// that bumped it: concurrent writers of one experiment take turns on that row, and each sees
/// what the one before committed.
async fn refresh_comparison(
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
async fn fold_into_cohort_summary(
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

fn experiment_from_row(row: &sqlx::postgres::PgRow) -> Result<ExperimentRow, Error> {
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

fn run_from_row(row: &sqlx::postgres::PgRow) -> Result<RunRecord, Error> {
    let status: String = row.try_get("status")?;
    let outcome = match status.as_str() {
        "succeeded" => RunOutcome::Succeeded,
        _ => RunOutcome::Failed {
            reason: row
                .try_get::<Option<String>, _>("failure_reason")?
                .unwrap_or_default(),
        },
    };
    Ok(RunRecord {
        id: row.try_get("id")?,
        experiment_id: row.try_get("experiment_id")?,
        cohort: row.try_get("cohort")?,
        repetition: row.try_get("repetition")?,
        attempt: row.try_get("attempt")?,
        sequence: row.try_get("sequence")?,
        node: node_from_row(row)?,
        outcome,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        target: row.try_get("target")?,
        load: row.try_get("load")?,
        window_seconds: row.try_get("window_seconds")?,
        completed_connections: row.try_get("completed_connections")?,
        failed_connections: row.try_get("failed_connections")?,
        warmup_connections: row.try_get("warmup_connections")?,
        connections_per_second: row.try_get("connections_per_second")?,
        errors: row.try_get::<Json<_>, _>("errors")?.0,
        connect_histogram: row.try_get("connect_histogram")?,
        first_byte_histogram: row.try_get("first_byte_histogram")?,
        total_histogram: row.try_get("total_histogram")?,
        completed_per_second: row.try_get("completed_per_second")?,
        counters: row.try_get::<Json<_>, _>("counters")?.0,
        locks: Vec::new(),
        lock_contention_unavailable: row.try_get("lock_contention_unavailable")?,
        lock_source: row.try_get("lock_source")?,
        cpu_profile: None,
        cpu_profile_unavailable: row.try_get("cpu_profile_unavailable")?,
        generator_skew_us: row.try_get("generator_skew_us")?,
    })
}
