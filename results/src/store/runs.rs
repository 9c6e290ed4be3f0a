//! Runs: written whole with their locks, profile and node sums, and read with only the parts a
//! caller asks for.

use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::Store;
use super::experiments::experiment_from_row;
use super::nodes::node_from_row;
use super::summaries::{fold_into_cohort_summary, refresh_comparison};
use crate::Error;
use crate::model::{LockRecord, ProfileRecord, RunOutcome, RunRecord};

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
    pub(crate) const WHOLE: RunParts<'static> = RunParts {
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
    /// Writes a run and its node in one transaction. Returns false when a run with this id was
    /// already stored (it is left as it was).
    pub async fn record_run(&self, run: &RunRecord) -> Result<bool, Error> {
        let mut tx = self.pool.begin().await?;
        let node_id = run.node.id();
        upsert_node(&mut tx, run, &node_id).await?;
        let inserted = insert_run_row(&mut tx, run, &node_id).await?;
        if inserted {
            insert_profile_and_locks(&mut tx, run).await?;
            add_to_node_sums(&mut tx, run, &node_id).await?;
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

/// The run's node, created or its facts refreshed: a node is keyed by what does not change.
async fn upsert_node(tx: &mut PgConnection, run: &RunRecord, node_id: &str) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO nodes (id, hostname, kernel_release, kernel_version, cpu_model,
                            logical_cpus, memory_bytes, facts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (id) DO UPDATE
           SET facts = EXCLUDED.facts, memory_bytes = EXCLUDED.memory_bytes, last_seen = now()",
    )
    .bind(node_id)
    .bind(&run.node.hostname)
    .bind(&run.node.kernel_release)
    .bind(&run.node.kernel_version)
    .bind(&run.node.cpu_model)
    .bind(run.node.logical_cpus)
    .bind(run.node.memory_bytes)
    .bind(&run.node.facts)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The run's own row; false when a run with its id is stored already.
async fn insert_run_row(
    tx: &mut PgConnection,
    run: &RunRecord,
    node_id: &str,
) -> Result<bool, Error> {
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
    .bind(node_id)
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
    Ok(inserted)
}

/// The run's CPU profile (folded stacks gzipped) and its lock contention rows.
async fn insert_profile_and_locks(tx: &mut PgConnection, run: &RunRecord) -> Result<(), Error> {
    if let Some(profile) = &run.cpu_profile {
        sqlx::query(
            "INSERT INTO cpu_profiles (run_id, frequency_hz, samples, idle_samples, folded_gzip,
                                       top_symbols)
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
    Ok(())
}

/// A succeeded run's rate added to its node's sums, which the fleet comparison reads.
async fn add_to_node_sums(
    tx: &mut PgConnection,
    run: &RunRecord,
    node_id: &str,
) -> Result<(), Error> {
    if !matches!(run.outcome, RunOutcome::Succeeded) || run.connections_per_second <= 0.0 {
        return Ok(());
    }
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
    .bind(node_id)
    .bind(rate)
    .bind(rate * rate)
    .bind(rate.ln())
    .bind(rate.ln() * rate.ln())
    .bind(run.id)
    .execute(&mut *tx)
    .await?;
    Ok(())
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
