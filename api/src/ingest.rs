//! Writes: an experiment and its runs, each behind the ingest token, its body bounded in size and
//! read in one of a few slots.

use axum::Json;
use axum::extract::Request;
use axum::extract::State;
use axum::http::{StatusCode, header};
use serde::Serialize;
use uuid::Uuid;

use crate::{ApiError, ApiResult, ApiState};
use loadlab_results::ingest::{validate_experiment, validate_run};
use loadlab_results::model::{NewExperiment, RunRecord};

/// An experiment is its spec and names: kilobytes.
const MAX_EXPERIMENT_BYTES: usize = 1024 * 1024;
/// A run with its CPU profile: the agent caps a profile's folded stacks at 8 MiB of text,
/// which JSON grows by a few bytes a stack; everything else in a run is far smaller.
const MAX_RUN_BYTES: usize = 16 * 1024 * 1024;
/// Reading and parsing a body takes several times its size in memory (a JSON array of small
/// numbers most), so at most this many bodies are read and parsed at once, whatever several
/// clients send: the ingest's peak memory is bounded by the body limits. Writes then go on side
/// by side (Postgres orders them).
pub(crate) const INGESTS_AT_ONCE: usize = 2;
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
pub(crate) struct Stored {
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

pub(crate) async fn create_experiment(
    State(state): State<ApiState>,
    request: Request,
) -> ApiResult<(StatusCode, Json<Stored>)> {
    let experiment: NewExperiment = authorized_body(&state, request, MAX_EXPERIMENT_BYTES).await?;
    validate_experiment(&experiment).map_err(ApiError::BadRequest)?;
    let created = state.store.create_experiment(&experiment).await?;
    Ok(stored(experiment.id, created))
}

pub(crate) async fn ingest_run(
    State(state): State<ApiState>,
    request: Request,
) -> ApiResult<(StatusCode, Json<Stored>)> {
    let run: RunRecord = authorized_body(&state, request, MAX_RUN_BYTES).await?;
    let experiment = state.store.experiment(run.experiment_id).await?;
    validate_run(&run, &experiment).map_err(ApiError::BadRequest)?;
    let created = state.store.record_run(&run).await?;
    Ok(stored(run.id, created))
}
