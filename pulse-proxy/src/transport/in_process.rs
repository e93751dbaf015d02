//! [`InProcessTransport`]: the upstream is a tower service in the same process.

use std::task::{Context, Poll};

use http::Request;
use tower_service::Service;

/// Calls any tower service (the ETL router itself, a test double) directly: no
/// socket, no serialisation. The request is the same one a network transport would
/// send: absolute URI, filtered and injected headers, and no extensions (this
/// transport clears the few the proxy passes to client layers), so the upstream trusts
/// only what would have crossed the wire.
#[derive(Clone, Debug)]
pub struct InProcessTransport<S> {
    inner: S,
}

impl<S> InProcessTransport<S> {
    /// Wrap a service.
    pub const fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The wrapped service.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for InProcessTransport<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        req.extensions_mut().clear();
        self.inner.call(req)
    }
}
