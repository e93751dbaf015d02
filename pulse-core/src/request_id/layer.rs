//! The layers: [`RequestIdLayer`] for servers, [`SetRequestIdLayer`] for clients.

use tower_layer::Layer;

use super::service::{RequestIdService, SetRequestId};

/// How a [`RequestIdService`] treats an inbound correlation id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Keep a valid inbound id; generate one when it is absent or invalid.
    #[default]
    Accept,
    /// Always generate; a valid inbound id is only logged as `client_request_id`.
    Edge,
}

/// Gives every request a correlation id, a tracing span that carries it, and echoes it
/// on the response. Builds [`RequestIdService`].
///
/// - [`RequestIdLayer::new`]: for services behind a trusted hop — a valid inbound
///   `X-Request-ID` (else `X-Correlation-ID`) is kept, anything else replaced by a fresh
///   UUIDv7.
/// - [`RequestIdLayer::edge`]: for the service facing the internet — the id is always
///   generated, and a valid client value is kept only as the span field
///   `client_request_id`, so a client cannot choose the id other services log.
///
/// See the [module documentation](crate::request_id) for an example.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestIdLayer {
    mode: Mode,
}

impl RequestIdLayer {
    /// Accept a valid inbound id, generate one otherwise.
    pub const fn new() -> Self {
        Self { mode: Mode::Accept }
    }

    /// Always generate the id; log a valid client value as `client_request_id`.
    pub const fn edge() -> Self {
        Self { mode: Mode::Edge }
    }

    /// Whether this layer runs in edge mode.
    pub const fn is_edge(&self) -> bool {
        matches!(self.mode, Mode::Edge)
    }
}

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService::with_mode(inner, self.mode)
    }
}

/// Sets the correlation id on outbound requests, under both `X-Request-ID` and
/// `X-Correlation-ID` (replacing any value already there). Builds [`SetRequestId`].
///
/// The id is the request's [`RequestId`](super::RequestId) extension when it has one,
/// else the id of the inbound request being served on this task
/// ([`RequestId::current`](super::RequestId::current)). With neither, the request is
/// left as it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetRequestIdLayer {
    _priv: (),
}

impl SetRequestIdLayer {
    /// A new layer.
    pub const fn new() -> Self {
        Self { _priv: () }
    }
}

impl<S> Layer<S> for SetRequestIdLayer {
    type Service = SetRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetRequestId::new(inner)
    }
}
