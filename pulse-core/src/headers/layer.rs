//! [`StripHeadersLayer`]: apply a [`HeaderHygiene`] policy to a service's traffic.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{HeaderHygiene, strip_hop_by_hop, strip_reserved};

/// Strips headers from the requests a service receives, by a [`HeaderHygiene`]
/// policy; optionally strips hop-by-hop and reserved headers from its responses too.
/// Builds [`StripHeaders`].
#[derive(Clone, Copy, Debug, Default)]
pub struct StripHeadersLayer {
    policy: HeaderHygiene,
    responses: bool,
}

impl StripHeadersLayer {
    /// Strip requests by the default policy ([`HeaderHygiene::new`]).
    pub const fn new() -> Self {
        Self {
            policy: HeaderHygiene::new(),
            responses: false,
        }
    }

    /// Use this policy for requests.
    #[must_use]
    pub const fn with_policy(mut self, policy: HeaderHygiene) -> Self {
        self.policy = policy;
        self
    }

    /// Also strip hop-by-hop and reserved headers from responses (default `false`).
    #[must_use]
    pub const fn with_responses(mut self, strip: bool) -> Self {
        self.responses = strip;
        self
    }
}

impl<S> Layer<S> for StripHeadersLayer {
    type Service = StripHeaders<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StripHeaders {
            inner,
            policy: self.policy,
            responses: self.responses,
        }
    }
}

/// Middleware stripping headers; see [`StripHeadersLayer`].
#[derive(Clone, Debug)]
pub struct StripHeaders<S> {
    inner: S,
    policy: HeaderHygiene,
    responses: bool,
}

impl<S> StripHeaders<S> {
    /// Strip requests by the default policy.
    pub const fn new(inner: S) -> Self {
        Self {
            inner,
            policy: HeaderHygiene::new(),
            responses: false,
        }
    }

    /// A layer building this service.
    pub const fn layer() -> StripHeadersLayer {
        StripHeadersLayer::new()
    }

    /// The inner service.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consume this middleware, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for StripHeaders<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        self.policy.apply(req.headers_mut());
        ResponseFuture {
            inner: self.inner.call(req),
            responses: self.responses,
        }
    }
}

pin_project! {
    /// Response future of [`StripHeaders`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        responses: bool,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = ready!(this.inner.poll(cx));
        if *this.responses
            && let Ok(res) = &mut result
        {
            strip_hop_by_hop(res.headers_mut());
            strip_reserved(res.headers_mut());
        }
        Poll::Ready(result)
    }
}
