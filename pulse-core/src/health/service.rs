//! [`HealthService`]: serve an aggregator's report over HTTP.

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower_service::Service;

use super::HealthAggregator;

/// A tower service answering every request with the [`HealthReport`](super::HealthReport) of an
/// aggregator: mount it at `/health` (`Router::route_service("/health", ..)` in axum).
#[derive(Clone, Debug)]
pub struct HealthService {
    aggregator: Arc<HealthAggregator>,
}

impl HealthService {
    /// Serve this aggregator's report.
    pub fn new(aggregator: HealthAggregator) -> Self {
        Self::from_arc(Arc::new(aggregator))
    }

    /// Serve a shared aggregator's report.
    pub const fn from_arc(aggregator: Arc<HealthAggregator>) -> Self {
        Self { aggregator }
    }

    /// The aggregator.
    pub fn aggregator(&self) -> &HealthAggregator {
        &self.aggregator
    }
}

impl<B> Service<Request<B>> for HealthService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<B>) -> Self::Future {
        let aggregator = Arc::clone(&self.aggregator);
        ResponseFuture {
            inner: Box::pin(async move { Ok(aggregator.check().await.into_http_response()) }),
        }
    }
}

/// Response future of [`HealthService`]. (Boxed: the checks are boxed futures
/// already, and one health request is not a hot path.)
pub struct ResponseFuture {
    inner: BoxResponseFuture,
}

type BoxResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>>;

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<Full<Bytes>>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}
