//! Step 9: a balanced pool over several instances of one upstream.
//!
//! A [`Pool`] is a transport (a `tower::Service` of the proxy's requests) over several
//! instances, each its own transport stack — its own connection pool, pinned to its
//! address — behind its own pulse-breaker circuit breaker, classified by
//! [`UpstreamClassifier`](crate::UpstreamClassifier). For each request it:
//!
//! 1. **picks** the lighter of two instances drawn at random (power of two choices), of
//!    those not ejected (all of them if every one is): an instance whose circuit
//!    rejects calls is heavier than any that admits them, then requests in flight
//!    decide;
//! 2. **ejects outliers** passively, as Envoy does: consecutive gateway failures
//!    (refused, reset, timed out, or a 502/503/504 answer) take an instance out of the
//!    draw for a time that grows with each ejection in a row, never more than half of
//!    the instances at once ([`EjectionPolicy`]);
//! 3. **retries once on another instance** a request that never reached its instance
//!    (refused, connect timeout, no capacity, open circuit) — whatever its method — or
//!    an idempotent one (an idempotent method, or an `Idempotency-Key`) whose
//!    connection broke or whose answer did not come in time ([`is_retryable`]), when
//!    its body can be sent again: empty, or at most
//!    [`with_retry_body_limit`](PoolBuilder::with_retry_body_limit) bytes, read into
//!    memory first (a larger one streams and is never sent twice). Retries draw on a
//!    [`TpsBudget`] shared by the pool, so an outage cannot multiply the load. An
//!    upstream's answer — a 5xx included — is never retried.
//!
//! Everything on this path is in memory. A [`PoolObserver`] hears of ejections,
//! restorations, retries and spent budgets (for metrics); [`Pool::stats`] counts them
//! and [`Pool::status`] reports every instance (for a health page).
//!
//! ```
//! use std::time::Duration;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Empty;
//! use bytes::Bytes;
//! use pulse_breaker::{Breaker, BreakerConfig};
//! use pulse_proxy::{ProxyError, ProxyRequestBody, balance::{EjectionPolicy, Pool}};
//! use tower::{ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Two instances: one refuses every connection, the other answers.
//! let instance = |up: bool| {
//!     service_fn(move |_req: Request<ProxyRequestBody<Empty<Bytes>>>| async move {
//!         if up { Ok(Response::new(Empty::<Bytes>::new())) } else { Err(ProxyError::ConnectRefused) }
//!     })
//! };
//! let pool = Pool::builder()
//!     .instance("http://10.0.0.1:8001", instance(false), Breaker::new(BreakerConfig::default())?)
//!     .instance("http://10.0.0.2:8001", instance(true), Breaker::new(BreakerConfig::default())?)
//!     .with_ejection(EjectionPolicy::new().with_consecutive_failures(2))
//!     .build()?;
//!
//! // A refused POST never reached its instance: it is sent to the other one.
//! for _ in 0..10 {
//!     let request = Request::post("/api/v1/jobs/a/start").body(ProxyRequestBody::empty())?;
//!     let response = pool.clone().oneshot(request).await?;
//!     assert_eq!(response.status(), StatusCode::OK);
//! }
//! // Two refusals in a row ejected the dead instance: it is drawn no more.
//! assert!(pool.stats().retries() <= 2);
//! assert!(pool.instances()[0].is_ejected());
//! assert!(pool.status()[1].is_available());
//! # Ok(())
//! # }
//! ```
//!
//! Give the pool to [`Proxy::new`](crate::Proxy::new) as its transport: the configured
//! upstream URL is then only the `Host` the instances expect. Each instance's
//! transport is pinned to its address with
//! [`HttpTransport::with_upstream`](crate::transport::HttpTransport::with_upstream)
//! (or is a [`UnixTransport`](crate::transport::UnixTransport) per socket).

mod ejection;
mod endpoint;
mod observer;
mod retry;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use pulse_breaker::Breaker;
use tokio::time::Instant;
use tower::ServiceExt;
use tower::retry::budget::{Budget, TpsBudget};
use tower::util::rng::{HasherRng, Rng};
use tower_service::Service;

pub use ejection::{
    DEFAULT_BASE_EJECTION, DEFAULT_CONSECUTIVE_FAILURES, DEFAULT_MAX_EJECTED_PERCENT,
    DEFAULT_MAX_EJECTION, EjectionPolicy, Outcome,
};
pub use endpoint::{Instance, InstanceStatus};
pub use observer::{NoopObserver, PoolObserver, PoolStats};
pub use retry::{DEFAULT_RETRY_BODY_LIMIT, IDEMPOTENCY_KEY, is_idempotent, is_retryable};

use crate::{ProxyError, ProxyRequestBody, error::BoxError};
use ejection::Change;
use observer::Events;

/// A [`PoolBuilder`] could not build a pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// No instance was given.
    #[error("a pool needs at least one instance")]
    NoInstances,
    /// Two instances have the same name.
    #[error("instance {0:?} is listed twice")]
    DuplicateInstance(String),
}

/// Builds a [`Pool`] (see [`Pool::builder`]).
#[must_use]
pub struct PoolBuilder<S> {
    instances: Vec<(String, S, Breaker)>,
    ejection: EjectionPolicy,
    budget: Option<TpsBudget>,
    retries: bool,
    retry_body_limit: u64,
    observer: Box<dyn PoolObserver>,
}

impl<S> std::fmt::Debug for PoolBuilder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuilder")
            .field(
                "instances",
                &self.instances.iter().map(|i| &i.0).collect::<Vec<_>>(),
            )
            .field("ejection", &self.ejection)
            .field("retries", &self.retries)
            .field("retry_body_limit", &self.retry_body_limit)
            .finish_non_exhaustive()
    }
}

impl<S> PoolBuilder<S> {
    /// Adds an instance called `name` (usually its base URL): `transport` guarded by
    /// `breaker` (the pool puts the breaker around the transport and weighs the
    /// instance by it).
    pub fn instance(mut self, name: impl Into<String>, transport: S, breaker: Breaker) -> Self {
        self.instances.push((name.into(), transport, breaker));
        self
    }

    /// When instances are ejected, and for how long (default [`EjectionPolicy::new`]).
    pub const fn with_ejection(mut self, policy: EjectionPolicy) -> Self {
        self.ejection = policy;
        self
    }

    /// The budget every retry draws on (default: tower's, 10 retries a second plus
    /// 20 % of the recent successful requests).
    pub fn with_retry_budget(mut self, budget: TpsBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The largest request body read into memory so that the request can be sent again
    /// (default [`DEFAULT_RETRY_BODY_LIMIT`]); 0 retries only empty bodies.
    pub const fn with_retry_body_limit(mut self, bytes: u64) -> Self {
        self.retry_body_limit = bytes;
        self
    }

    /// Never send a request a second time (balancing and ejection only).
    pub const fn without_retries(mut self) -> Self {
        self.retries = false;
        self
    }

    /// Calls `observer` on each ejection, restoration, retry and spent budget.
    pub fn with_observer(mut self, observer: impl PoolObserver) -> Self {
        self.observer = Box::new(observer);
        self
    }

    /// The pool.
    ///
    /// # Errors
    /// [`PoolError::NoInstances`] without an instance, and
    /// [`PoolError::DuplicateInstance`] when two have the same name.
    pub fn build(self) -> Result<Pool<S>, PoolError> {
        if self.instances.is_empty() {
            return Err(PoolError::NoInstances);
        }
        for (i, (name, _, _)) in self.instances.iter().enumerate() {
            if self.instances[..i]
                .iter()
                .any(|(other, _, _)| other == name)
            {
                return Err(PoolError::DuplicateInstance(name.clone()));
            }
        }
        let instances = self
            .instances
            .into_iter()
            .map(|(name, transport, breaker)| Instance::new(name, transport, breaker))
            .collect();
        Ok(Pool {
            shared: Arc::new(Shared {
                instances,
                ejection: self.ejection,
                budget: self.budget.unwrap_or_default(),
                retries: self.retries,
                retry_body_limit: self.retry_body_limit,
                events: Events {
                    stats: PoolStats::default(),
                    observer: self.observer,
                },
            }),
        })
    }
}

struct Shared<S> {
    instances: Vec<Instance<S>>,
    ejection: EjectionPolicy,
    budget: TpsBudget,
    retries: bool,
    retry_body_limit: u64,
    events: Events,
}

/// A balanced pool over instances of one upstream (see the [module docs](self)).
/// Cheap to clone: clones share the instances, their state and the budget.
pub struct Pool<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for Pool<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> std::fmt::Debug for Pool<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("instances", &self.names())
            .field("ejection", &self.shared.ejection)
            .finish_non_exhaustive()
    }
}

impl Pool<()> {
    /// A builder without instances, with the default ejection policy, retry budget and
    /// retry body limit.
    pub fn builder<S>() -> PoolBuilder<S> {
        PoolBuilder {
            instances: Vec::new(),
            ejection: EjectionPolicy::new(),
            budget: None,
            retries: true,
            retry_body_limit: DEFAULT_RETRY_BODY_LIMIT,
            observer: Box::new(NoopObserver),
        }
    }
}

impl<S> Pool<S> {
    /// The instances, in the order they were added.
    pub fn instances(&self) -> &[Instance<S>] {
        &self.shared.instances
    }

    /// Their names.
    pub fn names(&self) -> Vec<&str> {
        self.shared.instances.iter().map(Instance::name).collect()
    }

    /// Every instance's state now, in order (ejections that ended are noticed here).
    pub fn status(&self) -> Vec<InstanceStatus> {
        self.restore_ended(Instant::now());
        self.shared.instances.iter().map(Instance::status).collect()
    }

    /// The counters.
    pub fn stats(&self) -> &PoolStats {
        &self.shared.events.stats
    }

    /// The index of the instance for the next request, other than `avoid` when there
    /// is another: of the instances not ejected (all of them if every one is), the
    /// lighter of two drawn at random. For callers that hold their own connection per
    /// instance (a long-lived subscription); report how it went with
    /// [`record`](Self::record).
    pub fn pick(&self, avoid: Option<usize>) -> usize {
        let now = Instant::now();
        self.restore_ended(now);
        let all = &self.shared.instances;
        let eligible = |skip_ejected: bool| -> Vec<usize> {
            (0..all.len())
                .filter(|i| Some(*i) != avoid)
                .filter(|i| !skip_ejected || !all[*i].outlier().is_ejected(now))
                .collect()
        };
        let mut candidates = eligible(true);
        if candidates.is_empty() {
            candidates = eligible(false);
        }
        match candidates.len() {
            // Only `avoid` itself: it is all there is.
            0 => avoid.unwrap_or(0),
            1 => candidates[0],
            n => {
                let mut rng = HasherRng::new();
                let n = n as u64;
                let a = rng.next_range(0..n);
                let mut b = rng.next_range(0..n - 1);
                if b >= a {
                    b += 1;
                }
                // Indexes below `n`, itself a `usize`.
                let (a, b) = (candidates[a as usize], candidates[b as usize]);
                if all[b].load() < all[a].load() { b } else { a }
            }
        }
    }

    /// Counts `outcome` of an attempt on instance `index` for outlier detection (out
    /// of range: ignored). The pool records its own requests; this is for callers of
    /// [`pick`](Self::pick).
    pub fn record(&self, index: usize, outcome: Outcome) {
        let all = &self.shared.instances;
        let Some(instance) = all.get(index) else {
            return;
        };
        let now = Instant::now();
        if instance.outlier().restore(now) {
            self.shared.events.restored(instance.name());
        }
        let others_ejected = if outcome == Outcome::Failure {
            all.iter()
                .enumerate()
                .filter(|(i, other)| *i != index && other.outlier().is_ejected(now))
                .count()
        } else {
            0
        };
        let change = instance.outlier().record(
            outcome,
            &self.shared.ejection,
            now,
            others_ejected,
            all.len(),
        );
        if let Change::Ejected(length) = change {
            self.shared.events.ejected(instance.name(), length);
        }
    }

    fn restore_ended(&self, now: Instant) {
        for instance in &self.shared.instances {
            if instance.outlier().restore(now) {
                self.shared.events.restored(instance.name());
            }
        }
    }
}

/// What an attempt's result says about its instance.
fn outcome_of<RB>(result: &Result<Response<RB>, ProxyError>) -> Outcome {
    match result {
        Ok(response) => match response.status() {
            StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT => Outcome::Failure,
            _ => Outcome::Success,
        },
        Err(error) if error.is_upstream_fault() => Outcome::Failure,
        // An open circuit, the client's fault, the proxy's own shedding.
        Err(_) => Outcome::Neutral,
    }
}

impl<S> Pool<S> {
    /// Sends `request` to instance `index` alone, never retried, its outcome counted
    /// for outlier detection like any other (e.g. a health probe of each instance).
    ///
    /// # Errors
    /// The instance's error, classified; [`ProxyError::Unavailable`] for an index out
    /// of range.
    pub async fn send_to<B, RB>(
        &self,
        index: usize,
        request: Request<ProxyRequestBody<B>>,
    ) -> Result<Response<RB>, ProxyError>
    where
        S: Service<Request<ProxyRequestBody<B>>, Response = Response<RB>> + Clone,
        S::Error: std::error::Error + Send + Sync + 'static,
    {
        let Some(instance) = self.shared.instances.get(index) else {
            return Err(ProxyError::Unavailable);
        };
        let result = {
            let _in_flight = instance.start();
            instance
                .service()
                .clone()
                .oneshot(request)
                .await
                .map_err(|error: BoxError| ProxyError::classify(&*error))
        };
        self.record(index, outcome_of(&result));
        result
    }

    async fn send<B, RB>(
        self,
        request: Request<ProxyRequestBody<B>>,
    ) -> Result<Response<RB>, ProxyError>
    where
        S: Service<Request<ProxyRequestBody<B>>, Response = Response<RB>> + Clone,
        S::Error: std::error::Error + Send + Sync + 'static,
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let shared = &self.shared;
        let may_retry = shared.retries && shared.instances.len() > 1;
        // A small body is read first, so that the request can be sent again.
        let request = if may_retry {
            retry::buffer_small(request, shared.retry_body_limit).await?
        } else {
            request
        };
        let again = if may_retry {
            retry::copy(&request)
        } else {
            None
        };
        // Known before the request goes: a copy of its method and headers is not kept.
        let idempotent = again.is_some() && is_idempotent(request.method(), request.headers());
        let first = self.pick(None);
        let error = match self.send_to(first, request).await {
            Ok(response) => {
                shared.budget.deposit();
                return Ok(response);
            }
            Err(error) => error,
        };
        let Some(again) = again.filter(|_| retry::may_retry(&error, idempotent)) else {
            return Err(error);
        };
        let from = shared.instances[first].name();
        if !shared.budget.withdraw() {
            shared.events.budget_exhausted(from, &error);
            return Err(error);
        }
        let second = self.pick(Some(first));
        shared
            .events
            .retried(from, shared.instances[second].name(), &error);
        let result = self.send_to(second, again).await;
        if result.is_ok() {
            shared.budget.deposit();
        }
        result
    }
}

/// The response future of [`Pool`]: boxed, because it awaits reading the body, one
/// attempt and maybe a second one on another instance.
pub struct ResponseFuture<RB> {
    inner: Pin<Box<dyn Future<Output = Result<Response<RB>, ProxyError>> + Send>>,
}

impl<RB> std::fmt::Debug for ResponseFuture<RB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<RB> Future for ResponseFuture<RB> {
    type Output = Result<Response<RB>, ProxyError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<S, B, RB> Service<Request<ProxyRequestBody<B>>> for Pool<S>
where
    S: Service<Request<ProxyRequestBody<B>>, Response = Response<RB>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
    S::Error: std::error::Error + Send + Sync + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = ProxyError;
    type Future = ResponseFuture<RB>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        // Always ready: each attempt waits for its own instance's readiness (a pooled
        // client is ready at once or fails fast), and an instance that cannot take
        // the request fails it, so another instance can.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ProxyRequestBody<B>>) -> Self::Future {
        ResponseFuture {
            inner: Box::pin(self.clone().send(request)),
        }
    }
}

#[cfg(test)]
mod tests;
