//! The gateway's public OpenAPI 3.1 document, served at `GET /api/openapi.json` and
//! committed to `docs/openapi/gateway.json`.
//!
//! The gateway's own routes (sign-in, the admin API, `/health`) are described by their
//! handlers' `#[utoipa::path]` annotations and their types' `ToSchema` derives. The
//! `/api/etl/*` surface is the ETL service's own document ([`etl_openapi_for_jobs`] with the
//! stack's [`SEED_JOBS`]) as the
//! browser sees it: its paths under `/api/etl/` instead of `/api/v1/`, the same schemas,
//! the gateway's bearer scheme in place of internal auth, and the gateway's own answers
//! added (401, 403 `forbidden`, 429, 502, 503 of an unreachable or shedding upstream,
//! 504). Nothing in it is secret: it is served without authentication.

use std::sync::OnceLock;

use axum::Json;
use axum::response::{IntoResponse, Response};
use pulse_core::error::ErrorBody;
use pulse_core::health::HealthReport;
use pulse_core::jwt::IssuedToken;
use pulse_etl::api::{error_response, etl_openapi_for_jobs};
use serde_json::{Map, Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToResponse};

use super::admin::{audit, roles, users};
use super::auth::session::{self, SetupAnswer};
use super::auth::{self, LoginBody, MeAnswer};
use crate::stack::accounts::audit::{AuditPage, AuditRecord};
use crate::stack::accounts::roles::RoleRecord;
use crate::stack::accounts::users::UserView;
use crate::stack::etl::SEED_JOBS;

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api/openapi.json";
/// The gateway's security scheme: a user's access token.
pub const BEARER_SCHEME: &str = "bearer";

/// Declares a named error response (`#/components/responses/<Name>`).
macro_rules! error_responses {
    ($($name:ident => ($description:literal, [$($code:literal),+]);)+) => {$(
        #[doc = $description]
        pub struct $name;

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<utoipa::openapi::Response>) {
                (stringify!($name), error_response($description, &[$($code),+], false))
            }
        }
    )+};
}

error_responses! {
    BadRequest => ("Malformed JSON, path or query", ["bad_request"]);
    Unauthorized => ("No access token, or one that is invalid, expired or revoked (with `WWW-Authenticate: Bearer`)", ["unauthorized", "invalid_token", "token_revoked"]);
    Forbidden => ("The user lacks the permission this call needs", ["forbidden"]);
    LoginRefused => ("Wrong e-mail or password, or a disabled user: one answer for all", ["invalid_credentials"]);
    SessionExpired => ("No valid refresh cookie: sign in again (the cookie is cleared)", ["session_expired"]);
    PayloadTooLarge => ("The body is larger than the limit", ["payload_too_large"]);
    UnsupportedMediaType => ("The Content-Type is not JSON", ["unsupported_media_type"]);
    Invalid => ("A field is empty or past its limit (the message says which)", ["validation_failed"]);
    RateLimited => ("Too many requests (failed logins per account and client); see `Retry-After`", ["rate_limited"]);
    InternalError => ("An unexpected failure (details only in the gateway's log)", ["internal_error"]);
    AccountsUnavailable => ("The accounts database or the password-hashing pool is busy; see `Retry-After`", ["service_unavailable", "overloaded"]);
    UserNotFound => ("No user with this id", ["user_not_found"]);
    RoleNotFound => ("No role with this name", ["role_not_found"]);
    UserConflict => ("The e-mail is taken, the change would lock the administrator out, or nobody could administer afterwards", ["user_exists", "self_lockout", "last_administrator", "conflict"]);
    RoleConflict => ("The role exists already, or users still hold it", ["role_exists", "role_in_use", "conflict"]);
    AccountInvalid => ("A field the accounts refuse (the message says which)", ["validation_failed", "unknown_role", "invalid_email", "invalid_role_name", "invalid_permission", "weak_password"]);
    AuditInvalid => ("A filter that does not parse (the message says which)", ["invalid_filter"]);
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Pulse gateway public API",
        description = "The browser's API: sign-in, the admin API, the ETL job API under \
                       /api/etl (proxied to the internal ETL service), health. Every error \
                       is JSON {error, code, request_id}.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    paths(
        auth::login,
        session::refresh,
        session::logout,
        session::setup,
        auth::me,
        users::list,
        users::add,
        users::update,
        users::password,
        users::remove,
        roles::list,
        roles::add,
        roles::remove,
        audit::list,
        health_doc,
        openapi_json,
    ),
    components(
        schemas(
            ErrorBody, LoginBody, IssuedToken, MeAnswer, SetupAnswer, UserView, RoleRecord,
            AuditRecord, AuditPage, users::NewUser, users::UserChange, users::PasswordReset,
            users::UsersAnswer, users::UserAnswer, users::PasswordAnswer, roles::NewRole,
            roles::RolesAnswer, roles::RoleAnswer, HealthReport,
        ),
        responses(
            BadRequest, Unauthorized, Forbidden, LoginRefused, SessionExpired, PayloadTooLarge,
            UnsupportedMediaType, Invalid, RateLimited, InternalError, AccountsUnavailable,
            UserNotFound, RoleNotFound, UserConflict, RoleConflict, AccountInvalid, AuditInvalid,
        ),
    ),
    modifiers(&BearerAuth, &UserChangeNeedsAField),
    tags(
        (name = "auth", description = "Sign-in and sessions"),
        (name = "admin", description = "Users, roles and the audit trail (`users.manage`)"),
        (name = "jobs", description = "ETL jobs (`etl.access`; starting needs `etl.jobs.run`)"),
        (name = "runs", description = "ETL runs (`etl.access`; cancelling needs `etl.jobs.run`)"),
        (name = "events", description = "ETL events"),
        (name = "meta", description = "Health and this document"),
    ),
)]
struct GatewayApiDoc;

/// Adds the bearer scheme.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                BEARER_SCHEME,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .description(Some("The access token of `POST /api/auth/login`"))
                        .build(),
                ),
            );
    }
}

/// A user change names at least one field (else 422); utoipa 5.5's `min_properties`
/// attribute emits `maxProperties`, so it is set here.
struct UserChangeNeedsAField;

impl Modify for UserChangeNeedsAField {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::Schema;
        if let Some(RefOr::T(Schema::Object(change))) = openapi
            .components
            .as_mut()
            .and_then(|components| components.schemas.get_mut("UserChange"))
        {
            change.min_properties = Some(1);
            change.max_properties = None;
        }
    }
}

/// `GET /health` (its handler lives with the gateway's state).
#[utoipa::path(get, path = "/health", tag = "meta",
    responses(
        (status = 200, description = "Healthy; `instances.etl` lists each ETL instance, its circuit and whether it is ejected", body = HealthReport),
        (status = 503, description = "A service is unhealthy", body = HealthReport),
    ))]
#[allow(dead_code)] // documents `super::health`, which needs the gateway's state
fn health_doc() {}

/// `GET /api/openapi.json`: this document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> Response {
    static DOC: OnceLock<Value> = OnceLock::new();
    Json(DOC.get_or_init(gateway_openapi)).into_response()
}

/// The gateway's document: its own routes and the ETL's as the browser sees them.
pub fn gateway_openapi() -> Value {
    let mut doc = serde_json::to_value(GatewayApiDoc::openapi()).unwrap_or_default();
    let etl = serde_json::to_value(etl_openapi_for_jobs(&SEED_JOBS)).unwrap_or_default();
    let etl_responses = etl["components"]["responses"].clone();
    let mut etl_paths = Map::new();
    if let Some(paths) = etl["paths"].as_object() {
        for (path, item) in paths {
            let Some(rest) = path.strip_prefix("/api/v1/") else {
                continue;
            };
            // The ETL's own document is internal: the gateway serves its own.
            if path == pulse_etl::api::OPENAPI_PATH {
                continue;
            }
            let mut item = item.clone();
            if let Some(operations) = item.as_object_mut() {
                for operation in operations.values_mut() {
                    as_browser_sees_it(operation, &etl_responses);
                }
            }
            etl_paths.insert(format!("/api/etl/{rest}"), item);
        }
    }
    if let Some(paths) = doc["paths"].as_object_mut() {
        paths.extend(etl_paths);
    }
    // The same types as the ETL's schemas (ErrorBody included).
    if let (Some(ours), Some(theirs)) = (
        doc["components"]["schemas"].as_object_mut(),
        etl["components"]["schemas"].as_object(),
    ) {
        for (name, schema) in theirs {
            ours.entry(name.clone()).or_insert_with(|| schema.clone());
        }
    }
    doc
}

/// An ETL operation behind the gateway: bearer auth, the gateway's answers added.
fn as_browser_sees_it(operation: &mut Value, etl_responses: &Value) {
    operation["security"] = json!([{ BEARER_SCHEME: [] }]);
    let Some(responses) = operation["responses"].as_object_mut() else {
        return;
    };
    // Inline the ETL's named responses: the gateway widens some of their codes.
    for response in responses.values_mut() {
        if let Some(name) = response["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/components/responses/"))
        {
            *response = etl_responses[name].clone();
        }
    }
    let reference = |name: &str| json!({ "$ref": format!("#/components/responses/{name}") });
    // A client without the permission; the internal credential is the gateway's own.
    responses.insert("403".into(), reference("Forbidden"));
    responses.insert("401".into(), reference("Unauthorized"));
    responses.insert("429".into(), reference("RateLimited"));
    // The proxy refuses unsafe paths and broken bodies itself.
    widen(
        responses,
        "400",
        "Malformed request",
        &["bad_request", "invalid_body"],
    );
    widen(
        responses,
        "502",
        "The ETL service answered with invalid HTTP",
        &["bad_gateway"],
    );
    widen(
        responses,
        "503",
        "The ETL service is unreachable, its circuit is open, or it sheds load; see `Retry-After`",
        &["service_unavailable", "circuit_open", "overloaded"],
    );
    widen(
        responses,
        "504",
        "The ETL service did not answer in time",
        &["gateway_timeout"],
    );
}

/// Adds `codes` to the error response of `status`, or adds that response.
fn widen(responses: &mut Map<String, Value>, status: &str, description: &str, codes: &[&str]) {
    let mut all: Vec<String> = responses
        .get(status)
        .and_then(|r| {
            r["content"]["application/json"]["schema"]["allOf"][1]["properties"]["code"]["enum"]
                .as_array()
        })
        .map(|codes| {
            codes
                .iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for code in codes {
        if !all.iter().any(|c| c == code) {
            all.push((*code).to_owned());
        }
    }
    let description = responses
        .get(status)
        .and_then(|r| r["description"].as_str())
        .map_or_else(
            || description.to_owned(),
            |d| format!("{d}; or: {description}"),
        );
    let codes: Vec<&str> = all.iter().map(String::as_str).collect();
    responses.insert(
        status.to_owned(),
        serde_json::to_value(error_response(&description, &codes, false)).unwrap_or_default(),
    );
}
