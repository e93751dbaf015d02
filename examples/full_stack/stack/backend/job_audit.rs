//! The audit rows of jobs started and runs cancelled through the gateway: who (the
//! verified user), which job and run (from the ETL's answer), which request, from where.
//!
//! Mounted inside the JWT and RBAC layers of `/api/etl/*`, so only authorised calls
//! reach it; every other request passes through untouched (no body is read, nothing is
//! written). Only accepted starts and cancels are recorded: a refused one left nothing
//! to audit at the ETL, and its 401/403 is in the gateway's log and metrics.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use pulse_core::Identity;
use pulse_core::request_id::RequestId;
use serde_json::{Value, json};

use super::auth::{Auth, json_error};
use crate::stack::accounts::Origin;
use crate::stack::accounts::audit::{AuditAction, AuditEvent};

/// The most of a start or cancel answer read to find its run (the ETL's are a few
/// hundred bytes; a run's params are capped by the ETL's 64 KiB body limit).
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// The header the ETL sets on an idempotent replay of a start.
const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// What a request to `/api/etl/…` is, for the trail.
fn action_of(method: &Method, path: &str) -> Option<AuditAction> {
    if method != Method::POST {
        return None;
    }
    let segments: Vec<&str> = path
        .strip_prefix("/api/etl/")?
        .trim_end_matches('/')
        .split('/')
        .collect();
    match segments.as_slice() {
        ["jobs", "start"] | ["jobs", _, "start"] => Some(AuditAction::JobStarted),
        ["runs", _, "cancel"] => Some(AuditAction::RunCancelled),
        _ => None,
    }
}

/// Record accepted job starts and run cancels (`axum::middleware::from_fn_with_state`).
pub async fn record(State(auth): State<Arc<Auth>>, request: Request, next: Next) -> Response {
    let Some(action) = action_of(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let user = request
        .extensions()
        .get::<Identity>()
        .map(|identity| identity.subject.clone());
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.as_str().to_owned());
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let client = auth.client(request.headers(), peer);
    let response = next.run(request).await;
    if !response.status().is_success() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_ANSWER_BYTES).await {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::warn!(%error, "reading a start or cancel answer failed");
            return json_error(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "The ETL service's answer broke off",
                request_id,
            );
        }
    };
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let run = &answer["run"];
    let mut detail = json!({
        "job": run["job_name"],
        "run_id": run["id"],
        "status": parts.status.as_u16(),
    });
    if parts.headers.contains_key(IDEMPOTENT_REPLAYED) {
        detail["replayed"] = json!(true);
    }
    let origin = Origin {
        actor: user,
        request_id,
        client_addr: Some(client.to_string()),
    };
    let target = run["id"].as_str();
    auth.store()
        .record_or_log(&AuditEvent::new(action, &origin, target, detail))
        .await;
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_starts_and_cancels_are_recorded() {
        for (method, path, action) in [
            (
                Method::POST,
                "/api/etl/jobs/start",
                Some(AuditAction::JobStarted),
            ),
            (
                Method::POST,
                "/api/etl/jobs/jira_sync/start",
                Some(AuditAction::JobStarted),
            ),
            (
                Method::POST,
                "/api/etl/runs/0190-ab/cancel",
                Some(AuditAction::RunCancelled),
            ),
            (Method::GET, "/api/etl/jobs/jira_sync/start", None),
            (Method::POST, "/api/etl/jobs/jira_sync/runs", None),
            (Method::POST, "/api/etl/runs/x/logs", None),
            (Method::POST, "/api/admin/jobs/start", None),
        ] {
            assert_eq!(action_of(&method, path), action, "{method} {path}");
        }
    }
}
