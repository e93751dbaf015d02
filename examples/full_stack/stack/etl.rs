//! The ETL service: pulse-etl's job engine, store and API, behind internal
//! authentication (the gateway's signed internal token, or a key of the ring).

use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::{HeaderValue, header};
use pulse_core::internal_auth::{InternalAuthLayer, InternalTokenVerifier, KeyRing};
use pulse_core::request_id::RequestIdLayer;
use pulse_etl::api::EtlApi;
use pulse_etl::jobs::{GitHubConfig, JiraConfig, SeedJobsConfig, register_seed_jobs};
use pulse_etl::{
    EngineConfig, JobEngine, JobRegistry, JobStore, PgStore, PgStoreOptions, SqliteStore,
};
use tokio::net::TcpListener;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use super::config::{Options, Secrets};
use super::fixture_source::{self, FixtureConfig};
use super::serve::{Running, serve};

/// The issuer of internal tokens (the gateway).
pub const INTERNAL_TOKEN_ISSUER: &str = "pulse-gateway";
/// The audience of internal tokens (this service).
pub const INTERNAL_TOKEN_AUDIENCE: &str = "pulse-etl";
/// The jobs `register_seed_jobs` registers, sorted: the gateway's document names them
/// (a test checks them against the ETL's registry).
pub const SEED_JOBS: [&str; 2] = ["github_sync", "jira_sync"];

/// The running ETL service.
#[derive(Debug)]
pub struct EtlService {
    /// The API server.
    pub server: Running,
    /// The job engine.
    pub engine: JobEngine,
    /// The bundled fixture source, when the seed jobs use it.
    pub fixture: Option<Running>,
}

impl EtlService {
    /// Stop taking requests, then hand running attempts back to the store.
    pub async fn stop(self) {
        self.server.stop().await;
        self.engine.shutdown().await;
        if let Some(fixture) = self.fixture {
            fixture.stop().await;
        }
    }
}

/// Open the store, start the engine and serve the API on `listener`.
pub async fn start(
    options: &Options,
    secrets: &Secrets,
    listener: TcpListener,
) -> anyhow::Result<EtlService> {
    let store = open_store(options).await?;
    let (seed, fixture) = seed_jobs(options).await?;
    let mut registry = JobRegistry::new();
    register_seed_jobs(&mut registry, seed).context("seed job configuration")?;
    let lease = Duration::from_millis(options.etl_lease_ms);
    let config = EngineConfig::default()
        .with_lease(lease)
        .with_heartbeat_interval(lease / 3)
        .with_sweep_interval(Duration::from_millis(options.etl_sweep_ms));
    let config = match options.retention_days {
        0 => config.without_retention(),
        days => config.with_retention(pulse_etl::Retention::days(days).with_events(
            Duration::from_secs(86_400 * u64::from(options.event_retention_days.min(days))),
        )),
    };
    let engine = JobEngine::launch(store, registry, config)
        .await
        .context("starting the job engine")?;
    // The id its attempts carry in the store (`etl_attempts.instance_id`).
    tracing::info!(instance_id = %engine.instance_id(), "job engine started");

    let api = EtlApi::new(engine.clone())
        .with_job_description(
            "jira_sync",
            "Jira issues → normalised items (paginated search, retried on 429/5xx)",
        )
        .with_job_description(
            "github_sync",
            "GitHub issues and pull requests → normalised items (Link pagination)",
        )
        .with_internal_auth(internal_auth(secrets)?)
        // Idle event streams carry a comment this often: gateways tell a quiet stream
        // from a frozen instance by it (PULSE_WS_UPSTREAM_IDLE_MS).
        .with_keep_alive(Duration::from_millis(options.events_keep_alive_ms))
        .into_router();
    let router = Router::new()
        .merge(api)
        // API answers are JSON or event streams: no browser may sniff them into HTML.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        // Inside the correlation id: one log line per request, with its span fields.
        .layer(TraceLayer::new_for_http().on_response(DefaultOnResponse::new().level(Level::INFO)))
        // Outermost: accept the gateway's X-Request-ID, so both services log one id.
        .layer(RequestIdLayer::new());
    // HTTPS when it has a certificate (PULSE_ETL_TLS_CERT / PULSE_ETL_TLS_KEY).
    let tls = super::tls::etl_acceptor(options)?;
    let server = serve("etl", listener, router, tls, options.limits())?;
    Ok(EtlService {
        server,
        engine,
        fixture,
    })
}

/// The ETL's internal authentication: the gateway's signed tokens (they carry the
/// user) and the static key ring (tools: `X-Internal-Auth: <secret>`).
pub fn internal_auth(secrets: &Secrets) -> anyhow::Result<InternalAuthLayer> {
    let ring = KeyRing::parse(&secrets.internal_keys).context("PULSE_INTERNAL_KEYS")?;
    // Every key of the ring, by id: a gateway still signing with the previous key
    // (or already with the next) is accepted while the keys rotate.
    let token_keys = secrets.internal_token_keys()?;
    // Requires the internal token type (a user token is refused even if signed with
    // this key), this service as audience, `iat`, and at most the minted lifetime.
    Ok(
        InternalAuthLayer::new(ring).with_verifier(InternalTokenVerifier::new(
            token_keys,
            INTERNAL_TOKEN_ISSUER,
            INTERNAL_TOKEN_AUDIENCE,
        )),
    )
}

async fn open_store(options: &Options) -> anyhow::Result<std::sync::Arc<dyn JobStore>> {
    let url = options.database_url();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let mut pg = PgStoreOptions::new(url.as_str()).with_application_name("pulse-etl");
        if let Some(schema) = &options.database_schema {
            pg = pg.with_schema(schema.clone());
        }
        let store = PgStore::connect_with(pg)
            .await
            .context("connecting to PostgreSQL")?;
        tracing::info!("job store: PostgreSQL");
        return Ok(store.into_dyn());
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(&url);
    if let Some(parent) = std::path::Path::new(path).parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let store = SqliteStore::open(path)
        .await
        .with_context(|| format!("opening SQLite store {path}"))?;
    tracing::info!(path, "job store: SQLite");
    Ok(store.into_dyn())
}

/// The seed jobs' sources: real APIs when URLs are given, else the bundled fixture
/// source on a loopback port.
async fn seed_jobs(options: &Options) -> anyhow::Result<(SeedJobsConfig, Option<Running>)> {
    let fixture = if options.jira_url.is_none() || options.github_url.is_none() {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let config = FixtureConfig {
            latency: Duration::from_millis(options.fixture_latency_ms),
            ..FixtureConfig::default()
        };
        let router = fixture_source::router(config);
        Some(serve(
            "fixture_source",
            listener,
            router,
            None,
            options.limits().with_grace(Duration::from_millis(200)),
        )?)
    } else {
        None
    };
    let fixture_url = fixture.as_ref().map(|f| format!("http://{}", f.addr));
    let pick = |given: &Option<String>| {
        given
            .clone()
            .or_else(|| fixture_url.clone())
            .unwrap_or_default()
    };
    let mut jira = JiraConfig::new(pick(&options.jira_url));
    if let Some(token) = &options.jira_token {
        jira = jira.with_token(token.clone());
    }
    let (owner, repo) = options
        .github_repo
        .split_once('/')
        .context("--github-repo must be owner/repo")?;
    let mut github = GitHubConfig::new(pick(&options.github_url), owner, repo);
    if let Some(every) = options.github_every_secs {
        github = github.with_schedule(
            pulse_etl::Schedule::every(Duration::from_secs(every))
                .context("--github-every-secs")?
                .with_catch_up(options.github_catch_up),
        );
    }
    if let Some(token) = &options.github_token {
        github = github.with_token(token.clone());
    }
    Ok((SeedJobsConfig::new(jira, github), fixture))
}
