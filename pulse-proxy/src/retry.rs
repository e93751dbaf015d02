//! Step 8: retries, off unless this layer is put around the transport.
//!
//! [`RetryLayer`] resends a request only when that cannot repeat a side effect the
//! client did not ask for twice:
//!
//! - it **never reached the upstream** (connection refused, connect timeout, no route),
//!   whatever its method, when its body can be sent again (empty or buffered: a
//!   streamed body is gone once read); or
//! - its method is **idempotent** (`GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE`, `TRACE`)
//!   and the connection failed under it; a body of at most
//!   [`with_buffer_limit`](RetryLayer::with_buffer_limit) bytes is buffered first so it
//!   can be sent again, a larger or unsized one is streamed and never retried.
//!
//! Every retry withdraws from a shared [`TpsBudget`] (by default: 10 retries per second
//! plus 20 % of the recent successful requests), so an outage cannot multiply the load.
//! An answer from the upstream — a 502 or a 503 included — is never retried: it is a
//! response, not a transport failure. A full pool or an open circuit is not retried
//! either; failing fast is their purpose. Over several instances of the upstream,
//! `balance::Pool` (feature `balance`) sends such a request to *another* instance
//! instead, where an open circuit or a full pool is worth retrying.
//!
//! ```
//! use pulse_proxy::{Proxy, ProxyConfig, retry::RetryLayer, transport::InProcessTransport};
//! use tower::Layer;
//! # let upstream = tower::service_fn(|_req: http::Request<pulse_proxy::ProxyRequestBody<http_body_util::Empty<bytes::Bytes>>>| async {
//! #     Ok::<_, pulse_proxy::ProxyError>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
//! # });
//! let transport = RetryLayer::new().with_max_retries(2).layer(InProcessTransport::new(upstream));
//! let proxy = Proxy::new(transport, ProxyConfig::new("http://etl:8001".parse()?)?);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```

use std::{
    error::Error as StdError,
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Method, Request};
use http_body::Body;
use http_body_util::BodyExt;
use tower::retry::{
    Policy,
    budget::{Budget, TpsBudget},
};
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    body::ProxyRequestBody,
    error::{BoxError, ProxyError},
};

/// The default largest body buffered for a retry: 64 KiB.
pub const DEFAULT_BUFFER_LIMIT: u64 = 64 * 1024;

/// Retries safe requests under a budget (see the module docs).
#[derive(Clone)]
pub struct RetryLayer {
    policy: RetryPolicy,
    buffer_limit: u64,
}

impl fmt::Debug for RetryLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("max_retries", &self.policy.retries_left)
            .field("buffer_limit", &self.buffer_limit)
            .finish_non_exhaustive()
    }
}

impl Default for RetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryLayer {
    /// At most one retry per request, the default budget, bodies up to 64 KiB.
    pub fn new() -> Self {
        Self {
            policy: RetryPolicy {
                budget: Arc::new(TpsBudget::default()),
                retries_left: 1,
            },
            buffer_limit: DEFAULT_BUFFER_LIMIT,
        }
    }

    /// The most retries of one request.
    #[must_use]
    pub const fn with_max_retries(mut self, retries: usize) -> Self {
        self.policy.retries_left = retries;
        self
    }

    /// The retry budget, shared by every request through this layer.
    #[must_use]
    pub fn with_budget(mut self, budget: TpsBudget) -> Self {
        self.policy.budget = Arc::new(budget);
        self
    }

    /// The largest body of an idempotent request buffered so that it can be retried.
    #[must_use]
    pub const fn with_buffer_limit(mut self, bytes: u64) -> Self {
        self.buffer_limit = bytes;
        self
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner: tower::retry::Retry::new(self.policy.clone(), inner),
            buffer_limit: self.buffer_limit,
        }
    }
}

/// The retry middleware (see [`RetryLayer`]).
#[derive(Clone)]
pub struct Retry<S> {
    inner: tower::retry::Retry<RetryPolicy, S>,
    buffer_limit: u64,
}

impl<S> fmt::Debug for Retry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("buffer_limit", &self.buffer_limit)
            .finish_non_exhaustive()
    }
}

/// The response future of [`Retry`].
pub type RetryFuture<R> = Pin<Box<dyn Future<Output = Result<R, BoxError>> + Send>>;

impl<S, B, R> Service<Request<ProxyRequestBody<B>>> for Retry<S>
where
    S: Service<Request<ProxyRequestBody<B>>, Response = R> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: StdError + Send + Sync + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    R: Send + 'static,
{
    type Response = R;
    type Error = BoxError;
    type Future = RetryFuture<R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ProxyRequestBody<B>>) -> Self::Future {
        let small = req
            .body()
            .size_hint()
            .upper()
            .is_some_and(|n| n <= self.buffer_limit);
        if req.body().try_clone().is_none() && is_idempotent(req.method()) && small {
            // Buffer the small body so the request can be sent again; the size limit of
            // the proxy's body still applies while collecting. The service made ready
            // by `poll_ready` goes into the future and a clone stays here: polling a
            // fresh clone instead would leave the ready one's reservation (a
            // concurrency permit, a buffer slot) unused, and wait for a second one
            // that may never come.
            let clone = self.inner.clone();
            let mut svc = std::mem::replace(&mut self.inner, clone);
            return Box::pin(async move {
                let (parts, body) = req.into_parts();
                let bytes = body.collect().await?.to_bytes();
                let req = Request::from_parts(parts, ProxyRequestBody::buffered(bytes));
                Ok(svc.call(req).await?)
            });
        }
        let fut = self.inner.call(req);
        Box::pin(async move { Ok(fut.await?) })
    }
}

/// The policy: which failures are retried, under which budget.
#[derive(Clone)]
struct RetryPolicy {
    budget: Arc<TpsBudget>,
    retries_left: usize,
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

impl<B, R, E> Policy<Request<ProxyRequestBody<B>>, R, E> for RetryPolicy
where
    E: StdError + 'static,
{
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        req: &mut Request<ProxyRequestBody<B>>,
        result: &mut Result<R, E>,
    ) -> Option<Self::Future> {
        let err = match result {
            Ok(_) => {
                self.budget.deposit();
                return None;
            }
            Err(e) => ProxyError::classify(e),
        };
        // A full pool or an open circuit is never sent too, but failing fast is the point.
        let never_sent = matches!(
            err,
            ProxyError::ConnectRefused
                | ProxyError::Unavailable
                | ProxyError::Timeout {
                    phase: crate::TimeoutPhase::Connect
                }
        );
        let safe = never_sent
            || (is_idempotent(req.method())
                && matches!(err, ProxyError::Protocol | ProxyError::ConnectionLost));
        if !safe || self.retries_left == 0 || !self.budget.withdraw() {
            return None;
        }
        self.retries_left -= 1;
        tracing::debug!(kind = %err, "retrying upstream request");
        Some(std::future::ready(()))
    }

    fn clone_request(
        &mut self,
        req: &Request<ProxyRequestBody<B>>,
    ) -> Option<Request<ProxyRequestBody<B>>> {
        if self.retries_left == 0 {
            return None;
        }
        let body = req.body().try_clone()?;
        let mut clone = Request::new(body);
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.version_mut() = req.version();
        *clone.headers_mut() = req.headers().clone();
        *clone.extensions_mut() = req.extensions().clone();
        Some(clone)
    }
}
