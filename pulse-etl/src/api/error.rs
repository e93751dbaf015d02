//! Every error of the API in the shared JSON shape.
//!
//! Engine errors map to the contract's statuses and codes; a `409` also carries the
//! `run_id` it is about. Store failures answer by cause ([`StoreError`]) without
//! detail (the detail goes to the log): `409 conflict`, `422 validation_failed`, `503
//! store_unavailable` (only for an unreachable or overloaded database) or `500
//! internal_error`.

use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use pulse_core::error::{ApiError, ErrorBody, ErrorCode};
use pulse_core::request_id::RequestId;
use serde::Serialize;

use crate::engine::EngineError;
use crate::model::RunId;
use crate::store::StoreError;

/// `unknown_job` (422).
pub(crate) const UNKNOWN_JOB: ErrorCode = ErrorCode::new("unknown_job");
/// `run_already_active` (409).
pub(crate) const RUN_ALREADY_ACTIVE: ErrorCode = ErrorCode::new("run_already_active");
/// `run_already_finished` (409).
pub(crate) const RUN_ALREADY_FINISHED: ErrorCode = ErrorCode::new("run_already_finished");
/// `run_not_found` (404).
pub(crate) const RUN_NOT_FOUND: ErrorCode = ErrorCode::new("run_not_found");
/// `invalid_params` (400).
pub(crate) const INVALID_PARAMS: ErrorCode = ErrorCode::new("invalid_params");
/// `store_unavailable` (503).
pub(crate) const STORE_UNAVAILABLE: ErrorCode = ErrorCode::new("store_unavailable");
/// `Retry-After` of `store_unavailable`: a busy pool or a restarting database is
/// usually back within seconds, and a retry per second costs the store little.
const STORE_RETRY_AFTER: Duration = Duration::from_secs(1);
/// `shutting_down` (503).
pub(crate) const SHUTTING_DOWN: ErrorCode = ErrorCode::new("shutting_down");
/// `idempotency_key_reused` (409): the key started another job.
pub(crate) const IDEMPOTENCY_KEY_REUSED: ErrorCode = ErrorCode::new("idempotency_key_reused");
/// `unsupported_media_type` (415).
pub(crate) const UNSUPPORTED_MEDIA_TYPE: ErrorCode = ErrorCode::new("unsupported_media_type");

/// An error answer of the API: the shared shape, plus the `run_id` of a conflict.
///
/// The request id is taken from [`RequestId::current`] when the answer is rendered,
/// which the router's request-id layer sets while a request is served.
#[derive(Debug)]
pub(crate) struct ErrorResponse {
    // Boxed: `ApiError` carries a header map, and this travels in every `Result`.
    error: Box<ApiError>,
    run_id: Option<RunId>,
}

#[derive(Serialize)]
struct BodyWithRunId<'a> {
    #[serde(flatten)]
    body: &'a ErrorBody,
    run_id: RunId,
}

impl ErrorResponse {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::bad_request(message.into()).into()
    }

    fn with_run_id(mut self, run_id: RunId) -> Self {
        self.run_id = Some(run_id);
        self
    }
}

impl From<ApiError> for ErrorResponse {
    fn from(error: ApiError) -> Self {
        Self {
            error: Box::new(error),
            run_id: None,
        }
    }
}

impl From<EngineError> for ErrorResponse {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::UnknownJob { name, allowed } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                UNKNOWN_JOB,
                format!("Unknown job '{name}'; allowed jobs: {}", allowed.join(", ")),
            )
            .into(),
            EngineError::AlreadyActive { job_name, run_id } => Self::from(ApiError::new(
                StatusCode::CONFLICT,
                RUN_ALREADY_ACTIVE,
                format!("Job {job_name} already has an active run"),
            ))
            .with_run_id(run_id),
            EngineError::AlreadyFinished { run_id, state } => Self::from(ApiError::new(
                StatusCode::CONFLICT,
                RUN_ALREADY_FINISHED,
                format!("Run {run_id} already finished ({state})"),
            ))
            .with_run_id(run_id),
            EngineError::NotFound { run_id } => ApiError::new(
                StatusCode::NOT_FOUND,
                RUN_NOT_FOUND,
                format!("Run {run_id} not found"),
            )
            .into(),
            EngineError::InvalidParams { job_name, message } => ApiError::new(
                StatusCode::BAD_REQUEST,
                INVALID_PARAMS,
                format!("Invalid parameters for job {job_name}: {message}"),
            )
            .into(),
            EngineError::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                SHUTTING_DOWN,
                "The job service is shutting down",
            )
            .with_retry_after(Duration::from_secs(1))
            .into(),
            EngineError::Store(err) => store_error(&err).into(),
        }
    }
}

/// The answer to a store failure: by cause, never with the database's words.
fn store_error(err: &StoreError) -> ApiError {
    match err {
        StoreError::Unavailable(_) => {
            tracing::error!(error = %err, "job store unavailable");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                STORE_UNAVAILABLE,
                "Job store unavailable",
            )
            .with_retry_after(STORE_RETRY_AFTER)
        }
        StoreError::Conflict(_) => {
            tracing::warn!(error = %err, "job store refused a conflicting write");
            ApiError::conflict("The request conflicts with stored data")
        }
        StoreError::InvalidInput(_) => {
            tracing::warn!(error = %err, "job store refused a value");
            ApiError::unprocessable("A value of the request was refused by the job store")
        }
        _ => {
            tracing::error!(error = %err, "job store failed");
            ApiError::internal()
        }
    }
}

impl IntoResponse for ErrorResponse {
    fn into_response(self) -> Response {
        let mut error = *self.error;
        if error.request_id().is_none()
            && let Some(id) = RequestId::current()
        {
            error = error.with_request_id(id.as_str());
        }
        match self.run_id {
            None => error.into_response(),
            Some(run_id) => {
                let body = error.body();
                let json = serde_json::to_vec(&BodyWithRunId {
                    body: &body,
                    run_id,
                });
                match json {
                    Ok(json) => error.into_response_with(|_| Body::from(json)),
                    Err(_) => error.into_response(),
                }
            }
        }
    }
}

/// The JSON 404 of every unknown route.
pub(crate) async fn route_not_found() -> ErrorResponse {
    ApiError::not_found("No such route").into()
}

/// The JSON 405 of a known route with another method.
pub(crate) async fn method_not_allowed() -> ErrorResponse {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::METHOD_NOT_ALLOWED,
        "Method not allowed on this route",
    )
    .into()
}
