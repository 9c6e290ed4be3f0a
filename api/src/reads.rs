//! The read endpoints: experiments, their runs, comparison, flamegraphs and call chains,
//! bisections, nodes and kernels across experiments.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{ApiError, ApiResult, ApiState, no_nul, parse_id, query};
use loadlab_results::bisections::BisectionRow;
use loadlab_results::callchains::{CohortCallChains, cohort_call_chains};
use loadlab_results::flamegraph::{cohort_folded, differential_svg, flamegraph_svg};
use loadlab_results::fleet::{FleetGroup, GroupBy, compare_fleet};
use loadlab_results::model::{ExperimentRow, NodeRecord, RunOutcome, RunRecord, WindowCounters};
use loadlab_results::report::{Percentiles, comparison_body};
use loadlab_results::store::{Profiles, RunParts};
use loadlab_results::{Error, stats};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    name: Option<String>,
    /// Names containing this text.
    search: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Page<T> {
    items: Vec<T>,
    limit: i64,
    offset: i64,
}

const MAX_PAGE: i64 = 500;
const MAX_OFFSET: i64 = 1_000_000_000;

pub(crate) async fn list_experiments(
    State(state): State<ApiState>,
    raw: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Page<ExperimentRow>>> {
    let q = query(raw)?;
    no_nul("name and search", q.name.iter().chain(&q.search))?;
    let limit = q.limit.unwrap_or(50);
    let offset = q.offset.unwrap_or(0);
    if !(0..=MAX_OFFSET).contains(&offset) {
        return Err(ApiError::BadRequest(format!(
            "offset must be between 0 and {MAX_OFFSET}"
        )));
    }
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    if offset < 0 {
        return Err(ApiError::BadRequest("offset must not be negative".into()));
    }
    let items = state
        .store
        .list_experiments(q.name.as_deref(), q.search.as_deref(), limit, offset)
        .await?;
    Ok(Json(Page {
        items,
        limit,
        offset,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BisectionQuery {
    limit: Option<i64>,
}

/// Bisections, newest first, each with its steps.
pub(crate) async fn list_bisections(
    State(state): State<ApiState>,
    raw: Result<Query<BisectionQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<BisectionRow>>> {
    let limit = query(raw)?.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    Ok(Json(state.store.list_bisections(limit).await?))
}

pub(crate) async fn get_bisection(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<BisectionRow>> {
    Ok(Json(state.store.bisection(parse_id(&id)?).await?))
}

pub(crate) async fn get_experiment(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ExperimentRow>> {
    Ok(Json(state.store.experiment(parse_id(&id)?).await?))
}

/// A run as the API shows it: numbers, not serialized histograms or stacks.
#[derive(Debug, Serialize)]
pub(crate) struct RunSummary {
    id: Uuid,
    cohort: String,
    repetition: i32,
    attempt: i32,
    sequence: i32,
    status: &'static str,
    failure_reason: Option<String>,
    node_id: String,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    target: serde_json::Value,
    load: serde_json::Value,
    window_seconds: f64,
    completed_connections: i64,
    failed_connections: i64,
    warmup_connections: i64,
    connections_per_second: f64,
    /// Connections completed in each second of the window.
    completed_per_second: Vec<i64>,
    errors: std::collections::BTreeMap<String, u64>,
    total_latency: Option<Percentiles>,
    counters: WindowCounters,
    lock_contention_unavailable: Option<String>,
    lock_source: Option<String>,
    cpu_profile_unavailable: Option<String>,
    generator_skew_us: Option<i64>,
}

impl RunSummary {
    fn of(run: RunRecord) -> Self {
        let (status, failure_reason) = match run.outcome {
            RunOutcome::Succeeded => ("succeeded", None),
            RunOutcome::Failed { reason } => ("failed", Some(reason)),
        };
        let total_latency = loadlab_proto::histogram::decode_histogram(&run.total_histogram)
            .ok()
            .filter(|h| !h.is_empty())
            .map(|h| Percentiles::of(&h));
        Self {
            node_id: run.node.id(),
            id: run.id,
            cohort: run.cohort,
            repetition: run.repetition,
            attempt: run.attempt,
            sequence: run.sequence,
            status,
            failure_reason,
            started_at: run.started_at,
            finished_at: run.finished_at,
            target: run.target,
            load: run.load,
            window_seconds: run.window_seconds,
            completed_connections: run.completed_connections,
            failed_connections: run.failed_connections,
            warmup_connections: run.warmup_connections,
            connections_per_second: run.connections_per_second,
            completed_per_second: run.completed_per_second,
            errors: run.errors,
            total_latency,
            counters: run.counters,
            lock_contention_unavailable: run.lock_contention_unavailable,
            lock_source: run.lock_source,
            cpu_profile_unavailable: run.cpu_profile_unavailable,
            generator_skew_us: run.generator_skew_us,
        }
    }
}

pub(crate) async fn list_runs(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<RunSummary>>> {
    let id = parse_id(&id)?;
    // An unknown experiment is a 404, not an empty list.
    state.store.experiment(id).await?;
    let runs = state.store.runs_with(id, RunParts::ROWS).await?;
    Ok(Json(runs.into_iter().map(RunSummary::of).collect()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ComparisonQuery {
    baseline: Option<String>,
    /// `text`: the report as plain text to paste (`paste.rs`); JSON otherwise.
    format: Option<String>,
}

fn check_cohort(experiment: &ExperimentRow, cohort: &str) -> ApiResult<()> {
    if experiment.cohorts.iter().any(|c| c == cohort) {
        Ok(())
    } else {
        // A cohort is part of the experiment resource: naming one it lacks is a 404.
        Err(ApiError::NotFound(format!(
            "{cohort:?} is not a cohort of this experiment (cohorts: {})",
            experiment.cohorts.join(", ")
        )))
    }
}

pub(crate) async fn comparison(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    raw: Result<Query<ComparisonQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(raw)?;
    let text = match q.format.as_deref() {
        None | Some("json") => false,
        Some("text") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "format {other:?}: use json (the default) or text"
            )));
        }
    };
    if text {
        let mut experiment = state.store.experiment(parse_id(&id)?).await?;
        if let Some(baseline) = q.baseline {
            check_cohort(&experiment, &baseline)?;
            experiment.baseline = baseline;
        }
        let report = state.store.report(experiment).await?;
        return Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            loadlab_results::paste::report_text(&report),
        )
            .into_response());
    }
    let (mut experiment, written) = state
        .store
        .experiment_with_comparison(parse_id(&id)?)
        .await?;
    match q.baseline {
        Some(baseline) if baseline != experiment.baseline => {
            check_cohort(&experiment, &baseline)?;
            experiment.baseline = baseline;
        }
        _ => {
            if let Some(body) = written {
                return Ok(json_response(body.into()));
            }
        }
    }
    // Another baseline, or runs stored before comparisons were written with them.
    let key = (experiment.id, experiment.baseline.clone());
    let revision = experiment.revision;
    let answer = state
        .comparisons
        .get_or_compute(&key, revision, || async {
            let report = state.store.report(experiment).await?;
            Ok::<_, ApiError>(comparison_body(report)?.into())
        })
        .await?;
    Ok(json_response(answer))
}

fn json_bytes(value: &impl Serialize) -> ApiResult<axum::body::Bytes> {
    serde_json::to_vec(value)
        .map(axum::body::Bytes::from)
        .map_err(|e| ApiError::Internal(Error::Corrupt(format!("answer not serializable: {e}"))))
}

/// A JSON answer serialized earlier.
fn json_response(body: axum::body::Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FlamegraphQuery {
    cohort: String,
    against: Option<String>,
}

pub(crate) async fn flamegraph(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    raw: Result<Query<FlamegraphQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(raw)?;
    let experiment = state.store.experiment(parse_id(&id)?).await?;
    check_cohort(&experiment, &q.cohort)?;
    if let Some(against) = &q.against {
        check_cohort(&experiment, against)?;
    }
    let cohorts: Vec<String> = std::iter::once(q.cohort.clone())
        .chain(q.against.clone())
        .collect();
    let parts = RunParts::profiles_of(&cohorts);
    let runs = state.store.runs_with(experiment.id, parts).await?;
    let folded = cohort_folded(&runs, &q.cohort);
    let svg = match &q.against {
        None => flamegraph_svg(
            &format!("{} · {}", experiment.name, q.cohort),
            &q.cohort,
            &folded,
        )?,
        Some(before) => differential_svg(
            &format!("{} · {} against {before}", experiment.name, q.cohort),
            (before, &cohort_folded(&runs, before)),
            (&q.cohort, &folded),
        )?,
    };
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallChainsQuery {
    symbol: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct CallChains {
    symbol: String,
    cohorts: Vec<CohortCallChains>,
}

/// The call chains into one symbol, per cohort (`perf report --children -G` for that symbol).
pub(crate) async fn call_chains(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    raw: Result<Query<CallChainsQuery>, QueryRejection>,
) -> ApiResult<Json<CallChains>> {
    let q = query(raw)?;
    let symbol = q.symbol.trim();
    if symbol.is_empty() || symbol.contains(';') || symbol.len() > 512 {
        return Err(ApiError::BadRequest(
            "symbol must be one function name, such as osq_lock".into(),
        ));
    }
    let experiment = state.store.experiment(parse_id(&id)?).await?;
    let parts = RunParts {
        locks: false,
        profiles: Profiles::All,
    };
    let runs = state.store.runs_with(experiment.id, parts).await?;
    Ok(Json(CallChains {
        symbol: symbol.to_string(),
        cohorts: experiment
            .cohorts
            .iter()
            .map(|cohort| cohort_call_chains(&runs, cohort, symbol))
            .collect(),
    }))
}

#[derive(Debug, Serialize)]
pub(crate) struct Node {
    id: String,
    #[serde(flatten)]
    node: NodeRecord,
}

pub(crate) async fn list_nodes(State(state): State<ApiState>) -> ApiResult<Json<Vec<Node>>> {
    let nodes = state.store.list_nodes().await?;
    Ok(Json(
        nodes
            .into_iter()
            .map(|(id, node)| Node { id, node })
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KernelCompareQuery {
    a: String,
    b: String,
    #[serde(rename = "groupBy")]
    group_by: Option<String>,
    experiment: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct KernelComparison {
    a: String,
    b: String,
    group_by: GroupBy,
    groups: Vec<FleetGroup>,
    /// What was pooled into a group, and what never is.
    pooling: &'static str,
    method: &'static str,
}

const POOLING: &str = "each group pools the succeeded runs of one workload (load, target settings and collectors, as in its workload field) on one hardware group, across experiments and nodes; runs of different workloads are never pooled";

pub(crate) async fn compare_kernels(
    State(state): State<ApiState>,
    raw: Result<Query<KernelCompareQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(raw)?;
    no_nul(
        "a, b and experiment",
        [&q.a, &q.b].into_iter().chain(&q.experiment),
    )?;
    let blank =
        |pattern: &str| pattern.is_empty() || pattern.bytes().any(|b| b.is_ascii_whitespace());
    if blank(&q.a) || blank(&q.b) {
        return Err(ApiError::BadRequest(
            "a and b must be kernel release patterns without spaces, such as 6.1.0-47*".into(),
        ));
    }
    let group_by = match q.group_by.as_deref() {
        None => GroupBy::Cpu,
        Some(text) => GroupBy::parse(text).ok_or_else(|| {
            ApiError::BadRequest(format!("groupBy {text:?} must be cpu, cpu_model or none"))
        })?,
    };
    let revision = state.store.results_revision().await?;
    let key = (q.a, q.b, q.experiment);
    let answer = state
        .fleet_comparisons
        .get_or_compute(&(key.clone(), group_by), revision, || async {
            let runs = state
                .fleet_runs
                .get_or_compute(&key, revision, || async {
                    let (a, b, experiment) = &key;
                    // Two scans of the runs, side by side on two connections.
                    let pair = tokio::try_join!(
                        state.store.kernel_runs(a, experiment.as_deref()),
                        state.store.kernel_runs(b, experiment.as_deref())
                    )?;
                    Ok::<_, Error>(Arc::new(pair))
                })
                .await?;
            json_bytes(&KernelComparison {
                groups: compare_fleet(&runs.0, &runs.1, group_by),
                a: key.0.clone(),
                b: key.1.clone(),
                group_by,
                pooling: POOLING,
                method: stats::METHOD,
            })
        })
        .await?;
    Ok(json_response(answer))
}
