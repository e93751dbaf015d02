//! The audit rows of jobs started and runs cancelled through the gateway: who (the
//! verified user), which job and run (from the ETL's answer), which request, from where.
//!
//! Mounted inside the JWT and RBAC layers of `/api/etl/*`, so only authorised calls
//! reach it; every other request passes through untouched (no body is read, nothing is
//! written). Only accepted starts and cancels are recorded: a refused one left nothing
//! to audit at the ETL, and its 401/403 is in the gateway's log and metrics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use futures_util::future::{BoxFuture, Either};
use pulse_core::Identity;
use pulse_core::request_id::RequestId;
use serde_json::{Value, json};
use tower::{Layer, Service};

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

/// Records accepted job starts and run cancels. A tower layer: every other request
/// goes through with the inner future as it is (no boxing, no clone of the route, as
/// `middleware::from_fn` would cost on every call).
#[derive(Clone)]
pub struct JobAuditLayer {
    auth: Arc<Auth>,
}

impl JobAuditLayer {
    pub fn new(auth: Arc<Auth>) -> Self {
        Self { auth }
    }
}

impl<S> Layer<S> for JobAuditLayer {
    type Service = JobAudit<S>;

    fn layer(&self, inner: S) -> JobAudit<S> {
        JobAudit {
            inner,
            auth: Arc::clone(&self.auth),
        }
    }
}

/// The service of [`JobAuditLayer`].
#[derive(Clone)]
pub struct JobAudit<S> {
    inner: S,
    auth: Arc<Auth>,
}

impl<S> Service<Request> for JobAudit<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let Some(action) = action_of(request.method(), request.uri().path()) else {
            return Either::Left(self.inner.call(request));
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
        let origin = Origin {
            actor: user,
            request_id,
            client_addr: Some(self.auth.client(request.headers(), peer).to_string()),
        };
        let answer = self.inner.call(request);
        let auth = Arc::clone(&self.auth);
        Either::Right(Box::pin(async move {
            Ok(record(&auth, action, origin, answer.await?).await)
        }))
    }
}

/// Writes the audit row of an accepted start or cancel, from its answer.
async fn record(auth: &Auth, action: AuditAction, origin: Origin, response: Response) -> Response {
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
                origin.request_id,
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
