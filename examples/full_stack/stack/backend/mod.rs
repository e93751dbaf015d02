//! The backend (API gateway): login, JWT, the RBAC-checked `/api/etl/*` proxy with
//! breaker and cache, `/ws/job-status` and `/health` on the public listener; `/metrics`
//! on its own (private) listener.

pub mod admin;
pub mod auth;
mod health;
pub mod job_audit;
pub mod metrics;
pub mod openapi;
pub mod shared;
pub mod ws;

pub use self::health::EtlProbe;
use self::health::{health, health_checks};

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use pulse_breaker::{Backoff, Breaker, BreakerConfig};
use pulse_core::health::HealthAggregator;
use pulse_core::internal_auth::{InternalCredentialLayer, InternalTokenMinter, KeyRing};
use pulse_core::jwt::{JwtAuthLayer, JwtVerifier, TokenIssuer, VerifiedTokenCache};
use pulse_core::rbac::RuleTable;
use pulse_core::request_id::RequestId;
use pulse_core::{AuthorizeLayer, RequestIdLayer};
use pulse_proxy::cache::{CacheLayer, CacheStats, MemoryStore, RedisStore};
use pulse_proxy::transport::{HttpTransport, HttpsTransport, TransportBody, TransportConfig};
use pulse_proxy::{Proxy, ProxyConfig, ProxyError};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::timeout::TimeoutLayer;
use tower::util::{BoxCloneSyncService, MapResponseLayer};
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use self::auth::client_addr::ClientAddrResolver;
use self::auth::hasher::HashingPool;
use self::auth::throttle::{LoginThrottle, MemoryThrottleStore, ThrottleKeys, ThrottlePolicy};
use self::auth::{Auth, AuthParts, json_error};
use self::ws::{Hub, HubTiming};
use super::accounts::housekeeping::{self, Retention};
use super::accounts::password::PasswordHashing;
use super::accounts::revocation::RevocationList;
use super::accounts::seed::{announce_bootstrap, seed_demo};
use super::accounts::{AccountStore, MANAGE_USERS};
use super::config::{Options, Secrets};
use super::etl::{INTERNAL_TOKEN_AUDIENCE, INTERNAL_TOKEN_ISSUER};
use super::serve::{Running, serve};
use super::upstream::{self, UpstreamPool};

/// The gateway's balanced pool of ETL instances.
pub type EtlPool = UpstreamPool<axum::body::Body, TransportBody>;

/// The issuer of user tokens.
pub const TOKEN_ISSUER: &str = "pulse-gateway";
/// The audience of user tokens (internal tokens name the service they are for).
pub const TOKEN_AUDIENCE: &str = "pulse-api";
/// How long `/api/etl/jobs/status` answers are cached.
pub const STATUS_CACHE_TTL: Duration = Duration::from_secs(1);
/// How long the gateway reuses an internal token minted for a user (a quarter of the
/// token's 60 s lifetime).
pub const INTERNAL_TOKEN_REUSE: Duration = Duration::from_secs(15);
/// `Retry-After` of a 503 when the breaker knows no better (its circuit is closed, so
/// the failure was just counted): try again soon, the next answer is fast either way.
pub const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// What the gateway's handlers share.
#[derive(Clone)]
pub struct Gateway {
    /// The balanced ETL instances, each behind its breaker.
    pub etl: EtlPool,
    /// The status cache's counters.
    pub cache_stats: CacheStats,
    /// The WebSocket fan-out.
    pub hub: Hub,
    /// Verifies user tokens (also for the WebSocket handshake).
    pub verifier: JwtVerifier,
    health: Arc<HealthAggregator>,
    probe: EtlProbe,
}

/// The running gateway.
#[derive(Debug)]
pub struct BackendService {
    /// The server.
    pub server: Running,
    /// The metrics server (`GET /metrics`, Prometheus text).
    pub metrics: Running,
    /// The circuit breaker of the first ETL instance (the tests watch its state).
    #[allow(dead_code)]
    pub breaker: Breaker,
    /// The balanced ETL instances (the tests read their counters).
    #[allow(dead_code)]
    pub etl: EtlPool,
    /// The WebSocket fan-out (the tests watch its subscription).
    #[allow(dead_code)]
    pub hub: Hub,
    /// The accounts (the tests read the audit trail and revocations through it).
    #[allow(dead_code)]
    pub accounts: AccountStore,
    /// Whether nobody could administer the gateway when it started.
    pub bootstrap_required: bool,
    stop: watch::Sender<bool>,
    revocation_watch: tokio::task::JoinHandle<()>,
    redis_sync: Option<tokio::task::JoinHandle<()>>,
    clean_up: tokio::task::JoinHandle<()>,
}

impl BackendService {
    /// Stop: in-flight requests finish, then the upstream subscription and the
    /// background tasks end.
    pub async fn stop(self) {
        self.server.stop().await;
        self.metrics.stop().await;
        let _ = self.stop.send(true);
        let _ = self.revocation_watch.await;
        if let Some(redis_sync) = self.redis_sync {
            let _ = redis_sync.await;
        }
        let _ = self.clean_up.await;
    }
}

/// The gateway's rule table: deny by default.
pub fn rule_table() -> anyhow::Result<RuleTable> {
    RuleTable::builder()
        .require(
            "POST",
            "/api/etl/jobs/{name}/start",
            ["etl.access", "etl.jobs.run"],
        )
        .require(
            "POST",
            "/api/etl/jobs/start",
            ["etl.access", "etl.jobs.run"],
        )
        .require(
            "POST",
            "/api/etl/runs/{id}/cancel",
            ["etl.access", "etl.jobs.run"],
        )
        .require("ANY", "/api/etl/*", ["etl.access"])
        // The admin API: users, roles and the audit trail.
        .require("ANY", "/api/admin/*", [MANAGE_USERS])
        .build()
        .context("gateway rule table")
}

/// Start the gateway on `listener`, its metrics on `metrics_listener`.
pub async fn start(
    options: &Options,
    secrets: &Secrets,
    listener: TcpListener,
    metrics_listener: TcpListener,
    tls: Option<TlsAcceptor>,
) -> anyhow::Result<BackendService> {
    // The Prometheus recorder, installed once per process.
    let _ = super::telemetry::prometheus();
    let etl_url = options.etl_url();
    // TLS to the ETL when its URL is https:// (trusting PULSE_ETL_CA_FILE).
    let etl_tls = super::tls::etl_client_config(options)?;
    let ring = KeyRing::parse(&secrets.internal_keys).context("PULSE_INTERNAL_KEYS")?;
    let (stop, stopped) = watch::channel(false);

    // The accounts: users, roles, sessions and revocations in the gateway's tables.
    let policy = options.session_policy();
    let store = AccountStore::open(&options.database_url(), options.database_schema.as_deref())
        .await
        .context("opening the accounts")?
        .with_policy(policy);
    let hashing = PasswordHashing::new(options.argon2_memory_kib, options.argon2_iterations)?;
    if options.demo_enabled() {
        let added = seed_demo(&store, &hashing)
            .await
            .context("seeding the demo users")?;
        if !added.is_empty() {
            tracing::info!(users = ?added, "demo users added");
        }
    }
    let bootstrap_required = announce_bootstrap(&store).await?;
    // Revocations are checked on every request from memory; the list follows the
    // database (this gateway's, other gateways' and the CLI's changes) every second.
    let revocations = RevocationList::load(&store)
        .await
        .context("loading revocations")?;
    let revocation_watch = revocations.watch(
        store.clone(),
        Duration::from_millis(options.revocation_poll_ms),
        stopped.clone(),
    );
    // With Redis: the throttle counters and the response cache are shared, and
    // revocations are announced to every gateway at once.
    let redis = match &options.redis_url {
        Some(url) => Some(shared::connect(url).await.context("PULSE_REDIS_URL")?),
        None => None,
    };
    let redis_sync = redis.as_ref().map(|(client, conn)| {
        shared::spawn_revocation_sync(
            client.clone(),
            conn.clone(),
            revocations.clone(),
            store.clone(),
            stopped.clone(),
        )
    });
    // The audit trail's retention and expired session rows: now, then every hour.
    let clean_up = store.spawn_clean_up(
        Retention::days(options.audit_retention_days),
        housekeeping::INTERVAL,
        stopped.clone(),
    );

    // Signed with the newest key, which the token names (`kid`); verified with it and
    // the rotation's previous or next (PULSE_JWT_VERIFY_SECRETS).
    let issuer = TokenIssuer::new(secrets.user_token_signing_key()?)
        .with_issuer(TOKEN_ISSUER)
        .with_audience(TOKEN_AUDIENCE)
        .with_lifetime(policy.access_ttl);
    // Only this gateway's user tokens: their type (never an internal token), their
    // audience, `iat`, no longer-lived than the ones it issues, and not revoked.
    let verifier = JwtVerifier::new(secrets.user_token_keys()?)
        .with_issuer(TOKEN_ISSUER)
        .with_audience(TOKEN_AUDIENCE)
        .with_required_type(pulse_core::jwt::USER_TOKEN_TYPE)
        .require_issued_at(true)
        .with_max_lifetime(policy.access_ttl)
        .with_cache(VerifiedTokenCache::new(10_000))
        .with_revocation(revocations.clone());

    let (workers, queue) = options.login_hash_pool();
    let pool = HashingPool::new(workers, queue)?;
    tracing::info!(workers, queue, "password-hashing pool");
    // Keyed by the user-token secret, which every gateway of a deployment shares.
    let throttle_keys = ThrottleKeys::new(secrets.jwt_secret.as_bytes());
    let throttle = match &redis {
        Some((_, conn)) => LoginThrottle::new(
            ThrottlePolicy::default(),
            throttle_keys,
            shared::RedisThrottleStore::new(conn.clone(), "pulse:throttle:"),
        ),
        None => LoginThrottle::new(
            ThrottlePolicy::default(),
            throttle_keys,
            MemoryThrottleStore::default(),
        ),
    };
    let users = Arc::new(Auth::new(AuthParts {
        store: store.clone(),
        revocations,
        issuer,
        verifier: verifier.clone(),
        hashing,
        pool,
        throttle,
        // The frontend proves itself with the ring's key; then its X-Forwarded-For counts.
        clients: ClientAddrResolver::new(ring.clone()),
        secure_cookie: options.public_scheme() == "https",
        demo: options.demo_enabled(),
    })?);

    // Signed with the first internal key, named by its id: receivers holding the
    // whole ring accept it while the keys rotate. A user's token is reused for 15 s (a
    // quarter of its 60 s life), so a busy user costs one signature per 15 s, not one
    // per request; the ETL does not keep a replay list that would refuse a reuse.
    let minter =
        InternalTokenMinter::new(secrets.internal_token_signing_key()?, INTERNAL_TOKEN_ISSUER)
            .with_reuse(INTERNAL_TOKEN_REUSE, 10_000);

    let etl_timeout = Duration::from_millis(options.etl_timeout_ms);
    let etl_urls = upstream::parse_urls(&etl_url, "PULSE_ETL_URL")?;
    for url in &etl_urls {
        if !matches!(url.scheme_str(), Some("http" | "https")) {
            anyhow::bail!("PULSE_ETL_URL must list http:// or https:// URLs");
        }
    }
    // One transport stack per ETL instance, each with its own breaker and pool;
    // pulse-proxy's pool balances over them (p2c), ejects outliers and sends a request
    // that failed safely once more to another instance.
    let mut etl_pool = upstream::builder("etl");
    for url in &etl_urls {
        let breaker = Breaker::new(
            BreakerConfig::default()
                .with_consecutive_failures(Some(5))
                .with_minimum_calls(10)
                .with_backoff(Backoff::constant(Duration::from_millis(
                    options.breaker_open_ms,
                ))),
        )
        .map_err(|e| anyhow::anyhow!("breaker configuration: {e}"))?;
        // Below the breaker the pool puts around it (open circuit → 503 circuit_open +
        // Retry-After; only upstream faults count, never a client's bad body):
        // timeout → credential → pooled HTTP.
        let transport = ServiceBuilder::new()
            // The timeout's boxed error, classified (504) for the breaker and the proxy.
            .map_err(|error: tower::BoxError| ProxyError::classify(&*error))
            // Inside the breaker, so that a hung ETL counts as a failure (504 to the client).
            .layer(TimeoutLayer::new(etl_timeout))
            // Each request carries the ring's key and a token signed for the verified user.
            .layer(
                InternalCredentialLayer::new()
                    .with_key(ring.clone())
                    .with_token(minter.clone(), INTERNAL_TOKEN_AUDIENCE),
            )
            // Pooled HTTP/1 to this instance; refuse fast (1 s connect) when it is down;
            // drop idle connections before the ETL's keep-alive (same limits) ends them.
            .service(
                HttpTransport::https(
                    TransportConfig::new()
                        .with_connect_timeout(Some(Duration::from_secs(1)))
                        .with_idle_timeout(Some(options.limits().pool_idle_timeout())),
                    etl_tls.clone(),
                )
                .with_upstream(url.clone()),
            );
        etl_pool = etl_pool.instance(
            upstream::base_url(url),
            BoxCloneSyncService::new(transport),
            breaker,
        );
    }
    let etl_pool: EtlPool = etl_pool.build()?;
    let proxy_config = ProxyConfig::new(etl_urls[0].clone())
        .map_err(|_| anyhow::anyhow!("PULSE_ETL_URL must be http://host:port"))?
        // The public prefix maps onto the ETL's versioned API.
        .with_prefix_rewrite("/api/etl/", "/api/v1/")
        // A backstop only: the timeout inside the breaker answers first (twice when retried).
        .with_response_timeout(etl_timeout * 2 + Duration::from_secs(1));
    let transport = etl_pool.clone();
    let proxy = Proxy::new(transport, proxy_config);

    // The dashboard polls the status: one upstream call per second however many tabs.
    // With Redis, one upstream call per second for all the gateways.
    let cache = match &redis {
        Some((_, conn)) => {
            CacheLayer::new(RedisStore::new(conn.clone()).with_namespace("pulse:cache"))
        }
        None => CacheLayer::new(MemoryStore::new()),
    }
    .with_ttl(STATUS_CACHE_TTL);
    let cache_stats = cache.stats();
    let status = cache.layer(proxy.clone());

    let probe = EtlProbe::new(
        &etl_urls.iter().map(upstream::base_url).collect::<Vec<_>>(),
        &etl_tls,
    )?;
    let hub = Hub::start(
        etl_pool.clone(),
        ring,
        &etl_tls,
        HubTiming {
            idle_timeout: Duration::from_millis(options.ws_upstream_idle_ms),
            resubscribe_delay: Duration::from_millis(options.ws_resubscribe_delay_ms),
        },
        stopped,
    )?;
    let hub_handle = hub.clone();
    let gateway = Gateway {
        etl: etl_pool.clone(),
        cache_stats,
        hub,
        verifier: verifier.clone(),
        health: Arc::new(health_checks(&probe)),
        probe,
    };

    // `/api/etl/*`: a request meets JWT → RBAC → job audit → [status cache] → Proxy (the
    // correlation id, trace and metrics wrap the whole router below). The layers wrap
    // each service before it is routed rather than through `Router::layer`, which would
    // box every route once more (and axum clones a boxed route per request).
    let etl_layers = ServiceBuilder::new()
        // Everything under /api/etl needs a valid user token (401 + WWW-Authenticate
        // otherwise); the verified user becomes the span's user_id.
        .layer(JwtAuthLayer::new(verifier.clone()))
        // Deny by default: etl.access for anything, etl.jobs.run to start or cancel.
        .layer(AuthorizeLayer::new(rule_table()?))
        // Accepted starts and cancels go into the audit trail (user, job, run, request).
        .layer(job_audit::JobAuditLayer::new(Arc::clone(&users)));
    let etl_routes = Router::new()
        .route_service(
            "/api/etl/jobs/status",
            etl_layers.service(
                ServiceBuilder::new()
                    // Read the small status body to its end here: the cache stores an
                    // entry when its body ends, which hyper may never poll for once the
                    // Content-Length bytes are written.
                    .layer(middleware::map_response(read_to_end))
                    .service(status.map_response(IntoResponse::into_response)),
            ),
        )
        .route_service(
            "/api/etl/{*path}",
            etl_layers.service(proxy.map_response(IntoResponse::into_response)),
        );

    // `/api/admin/*`: a user token (JWT), then users.manage by the rule table.
    let admin_routes = admin::router(Arc::clone(&users))
        .layer(AuthorizeLayer::new(rule_table()?))
        .layer(JwtAuthLayer::new(verifier.clone()));

    let public = Router::new()
        // A login body is small: refuse anything past 4 KiB before reading it.
        .route(
            "/api/auth/login",
            post(auth::login).layer(DefaultBodyLimit::max(auth::LOGIN_BODY_LIMIT)),
        )
        // Cookie only: no body is read (axum's default limit bounds a stray one).
        .route("/api/auth/refresh", post(auth::session::refresh))
        // The handler verifies the bearer token itself: it needs the token's id and session.
        .route("/api/auth/logout", post(auth::session::logout))
        .route("/api/auth/setup", get(auth::session::setup))
        .with_state(Arc::clone(&users))
        .merge(
            Router::new()
                .route("/api/auth/me", get(auth::me))
                .layer(JwtAuthLayer::new(verifier)),
        )
        .route("/ws/job-status", any(ws::job_status))
        .route("/health", get(health))
        // The contract, generated from the code: public, nothing secret in it.
        .route(openapi::OPENAPI_PATH, get(openapi::openapi_json))
        .with_state(gateway.clone());

    let router = Router::new()
        .merge(public)
        .merge(etl_routes)
        .merge(admin_routes)
        // `/metrics` included: it is served on its own listener only.
        .fallback(not_found)
        // A known route asked with another method (made-up ones included): JSON 405.
        .method_not_allowed_fallback(method_not_allowed)
        // The edge layers, outermost first, in one `Router::layer` (each call boxes every
        // route once more, and a boxed route is cloned per request). `Router::layer`
        // wraps each route, so the matched route is known to the metrics.
        .layer(
            ServiceBuilder::new()
                // Edge mode: the gateway chooses the id; a client's is logged as
                // client_request_id.
                .layer(RequestIdLayer::edge())
                // One log line per request, inside the request span (request_id, user_id).
                .layer(
                    TraceLayer::new_for_http()
                        .on_response(DefaultOnResponse::new().level(Level::INFO)),
                )
                // Retry-After on every 503 without one, from the breaker, so clients
                // back off.
                .layer(MapResponseLayer::new({
                    let pool = etl_pool.clone();
                    move |response| retry_after_on_503(&pool, response)
                }))
                // API answers are JSON: no browser may sniff them into HTML.
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ))
                // Every answer, by matched route, method and status (401s, 403s and 404s
                // included).
                .layer(metrics::RecordLayer::default()),
        );

    let server = serve("backend", listener, router, tls, options.limits())?;
    // Prometheus convention: metrics on their own port, loopback by default, so the
    // public port does not tell strangers about the traffic and the upstream's state.
    let metrics = serve(
        "metrics",
        metrics_listener,
        metrics::router(gateway),
        None,
        options.limits(),
    )?;
    Ok(BackendService {
        server,
        metrics,
        breaker: etl_pool.instances()[0].breaker().clone(),
        etl: etl_pool,
        hub: hub_handle,
        accounts: store,
        bootstrap_required,
        stop,
        revocation_watch,
        redis_sync,
        clean_up,
    })
}

/// The transport of the gateway's own ETL calls (health, the event subscription):
/// pooled, TLS when the URL is https://.
pub type EtlTransport = HttpsTransport<http_body_util::Full<bytes::Bytes>>;

fn etl_transport(tls: &rustls::ClientConfig) -> EtlTransport {
    HttpTransport::https(TransportConfig::new(), tls.clone())
}

/// When a client should try the ETL again: the soonest any instance's breaker
/// admits calls again (see [`retry_after_of`]).
pub fn retry_after(pool: &EtlPool) -> Duration {
    pool.instances()
        .iter()
        .map(|instance| retry_after_of(instance.breaker()))
        .min()
        .unwrap_or(UNAVAILABLE_RETRY_AFTER)
}

/// When a client should try one instance again: the rest of its breaker's open period
/// (or of its half-open probes) when it knows one, else [`UNAVAILABLE_RETRY_AFTER`].
pub fn retry_after_of(breaker: &Breaker) -> Duration {
    // Seam: a forced-open breaker reports no time today (`retry_after: None`); once
    // pulse-breaker gives that state a hint, it arrives here through the snapshot.
    match breaker.snapshot().retry_after {
        Some(left) if !left.is_zero() => left,
        _ => UNAVAILABLE_RETRY_AFTER,
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1 (as `ApiError` writes it).
fn retry_after_value(after: Duration) -> HeaderValue {
    let secs = after
        .as_secs()
        .saturating_add(u64::from(after.subsec_nanos() > 0))
        .max(1);
    HeaderValue::from(secs)
}

async fn read_to_end(response: Response) -> Response {
    let (parts, body) = response.into_parts();
    match axum::body::to_bytes(body, 1024 * 1024).await {
        Ok(bytes) => Response::from_parts(parts, Body::from(bytes)),
        Err(error) => {
            tracing::warn!(%error, "reading the status answer failed");
            json_error(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "The ETL service's answer broke off",
                RequestId::current().map(|id| id.to_string()),
            )
        }
    }
}

/// `Retry-After` on a 503 without one, from the ETL instances' breakers.
fn retry_after_on_503(pool: &EtlPool, mut response: Response) -> Response {
    if response.status() == StatusCode::SERVICE_UNAVAILABLE
        && !response.headers().contains_key(header::RETRY_AFTER)
    {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after_value(retry_after(pool)));
    }
    response
}

/// The JSON 405 of a known route asked with a method it does not serve (axum adds `Allow`).
async fn method_not_allowed() -> Response {
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method not allowed for this route",
        RequestId::current().map(|id| id.to_string()),
    )
}

/// The JSON 404 of every unknown route.
pub async fn not_found() -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "not_found",
        "No such route",
        RequestId::current().map(|id| id.to_string()),
    )
}
