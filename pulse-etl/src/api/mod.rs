//! The ETL service's HTTP API: an axum [`Router`] over a [`JobEngine`], behind
//! pulse-core's internal authentication.
//!
//! | route | answer |
//! |-------|--------|
//! | `GET /health` (open) | `200`/`503` `{status, services: {database}, timestamp}` |
//! | `GET /api/v1/jobs` | `200` [`JobsResponse`] |
//! | `GET /api/v1/jobs/status` | `200` [`StatusResponse`] |
//! | `POST /api/v1/jobs/{name}/start` `{force?, params?}` (body optional) | `202` [`StartResponse`] |
//! | `POST /api/v1/jobs/start` `{job_name, force?, params?}` | `202` [`StartResponse`] |
//! | `GET /api/v1/runs/{id}` | `200` [`Run`](crate::Run) |
//! | `GET /api/v1/jobs/{name}/runs?limit=20` | `200` [`RunsResponse`], newest first |
//! | `POST /api/v1/runs/{id}/cancel` | `202` [`CancelResponse`] |
//! | `GET /api/v1/runs/{id}/logs` | `200` [`LogsResponse`] |
//! | `GET /api/v1/events` | `text/event-stream` of [`RunUpdate`]s (`event: run`) |
//! | `GET /api/v1/openapi.json` | `200` this API's OpenAPI 3.1 document ([`etl_openapi_for_jobs`] of the registered jobs) |
//!
//! Every error is JSON `{"error", "code", "request_id"}`: `400` malformed JSON, path or
//! query, unknown query parameters included (`bad_request`), or parameters the job refuses (`invalid_params`); `403`
//! without an internal credential (`internal_auth_required`); `404` unknown run
//! (`run_not_found`) or route (`not_found`); `405`; `409` a run already active
//! (`run_already_active`, with `run_id`) or already finished (`run_already_finished`);
//! `413` a body over the limit (64 KiB by default); `415` a non-JSON body; `422` an
//! unknown job naming the allowed ones (`unknown_job`, also for its run history); `503` shutdown
//! (`shutting_down`). An `Idempotency-Key` reused for another job is a `409`
//! (`idempotency_key_reused`).
//!
//! A failing store is answered by cause (see [`StoreError`](crate::StoreError)), never
//! with database detail, which goes to the log: `409 conflict` for a write a
//! constraint refused, `422 validation_failed` for a value the database refused, `503
//! store_unavailable` with `Retry-After` only when the database cannot be reached or
//! does not answer in time, and `500 internal_error` for everything else (an SQL
//! error, a row that does not decode: a bug).
//!
//! A start answers `202` only once the run is committed. `requested_by` is the subject
//! of the [`Identity`](pulse_core::Identity) that [`InternalAuthLayer`] took from a
//! signed internal token; plain `X-User-*` headers are never read. An
//! `Idempotency-Key` header makes a retried start return the first answer: the same
//! status and body (the run as committed), with `Idempotent-Replayed: true`.
//!
//! The layers, outermost first: the correlation id ([`RequestIdLayer`]: every answer
//! and error body carries it), internal authentication (only `/health`, matched
//! exactly, is open), the body limit.
//!
//! ```
//! use http::{Request, StatusCode};
//! use pulse_core::internal_auth::{InternalAuthLayer, KeyRing};
//! use pulse_etl::{EngineConfig, JobEngine, JobRegistry, SqliteStore, api::EtlApi};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = SqliteStore::open(dir.path().join("jobs.db")).await?;
//! let engine = JobEngine::launch(store.into_dyn(), JobRegistry::new(), EngineConfig::default()).await?;
//!
//! let ring = KeyRing::parse("etl-1:0123456789abcdef0123456789abcdef")?;
//! let app = EtlApi::new(engine.clone())
//!     .with_internal_auth(InternalAuthLayer::new(ring))
//!     .into_router();
//!
//! // /health is open and checks the store.
//! let health = app.clone().oneshot(Request::get("/health").body(axum::body::Body::empty())?).await?;
//! assert_eq!(health.status(), StatusCode::OK);
//!
//! // Everything under /api/v1 needs the internal credential.
//! let anonymous = Request::get("/api/v1/jobs").body(axum::body::Body::empty())?;
//! assert_eq!(app.clone().oneshot(anonymous).await?.status(), StatusCode::FORBIDDEN);
//! let internal = Request::get("/api/v1/jobs")
//!     .header("x-internal-auth", "0123456789abcdef0123456789abcdef")
//!     .body(axum::body::Body::empty())?;
//! assert_eq!(app.oneshot(internal).await?.status(), StatusCode::OK);
//! engine.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use pulse_core::health::{Health, HealthAggregator, check_fn};
use pulse_core::internal_auth::{InternalAuthLayer, KeyRing};
use pulse_core::request_id::RequestIdLayer;

use crate::engine::JobEngine;

mod error;
mod extract;
mod handlers;
mod openapi;
mod sse;
mod types;

pub use extract::IDEMPOTENCY_KEY;
pub use handlers::{DEFAULT_RUNS_LIMIT, IDEMPOTENT_REPLAYED, MAX_RUNS_LIMIT};
pub use openapi::{
    INTERNAL_KEY_SCHEME, INTERNAL_TOKEN_SCHEME, OPENAPI_PATH, error_response, error_schema,
    etl_openapi, etl_openapi_for_jobs,
};
pub use sse::{POSITION_EVENT, RESET_EVENT, RUN_EVENT};
pub use types::{
    CancelResponse, JobStatusView, JobView, JobsResponse, LogEntry, LogsResponse, RunUpdate,
    RunUpdateKind, RunsResponse, StartJobBody, StartNamedJobBody, StartResponse, StatusResponse,
};

/// The path answered without a credential.
pub const HEALTH_PATH: &str = "/health";
/// The default request body limit: 64 KiB.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
/// The default interval of SSE keep-alive comments: 15 s.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The router of the API with `auth` in front; see [`EtlApi`] for the other settings.
///
/// ```
/// # use pulse_core::internal_auth::{InternalAuthLayer, KeyRing};
/// # async fn make(engine: pulse_etl::JobEngine) -> Result<axum::Router, Box<dyn std::error::Error>> {
/// let ring = KeyRing::from_env("PULSE_INTERNAL_KEYS")?;
/// let app = pulse_etl::api::router(engine, InternalAuthLayer::new(ring));
/// # Ok(app) }
/// ```
pub fn router(engine: JobEngine, auth: InternalAuthLayer) -> Router {
    EtlApi::new(engine).with_internal_auth(auth).into_router()
}

/// The state every handler shares.
#[derive(Clone)]
pub(crate) struct ApiState {
    pub(crate) engine: JobEngine,
    pub(crate) descriptions: Arc<HashMap<String, String>>,
    pub(crate) health: Arc<HealthAggregator>,
    pub(crate) keep_alive: Duration,
}

/// Builds the API's [`Router`].
///
/// Without [`with_internal_auth`](EtlApi::with_internal_auth) the router fails closed:
/// every route but `/health` answers 403.
#[derive(Debug, Clone)]
#[must_use]
pub struct EtlApi {
    engine: JobEngine,
    auth: Option<InternalAuthLayer>,
    descriptions: HashMap<String, String>,
    body_limit: usize,
    keep_alive: Duration,
    health_timeout: Duration,
}

impl EtlApi {
    /// The API of `engine`, with a 64 KiB body limit and 15 s SSE keep-alives.
    pub fn new(engine: JobEngine) -> Self {
        Self {
            engine,
            auth: None,
            descriptions: HashMap::new(),
            body_limit: DEFAULT_BODY_LIMIT,
            keep_alive: DEFAULT_KEEP_ALIVE,
            health_timeout: HealthAggregator::DEFAULT_TIMEOUT,
        }
    }

    /// Require the internal credentials `layer` accepts on every path but `/health`
    /// (added to its exempt paths). Build it with a [`KeyRing`] and/or an
    /// [`InternalTokenVerifier`](pulse_core::internal_auth::InternalTokenVerifier);
    /// only the latter carries the user identity that becomes a run's `requested_by`.
    pub fn with_internal_auth(mut self, layer: InternalAuthLayer) -> Self {
        self.auth = Some(layer);
        self
    }

    /// A description of a job for `GET /api/v1/jobs`.
    pub fn with_job_description(
        mut self,
        job_name: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        self.descriptions
            .insert(job_name.into(), description.into());
        self
    }

    /// The largest accepted request body (larger: 413).
    pub const fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// How often an idle event stream sends a keep-alive comment.
    pub const fn with_keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = interval;
        self
    }

    /// How long `/health` waits for the store.
    pub const fn with_health_timeout(mut self, timeout: Duration) -> Self {
        self.health_timeout = timeout;
        self
    }

    /// The router, with its layers.
    pub fn into_router(self) -> Router {
        let engine = self.engine.clone();
        let health = HealthAggregator::new()
            .with_timeout(self.health_timeout)
            .with_check(
                "database",
                check_fn(move || {
                    let engine = engine.clone();
                    async move {
                        let health = engine.health().await;
                        if let Some(error) = &health.store_error {
                            tracing::warn!(%error, "job store health check failed");
                            Health::unhealthy("store unavailable")
                        } else if health.shutting_down {
                            Health::unhealthy("shutting down")
                        } else {
                            Health::Healthy
                        }
                    }
                }),
            );
        let state = ApiState {
            engine: self.engine,
            descriptions: Arc::new(self.descriptions),
            health: Arc::new(health),
            keep_alive: self.keep_alive,
        };
        let auth = exempt_health(self.auth.unwrap_or_else(|| {
            tracing::warn!(
                "the ETL API has no internal authentication configured: /api/v1 answers 403"
            );
            InternalAuthLayer::new(KeyRing::new())
        }));

        Router::new()
            .route(HEALTH_PATH, get(handlers::health))
            .route("/api/v1/jobs", get(handlers::list_jobs))
            .route("/api/v1/jobs/status", get(handlers::job_status))
            .route("/api/v1/jobs/start", post(handlers::start_named_job))
            .route("/api/v1/jobs/{name}/start", post(handlers::start_job))
            .route("/api/v1/jobs/{name}/runs", get(handlers::job_runs))
            .route("/api/v1/runs/{id}", get(handlers::get_run))
            .route("/api/v1/runs/{id}/cancel", post(handlers::cancel_run))
            .route("/api/v1/runs/{id}/logs", get(handlers::run_logs))
            .route("/api/v1/events", get(sse::events))
            .route(OPENAPI_PATH, get(openapi::openapi_json))
            // After the routes: it applies to the routes already added.
            .method_not_allowed_fallback(error::method_not_allowed)
            .fallback(error::route_not_found)
            .with_state(state)
            // Innermost: bodies are bounded before any extractor buffers them.
            .layer(DefaultBodyLimit::max(self.body_limit))
            // Only a valid internal credential gets past; it vouches for the Identity.
            .layer(auth)
            // Outermost: the correlation id is known to every answer, 403s included.
            .layer(RequestIdLayer::new())
    }
}

/// `layer` with `/health` among its exempt paths.
fn exempt_health(layer: InternalAuthLayer) -> InternalAuthLayer {
    if layer.exempt_paths().iter().any(|path| path == HEALTH_PATH) {
        return layer;
    }
    match layer.clone().with_exempt_paths([HEALTH_PATH]) {
        Ok(layer) => layer,
        // `/health` is canonical, so this cannot happen; keep the stricter layer.
        Err(_) => layer,
    }
}
