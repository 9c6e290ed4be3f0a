//! Nodes: every node measured, and the fleet's sums of runs per kernel and hardware.

use sqlx::Row;
use sqlx::types::Json;

use super::Store;
use crate::Error;
use crate::fleet::{FleetRuns, like_pattern};
use crate::model::NodeRecord;
use crate::stats::Sums;

impl Store {
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
}

pub(super) fn node_from_row(row: &sqlx::postgres::PgRow) -> Result<NodeRecord, Error> {
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
