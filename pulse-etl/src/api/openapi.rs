//! The API's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! annotations and the wire types' `ToSchema` derives, so it cannot drift from them.
//!
//! Every error answer is the one JSON error shape ([`ErrorBody`]) with `code` narrowed
//! to the stable values that status can carry; a `409` also names the `run_id` it is
//! about. The document is served at `GET /api/v1/openapi.json` (behind internal auth,
//! like the rest of `/api/v1`) and committed to `docs/openapi/etl.json`.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use pulse_core::error::ErrorBody;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Ref, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToResponse};

use super::types::{
    CancelResponse, JobStatusView, JobView, JobsResponse, LogEntry, LogsResponse, RunUpdate,
    RunUpdateKind, RunsResponse, StartJobBody, StartNamedJobBody, StartResponse, StatusResponse,
};
use super::{ApiState, handlers, sse};
use crate::model::{LogLevel, Progress, Run, RunId, RunState};

/// The path the document is served at.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";
/// The security scheme of a shared internal key (`X-Internal-Auth: <secret>`).
pub const INTERNAL_KEY_SCHEME: &str = "internal_key";
/// The security scheme of a signed internal token (`X-Internal-Token: <jwt>`).
pub const INTERNAL_TOKEN_SCHEME: &str = "internal_token";

/// The schema of an error body whose `code` is one of `codes`.
///
/// With `run_id`, the body also carries the id of the run a conflict is about.
pub fn error_schema(codes: &[&str], run_id: bool) -> RefOr<Schema> {
    let mut narrowed = ObjectBuilder::new()
        .property(
            "code",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(codes.iter().copied())),
        )
        .required("code");
    if run_id {
        narrowed = narrowed.property("run_id", Ref::from_schema_name("RunId"));
    }
    AllOfBuilder::new()
        .item(Ref::from_schema_name("ErrorBody"))
        .item(narrowed)
        .into()
}

/// An error response whose body is [`error_schema`]`(codes, run_id)`.
pub fn error_response(
    description: &str,
    codes: &[&str],
    run_id: bool,
) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(error_schema(codes, run_id)))
                .build(),
        )
        .into()
}

/// Declares a named error response (`#/components/responses/<Name>`).
macro_rules! error_responses {
    ($($(#[$doc:meta])* $name:ident => ($description:literal, [$($code:literal),+], $run_id:literal);)+) => {$(
        $(#[$doc])*
        pub(crate) struct $name;

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<utoipa::openapi::Response>) {
                (stringify!($name), error_response($description, &[$($code),+], $run_id))
            }
        }
    )+};
}

error_responses! {
    /// 400 of a malformed path, query, header or body.
    BadRequest => ("Malformed path, query, header or JSON body", ["bad_request"], false);
    /// 400 of a start: also parameters the job refuses.
    StartRefused => ("Malformed request, or parameters the job refuses", ["bad_request", "invalid_params"], false);
    /// 403 without a valid internal credential.
    InternalAuthRequired => ("No valid internal credential", ["internal_auth_required"], false);
    /// 404 of an unknown run.
    RunNotFound => ("No run with this id", ["run_not_found"], false);
    /// 409 of a start.
    StartConflict => ("The job already has an active run (its `run_id` is named), the Idempotency-Key started another job, or the store refused a conflicting write", ["run_already_active", "idempotency_key_reused", "conflict"], true);
    /// 409 of a cancel.
    CancelConflict => ("The run already finished (its `run_id` is named), or the store refused a conflicting write", ["run_already_finished", "conflict"], true);
    /// 413 of a body over the limit.
    PayloadTooLarge => ("The body is larger than the limit (64 KiB by default)", ["payload_too_large"], false);
    /// 415 of a body that is not JSON.
    UnsupportedMediaType => ("The Content-Type is not JSON", ["unsupported_media_type"], false);
    /// 422 of a start naming no registered job.
    UnknownJob => ("No registered job has this name (the message names the allowed ones), or the store refused a value", ["unknown_job", "validation_failed"], false);
    /// 422 of the store refusing a value.
    ValidationFailed => ("The store refused a value of the request", ["validation_failed"], false);
    /// 500 of a bug.
    Internal => ("An unexpected failure (details only in the service's log)", ["internal_error"], false);
    /// 503 with `Retry-After`.
    Unavailable => ("The job store cannot be reached or the service is shutting down; see `Retry-After`", ["store_unavailable", "shutting_down"], false);
}

/// The API's OpenAPI document; see [`etl_openapi`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Pulse ETL internal API",
        description = "The job service behind the gateway. Every path under /api/v1 needs an \
                       internal credential; every error is JSON {error, code, request_id}.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    paths(
        handlers::list_jobs,
        handlers::job_status,
        handlers::start_job,
        handlers::start_named_job,
        handlers::job_runs,
        handlers::get_run,
        handlers::cancel_run,
        handlers::run_logs,
        sse::events,
        openapi_json,
    ),
    components(
        schemas(
            ErrorBody, Run, RunId, RunState, Progress, LogLevel, JobView,
            JobsResponse, JobStatusView, StatusResponse, StartJobBody, StartNamedJobBody,
            StartResponse, CancelResponse, RunsResponse, LogEntry, LogsResponse, RunUpdate,
            RunUpdateKind,
        ),
        responses(
            BadRequest, StartRefused, InternalAuthRequired, RunNotFound, StartConflict,
            CancelConflict, PayloadTooLarge, UnsupportedMediaType, UnknownJob,
            ValidationFailed, Internal, Unavailable,
        ),
    ),
    modifiers(&InternalAuth, &OptionalStartBody, &EventStream),
    security(("internal_key" = []), ("internal_token" = [])),
    tags((name = "jobs", description = "Registered jobs and starting them"),
         (name = "runs", description = "Runs, their logs and cancelling them"),
         (name = "events", description = "Server-sent events of every run change"),
         (name = "meta", description = "This document")),
)]
struct EtlApiDoc;

/// Adds the internal-auth security schemes.
struct InternalAuth;

impl Modify for InternalAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            INTERNAL_KEY_SCHEME,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Internal-Auth",
                "A shared internal key: the secret of one `id:secret` entry of PULSE_INTERNAL_KEYS",
            ))),
        );
        components.add_security_scheme(
            INTERNAL_TOKEN_SCHEME,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Internal-Token",
                "A signed internal token (what the gateway sends): carries the user's identity",
            ))),
        );
    }
}

/// The body of `POST /api/v1/jobs/{name}/start` may be left out (it is not nullable:
/// `null` is a 400), which the path attribute cannot say.
struct OptionalStartBody;

impl Modify for OptionalStartBody {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let body = openapi
            .paths
            .paths
            .get_mut("/api/v1/jobs/{name}/start")
            .and_then(|item| item.post.as_mut())
            .and_then(|operation| operation.request_body.as_mut());
        if let Some(body) = body {
            body.required = Some(utoipa::openapi::Required::False);
        }
    }
}

/// The events of `GET /api/v1/events`, one schema per server-sent event (`event`, `id`,
/// `data`), as Schemathesis reads a `text/event-stream` answer: it had found `type:
/// string` wrong. `data` is JSON: a [`RunUpdate`] for `run`, `{"last_event_id"}` for
/// `position`, `{"last_event_id", "pruned_through"}` for `reset`.
struct EventStream;

impl Modify for EventStream {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let event = ObjectBuilder::new()
            .property(
                "event",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some([
                        super::RUN_EVENT,
                        super::POSITION_EVENT,
                        super::RESET_EVENT,
                    ])),
            )
            .property(
                "id",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[0-9]+$")),
            )
            .property(
                "data",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .content_media_type("application/json")
                    .description(Some(
                        "A RunUpdate (`run`); `{\"last_event_id\"}` (`position`); \
                         `{\"last_event_id\", \"pruned_through\"}` (`reset`)",
                    )),
            )
            .required("event")
            .required("data");
        let content = openapi
            .paths
            .paths
            .get_mut("/api/v1/events")
            .and_then(|item| item.get.as_mut())
            .and_then(|operation| operation.responses.responses.get_mut("200"))
            .and_then(|response| match response {
                RefOr::T(response) => response.content.get_mut("text/event-stream"),
                RefOr::Ref(_) => None,
            });
        if let Some(content) = content {
            content.schema = Some(event.into());
        }
    }
}

/// The ETL API's OpenAPI 3.1 document.
///
/// ```
/// let doc = pulse_etl::api::etl_openapi();
/// assert!(doc.paths.paths.contains_key("/api/v1/jobs/{name}/start"));
/// ```
#[must_use]
pub fn etl_openapi() -> utoipa::openapi::OpenApi {
    EtlApiDoc::openapi()
}

/// [`etl_openapi`] of a service whose registered jobs are `job_names`: every job name
/// (the start bodies' and the `{name}` of the paths) becomes an enum of them (what this service serves; the generic
/// document cannot know them).
///
/// ```
/// let doc = pulse_etl::api::etl_openapi_for_jobs(&["jira_sync"]);
/// let json = serde_json::to_value(&doc).unwrap();
/// let body = &json["components"]["schemas"]["StartNamedJobBody"];
/// assert_eq!(body["properties"]["job_name"]["enum"], serde_json::json!(["jira_sync"]));
/// ```
#[must_use]
pub fn etl_openapi_for_jobs<S: AsRef<str>>(job_names: &[S]) -> utoipa::openapi::OpenApi {
    let mut doc = etl_openapi();
    let job_name: RefOr<Schema> = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(job_names.iter().map(AsRef::as_ref)))
        .description(Some("A registered job"))
        .into();
    if let Some(RefOr::T(Schema::Object(body))) = doc
        .components
        .as_mut()
        .and_then(|components| components.schemas.get_mut("StartNamedJobBody"))
    {
        body.properties.insert("job_name".into(), job_name.clone());
    }
    let operations = doc.paths.paths.values_mut().flat_map(|item| {
        [item.get.as_mut(), item.post.as_mut()]
            .into_iter()
            .flatten()
    });
    for operation in operations {
        for parameter in operation.parameters.iter_mut().flatten() {
            if parameter.name == "name" {
                parameter.schema = Some(job_name.clone());
            }
        }
    }
    doc
}

/// `GET /api/v1/openapi.json`: this document, with this service's job names.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object),
        (status = 403, response = InternalAuthRequired),
    ),
)]
pub(crate) async fn openapi_json(State(state): State<ApiState>) -> Response {
    Json(etl_openapi_for_jobs(&state.engine.registry().names())).into_response()
}
