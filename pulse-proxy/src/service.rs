//! [`Proxy`], the service, and [`ProxyLayer`].

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri, Version, header, request::Parts, uri};
use http_body::Body;
use pulse_core::{
    Identity, RequestId, ResponseBody,
    request_id::{X_CORRELATION_ID, X_REQUEST_ID},
};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    body::{LimitTripped, ProxyRequestBody, UpstreamBody},
    config::ProxyConfig,
    error::{BoxError, ProxyError},
    framing::check_framing,
    future::{CallContext, ResponseFuture, request_id_or_value},
    headers::{self, HostPolicy},
    path,
};

/// The body of the proxy's responses: the upstream's body streamed through, or the
/// proxy's own JSON error.
pub type ProxyResponseBody<B> = ResponseBody<UpstreamBody<B>>;

/// Builds a [`Proxy`] around a transport.
#[derive(Clone, Debug)]
pub struct ProxyLayer {
    config: Arc<ProxyConfig>,
}

impl ProxyLayer {
    /// A layer with this configuration.
    pub fn new(config: ProxyConfig) -> Self {
        Self {
            config: Arc::new(config),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }
}

impl<T> Layer<T> for ProxyLayer {
    type Service = Proxy<T>;

    fn layer(&self, inner: T) -> Self::Service {
        Proxy {
            inner,
            config: Arc::clone(&self.config),
            ready_error: None,
        }
    }
}

/// The reverse-proxy service: forwards each request over the transport `T` (any
/// `tower::Service<http::Request<ProxyRequestBody<B>>>`) after the checks, header
/// hygiene and injections of the crate docs, and answers every failure itself with a
/// JSON error, so its error type is [`Infallible`].
#[derive(Debug)]
pub struct Proxy<T> {
    inner: T,
    config: Arc<ProxyConfig>,
    ready_error: Option<ProxyError>,
}

impl<T: Clone> Clone for Proxy<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
            ready_error: None,
        }
    }
}

impl<T> Proxy<T> {
    /// A proxy over `transport`.
    pub fn new(transport: T, config: ProxyConfig) -> Self {
        ProxyLayer::new(config).layer(transport)
    }

    /// A [`ProxyLayer`] with this configuration.
    pub fn layer(config: ProxyConfig) -> ProxyLayer {
        ProxyLayer::new(config)
    }

    /// The configuration.
    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    /// The transport.
    pub const fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The transport, mutably.
    pub const fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// The transport.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T, B, RB> Service<Request<B>> for Proxy<T>
where
    T: Service<Request<ProxyRequestBody<B>>, Response = Response<RB>>,
    T::Error: Into<BoxError>,
    B: Body<Data = Bytes>,
    RB: Body<Data = Bytes>,
    RB::Error: Into<BoxError>,
{
    type Response = Response<ProxyResponseBody<RB>>;
    type Error = Infallible;
    type Future = ResponseFuture<T::Future, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.ready_error.is_some() {
            return Poll::Ready(Ok(()));
        }
        // A transport that cannot become ready (a closed buffer, a balancer without
        // endpoints) is answered per request, like `LoadShed` does, not as an `Err`.
        if let Poll::Ready(Err(e)) = self.inner.poll_ready(cx).map_err(Into::into) {
            self.ready_error = Some(ProxyError::classify(&*e));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let (request_id, request_id_value) = request_id(&parts);
        if let Some(err) = self.ready_error.take() {
            let request_id = request_id_or_value(request_id.as_ref(), &request_id_value);
            return ResponseFuture::answered(err, &request_id);
        }
        match prepare(&self.config, &mut parts, body, &request_id_value) {
            Ok((outbound, tripped, client_upgrade)) => {
                let started = Instant::now();
                let ctx = CallContext {
                    request_id,
                    request_id_value,
                    tripped,
                    deadline: self.config.total_timeout.map(|t| started + t),
                    client_upgrade,
                };
                ResponseFuture::waiting(
                    self.inner.call(outbound),
                    self.config.response_timeout.map(|t| started + t),
                    ctx,
                )
            }
            Err(err) => {
                let request_id = request_id_or_value(request_id.as_ref(), &request_id_value);
                ResponseFuture::answered(err, &request_id)
            }
        }
    }
}

/// The request's id (as [`RequestId::from_parts`] finds it, else a fresh one) and
/// its header value. An id read from a header reuses that header's value instead of
/// copying the text into a new one, and is returned as `None`: the value is the id,
/// parsed again only for an error answer.
fn request_id(parts: &Parts) -> (Option<RequestId>, HeaderValue) {
    if let Some(id) = parts.extensions.get::<RequestId>() {
        return (Some(id.clone()), id.to_header_value());
    }
    // The same lookup as `RequestId::from_headers`: the first of the two names with
    // exactly one value, and that value valid.
    for name in [X_REQUEST_ID, X_CORRELATION_ID] {
        let mut values = parts.headers.get_all(&name).iter();
        if let (Some(value), None) = (values.next(), values.next())
            && RequestId::is_valid(value.as_bytes())
        {
            let mut value = value.clone();
            // What `RequestId::to_header_value` would build: the same bytes, not
            // marked sensitive.
            value.set_sensitive(false);
            return (None, value);
        }
    }
    let id = RequestId::generate();
    let value = id.to_header_value();
    (Some(id), value)
}

type Prepared<B> = (
    Request<ProxyRequestBody<B>>,
    Option<LimitTripped>,
    Option<hyper::upgrade::OnUpgrade>,
);

/// Steps 1 to 5 of the crate docs, in that order, up to the outbound request.
fn prepare<B: Body>(
    config: &ProxyConfig,
    parts: &mut Parts,
    body: B,
    request_id: &HeaderValue,
) -> Result<Prepared<B>, ProxyError> {
    // 1. Framing, before anything reads the body.
    let content_length = check_framing(&parts.headers)?;
    // 2. Path checks on the raw path, then the rewrite; the query is kept verbatim.
    let path_and_query = path::rewrite(config.rewrite.as_ref(), parts.uri.path_and_query())?;
    if content_length.is_some_and(|n| n > config.max_request_body) {
        return Err(ProxyError::BodyTooLarge {
            limit: config.max_request_body,
        });
    }
    // What the injections need, read before the hygiene below removes it.
    let peer = headers::client_ip(&parts.extensions);
    let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let upgrade = config
        .upgrades
        .then(|| headers::upgrade_request(&parts.headers))
        .flatten();
    let wants_trailers = headers::accepts_trailers(&parts.headers);

    let mut out_headers = std::mem::take(&mut parts.headers);
    // Room for what step 4 inserts, so the map grows once, not once per insert.
    out_headers.reserve(8);
    // 3 + 4a. Hop-by-hop (incl. every `Connection` line's tokens) and reserved headers
    // go first, so nothing the client names can remove what is injected next.
    headers::strip_inbound(&mut out_headers, config.forward_authorization);
    config
        .forwarded
        .apply(&mut out_headers, peer, original_host.as_ref());
    // 4b. Injections, all with insert.
    headers::inject_identity(
        &mut out_headers,
        parts.extensions.get::<Identity>(),
        request_id,
    );
    match &config.host {
        HostPolicy::Upstream => {
            out_headers.insert(header::HOST, config.upstream_host.clone());
        }
        HostPolicy::Preserve => {
            if let Some(host) = original_host {
                out_headers.insert(header::HOST, host);
            }
        }
        HostPolicy::Fixed(host) => {
            out_headers.insert(header::HOST, host.clone());
        }
    }
    if wants_trailers {
        out_headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let client_upgrade = match upgrade {
        Some(protocol) => {
            let on_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
            if on_upgrade.is_some() {
                out_headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                out_headers.insert(header::UPGRADE, protocol);
            }
            on_upgrade
        }
        None => None,
    };

    // 5. The body streams through the limit; an empty one is not wrapped at all.
    let (body, tripped) = if content_length == Some(0) || body.is_end_stream() {
        (ProxyRequestBody::empty(), None)
    } else {
        let (body, tripped) = ProxyRequestBody::streaming(body, config.max_request_body);
        (body, Some(tripped))
    };

    let mut uri_parts = uri::Parts::default();
    uri_parts.scheme = Some(config.scheme.clone());
    uri_parts.authority = Some(config.authority.clone());
    uri_parts.path_and_query = Some(path_and_query);
    let uri = Uri::from_parts(uri_parts).map_err(|_| ProxyError::UnsafePath {
        reason: "invalid outbound URI",
    })?;
    let mut outbound = Request::new(body);
    *outbound.method_mut() = parts.method.clone();
    *outbound.uri_mut() = uri;
    *outbound.version_mut() = Version::HTTP_11;
    *outbound.headers_mut() = out_headers;
    // Only the verified identity travels as an extension, for client layers such as
    // pulse-core's `InternalCredentialLayer` that mint a token per identity. Network
    // transports cannot carry it; `InProcessTransport` drops it.
    if parts.extensions.len() == 1 && parts.extensions.get::<Identity>().is_some() {
        // The identity is the only extension left: move the whole map instead of
        // allocating a new one for it.
        *outbound.extensions_mut() = std::mem::take(&mut parts.extensions);
    } else if let Some(identity) = parts.extensions.remove::<Identity>() {
        outbound.extensions_mut().insert(identity);
    }
    Ok((outbound, tripped, client_upgrade))
}
