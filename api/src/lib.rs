//! loadlab over HTTP: the REST API (`/api/v1`, JSON: experiments, their runs and comparison,
//! CPU flamegraphs, nodes, ingest and health) and the dashboard beside it. `app(state)` is a
//! value, so tests need no socket. The results themselves (store, statistics, reports) are
//! `loadlab-results`'s; nothing there knows HTTP.
//! Every error is `{"error": ..., "detail": ...}` with its status; internal details are logged,
//! not sent.

mod dashboard;
mod memo;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::QueryRejection;
use axum::extract::{MatchedPath, Request};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::memo::Memo;
use loadlab_results::bisections::BisectionRow;
use loadlab_results::callchains::{CohortCallChains, cohort_call_chains};
use loadlab_results::flamegraph::{cohort_folded, differential_svg, flamegraph_svg};
use loadlab_results::fleet::{FleetGroup, FleetRuns, GroupBy, compare_fleet};
use loadlab_results::ingest::{validate_experiment, validate_run};
use loadlab_results::model::{
    ExperimentRow, NewExperiment, NodeRecord, RunOutcome, RunRecord, WindowCounters,
};
use loadlab_results::report::{Percentiles, comparison_body};
use loadlab_results::store::{Profiles, RunParts, Store};
use loadlab_results::{Error, stats};

#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// The bearer token ingest requires; ingest is off without one.
    ingest_token: Option<Arc<str>>,
    /// When set, every read under /api/v1 needs this token (or the ingest token), as a bearer
    /// token or the dashboard's `loadlab_token` cookie; health, metrics, the OpenAPI document
    /// and the dashboard's own files stay open.
    read_token: Option<Arc<str>>,
    /// Comparisons by experiment and baseline, valid at an experiment revision.
    comparisons: Arc<Memo<(Uuid, String), i64>>,
    /// The runs of two kernel patterns (and an experiment name), summed per kernel and
    /// hardware, valid at a revision of all results; every grouping is computed from them.
    fleet_runs: Arc<Memo<FleetQuery, (i64, i64), FleetRunPair>>,
    /// Fleet comparisons by query and grouping, at the same revisions.
    fleet_comparisons: Arc<Memo<(FleetQuery, GroupBy), (i64, i64)>>,
    /// Ingest bodies read and parsed at once (see `INGESTS_AT_ONCE`).
    ingests: Arc<tokio::sync::Semaphore>,
    /// How long one request may take, reading its body included.
    request_deadline: std::time::Duration,
}

/// Kernel patterns a and b, and the experiment name filter.
type FleetQuery = (String, String, Option<String>);
type FleetRunPair = Arc<(Vec<FleetRuns>, Vec<FleetRuns>)>;

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("ApiState")
            .field("ingest", &self.ingest_token.is_some())
            .field("reads_need_token", &self.read_token.is_some())
            .finish()
    }
}

impl ApiState {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            metrics: Arc::default(),
            ingest_token: None,
            read_token: None,
            comparisons: Arc::default(),
            fleet_runs: Arc::default(),
            fleet_comparisons: Arc::default(),
            ingests: Arc::new(tokio::sync::Semaphore::new(INGESTS_AT_ONCE)),
            request_deadline: REQUEST_DEADLINE,
        }
    }

    /// Answers every request within `deadline` or with 408 (tests shorten it).
    pub fn with_request_deadline(mut self, deadline: std::time::Duration) -> Self {
        self.request_deadline = deadline;
        self
    }

    /// Accepts runs and experiments from clients that present this bearer token.
    pub fn with_ingest_token(mut self, token: &str) -> Self {
        self.ingest_token = Some(token.into());
        self
    }

    /// Reads under /api/v1 need this token (or the ingest token).
    pub fn with_read_token(mut self, token: &str) -> Self {
        self.read_token = Some(token.into());
        self
    }

    fn authorize_read(&self, headers: &HeaderMap) -> ApiResult<()> {
        let Some(expected) = &self.read_token else {
            return Ok(());
        };
        let bearer = bearer_token(headers);
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| pair.trim().strip_prefix("loadlab_token="))
            .map(percent_decoded);
        let accepted = |token: &str| {
            constant_time_eq(token.as_bytes(), expected.as_bytes())
                || self
                    .ingest_token
                    .as_ref()
                    .is_some_and(|ingest| constant_time_eq(token.as_bytes(), ingest.as_bytes()))
        };
        match bearer.map(str::to_string).or(cookie) {
            Some(token) if accepted(&token) => Ok(()),
            Some(_) => Err(ApiError::Unauthorized(
                "the token is not the read token".into(),
            )),
            None => Err(ApiError::Unauthorized(
                "reads need the read token: send Authorization: Bearer <token> (the dashboard asks for it)".into(),
            )),
        }
    }

    fn authorize(&self, headers: &HeaderMap) -> ApiResult<()> {
        let Some(expected) = &self.ingest_token else {
            return Err(ApiError::Forbidden(
                "ingest is off: start loadlab serve with LOADLAB_API_TOKEN set".into(),
            ));
        };
        let presented = bearer_token(headers);
        match presented {
            Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(()),
            Some(_) => Err(ApiError::Unauthorized(
                "the bearer token is not the ingest token".into(),
            )),
            None => Err(ApiError::Unauthorized(
                "send Authorization: Bearer <token>".into(),
            )),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// A cookie value as the dashboard wrote it (`encodeURIComponent`); a malformed escape stays
/// as it is (and then matches no token).
fn percent_decoded(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) if hex(hi).is_some() && hex(lo).is_some() => {
                out.push((hex(hi).unwrap_or(0) * 16 + hex(lo).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Compares without leaking where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The OpenAPI document of this API, served at `/api/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi/openapi.json");

/// Requests served, by route and status, with their total duration.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), (u64, f64)>>,
}

impl Metrics {
    fn observe(&self, route: String, status: u16, seconds: f64) {
        let mut requests = self
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = requests.entry((route, status)).or_default();
        entry.0 += 1;
        entry.1 += seconds;
    }

    /// The Prometheus text exposition of the counters.
    pub fn render(&self) -> String {
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut out = String::from(
            "# HELP loadlab_http_requests_total Requests served, by route and status.\n# TYPE loadlab_http_requests_total counter\n",
        );
        for ((route, status), (count, _)) in requests.iter() {
            out.push_str(&format!(
                "loadlab_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}\n"
            ));
        }
        out.push_str("# HELP loadlab_http_request_seconds_total Time spent answering, by route and status.\n# TYPE loadlab_http_request_seconds_total counter\n");
        for ((route, status), (_, seconds)) in requests.iter() {
            out.push_str(&format!(
                "loadlab_http_request_seconds_total{{route=\"{route}\",status=\"{status}\"}} {seconds:.6}\n"
            ));
        }
        out
    }
}

async fn observe(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    // The route template, not the raw path: ids must not become label values.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    state.metrics.observe(
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The API's errors, mapped to status codes in one place.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    PayloadTooLarge(String),
    Timeout(String),
    Internal(Error),
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        match error {
            Error::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            other => ApiError::Internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error, detail) = match self {
            ApiError::BadRequest(detail) => (StatusCode::BAD_REQUEST, "bad request", detail),
            ApiError::NotFound(detail) => (StatusCode::NOT_FOUND, "not found", detail),
            ApiError::Unauthorized(detail) => {
                let body = Json(json!({ "error": "unauthorized", "detail": detail }));
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    body,
                )
                    .into_response();
            }
            ApiError::Forbidden(detail) => (StatusCode::FORBIDDEN, "forbidden", detail),
            ApiError::PayloadTooLarge(detail) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload too large", detail)
            }
            ApiError::Timeout(detail) => (StatusCode::REQUEST_TIMEOUT, "timeout", detail),
            ApiError::Internal(error) => {
                tracing::error!(error = %error, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error",
                    "the server could not answer; its log says why".to_string(),
                )
            }
        };
        (status, Json(json!({ "error": error, "detail": detail }))).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The API router.
pub fn app(state: ApiState) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route(
            "/api/v1/experiments",
            get(list_experiments).post(create_experiment),
        )
        .route("/api/v1/runs", post(ingest_run))
        .route("/api/v1/experiments/{id}", get(get_experiment))
        .route("/api/v1/experiments/{id}/runs", get(list_runs))
        .route("/api/v1/experiments/{id}/comparison", get(comparison))
        .route("/api/v1/experiments/{id}/flamegraph", get(flamegraph))
        .route("/api/v1/experiments/{id}/callchains", get(call_chains))
        .route("/api/v1/bisections", get(list_bisections))
        .route("/api/v1/bisections/{id}", get(get_bisection))
        .route("/api/v1/nodes", get(list_nodes))
        .route("/api/v1/kernels/compare", get(compare_kernels))
        .route(
            "/api/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .route("/metrics", get(metrics))
        .merge(crate::dashboard::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            reads_behind_token,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            within_deadline,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Reads of results need the read token when one is set; writes check their own token.
async fn reads_behind_token(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    let read = matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if read
        && request.uri().path().starts_with("/api/v1/")
        && let Err(refused) = state.authorize_read(request.headers())
    {
        return refused.into_response();
    }
    next.run(request).await
}

fn parse_id(id: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(id)
        .map_err(|_| ApiError::BadRequest(format!("{id:?} is not an experiment id (a UUID)")))
}

/// Postgres text cannot hold NUL: refuse it at the edge rather than fail in the database.
fn no_nul<'a>(name: &str, value: impl IntoIterator<Item = &'a String>) -> ApiResult<()> {
    match value.into_iter().any(|v| v.contains('\0')) {
        true => Err(ApiError::BadRequest(format!(
            "{name} must not contain NUL characters"
        ))),
        false => Ok(()),
    }
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// Browsers get the dashboard's page, which says what is missing; everything else a JSON 404.
async fn not_found(uri: axum::http::Uri, headers: axum::http::HeaderMap) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_html && !uri.path().starts_with("/api/") {
        return (StatusCode::NOT_FOUND, crate::dashboard::page().await).into_response();
    }
    ApiError::NotFound("no such endpoint; see /api/openapi.json".into()).into_response()
}

async fn readyz(State(state): State<ApiState>) -> ApiResult<Json<serde_json::Value>> {
    state.store.ping().await?;
    Ok(Json(json!({ "status": "ready" })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    name: Option<String>,
    /// Names containing this text.
    search: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

#[derive(Debug, Serialize)]
struct Page<T> {
    items: Vec<T>,
    limit: i64,
    offset: i64,
}

const MAX_PAGE: i64 = 500;
const MAX_OFFSET: i64 = 1_000_000_000;

async fn list_experiments(
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
struct BisectionQuery {
    limit: Option<i64>,
}

/// Bisections, newest first, each with its steps.
async fn list_bisections(
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

async fn get_bisection(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<BisectionRow>> {
    Ok(Json(state.store.bisection(parse_id(&id)?).await?))
}

async fn get_experiment(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ExperimentRow>> {
    Ok(Json(state.store.experiment(parse_id(&id)?).await?))
}

/// A run as the API shows it: numbers, not serialized histograms or stacks.
#[derive(Debug, Serialize)]
struct RunSummary {
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

async fn list_runs(
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
struct ComparisonQuery {
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

async fn comparison(
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
struct FlamegraphQuery {
    cohort: String,
    against: Option<String>,
}

async fn flamegraph(
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
struct CallChainsQuery {
    symbol: String,
}

#[derive(Debug, Serialize)]
struct CallChains {
    symbol: String,
    cohorts: Vec<CohortCallChains>,
}

/// The call chains into one symbol, per cohort (`perf report --children -G` for that symbol).
async fn call_chains(
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
struct Node {
    id: String,
    #[serde(flatten)]
    node: NodeRecord,
}

async fn list_nodes(State(state): State<ApiState>) -> ApiResult<Json<Vec<Node>>> {
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
struct KernelCompareQuery {
    a: String,
    b: String,
    #[serde(rename = "groupBy")]
    group_by: Option<String>,
    experiment: Option<String>,
}

#[derive(Debug, Serialize)]
struct KernelComparison {
    a: String,
    b: String,
    group_by: GroupBy,
    groups: Vec<FleetGroup>,
    /// What was pooled into a group, and what never is.
    pooling: &'static str,
    method: &'static str,
}

const POOLING: &str = "each group pools the succeeded runs of one workload (load, target settings and collectors, as in its workload field) on one hardware group, across experiments and nodes; runs of different workloads are never pooled";

async fn compare_kernels(
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

/// An experiment is its spec and names: kilobytes.
const MAX_EXPERIMENT_BYTES: usize = 1024 * 1024;
/// A run with its CPU profile: the agent caps a profile's folded stacks at 8 MiB of text,
/// which JSON grows by a few bytes a stack; everything else in a run is far smaller.
const MAX_RUN_BYTES: usize = 16 * 1024 * 1024;
/// Reading and parsing a body takes several times its size in memory (a JSON array of small
/// numbers most), so at most this many bodies are read and parsed at once, whatever several
/// clients send: the ingest's peak memory is bounded by the body limits. Writes then go on side
/// by side (Postgres orders them).
const INGESTS_AT_ONCE: usize = 2;
/// Every request is answered within this, reading its body included: a client that trickles
/// its body holds a connection, not the ingest slot, for longer.
const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

async fn within_deadline(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(state.request_deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(format!(
            "the request took longer than {} s",
            state.request_deadline.as_secs_f64()
        ))
        .into_response(),
    }
}

/// An ingest body, read only once its bearer token is checked, at most `limit` bytes, in one
/// of the `INGESTS_AT_ONCE` slots.
async fn authorized_body<T: serde::de::DeserializeOwned>(
    state: &ApiState,
    request: Request,
    limit: usize,
) -> ApiResult<T> {
    state.authorize(request.headers())?;
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "the body is larger than this route's {} MiB",
            limit / (1024 * 1024)
        ))
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    // The semaphore is never closed, so acquiring only waits.
    let _slot =
        state.ingests.acquire().await.map_err(|_| {
            ApiError::Timeout("the ingest slot is gone: the server is stopping".into())
        })?;
    let bytes = match axum::body::to_bytes(request.into_body(), limit).await {
        Ok(bytes) => bytes,
        Err(error) if is_length_limit(&error) => return Err(too_large()),
        Err(error) => {
            return Err(ApiError::BadRequest(format!(
                "the body could not be read: {error}"
            )));
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::BadRequest(format!("the body is not the JSON this route takes: {e}"))
    })
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if current.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = current.source();
    }
    false
}

#[derive(Debug, Serialize)]
struct Stored {
    id: Uuid,
    /// False when this id was already stored: nothing was changed.
    created: bool,
}

fn stored(id: Uuid, created: bool) -> (StatusCode, Json<Stored>) {
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, Json(Stored { id, created }))
}

async fn create_experiment(
    State(state): State<ApiState>,
    request: Request,
) -> ApiResult<(StatusCode, Json<Stored>)> {
    let experiment: NewExperiment = authorized_body(&state, request, MAX_EXPERIMENT_BYTES).await?;
    validate_experiment(&experiment).map_err(ApiError::BadRequest)?;
    let created = state.store.create_experiment(&experiment).await?;
    Ok(stored(experiment.id, created))
}

async fn ingest_run(
    State(state): State<ApiState>,
    request: Request,
) -> ApiResult<(StatusCode, Json<Stored>)> {
    let run: RunRecord = authorized_body(&state, request, MAX_RUN_BYTES).await?;
    let experiment = state.store.experiment(run.experiment_id).await?;
    validate_run(&run, &experiment).map_err(ApiError::BadRequest)?;
    let created = state.store.record_run(&run).await?;
    Ok(stored(run.id, created))
}
