//! The route handlers: each maps the engine's answer to the contract's shape.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode};
use pulse_core::Identity;
use pulse_core::error::ApiError;
use serde::Deserialize;

use super::ApiState;
use super::error::{ErrorResponse, IDEMPOTENCY_KEY_REUSED};
use super::extract::{IdempotencyKey, JsonBody, PathParams, QueryParams};
#[allow(unused_imports)] // named by the `#[utoipa::path]` annotations
use super::openapi::{
    BadRequest, CancelConflict, Internal, InternalAuthRequired, PayloadTooLarge, RunNotFound,
    StartConflict, StartRefused, Unavailable, UnknownJob, UnsupportedMediaType,
};
use super::types::{
    CancelResponse, JobStatusView, JobView, JobsResponse, LogEntry, LogsResponse, RunsResponse,
    StartJobBody, StartNamedJobBody, StartResponse, StatusResponse,
};
use crate::engine::StartRequest;
use crate::model::{Progress, Run, RunId, RunState};

/// `idempotent-replayed: true` marks the answer of a replayed `Idempotency-Key`.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The run history page size when `limit` is absent.
pub const DEFAULT_RUNS_LIMIT: u32 = 20;
/// The largest run history page.
pub const MAX_RUNS_LIMIT: u32 = 200;

type ApiResult<T> = Result<T, ErrorResponse>;

/// `GET /health`: the store answers and the engine is not shutting down.
pub(crate) async fn health(State(state): State<ApiState>) -> Response {
    state.health.check().await.into_response()
}

/// `GET /api/v1/jobs`.
#[utoipa::path(
    get,
    path = "/api/v1/jobs",
    tag = "jobs",
    responses(
        (status = 200, description = "Every registered job with its latest run", body = JobsResponse),
        (status = 403, response = InternalAuthRequired),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
pub(crate) async fn list_jobs(State(state): State<ApiState>) -> ApiResult<Json<JobsResponse>> {
    let jobs = state
        .engine
        .jobs()
        .await?
        .into_iter()
        .map(|job| JobView {
            description: state.descriptions.get(&job.name).cloned(),
            state: job.state,
            schedule: job.schedule,
            latest_run: job.latest_run,
            name: job.name,
        })
        .collect();
    Ok(Json(JobsResponse { jobs }))
}

/// `GET /api/v1/jobs/status`.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/status",
    tag = "jobs",
    responses(
        (status = 200, description = "The status summary the dashboard polls", body = StatusResponse),
        (status = 403, response = InternalAuthRequired),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
pub(crate) async fn job_status(State(state): State<ApiState>) -> ApiResult<Json<StatusResponse>> {
    let summary = state.engine.status_summary().await?;
    let jobs = state
        .engine
        .jobs()
        .await?
        .into_iter()
        .map(|job| {
            let run = job.latest_run.as_ref();
            let view = JobStatusView {
                state: job.state,
                run_id: run.map(|run| run.id),
                progress: run.map(|run| run.progress.clone()),
                started_at: run.and_then(|run| run.started_at),
                finished_at: run.and_then(|run| run.finished_at),
            };
            (job.name, view)
        })
        .collect();
    let counts = summary.counts;
    Ok(Json(StatusResponse {
        jobs,
        active_runs: counts.pending + counts.running + counts.retrying + counts.cancelling,
        timestamp: summary.generated_at,
    }))
}

/// `POST /api/v1/jobs/{name}/start`.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{name}/start",
    tag = "jobs",
    params(
        ("name" = String, Path, description = "A registered job's name"),
        ("idempotency-key" = Option<String>, Header, max_length = 255, min_length = 1, pattern = r"^[\x21-\x7E]+$",
            description = "Makes a retried start return the first answer: 1 to 255 visible ASCII characters"),
    ),
    request_body(content = StartJobBody, description = "Optional: an empty body means `{}`", content_type = "application/json"),
    responses(
        (status = 202, description = "The run is committed (a replayed Idempotency-Key answers the first run, with `Idempotent-Replayed: true`)", body = StartResponse,
            headers(("idempotent-replayed" = String, description = "`true` on a replayed Idempotency-Key"))),
        (status = 400, response = StartRefused),
        (status = 409, response = StartConflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnknownJob),
        (status = 403, response = InternalAuthRequired),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
pub(crate) async fn start_job(
    State(state): State<ApiState>,
    PathParams(job_name): PathParams<String>,
    identity: Option<Identity>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<StartJobBody>,
) -> ApiResult<Response> {
    start(&state, job_name, body.force, body.params, identity, key).await
}

/// `POST /api/v1/jobs/start`.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/start",
    tag = "jobs",
    params(
        ("idempotency-key" = Option<String>, Header, max_length = 255, min_length = 1, pattern = r"^[\x21-\x7E]+$",
            description = "Makes a retried start return the first answer: 1 to 255 visible ASCII characters"),
    ),
    request_body(content = StartNamedJobBody, content_type = "application/json"),
    responses(
        (status = 202, description = "The run is committed (a replayed Idempotency-Key answers the first run, with `Idempotent-Replayed: true`)", body = StartResponse,
            headers(("idempotent-replayed" = String, description = "`true` on a replayed Idempotency-Key"))),
        (status = 400, response = StartRefused),
        (status = 409, response = StartConflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnknownJob),
        (status = 403, response = InternalAuthRequired),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
pub(crate) async fn start_named_job(
    State(state): State<ApiState>,
    identity: Option<Identity>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<StartNamedJobBody>,
) -> ApiResult<Response> {
    start(
        &state,
        body.job_name,
        body.force,
        body.params,
        identity,
        key,
    )
    .await
}

/// Both start forms: `requested_by` is the signed identity's subject, never a header.
async fn start(
    state: &ApiState,
    job_name: String,
    force: bool,
    params: serde_json::Value,
    identity: Option<Identity>,
    idempotency_key: Option<String>,
) -> ApiResult<Response> {
    let mut request = StartRequest::new(job_name.clone())
        .with_params(params)
        .with_force(force);
    request.requested_by = identity.map(|identity| identity.subject);
    request.idempotency_key = idempotency_key;
    // `start` returns once the run is committed, so a 202 never announces a lost run.
    let outcome = state.engine.start(request).await?;
    let run = if outcome.created {
        outcome.run
    } else if outcome.run.job_name == job_name {
        as_committed(outcome.run)
    } else {
        // Keys are global: one reused for another job is a client bug, not a replay.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            IDEMPOTENCY_KEY_REUSED,
            "Idempotency-Key already used to start another job",
        )
        .into());
    };
    let message = match outcome.replaced {
        Some(replaced) => format!(
            "Job {} started; active run {replaced} cancelled",
            run.job_name
        ),
        None => format!("Job {} started", run.job_name),
    };
    let body = StartResponse {
        success: true,
        message,
        run_id: run.id,
        run,
    };
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if !outcome.created {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The run as the first start of an idempotency key answered it: just committed,
/// before any attempt. A replay answers with it, so the retried request gets the first
/// answer again (the run's current state is one `GET /api/v1/runs/{id}` away).
fn as_committed(run: Run) -> Run {
    Run {
        state: RunState::Pending,
        started_at: None,
        finished_at: None,
        attempts: 0,
        progress: Progress::default(),
        error: None,
        result: None,
        ..run
    }
}

/// `GET /api/v1/runs/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}",
    tag = "runs",
    params(("id" = RunId, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run", body = Run),
        (status = 400, response = BadRequest),
        (status = 404, response = RunNotFound),
        (status = 403, response = InternalAuthRequired),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
pub(crate) async fn get_run(
    State(state): State<ApiState>,
    PathParams(run_id): PathParams<RunId>,
) -> ApiResult<Json<Run>> {
    Ok(Json(state.engine.run(run_id).await?))
}

/// The query of `GET /api/v1/jobs/{name}/runs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
// A misspelt parameter is a 400, not silently the default page.
#[serde(deny_unknown_fields)]
pub(crate) struct RunsQuery {
    /// The page size: at least 1; more than 200 reads as 200 (default 20).
    // Any u32 is read (and clamped), so not `format: int32`'s 2^31 - 1 bound.
    #[param(value_type = Option<u64>, minimum = 1, maximum = 4_294_967_295_u64)]
    limit: Option<u32>,
}

/// `GET /api/v1/jobs/{name}/runs?limit=`.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{name}/runs",
    tag = "runs",
    params(("name" = String, Path, description = "A registered job's name"), RunsQuery),
    responses(
        (status = 200, description = "The job's runs, newest first", body = RunsResponse),
        (status = 400, response = BadRequest),
        (status = 422, response = UnknownJob),
        (status = 403, response = InternalAuthRequired),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
pub(crate) async fn job_runs(
    State(state): State<ApiState>,
    PathParams(job_name): PathParams<String>,
    QueryParams(query): QueryParams<RunsQuery>,
) -> ApiResult<Json<RunsResponse>> {
    let limit = match query.limit {
        None => DEFAULT_RUNS_LIMIT,
        Some(0) => return Err(ErrorResponse::bad_request("limit must be at least 1")),
        Some(limit) => limit.min(MAX_RUNS_LIMIT),
    };
    let runs = state.engine.runs_for_job(&job_name, limit).await?;
    Ok(Json(RunsResponse { runs }))
}

/// `POST /api/v1/runs/{id}/cancel`.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/cancel",
    tag = "runs",
    params(("id" = RunId, Path, description = "The run's id")),
    responses(
        (status = 202, description = "Cancelled at once, or cancelling", body = CancelResponse),
        (status = 400, response = BadRequest),
        (status = 404, response = RunNotFound),
        (status = 409, response = CancelConflict),
        (status = 403, response = InternalAuthRequired),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
pub(crate) async fn cancel_run(
    State(state): State<ApiState>,
    PathParams(run_id): PathParams<RunId>,
) -> ApiResult<(StatusCode, Json<CancelResponse>)> {
    let run = state.engine.cancel(run_id).await?;
    let message = if run.state == RunState::Cancelled {
        format!("Run {run_id} cancelled")
    } else {
        format!("Run {run_id} is being cancelled")
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(CancelResponse {
            success: true,
            message,
            run,
        }),
    ))
}

/// `GET /api/v1/runs/{id}/logs`.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/logs",
    tag = "runs",
    params(("id" = RunId, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run's log, oldest first", body = LogsResponse),
        (status = 400, response = BadRequest),
        (status = 404, response = RunNotFound),
        (status = 403, response = InternalAuthRequired),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
pub(crate) async fn run_logs(
    State(state): State<ApiState>,
    PathParams(run_id): PathParams<RunId>,
) -> ApiResult<Json<LogsResponse>> {
    let logs = state.engine.logs(run_id).await?;
    Ok(Json(LogsResponse {
        run_id,
        logs: logs.into_iter().map(LogEntry::from).collect(),
    }))
}
