//! The services: [`RequestIdService`] for servers, [`SetRequestId`] for clients.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;
use tracing::{Instrument, field};

use super::{
    CURRENT, RequestId,
    future::ResponseFuture,
    layer::{Mode, RequestIdLayer, SetRequestIdLayer},
};

/// Middleware giving every request a correlation id; see [`RequestIdLayer`].
///
/// For each request it:
/// 1. chooses the id (kept from a valid inbound header, or generated — always
///    generated in edge mode);
/// 2. writes it back onto the request under `X-Request-ID` and `X-Correlation-ID`
///    (so an invalid or client-chosen value never reaches the handler) and inserts it
///    as a [`RequestId`] extension;
/// 3. runs the inner service inside a `request` span with the fields `request_id`,
///    `method`, `path`, `client_request_id` (edge mode) and `user_id` (declared empty;
///    an authentication layer records it with [`record_user_id`](super::record_user_id));
/// 4. makes the id [`RequestId::current`] for the inner service's call and future;
/// 5. inserts `X-Request-ID` on the response.
#[derive(Clone, Debug)]
pub struct RequestIdService<S> {
    inner: S,
    mode: Mode,
}

impl<S> RequestIdService<S> {
    /// Accept a valid inbound id, generate one otherwise.
    pub const fn new(inner: S) -> Self {
        Self::with_mode(inner, Mode::Accept)
    }

    /// Edge mode: always generate the id (see [`RequestIdLayer::edge`]).
    pub const fn edge(inner: S) -> Self {
        Self::with_mode(inner, Mode::Edge)
    }

    pub(crate) const fn with_mode(inner: S, mode: Mode) -> Self {
        Self { inner, mode }
    }

    /// A layer building this service (accepting valid inbound ids).
    pub const fn layer() -> RequestIdLayer {
        RequestIdLayer::new()
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestIdService<S>
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
        let inbound = RequestId::from_headers(req.headers());
        let (id, client_id) = match self.mode {
            Mode::Accept => (inbound.unwrap_or_else(RequestId::generate), None),
            Mode::Edge => (RequestId::generate(), inbound),
        };
        let span = tracing::info_span!(
            "request",
            request_id = %id,
            method = %req.method(),
            path = %req.uri().path(),
            client_request_id = field::Empty,
            user_id = field::Empty,
        );
        if let Some(client_id) = &client_id {
            span.record("client_request_id", field::display(client_id));
        }
        id.set_on(req.headers_mut());
        req.extensions_mut().insert(id.clone());

        let inner = &mut self.inner;
        let future = {
            // Entered for the synchronous part of the call too, so that layers below
            // can record `user_id` on `Span::current()`.
            let _entered = span.enter();
            CURRENT.sync_scope(id.clone(), || inner.call(req))
        };
        ResponseFuture::new(future.instrument(span), id)
    }
}

/// Client middleware setting the correlation id on outbound requests; see
/// [`SetRequestIdLayer`].
///
/// The id is, in order of preference: the request's [`RequestId`] extension, a valid id
/// already in its headers, or [`RequestId::current`]. It is written under both
/// `X-Request-ID` and `X-Correlation-ID` with [`RequestId::set_on`].
#[derive(Clone, Debug)]
pub struct SetRequestId<S> {
    inner: S,
}

impl<S> SetRequestId<S> {
    /// Wrap a client service.
    pub const fn new(inner: S) -> Self {
        Self { inner }
    }

    /// A layer building this service.
    pub const fn layer() -> SetRequestIdLayer {
        SetRequestIdLayer::new()
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

impl<S, ReqBody> Service<Request<ReqBody>> for SetRequestId<S>
where
    S: Service<Request<ReqBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let id = req
            .extensions()
            .get::<RequestId>()
            .cloned()
            .or_else(|| RequestId::from_headers(req.headers()))
            .or_else(RequestId::current);
        if let Some(id) = id {
            id.set_on(req.headers_mut());
        }
        self.inner.call(req)
    }
}
