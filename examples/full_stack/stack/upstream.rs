//! A balanced pool of upstream instances: the gateway's ETL instances, the frontend's
//! gateways.
//!
//! Each instance is its own transport stack (its own connection pool, pinned to its
//! address, behind its own circuit breaker). A request goes to the lighter of two
//! instances drawn at random (power of two choices, the rule of pulse-proxy's `balance`
//! module: an instance whose circuit rejects calls is heavier than any that admits them,
//! then requests in flight decide). On top of the breaker, **passive outlier
//! ejection** as Envoy does it: [`EJECT_AFTER`] consecutive gateway failures (refused,
//! reset, timed out, or a 502/503/504 answer) take an instance out of the draw for
//! [`BASE_EJECTION`] times the number of its ejections in a row (at most
//! [`MAX_EJECTION`]); never more than half of the instances are ejected at once.
//!
//! A request that failed **before it was sent** (refused, connect timeout, open
//! circuit) — whatever its method — or an **idempotent** one whose connection broke, is
//! sent once more to *another* instance, when its body can be sent again (empty, or a
//! body of at most [`RETRY_BUFFER_LIMIT`] bytes, buffered first), and only within a
//! retry budget (10 retries a second plus 20 % of the recent successes), so that an
//! outage cannot multiply the load. An upstream's answer — a 5xx included — is never
//! retried.
//!
//! Everything on this path is in memory: no shared store is consulted per request.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::BodyExt;
use pulse_breaker::{Breaker, State};
use pulse_proxy::{ProxyError, ProxyRequestBody};
use rand::Rng;
use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

/// Consecutive gateway failures that eject an instance.
pub const EJECT_AFTER: u32 = 3;
/// The first ejection's length; the n-th in a row lasts n times as long.
pub const BASE_EJECTION: Duration = Duration::from_secs(5);
/// The longest ejection.
pub const MAX_EJECTION: Duration = Duration::from_secs(60);
/// The largest request body buffered so that the request can be sent again.
pub const RETRY_BUFFER_LIMIT: u64 = 64 * 1024;

/// One instance's transport stack, type-erased.
pub type InstanceService<B, RB> =
    BoxCloneSyncService<Request<ProxyRequestBody<B>>, Response<RB>, ProxyError>;

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

/// The base URL of `uri` without a trailing slash (`http://127.0.0.1:8001`).
pub fn base_url(uri: &Uri) -> String {
    uri.to_string().trim_end_matches('/').to_owned()
}

#[derive(Debug, Default)]
struct Outlier {
    consecutive: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
}

/// One upstream instance.
pub struct Instance<B, RB> {
    url: String,
    service: InstanceService<B, RB>,
    breaker: Breaker,
    in_flight: AtomicUsize,
    outlier: Mutex<Outlier>,
}

impl<B, RB> Instance<B, RB> {
    /// Its base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its circuit breaker.
    pub const fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Whether outlier detection has taken it out of the draw now.
    pub fn ejected(&self) -> bool {
        let outlier = self.outlier.lock().unwrap_or_else(|p| p.into_inner());
        outlier
            .ejected_until
            .is_some_and(|until| until > Instant::now())
    }

    /// `(rejecting, in flight)`, as pulse-proxy's balancer weighs an endpoint.
    fn load(&self) -> (bool, usize) {
        let rejecting = match self.breaker.state() {
            // Open with nothing left of its open period: the next call is its probe.
            State::Open => self.breaker.retry_after().is_none_or(|d| !d.is_zero()),
            state => !state.admits(),
        };
        (rejecting, self.in_flight.load(Ordering::Relaxed))
    }
}

/// Counters of a pool (for `/metrics` and the chaos test's figures).
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Requests sent a second time to another instance.
    pub retries: AtomicU64,
    /// Retries refused by the budget.
    pub retries_over_budget: AtomicU64,
    /// Instances ejected by outlier detection.
    pub ejections: AtomicU64,
}

struct Inner<B, RB> {
    what: &'static str,
    instances: Vec<Instance<B, RB>>,
    budget: TpsBudget,
    stats: PoolStats,
}

/// A balanced pool over upstream instances (see the module docs). Cheap to clone.
pub struct Pool<B, RB> {
    inner: Arc<Inner<B, RB>>,
}

impl<B, RB> Clone for Pool<B, RB> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<B, RB> std::fmt::Debug for Pool<B, RB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("what", &self.inner.what)
            .field("instances", &self.urls())
            .finish_non_exhaustive()
    }
}

/// What happened to one attempt, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An answer that is not a gateway failure.
    Success,
    /// A gateway failure: refused, reset, timed out, 502/503/504.
    Failure,
    /// Says nothing about the instance (the client's fault, an open circuit).
    Neutral,
}

impl<B, RB> Pool<B, RB> {
    /// A pool of `(url, service, breaker)` instances (at least one); `what` names the
    /// upstream in logs and metrics (`etl`, `backend`).
    pub fn new(
        what: &'static str,
        instances: impl IntoIterator<Item = (String, InstanceService<B, RB>, Breaker)>,
    ) -> anyhow::Result<Self> {
        let instances: Vec<Instance<B, RB>> = instances
            .into_iter()
            .map(|(url, service, breaker)| Instance {
                url,
                service,
                breaker,
                in_flight: AtomicUsize::new(0),
                outlier: Mutex::default(),
            })
            .collect();
        if instances.is_empty() {
            anyhow::bail!("no {what} instance");
        }
        Ok(Self {
            inner: Arc::new(Inner {
                what,
                instances,
                budget: TpsBudget::default(),
                stats: PoolStats::default(),
            }),
        })
    }

    /// The instances, in configuration order.
    pub fn instances(&self) -> &[Instance<B, RB>] {
        &self.inner.instances
    }

    /// Their base URLs.
    pub fn urls(&self) -> Vec<String> {
        self.inner.instances.iter().map(|i| i.url.clone()).collect()
    }

    /// The counters.
    #[allow(dead_code)] // read by the tests
    pub fn stats(&self) -> &PoolStats {
        &self.inner.stats
    }

    /// Pick an instance other than `exclude` (when there is another): out of the
    /// instances not ejected (all of them if every one is), the lighter of two drawn
    /// at random.
    pub fn pick(&self, exclude: Option<usize>) -> usize {
        let all = &self.inner.instances;
        let now = Instant::now();
        let eligible = |skip_ejected: bool| -> Vec<usize> {
            (0..all.len())
                .filter(|i| Some(*i) != exclude)
                .filter(|i| {
                    !skip_ejected || {
                        let o = all[*i].outlier.lock().unwrap_or_else(|p| p.into_inner());
                        o.ejected_until.is_none_or(|until| until <= now)
                    }
                })
                .collect()
        };
        let mut candidates = eligible(true);
        if candidates.is_empty() {
            candidates = eligible(false);
        }
        match candidates.len() {
            0 => 0,
            1 => candidates[0],
            n => {
                let mut rng = rand::rng();
                let a = rng.random_range(0..n);
                let mut b = rng.random_range(0..n - 1);
                if b >= a {
                    b += 1;
                }
                let (a, b) = (candidates[a], candidates[b]);
                if all[b].load() < all[a].load() { b } else { a }
            }
        }
    }

    /// Count `outcome` of an attempt on instance `index`: consecutive failures past
    /// [`EJECT_AFTER`] eject it, unless half of the instances already are.
    pub fn record(&self, index: usize, outcome: Outcome) {
        let all = &self.inner.instances;
        let Some(instance) = all.get(index) else {
            return;
        };
        let now = Instant::now();
        match outcome {
            Outcome::Neutral => {}
            Outcome::Success => {
                let mut o = instance.outlier.lock().unwrap_or_else(|p| p.into_inner());
                o.consecutive = 0;
                if o.ejected_until.is_none_or(|until| until <= now) {
                    o.ejections = 0;
                    o.ejected_until = None;
                }
            }
            Outcome::Failure => {
                let ejected_now = all
                    .iter()
                    .enumerate()
                    .filter(|(i, other)| *i != index && other.ejected())
                    .count();
                let mut o = instance.outlier.lock().unwrap_or_else(|p| p.into_inner());
                o.consecutive = o.consecutive.saturating_add(1);
                let already = o.ejected_until.is_some_and(|until| until > now);
                if o.consecutive >= EJECT_AFTER && !already && (ejected_now + 1) * 2 <= all.len() {
                    o.ejections = o.ejections.saturating_add(1);
                    let length = BASE_EJECTION.saturating_mul(o.ejections).min(MAX_EJECTION);
                    o.ejected_until = Some(now + length);
                    o.consecutive = 0;
                    self.inner.stats.ejections.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("pulse_upstream_ejections_total", "upstream" => self.inner.what)
                        .increment(1);
                    tracing::warn!(upstream = self.inner.what, instance = %instance.url,
                        ejected_for_ms = u64::try_from(length.as_millis()).unwrap_or(u64::MAX),
                        "instance ejected after consecutive failures");
                }
            }
        }
    }
}

/// Whether sending the request twice does no more than sending it once: an idempotent
/// method, or any request carrying an `Idempotency-Key` (the ETL answers a repeated
/// start with the same key with the first run).
fn is_idempotent(method: &Method, headers: &http::HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) || headers.contains_key("idempotency-key")
}

/// Whether a failed attempt may be sent again elsewhere: one never sent, whatever it
/// is, or an idempotent one (see [`is_idempotent`]) whose connection broke or whose
/// answer did not come in time (a frozen instance).
pub fn retryable(error: &ProxyError, method: &Method, headers: &http::HeaderMap) -> bool {
    let never_sent = matches!(
        error,
        ProxyError::ConnectRefused
            | ProxyError::Unavailable
            | ProxyError::CircuitOpen { .. }
            | ProxyError::Timeout {
                phase: pulse_proxy::TimeoutPhase::Connect
            }
    );
    never_sent
        || (is_idempotent(method, headers)
            && matches!(
                error,
                ProxyError::Protocol
                    | ProxyError::ConnectionLost
                    | ProxyError::Timeout {
                        phase: pulse_proxy::TimeoutPhase::ResponseHeaders
                    }
            ))
}

fn outcome_of<RB>(result: &Result<Response<RB>, ProxyError>) -> Outcome {
    match result {
        Ok(response) => match response.status() {
            StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT => Outcome::Failure,
            _ => Outcome::Success,
        },
        Err(ProxyError::CircuitOpen { .. }) => Outcome::Neutral,
        Err(error) if error.is_upstream_fault() => Outcome::Failure,
        Err(_) => Outcome::Neutral,
    }
}

fn copy<B>(request: &Request<ProxyRequestBody<B>>) -> Option<Request<ProxyRequestBody<B>>> {
    let body = request.body().try_clone()?;
    let mut clone = Request::new(body);
    *clone.method_mut() = request.method().clone();
    *clone.uri_mut() = request.uri().clone();
    *clone.version_mut() = request.version();
    *clone.headers_mut() = request.headers().clone();
    *clone.extensions_mut() = request.extensions().clone();
    Some(clone)
}

impl<B, RB> Pool<B, RB>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    RB: Send + 'static,
{
    async fn attempt(
        &self,
        index: usize,
        request: Request<ProxyRequestBody<B>>,
    ) -> Result<Response<RB>, ProxyError> {
        let instance = &self.inner.instances[index];
        instance.in_flight.fetch_add(1, Ordering::Relaxed);
        let result = instance.service.clone().oneshot(request).await;
        instance.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.record(index, outcome_of(&result));
        result
    }

    /// Send `request` to instance `index` alone (no retry), its outcome counted for
    /// outlier detection like any other: the frontend's `/health` probes each gateway.
    pub async fn send_to(
        &self,
        index: usize,
        request: Request<ProxyRequestBody<B>>,
    ) -> Result<Response<RB>, ProxyError> {
        self.attempt(index, request).await
    }

    async fn send(
        &self,
        request: Request<ProxyRequestBody<B>>,
    ) -> Result<Response<RB>, ProxyError> {
        // A small body is read first, so that the request can be sent again.
        let small = request
            .body()
            .size_hint()
            .upper()
            .is_some_and(|n| n <= RETRY_BUFFER_LIMIT);
        let request =
            if request.body().try_clone().is_none() && small && self.inner.instances.len() > 1 {
                let (parts, body) = request.into_parts();
                let bytes = body
                    .collect()
                    .await
                    .map_err(|error| ProxyError::classify(&*error))?
                    .to_bytes();
                Request::from_parts(parts, ProxyRequestBody::buffered(bytes))
            } else {
                request
            };
        let method = request.method().clone();
        let headers = request.headers().clone();
        let again = if self.inner.instances.len() > 1 {
            copy(&request)
        } else {
            None
        };
        let first = self.pick(None);
        let result = self.attempt(first, request).await;
        let error = match result {
            Ok(response) => {
                self.inner.budget.deposit();
                return Ok(response);
            }
            Err(error) => error,
        };
        let Some(again) = again.filter(|_| retryable(&error, &method, &headers)) else {
            return Err(error);
        };
        if !self.inner.budget.withdraw() {
            self.inner
                .stats
                .retries_over_budget
                .fetch_add(1, Ordering::Relaxed);
            return Err(error);
        }
        let second = self.pick(Some(first));
        self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("pulse_upstream_retries_total", "upstream" => self.inner.what)
            .increment(1);
        tracing::info!(upstream = self.inner.what, from = %self.inner.instances[first].url,
            to = %self.inner.instances[second].url, kind = %error, "sending the request to another instance");
        self.attempt(second, again).await
    }
}

impl<B, RB> Service<Request<ProxyRequestBody<B>>> for Pool<B, RB>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = ProxyError;
    type Future = BoxFuture<'static, Result<Response<RB>, ProxyError>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), ProxyError>> {
        // Each instance's transport is ready at once (a pooled client); an open
        // circuit answers in the call, where another instance can take the request.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ProxyRequestBody<B>>) -> Self::Future {
        let pool = self.clone();
        Box::pin(async move { pool.send(request).await })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;
    use http_body_util::Empty;
    use pulse_breaker::BreakerConfig;

    type TestPool = Pool<Empty<Bytes>, ()>;

    fn pool(answers: Vec<Result<StatusCode, ProxyError>>) -> (TestPool, Vec<Arc<AtomicU32>>) {
        let mut calls = Vec::new();
        let instances: Vec<_> = answers
            .into_iter()
            .enumerate()
            .map(|(i, answer)| {
                let count = Arc::new(AtomicU32::new(0));
                calls.push(Arc::clone(&count));
                let service =
                    tower::service_fn(move |_req: Request<ProxyRequestBody<Empty<Bytes>>>| {
                        count.fetch_add(1, Ordering::Relaxed);
                        let answer = answer.clone();
                        async move {
                            answer.map(|status| {
                                let mut response = Response::new(());
                                *response.status_mut() = status;
                                response
                            })
                        }
                    });
                (
                    format!("http://127.0.0.1:{}", 9000 + i),
                    BoxCloneSyncService::new(service),
                    Breaker::new(BreakerConfig::default()).expect("valid"),
                )
            })
            .collect();
        (Pool::new("test", instances).expect("instances"), calls)
    }

    fn request(method: Method) -> Request<ProxyRequestBody<Empty<Bytes>>> {
        let mut request = Request::new(ProxyRequestBody::empty());
        *request.method_mut() = method;
        request
    }

    #[test]
    fn urls_are_a_comma_separated_list_without_duplicates() {
        let urls = parse_urls("http://127.0.0.1:1, http://127.0.0.1:2,", "X").unwrap();
        assert_eq!(urls.len(), 2);
        assert_eq!(base_url(&urls[1]), "http://127.0.0.1:2");
        assert!(parse_urls("", "X").is_err());
        assert!(parse_urls("127.0.0.1:1", "X").is_err());
        assert!(parse_urls("http://a:1,http://a:1", "X").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_request_is_sent_once_to_the_other_instance() {
        let (mut pool, calls) = pool(vec![Err(ProxyError::ConnectRefused), Ok(StatusCode::OK)]);
        // Whichever instance is drawn first, every POST ends on the live one, at most
        // once more each time.
        for _ in 0..20 {
            let response = pool.call(request(Method::POST)).await.expect("answered");
            assert_eq!(response.status(), StatusCode::OK);
        }
        assert_eq!(calls[1].load(Ordering::Relaxed), 20);
        let refused = calls[0].load(Ordering::Relaxed);
        assert_eq!(
            u64::from(refused),
            pool.stats().retries.load(Ordering::Relaxed)
        );
        // Three refusals in a row eject it: it is drawn no more.
        assert!(
            refused <= EJECT_AFTER,
            "{refused} attempts on the dead instance"
        );
        assert!(pool.instances()[0].ejected());
        assert_eq!(pool.stats().ejections.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_connection_is_retried_only_for_idempotent_methods() {
        let (mut pool, calls) = pool(vec![
            Err(ProxyError::ConnectionLost),
            Err(ProxyError::ConnectionLost),
        ]);
        let error = pool
            .call(request(Method::POST))
            .await
            .expect_err("not retried");
        assert_eq!(error, ProxyError::ConnectionLost);
        let total =
            |calls: &[Arc<AtomicU32>]| calls.iter().map(|c| c.load(Ordering::Relaxed)).sum::<u32>();
        assert_eq!(total(&calls), 1);
        let _ = pool
            .call(request(Method::GET))
            .await
            .expect_err("both fail");
        assert_eq!(total(&calls), 3, "a GET is tried on both instances");
        assert!(calls.iter().all(|c| c.load(Ordering::Relaxed) >= 1));
        // A POST with an Idempotency-Key may be sent twice: it is tried on both.
        let mut keyed = request(Method::POST);
        keyed
            .headers_mut()
            .insert("idempotency-key", http::HeaderValue::from_static("start-1"));
        let _ = pool.call(keyed).await.expect_err("both fail");
        assert_eq!(total(&calls), 5, "a keyed POST is tried on both instances");
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_out_answer_is_retried_only_when_idempotent() {
        let timeout = ProxyError::Timeout {
            phase: pulse_proxy::TimeoutPhase::ResponseHeaders,
        };
        let none = http::HeaderMap::new();
        assert!(retryable(&timeout, &Method::GET, &none));
        assert!(!retryable(&timeout, &Method::POST, &none));
        let mut keyed = http::HeaderMap::new();
        keyed.insert("idempotency-key", http::HeaderValue::from_static("k"));
        assert!(retryable(&timeout, &Method::POST, &keyed));
        assert!(!retryable(&ProxyError::InvalidBody, &Method::GET, &keyed));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_is_never_retried_and_a_single_instance_is_never_ejected() {
        let (mut pool, calls) = pool(vec![Ok(StatusCode::SERVICE_UNAVAILABLE)]);
        for _ in 0..5 {
            let response = pool.call(request(Method::GET)).await.expect("answered");
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        assert_eq!(calls[0].load(Ordering::Relaxed), 5);
        assert!(!pool.instances()[0].ejected());
    }

    #[tokio::test(start_paused = true)]
    async fn an_ejection_ends_after_its_time_and_gets_longer_in_a_row() {
        let (pool, _) = pool(vec![Ok(StatusCode::OK), Ok(StatusCode::OK)]);
        for _ in 0..EJECT_AFTER {
            pool.record(0, Outcome::Failure);
        }
        assert!(pool.instances()[0].ejected());
        // Half of the instances at most: the other one stays in.
        for _ in 0..EJECT_AFTER {
            pool.record(1, Outcome::Failure);
        }
        assert!(!pool.instances()[1].ejected());
        for _ in 0..50 {
            assert_eq!(pool.pick(None), 1);
        }
        tokio::time::advance(BASE_EJECTION).await;
        assert!(!pool.instances()[0].ejected());
        for _ in 0..EJECT_AFTER {
            pool.record(0, Outcome::Failure);
        }
        tokio::time::advance(BASE_EJECTION).await;
        assert!(
            pool.instances()[0].ejected(),
            "the second ejection is twice as long"
        );
        tokio::time::advance(BASE_EJECTION).await;
        assert!(!pool.instances()[0].ejected());
    }
}
