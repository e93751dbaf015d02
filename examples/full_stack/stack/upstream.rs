//! A balanced pool of upstream instances: the gateway's ETL instances, the frontend's
//! gateways.
//!
//! The pool is pulse-proxy's [`balance::Pool`](pulse_proxy::balance::Pool): each
//! instance is its own transport stack (its own connection pool, pinned to its address)
//! behind its own circuit breaker; p2c picks the instance, passive outlier ejection
//! takes a failing one out of the draw, and a request that never reached its instance,
//! or an idempotent one whose connection broke, is sent once more to another instance
//! within a retry budget. What is left here is the deployment's side: the URL list of
//! `PULSE_ETL_URL` / `PULSE_BACKEND_URL` and the metrics of the pool's events.

use std::time::Duration;

use http::{Request, Response, Uri};
use pulse_proxy::balance::{Pool, PoolBuilder, PoolObserver};
use pulse_proxy::{ProxyError, ProxyRequestBody};
use tower::util::BoxCloneSyncService;

/// One instance's transport stack (below its breaker, which the pool adds), type-erased.
pub type InstanceService<B, RB> =
    BoxCloneSyncService<Request<ProxyRequestBody<B>>, Response<RB>, ProxyError>;

/// A pool over instances whose stacks take `B` bodies and answer `RB` bodies.
pub type UpstreamPool<B, RB> = Pool<InstanceService<B, RB>>;

/// Parse a comma-separated list of base URLs (`http://a:1, http://b:2`); at least one,
/// no duplicates.
pub fn parse_urls(list: &str, what: &str) -> anyhow::Result<Vec<Uri>> {
    let mut urls: Vec<Uri> = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let uri: Uri = part
            .parse()
            .map_err(|_| anyhow::anyhow!("{what}: {part:?} is not a URL"))?;
        if uri.scheme().is_none() || uri.authority().is_none() {
            anyhow::bail!("{what}: {part:?} must be scheme://host:port");
        }
        if urls.iter().any(|u| u.authority() == uri.authority()) {
            anyhow::bail!("{what}: {part:?} is listed twice");
        }
        urls.push(uri);
    }
    if urls.is_empty() {
        anyhow::bail!("{what}: no URL given");
    }
    Ok(urls)
}

/// The base URL of `uri` without a trailing slash (`http://127.0.0.1:8001`): the name
/// of its instance in the pool, the logs and the metrics.
pub fn base_url(uri: &Uri) -> String {
    uri.to_string().trim_end_matches('/').to_owned()
}

/// The `instances` list of a `/health` answer: every instance of `pool` with whether it
/// answered its probe (`up`, in the pool's order), its circuit and whether it is
/// ejected.
pub fn health_instances<B, RB>(
    pool: &UpstreamPool<B, RB>,
    up: impl IntoIterator<Item = bool>,
) -> Vec<serde_json::Value> {
    pool.status()
        .into_iter()
        .zip(up)
        .map(|(instance, up)| {
            serde_json::json!({
                "url": instance.name,
                "status": if up { "healthy" } else { "unhealthy" },
                "circuit": instance.circuit.to_string(),
                "ejected": instance.ejected_for.is_some(),
            })
        })
        .collect()
}

/// A `/health` answer: `body` as JSON, never cached, with `Retry-After` when given.
pub fn health_response(
    status: http::StatusCode,
    body: &serde_json::Value,
    retry_after: Option<http::HeaderValue>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use http::header;

    let mut response = (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response();
    if let Some(value) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// A pool builder whose events are counted in Prometheus metrics labelled with
/// `upstream` (`etl`, `backend`).
pub fn builder<B, RB>(upstream: &'static str) -> PoolBuilder<InstanceService<B, RB>> {
    Pool::builder().with_observer(PoolMetrics { upstream })
}

/// Counts a pool's events: `pulse_upstream_ejections_total`,
/// `pulse_upstream_restorations_total`, `pulse_upstream_retries_total` and
/// `pulse_upstream_retry_budget_exhausted_total`, each by `upstream` (the instance is
/// not a label of these counters: the per-instance gauges carry it).
#[derive(Debug, Clone, Copy)]
struct PoolMetrics {
    upstream: &'static str,
}

impl PoolObserver for PoolMetrics {
    fn on_ejected(&self, _instance: &str, _length: Duration) {
        metrics::counter!("pulse_upstream_ejections_total", "upstream" => self.upstream)
            .increment(1);
    }

    fn on_restored(&self, _instance: &str) {
        metrics::counter!("pulse_upstream_restorations_total", "upstream" => self.upstream)
            .increment(1);
    }

    fn on_retried(&self, _from: &str, _to: &str, _error: &ProxyError) {
        metrics::counter!("pulse_upstream_retries_total", "upstream" => self.upstream).increment(1);
    }

    fn on_budget_exhausted(&self, _instance: &str, _error: &ProxyError) {
        metrics::counter!("pulse_upstream_retry_budget_exhausted_total", "upstream" => self.upstream)
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_a_comma_separated_list_without_duplicates() {
        let urls = parse_urls("http://127.0.0.1:1, http://127.0.0.1:2,", "X").unwrap();
        assert_eq!(urls.len(), 2);
        assert_eq!(base_url(&urls[1]), "http://127.0.0.1:2");
        assert!(parse_urls("", "X").is_err());
        assert!(parse_urls("127.0.0.1:1", "X").is_err());
        assert!(parse_urls("http://a:1,http://a:1", "X").is_err());
    }
}
