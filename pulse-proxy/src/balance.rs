//! Step 9: load balancing over several upstreams, each behind its own circuit breaker.
//!
//! [`balance`] builds tower's power-of-two-choices balancer over a list of transports.
//! Each one is wrapped in a pulse-breaker [`CircuitBreaker`] classified by
//! [`UpstreamClassifier`] (500/502/503/504 and upstream faults fail; 4xx, the client's
//! body faults and the proxy's own shedding do not) and counts its requests in flight. Of the
//! two random candidates p2c compares, an upstream whose circuit is open always loses
//! to one whose circuit admits calls, so traffic moves off a failing instance at once;
//! with two upstreams that comparison is always between both. A request can still
//! land on an open circuit when both candidates are open; the proxy then answers 503
//! `circuit_open` with `Retry-After`.
//!
//! The balancer sits behind a [`Buffer`] so that the returned transport is `Clone`
//! (the proxy is cloned per request by axum); create it inside a tokio runtime.
//!
//! ```
//! use pulse_breaker::{Breaker, BreakerConfig};
//! use pulse_proxy::{Proxy, ProxyConfig, balance::balance, transport::{HttpTransport, TransportConfig}};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let instances = ["http://127.0.0.1:8001", "http://127.0.0.1:8002"].map(|addr| {
//!     // One pool per instance: the balancer picks the instance, the pool the connection.
//!     let transport = HttpTransport::new(TransportConfig::new())
//!         .with_upstream(addr.parse().expect("static URI"));
//!     (transport, Breaker::new(BreakerConfig::default()).expect("valid config"))
//! });
//! let transport = balance(instances, 1024);
//! // The configured upstream is now only the `Host` the instances expect.
//! let config = ProxyConfig::new("http://etl.internal".parse()?)?.with_prefix_rewrite("/api/etl/", "/api/v1/");
//! let proxy = Proxy::new(transport, config);
//! # let _: &Proxy<pulse_proxy::balance::Balanced<HttpTransport<pulse_proxy::ProxyRequestBody<http_body_util::Empty<bytes::Bytes>>>, http_body_util::Empty<bytes::Bytes>>> = &proxy;
//! # Ok(())
//! # }
//! ```
//!
//! Each instance's transport is pinned to its address with
//! [`HttpTransport::with_upstream`](crate::transport::HttpTransport::with_upstream)
//! (or is a [`UnixTransport`](crate::transport::UnixTransport) per socket).

use std::task::{Context, Poll};

use http::{Request, Response};
use pulse_breaker::{Breaker, CircuitBreaker, State};
use tower::{
    balance::p2c::Balance,
    buffer::Buffer,
    discover::ServiceList,
    load::{CompleteOnResponse, Load, PendingRequests, pending_requests::Count},
};
use tower_service::Service;

use crate::{body::ProxyRequestBody, classifier::UpstreamClassifier};

/// One upstream instance as the balancer sees it: the transport behind its breaker,
/// with a load of "is the circuit open, then requests in flight".
#[derive(Debug)]
pub struct Endpoint<T> {
    inner: PendingRequests<CircuitBreaker<T, UpstreamClassifier>>,
    breaker: Breaker,
}

impl<T> Endpoint<T> {
    /// Guard `transport` with `breaker`.
    pub fn new(transport: T, breaker: Breaker) -> Self {
        let guarded = CircuitBreaker::new(transport, breaker.clone())
            .with_classifier(UpstreamClassifier::new());
        Self {
            inner: PendingRequests::new(guarded, CompleteOnResponse::default()),
            breaker,
        }
    }

    /// The breaker of this instance.
    pub const fn breaker(&self) -> &Breaker {
        &self.breaker
    }
}

impl<T> Load for Endpoint<T> {
    /// `(rejecting, in flight)`: any admitting instance is lighter than any rejecting one.
    type Metric = (bool, Count);

    fn load(&self) -> Self::Metric {
        let rejecting = match self.breaker.state() {
            // Open with nothing left of the open period lets the next call probe: not
            // penalised, or a healthy peer would starve it of its probe forever.
            State::Open => self.breaker.retry_after().is_none_or(|d| !d.is_zero()),
            // Forced open rejects whatever its retry hint says.
            state => !state.admits(),
        };
        (rejecting, self.inner.load())
    }
}

impl<T, B, RB> Service<Request<ProxyRequestBody<B>>> for Endpoint<T>
where
    T: Service<Request<ProxyRequestBody<B>>, Response = Response<RB>>,
    CircuitBreaker<T, UpstreamClassifier>:
        Service<Request<ProxyRequestBody<B>>, Response = Response<RB>>,
{
    type Response = Response<RB>;
    type Error =
        <CircuitBreaker<T, UpstreamClassifier> as Service<Request<ProxyRequestBody<B>>>>::Error;
    type Future = <PendingRequests<CircuitBreaker<T, UpstreamClassifier>> as Service<
        Request<ProxyRequestBody<B>>,
    >>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ProxyRequestBody<B>>) -> Self::Future {
        self.inner.call(req)
    }
}

/// The p2c balancer over [`Endpoint`]s.
pub type Balancer<T, B> = Balance<ServiceList<Vec<Endpoint<T>>>, Request<ProxyRequestBody<B>>>;

/// The balanced transport [`balance`] returns: `Clone`, for use as the proxy's
/// transport.
pub type Balanced<T, B> = Buffer<
    Request<ProxyRequestBody<B>>,
    <Balancer<T, B> as Service<Request<ProxyRequestBody<B>>>>::Future,
>;

/// Balance over `instances`, each a transport with its own breaker; `buffer` requests
/// may wait for the balancer at once. Must be called inside a tokio runtime.
pub fn balance<T, B, RB, I>(instances: I, buffer: usize) -> Balanced<T, B>
where
    I: IntoIterator<Item = (T, Breaker)>,
    Endpoint<T>: Service<Request<ProxyRequestBody<B>>, Response = Response<RB>>,
    <Endpoint<T> as Service<Request<ProxyRequestBody<B>>>>::Error: Into<tower::BoxError>,
    <Endpoint<T> as Service<Request<ProxyRequestBody<B>>>>::Future: Send + 'static,
    T: Send + 'static,
    B: Send + 'static,
    RB: Send + 'static,
{
    let endpoints: Vec<Endpoint<T>> = instances
        .into_iter()
        .map(|(transport, breaker)| Endpoint::new(transport, breaker))
        .collect();
    Buffer::new(Balance::new(ServiceList::new(endpoints)), buffer)
}
