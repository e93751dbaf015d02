//! Shared fixtures of the API and client tests: an engine on the in-memory store in
//! virtual time (the tests run with `start_paused`: backoffs, polls and stream
//! timeouts cost no wall-clock time), or on a temp-dir SQLite store for the tests of
//! store failures; its router behind internal auth (a key ring and signed tokens); and
//! test jobs.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use pulse_core::Identity;
use pulse_core::internal_auth::{
    InternalAuthLayer, InternalTokenMinter, InternalTokenVerifier, KeyRing,
};
use pulse_core::jwt::{SigningKey, VerificationKey};
use pulse_etl::api::EtlApi;
use pulse_etl::{
    EngineConfig, Job, JobContext, JobEngine, JobError, JobOutput, JobRegistry, JobStore,
    MemoryStore, NoParams, SqliteStore, TokioWallClock,
};
use serde::Deserialize;
use serde_json::Value;
use tempfile::TempDir;
use tower::ServiceExt;

/// The internal key the tests send.
pub const KEY: &str = "0123456789abcdef0123456789abcdef";
/// The HMAC secret of internal tokens.
pub const TOKEN_SECRET: [u8; 32] = [7; 32];
/// The token issuer (the gateway).
pub const ISSUER: &str = "pulse-gateway";
/// The token audience (this service).
pub const AUDIENCE: &str = "pulse-etl";

/// Reports progress, logs a line and succeeds.
pub struct JiraSync;

impl Job for JiraSync {
    type Params = NoParams;

    fn name(&self) -> &str {
        "jira_sync"
    }

    async fn run(&self, ctx: JobContext) -> Result<JobOutput, JobError> {
        ctx.info("fetched page 1").await?;
        ctx.progress(1, Some(1), "page 1 of 1").await?;
        Ok(JobOutput::empty())
    }
}

/// Parameters of [`GithubSync`].
#[derive(Deserialize)]
pub struct GithubParams {
    #[serde(default)]
    pub pages: u32,
}

/// Takes typed parameters and succeeds.
pub struct GithubSync;

impl Job for GithubSync {
    type Params = GithubParams;

    fn name(&self) -> &str {
        "github_sync"
    }

    async fn run(&self, ctx: JobContext) -> Result<JobOutput, JobError> {
        let params: GithubParams = ctx.params()?;
        ctx.progress(u64::from(params.pages), None, "done").await?;
        Ok(JobOutput::empty())
    }
}

/// An engine, its router and its store.
pub struct TestApp {
    pub engine: JobEngine,
    pub store: Arc<dyn JobStore>,
    /// The SQLite store, for the apps of [`sqlite_api_only`].
    pub sqlite: Option<SqliteStore>,
    pub router: Router,
    pub ring: KeyRing,
    pub minter: InternalTokenMinter,
    _dir: Option<TempDir>,
}

impl TestApp {
    /// The SQLite store of a [`sqlite_api_only`] app.
    pub fn sqlite(&self) -> &SqliteStore {
        self.sqlite.as_ref().expect("an app on SQLite")
    }
}

/// An API-only engine (no workers) on the in-memory store: runs stay where the API
/// puts them.
pub async fn api_only() -> TestApp {
    app(0).await
}

/// An engine with `concurrency` workers on the in-memory store, in virtual time.
pub async fn app(concurrency: usize) -> TestApp {
    app_with(concurrency, |config| config).await
}

/// An engine with `concurrency` workers and more configuration, on the in-memory
/// store, in virtual time.
pub async fn app_with(
    concurrency: usize,
    configure: impl FnOnce(EngineConfig) -> EngineConfig,
) -> TestApp {
    let config = config(concurrency).with_clock(Arc::new(TokioWallClock::new(
        time::OffsetDateTime::now_utc(),
    )));
    launch(MemoryStore::new().into_dyn(), configure(config), None, None).await
}

/// An API-only engine on a temp-dir SQLite store (real time: its queries run on
/// sqlx's worker thread), for the tests that damage or close the store.
pub async fn sqlite_api_only() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("jobs.db")).await.unwrap();
    let dynamic = store.clone().into_dyn();
    launch(dynamic, config(0), Some(store), Some(dir)).await
}

fn config(concurrency: usize) -> EngineConfig {
    EngineConfig::default()
        .with_concurrency(concurrency)
        .with_poll_interval(Duration::from_millis(20))
        .with_schedules(false)
}

async fn launch(
    store: Arc<dyn JobStore>,
    config: EngineConfig,
    sqlite: Option<SqliteStore>,
    dir: Option<TempDir>,
) -> TestApp {
    let registry = JobRegistry::new().with_job(JiraSync).with_job(GithubSync);
    let engine = JobEngine::launch(Arc::clone(&store), registry, config)
        .await
        .unwrap();
    let ring = KeyRing::parse(&format!("test:{KEY}")).unwrap();
    let auth = InternalAuthLayer::new(ring.clone()).with_verifier(InternalTokenVerifier::new(
        VerificationKey::hmac(TOKEN_SECRET).unwrap(),
        ISSUER,
        AUDIENCE,
    ));
    let router = EtlApi::new(engine.clone())
        .with_internal_auth(auth)
        .with_job_description("jira_sync", "Sync Jira issues")
        .into_router();
    let minter = InternalTokenMinter::new(SigningKey::hmac(TOKEN_SECRET).unwrap(), ISSUER);
    TestApp {
        engine,
        store,
        sqlite,
        router,
        ring,
        minter,
        _dir: dir,
    }
}

/// An answer, with its body read as JSON (`Value::Null` when empty or not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl TestApp {
    /// Sends `request` to the router.
    pub async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    /// `GET path` with the internal key.
    pub async fn get(&self, path: &str) -> Answer {
        self.send(keyed(Request::get(path)).body(Body::empty()).unwrap())
            .await
    }

    /// `POST path` with the internal key and a JSON body.
    pub async fn post(&self, path: &str, body: &str) -> Answer {
        self.send(
            keyed(Request::post(path))
                .header("content-type", "application/json")
                .body(Body::from(body.to_owned()))
                .unwrap(),
        )
        .await
    }

    /// A signed internal token for `user`.
    pub fn token_for(&self, user: &str) -> HeaderValue {
        self.minter
            .mint_header(&Identity::new(user), AUDIENCE)
            .unwrap()
    }
}

/// Adds the internal key.
pub fn keyed(builder: http::request::Builder) -> http::request::Builder {
    builder.header("x-internal-auth", KEY)
}

/// Asserts the shared error shape and returns the code.
pub fn error_code(answer: &Answer) -> &str {
    assert_eq!(
        answer.headers["content-type"], "application/json",
        "{answer:?}"
    );
    let body = answer.body.as_object().expect("a JSON object");
    assert!(body["error"].is_string(), "{answer:?}");
    assert!(body.contains_key("request_id"), "{answer:?}");
    body["code"].as_str().expect("a code")
}
