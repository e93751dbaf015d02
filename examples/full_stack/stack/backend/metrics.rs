//! Gateway metrics: requests by route and status, latency histograms, proxy errors by
//! kind, breaker state and cache counters, rendered as Prometheus text at `/metrics`.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use pulse_breaker::State as BreakerState;
use pulse_proxy::ProxyError;

use super::Gateway;

/// Record one request: `pulse_http_requests_total{route,method,status}` and
/// `pulse_http_request_duration_seconds{route,method}`; proxy failures also count in
/// `pulse_proxy_errors_total{kind}`.
pub async fn record(request: Request, next: Next) -> Response {
    let route = route_label(request.uri().path());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("pulse_http_requests_total", "route" => route, "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("pulse_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    if let Some(error) = response.extensions().get::<ProxyError>() {
        metrics::counter!("pulse_proxy_errors_total", "kind" => proxy_error_kind(error))
            .increment(1);
    }
    response
}

/// A low-cardinality route name for a path.
pub fn route_label(path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["api", "auth", "login"] => "/api/auth/login",
        ["api", "auth", "me"] => "/api/auth/me",
        ["api", "etl", "jobs"] => "/api/etl/jobs",
        ["api", "etl", "jobs", "status"] => "/api/etl/jobs/status",
        ["api", "etl", "jobs", "start"] => "/api/etl/jobs/start",
        ["api", "etl", "jobs", _, "start"] => "/api/etl/jobs/{name}/start",
        ["api", "etl", "jobs", _, "runs"] => "/api/etl/jobs/{name}/runs",
        ["api", "etl", "runs", _] => "/api/etl/runs/{id}",
        ["api", "etl", "runs", _, "cancel"] => "/api/etl/runs/{id}/cancel",
        ["api", "etl", "runs", _, "logs"] => "/api/etl/runs/{id}/logs",
        ["api", "etl", "events"] => "/api/etl/events",
        ["api", "etl", ..] => "/api/etl/other",
        ["ws", "job-status"] => "/ws/job-status",
        ["health"] => "/health",
        ["metrics"] => "/metrics",
        _ => "other",
    }
}

fn proxy_error_kind(error: &ProxyError) -> &'static str {
    match error {
        ProxyError::BadFraming { .. } => "bad_framing",
        ProxyError::UnsafePath { .. } => "unsafe_path",
        ProxyError::NotRouted => "not_routed",
        ProxyError::BodyTooLarge { .. } => "body_too_large",
        ProxyError::ConnectRefused => "connect_refused",
        ProxyError::Unavailable => "unavailable",
        ProxyError::PoolExhausted => "pool_exhausted",
        ProxyError::Timeout { .. } => "timeout",
        ProxyError::Protocol => "protocol",
        ProxyError::CircuitOpen { .. } => "circuit_open",
        ProxyError::UpgradeFailed => "upgrade_failed",
        _ => "other",
    }
}

/// `GET /metrics`: Prometheus text.
pub async fn render(State(gateway): State<Gateway>) -> Response {
    let state = match gateway.breaker.state() {
        BreakerState::Closed => 0.0,
        BreakerState::Open => 1.0,
        BreakerState::HalfOpen => 2.0,
        _ => 3.0,
    };
    metrics::gauge!("pulse_breaker_state", "upstream" => "etl").set(state);
    let cache = gateway.cache_stats.snapshot();
    metrics::counter!("pulse_cache_hits_total").absolute(cache.hits);
    metrics::counter!("pulse_cache_misses_total").absolute(cache.misses);
    metrics::counter!("pulse_cache_coalesced_total").absolute(cache.coalesced);
    metrics::counter!("pulse_cache_bypasses_total").absolute(cache.bypasses);
    metrics::counter!("pulse_cache_stores_total").absolute(cache.stores);
    metrics::counter!("pulse_cache_store_errors_total").absolute(cache.store_errors);
    metrics::gauge!("pulse_ws_clients").set(gateway.hub.clients() as f64);
    metrics::gauge!("pulse_etl_events_connected").set(if gateway.hub.upstream_up() {
        1.0
    } else {
        0.0
    });
    let body = super::super::telemetry::prometheus().render();
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
