//! The frontend service: the dashboard's files, embedded in the binary, and the
//! forwarding of `/api/*`, `/ws/*` (WebSocket upgrades) and `/health` to the backend.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use pulse_breaker::{Backoff, Breaker, BreakerConfig};
use pulse_core::RequestIdLayer;
use pulse_core::internal_auth::{InternalCredentialLayer, KeyRing};
use pulse_proxy::transport::{HttpTransport, TransportBody, TransportConfig};
use pulse_proxy::{ClientAddr, Proxy, ProxyConfig};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use super::config::{Options, Secrets};
use super::serve::{Running, serve};
use super::upstream::{self, UpstreamPool};

/// The Content-Security-Policy of every answer.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

const INDEX_HTML: &str = include_str!("../assets/index.html");
const STYLE_CSS: &str = include_str!("../assets/style.css");
const APP_JS: &str = include_str!("../assets/app.js");
const API_JS: &str = include_str!("../assets/api.js");
const VIEWS_JS: &str = include_str!("../assets/views.js");
const WS_JS: &str = include_str!("../assets/ws.js");
const SESSION_JS: &str = include_str!("../assets/session.js");
const LOGIN_JS: &str = include_str!("../assets/login.js");
const TOAST_JS: &str = include_str!("../assets/toast.js");
const JOBS_JS: &str = include_str!("../assets/jobs.js");
const DRAWER_JS: &str = include_str!("../assets/drawer.js");
const DIALOG_JS: &str = include_str!("../assets/dialog.js");
const ADMIN_JS: &str = include_str!("../assets/admin.js");
const FAVICON_SVG: &str = include_str!("../assets/favicon.svg");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The frontend's router, forwarding to `backend_url` (a comma-separated list of
/// gateways, balanced) and presenting the primary key of
/// `ring` there, so that the gateway believes the client address it forwards; pooled
/// connections to it are dropped after `pool_idle`.
pub fn router(
    backend_url: &str,
    tls: rustls::ClientConfig,
    ring: KeyRing,
    pool_idle: Duration,
    breaker_open: Duration,
) -> anyhow::Result<Router> {
    let urls = super::upstream::parse_urls(backend_url, "PULSE_BACKEND_URL")?;
    // One transport stack per gateway, balanced by pulse-proxy's pool (p2c, a breaker
    // and outlier ejection each); a request that failed safely goes once more to
    // another gateway.
    let mut pool = super::upstream::builder("backend");
    for url in &urls {
        let breaker = Breaker::new(
            BreakerConfig::default()
                .with_consecutive_failures(Some(5))
                .with_minimum_calls(10)
                .with_backoff(Backoff::constant(breaker_open)),
        )
        .map_err(|e| anyhow::anyhow!("breaker configuration: {e}"))?;
        // Below the breaker the pool puts around it.
        let transport = ServiceBuilder::new()
            // The gateway throttles logins per client address: the key proves that this
            // hop's X-Forwarded-For (the browser's address, written by the proxy after
            // dropping any the browser sent) can be believed.
            .layer(InternalCredentialLayer::new().with_key(ring.clone()))
            // Refuse fast (1 s connect) when the backend is down; TLS when its URL is
            // https; drop idle connections before the backend's keep-alive ends them.
            .service(
                HttpTransport::https(
                    TransportConfig::new()
                        .with_connect_timeout(Some(Duration::from_secs(1)))
                        .with_idle_timeout(Some(pool_idle)),
                    tls.clone(),
                )
                .with_upstream(url.clone()),
            );
        pool = pool.instance(
            super::upstream::base_url(url),
            BoxCloneSyncService::new(transport),
            breaker,
        );
    }
    let transport: GatewayPool = pool.build()?;
    let gateways = transport.clone();
    let config = ProxyConfig::new(urls[0].clone())
        .map_err(|_| anyhow::anyhow!("PULSE_BACKEND_URL must be http(s)://host:port"))?
        // WebSocket handshakes (with Sec-WebSocket-Protocol) go through, then the sockets are spliced.
        .with_upgrades(true)
        // The gateway verifies the user's bearer token itself.
        .with_forward_authorization(true)
        .with_response_timeout(Duration::from_secs(35));
    let proxy = Proxy::new(transport, config).map_response(IntoResponse::into_response);
    Ok(Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/index.html",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/api.js",
            get(|| async { asset("text/javascript; charset=utf-8", API_JS) }),
        )
        .route(
            "/views.js",
            get(|| async { asset("text/javascript; charset=utf-8", VIEWS_JS) }),
        )
        .route(
            "/ws.js",
            get(|| async { asset("text/javascript; charset=utf-8", WS_JS) }),
        )
        .route(
            "/session.js",
            get(|| async { asset("text/javascript; charset=utf-8", SESSION_JS) }),
        )
        .route(
            "/login.js",
            get(|| async { asset("text/javascript; charset=utf-8", LOGIN_JS) }),
        )
        .route(
            "/toast.js",
            get(|| async { asset("text/javascript; charset=utf-8", TOAST_JS) }),
        )
        .route(
            "/jobs.js",
            get(|| async { asset("text/javascript; charset=utf-8", JOBS_JS) }),
        )
        .route(
            "/drawer.js",
            get(|| async { asset("text/javascript; charset=utf-8", DRAWER_JS) }),
        )
        .route(
            "/dialog.js",
            get(|| async { asset("text/javascript; charset=utf-8", DIALOG_JS) }),
        )
        .route(
            "/admin.js",
            get(|| async { asset("text/javascript; charset=utf-8", ADMIN_JS) }),
        )
        .route(
            "/favicon.svg",
            get(|| async { asset("image/svg+xml", FAVICON_SVG) }),
        )
        .route("/health", get(move || health(gateways.clone())))
        .route_service("/api/{*path}", proxy.clone())
        .route_service("/ws/{*path}", proxy)
        // The proxy writes the browser's address into X-Forwarded-For from ClientAddr.
        .route_layer(middleware::map_request(client_addr))
        .fallback(|| async { (StatusCode::NOT_FOUND, "Not found").into_response() })
        // Browser hardening on every answer, forwarded ones included.
        .layer(middleware::from_fn(security_headers))
        .layer(TraceLayer::new_for_http().on_response(DefaultOnResponse::new().level(Level::INFO)))
        // The browser's edge: ids are ours; the gateway logs ours as its client_request_id.
        .layer(RequestIdLayer::edge()))
}

/// The frontend's balanced gateways.
type GatewayPool = UpstreamPool<axum::body::Body, TransportBody>;

/// How long `/health` waits for each gateway.
const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// `GET /health`: every gateway's `/health` at once; the answer of a healthy one (else
/// of the first that answered: its 503 and `Retry-After`), with every gateway listed
/// under `instances.backend` (`url`, `status`, `circuit`, `ejected`). Healthy while
/// one gateway is.
async fn health(gateways: GatewayPool) -> Response {
    use http_body_util::BodyExt;

    let probes = (0..gateways.instances().len()).map(|index| {
        let gateways = gateways.clone();
        async move {
            let mut request = axum::http::Request::new(pulse_proxy::ProxyRequestBody::empty());
            *request.uri_mut() = axum::http::Uri::from_static("/health");
            let answer = async {
                let response = gateways.send_to(index, request).await.ok()?;
                let status = response.status();
                let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
                let body = response.into_body().collect().await.ok()?.to_bytes();
                Some((status, retry_after, body))
            };
            tokio::time::timeout(HEALTH_PROBE_TIMEOUT, answer)
                .await
                .ok()
                .flatten()
        }
    });
    let answers = futures_util::future::join_all(probes).await;
    let up = answers
        .iter()
        .map(|answer| answer.as_ref().is_some_and(|a| a.0 == StatusCode::OK));
    let listed = upstream::health_instances(&gateways, up);
    let chosen = answers
        .iter()
        .flatten()
        .find(|a| a.0 == StatusCode::OK)
        .or_else(|| answers.iter().flatten().next());
    let (status, retry_after, mut body) = match chosen {
        Some((status, retry_after, bytes)) => (
            *status,
            retry_after.clone(),
            serde_json::from_slice::<serde_json::Value>(bytes).unwrap_or_default(),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Some(HeaderValue::from_static("5")),
            serde_json::json!({"status": "unhealthy"}),
        ),
    };
    if !body.is_object() {
        body = serde_json::json!({"status": "unhealthy"});
    }
    if !body["instances"].is_object() {
        body["instances"] = serde_json::json!({});
    }
    body["instances"]["backend"] = serde_json::Value::from(listed);
    upstream::health_response(status, &body, retry_after)
}

/// The connection's peer (axum's `ConnectInfo`, set by the server) as the proxy's
/// [`ClientAddr`].
async fn client_addr(mut request: Request) -> Request {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
        let peer = *peer;
        request.extensions_mut().insert(ClientAddr(peer));
    }
    request
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        HeaderName::from_static("x-frame-options"),
        HeaderValue::from_static("DENY"),
    );
    response
}

/// Start the frontend on `listener`; `trusted_cert` is the backend's certificate when
/// it serves HTTPS.
pub fn start(
    options: &Options,
    secrets: &Secrets,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    trusted_cert: Option<&std::path::Path>,
) -> anyhow::Result<Running> {
    let client = super::tls::client_config(trusted_cert)?;
    let ring = KeyRing::parse(&secrets.internal_keys).context("PULSE_INTERNAL_KEYS")?;
    // The backend is a Pulse listener: it runs with the same limits.
    let router = router(
        &options.backend_url(),
        client,
        ring,
        options.limits().pool_idle_timeout(),
        Duration::from_millis(options.breaker_open_ms),
    )?;
    Ok(serve("frontend", listener, router, tls, options.limits())?)
}
