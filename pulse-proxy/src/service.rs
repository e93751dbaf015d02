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
    body::{BodyWatch, ProxyRequestBody, UpstreamBody},
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
            readiness: Readiness::Unknown,
        }
    }
}

/// What the last `poll_ready` learnt about the transport, for the next `call`.
#[derive(Debug)]
enum Readiness {
    /// Not polled since the last call (or a fresh clone): the transport may not be
    /// called.
    Unknown,
    /// The transport said ready: the next call may use it.
    Ready,
    /// The transport said pending (full buffer, concurrency limit reached).
    NotReady,
    /// The transport failed (a closed buffer); the next call is answered with this.
    Failed(ProxyError),
}

/// The reverse-proxy service: forwards each request over the transport `T` (any
/// `tower::Service<http::Request<ProxyRequestBody<B>>>`) after the checks, header
/// hygiene and injections of the crate docs, and answers every failure itself with a
/// JSON error, so its error type is [`Infallible`].
///
/// # Readiness
///
/// Like tower's `LoadShed`, the proxy never makes its caller wait and never calls a
/// transport that is not ready. `poll_ready` polls the transport, records the answer
/// and always returns `Ready(Ok(()))`; `call` then forwards only if the transport said
/// ready. A transport that was pending (a full `Buffer`, a `ConcurrencyLimit` at its
/// limit) gets its request answered `503 overloaded` with `Retry-After: 1`, one that
/// failed (a closed buffer) gets the classified error, and neither is called. A
/// `call` without a `poll_ready` since the last one, and a clone (which does not
/// inherit the original's readiness), are answered `503 overloaded` too.
///
/// ```
/// use std::convert::Infallible;
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Empty;
/// use pulse_proxy::{Proxy, ProxyConfig, ProxyRequestBody, transport::InProcessTransport};
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let upstream = tower::service_fn(|_: Request<ProxyRequestBody<Empty<Bytes>>>| {
///     std::future::pending::<Result<Response<Empty<Bytes>>, Infallible>>()
/// });
/// // One request at a time may reach the upstream.
/// let transport = ServiceBuilder::new()
///     .concurrency_limit(1)
///     .service(InProcessTransport::new(upstream));
/// let mut proxy = Proxy::new(transport, ProxyConfig::new("http://etl:8001".parse()?)?);
///
/// let first = proxy.ready().await?.call(Request::new(Empty::new()));
/// // The first request holds the only permit: the next one is shed, not queued.
/// let second = proxy.ready().await?.call(Request::new(Empty::new())).await?;
/// assert_eq!(second.status(), 503);
/// assert_eq!(second.headers()["retry-after"], "1");
/// # drop(first);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Proxy<T> {
    inner: T,
    config: Arc<ProxyConfig>,
    readiness: Readiness,
}

impl<T: Clone> Clone for Proxy<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
            // The transport's clone has not been polled: readiness is not inherited.
            readiness: Readiness::Unknown,
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
        // Never make the caller wait (tower's `LoadShed` discipline): a transport that
        // is not ready, or cannot become ready (a closed buffer), is answered per
        // request in `call`, not by holding the caller or failing the service.
        if !matches!(self.readiness, Readiness::Ready) {
            self.readiness = match self.inner.poll_ready(cx) {
                Poll::Ready(Ok(())) => Readiness::Ready,
                Poll::Pending => Readiness::NotReady,
                Poll::Ready(Err(e)) => Readiness::Failed(ProxyError::classify(&*e.into())),
            };
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let (request_id, request_id_value) = request_id(&parts);
        let refusal = match std::mem::replace(&mut self.readiness, Readiness::Unknown) {
            Readiness::Ready => None,
            Readiness::Unknown | Readiness::NotReady => Some(ProxyError::Overloaded),
            Readiness::Failed(err) => Some(err),
        };
        if let Some(err) = refusal {
            tracing::debug!(kind = %err, "transport not ready: request shed");
            let request_id = request_id_or_value(request_id.as_ref(), &request_id_value);
            return ResponseFuture::answered(err, &request_id);
        }
        match prepare(&self.config, &mut parts, body, &request_id_value) {
            Ok((outbound, body_watch, client_upgrade)) => {
                let started = Instant::now();
                let ctx = CallContext {
                    request_id,
                    request_id_value,
                    body_watch,
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
    Option<BodyWatch>,
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
    let (body, body_watch) = if content_length == Some(0) || body.is_end_stream() {
        (ProxyRequestBody::empty(), None)
    } else {
        let (body, watch) = ProxyRequestBody::streaming(body, config.max_request_body);
        (body, Some(watch))
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
    // The body's fault flag travels too, so that the pooled transports report a body
    // the client broke off as the client's fault even when the HTTP stack words it as
    // its own error (HTTP/2 resets the stream and drops the cause); a circuit breaker
    // between the proxy and the transport then sees that. The type is private: no one
    // else can read or forge it.
    if let Some(watch) = &body_watch {
        outbound.extensions_mut().insert(watch.clone());
    }
    Ok((outbound, body_watch, client_upgrade))
}
