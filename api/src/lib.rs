//! loadlab over HTTP: the REST API (`/api/v1`, JSON: experiments, their runs and comparison,
//! CPU flamegraphs, nodes, ingest and health) and the dashboard beside it. `app(state)` is a
//! value, so tests need no socket. The results themselves (store, statistics, reports) are
//! `loadlab-results`'s; nothing there knows HTTP.
//! Every error is `{"error": ..., "detail": ...}` with its status; internal details are logged,
//! not sent.

mod dashboard;
mod ingest;
mod memo;
mod reads;

use ingest::{INGESTS_AT_ONCE, create_experiment, ingest_run};
use reads::{
    call_chains, compare_kernels, comparison, flamegraph, get_bisection, get_experiment,
    list_bisections, list_experiments, list_nodes, list_runs,
};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::QueryRejection;
use axum::extract::{MatchedPath, Request};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use uuid::Uuid;

use crate::memo::Memo;
use loadlab_results::Error;
use loadlab_results::fleet::{FleetRuns, GroupBy};
use loadlab_results::store::Store;

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
pub(crate) enum ApiError {
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
