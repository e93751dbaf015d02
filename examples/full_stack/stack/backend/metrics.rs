//! Gateway metrics: requests by route and status, latency histograms, proxy errors by
//! kind, breaker state, cache counters, open connections and the runtime's tasks,
//! rendered as Prometheus text at `/metrics` on the metrics listener.
//!
//! Every label set is bounded whatever clients send: the route is the pattern axum
//! matched (`unmatched` for none), the method one of the standard ones or `other`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics::{Counter, Histogram};
use pin_project_lite::pin_project;
use pulse_breaker::State as BreakerState;
use pulse_proxy::ProxyError;
use tower::{Layer, Service};

use super::Gateway;

/// The route label of a request no route matched.
pub const UNMATCHED: &str = "unmatched";
/// The method label of a non-standard method.
pub const OTHER_METHOD: &str = "other";

/// Records every request: `pulse_http_requests_total{route,method,status}` and
/// `pulse_http_request_duration_seconds{route,method}`; proxy failures also count in
/// `pulse_proxy_errors_total{kind}`. Layer it with `Router::layer`, so that it runs
/// after routing and sees the [`MatchedPath`]. A tower layer with a named future: no
/// boxing and no clone of the route per request (as `middleware::from_fn` would).
#[derive(Clone, Default)]
pub struct RecordLayer {
    series: RequestSeries,
}

impl<S> Layer<S> for RecordLayer {
    type Service = Record<S>;

    fn layer(&self, inner: S) -> Record<S> {
        Record {
            inner,
            series: self.series.clone(),
        }
    }
}

/// The service of [`RecordLayer`].
#[derive(Clone)]
pub struct Record<S> {
    inner: S,
    series: RequestSeries,
}

impl<S> Service<Request> for Record<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = RecordFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        RecordFuture {
            route: request.extensions().get::<MatchedPath>().cloned(),
            method: method_label(request.method()),
            started: Instant::now(),
            series: self.series.clone(),
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    /// The response future of [`Record`].
    pub struct RecordFuture<F> {
        #[pin]
        inner: F,
        route: Option<MatchedPath>,
        method: &'static str,
        started: Instant,
        series: RequestSeries,
    }
}

impl<F, E> Future for RecordFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let route = this.route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
        let status = response.status().as_u16();
        this.series
            .record(route, this.method, status, this.started.elapsed());
        if let Some(error) = response.extensions().get::<ProxyError>() {
            metrics::counter!("pulse_proxy_errors_total", "kind" => error.kind()).increment(1);
        }
        Poll::Ready(Ok(response))
    }
}

/// The request counter and latency histogram of each (route, method, status) seen,
/// kept so that a request costs one map lookup instead of the recorder's (labels built
/// as strings, hashed and compared on every call). Bounded like the labels: routes are
/// patterns, methods the standard ones, statuses three digits.
#[derive(Clone, Default)]
pub struct RequestSeries {
    by_route: Arc<RwLock<HashMap<String, RouteSeries>>>,
}

/// One route's series: by (method, status), its request counter and latency histogram.
type RouteSeries = HashMap<(&'static str, u16), (Counter, Histogram)>;

impl RequestSeries {
    fn record(&self, route: &str, method: &'static str, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let by_route = self.by_route.read().unwrap_or_else(PoisonError::into_inner);
        if let Some((requests, latency)) = by_route
            .get(route)
            .and_then(|series| series.get(&(method, status)))
        {
            requests.increment(1);
            latency.record(seconds);
            return;
        }
        drop(by_route);
        let requests = metrics::counter!("pulse_http_requests_total", "route" => route.to_owned(), "method" => method, "status" => status.to_string());
        let latency = metrics::histogram!("pulse_http_request_duration_seconds", "route" => route.to_owned(), "method" => method);
        requests.increment(1);
        latency.record(seconds);
        self.by_route
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(route.to_owned())
            .or_default()
            .insert((method, status), (requests, latency));
    }
}

/// The method, when it is one of the standard ones (RFC 9110, and PATCH), else
/// [`OTHER_METHOD`]: a client cannot create series by making methods up.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => OTHER_METHOD,
    }
}

/// The metrics listener's router: `GET /metrics`, and the JSON 404 elsewhere.
pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(gateway)
        .fallback(super::not_found)
}

/// `GET /metrics`: Prometheus text.
pub async fn render(State(gateway): State<Gateway>) -> Response {
    let code = |state: BreakerState| match state {
        BreakerState::Closed => 0.0,
        BreakerState::Open => 1.0,
        BreakerState::HalfOpen => 2.0,
        _ => 3.0,
    };
    // Per instance, and for the ETL as a whole the best of them (closed while one is).
    let mut best = f64::MAX;
    for instance in gateway.etl.instances() {
        let state = code(instance.breaker().state());
        best = best.min(state);
        let url = instance.name().to_owned();
        metrics::gauge!("pulse_upstream_breaker_state", "upstream" => "etl", "instance" => url.clone())
            .set(state);
        metrics::gauge!("pulse_upstream_ejected", "upstream" => "etl", "instance" => url)
            .set(if instance.is_ejected() { 1.0 } else { 0.0 });
    }
    metrics::gauge!("pulse_breaker_state", "upstream" => "etl").set(best);
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
    metrics::gauge!("pulse_runtime_alive_tasks").set(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks() as f64,
    );
    let body = super::super::telemetry::prometheus().render();
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
