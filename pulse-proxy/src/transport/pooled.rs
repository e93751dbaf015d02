//! [`HttpTransport`]: pooled upstream connections behind a fail-fast in-flight cap.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{
    Request, Response, Uri,
    uri::{Authority, Scheme},
};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{
        Client, ResponseFuture as ClientFuture,
        connect::{Connect, HttpConnector},
    },
    rt::{TokioExecutor, TokioTimer},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

use super::{
    TransportConfig,
    http1::{self, Exchange, Http1Pool, Lease},
};
use crate::{
    body::BodyWatch,
    error::{BoxError, ProxyError},
};

/// The pooled HTTP transport: keep-alive pools of upstream connections (HTTP/1.1 or
/// HTTP/2) with a hard cap on requests in flight that fails fast.
///
/// `B` is the request body type; `C` the connector (plain TCP by default, rustls with
/// `HttpTransport::https` (feature `tls`), a Unix socket in [`UnixTransport`](super::UnixTransport)).
/// Clones share the pools and the cap.
///
/// Two engines share the cap:
/// - `http://` upstreams, from [`new`](Self::new) and `https` (unless
///   [`with_http2_only`](TransportConfig::with_http2_only)), go over HTTP/1.1 on hyper's
///   connection API with the pool kept here: each upstream connection is polled by the
///   task of the request that holds it, from the request head to the end of the
///   response body, with no connection task and no channel in between;
/// - everything else (`https://`, HTTP/2, a connector of your own) goes through
///   hyper-util's client, which negotiates HTTP/2 by ALPN and multiplexes it.
pub struct HttpTransport<B, C = HttpConnector> {
    client: Client<C, B>,
    http1: Option<Http1Pool<B>>,
    in_flight: Arc<Semaphore>,
    config: TransportConfig,
    pinned: Option<(Scheme, Authority)>,
}

impl<B, C: Clone> Clone for HttpTransport<B, C> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            http1: self.http1.clone(),
            in_flight: Arc::clone(&self.in_flight),
            config: self.config.clone(),
            pinned: self.pinned.clone(),
        }
    }
}

impl<B, C> fmt::Debug for HttpTransport<B, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport")
            .field("config", &self.config)
            .field("available", &self.in_flight.available_permits())
            .finish_non_exhaustive()
    }
}

impl<B> HttpTransport<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// A plain-TCP transport.
    pub fn new(config: TransportConfig) -> Self {
        Self::with_connector(tcp_connector(&config), config).with_http1_engine()
    }
}

pub(crate) fn tcp_connector(config: &TransportConfig) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(config.connect_timeout);
    http.set_nodelay(true);
    http
}

#[cfg(feature = "tls")]
impl<B> HttpTransport<B, hyper_rustls::HttpsConnector<HttpConnector>>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// A transport that speaks TLS (rustls) to `https://` upstreams and plain TCP to
    /// `http://` ones. The rustls config carries the trusted roots (and a client
    /// certificate for mutual TLS); ALPN is set for HTTP/1.1 and HTTP/2.
    pub fn https(config: TransportConfig, tls: rustls::ClientConfig) -> Self {
        let mut http = tcp_connector(&config);
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Self::with_connector(https, config).with_http1_engine()
    }
}

impl<B, C> HttpTransport<B, C>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// A transport over any hyper-util connector.
    pub fn with_connector(connector: C, config: TransportConfig) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(config.max_idle_per_host)
            .pool_idle_timeout(config.idle_timeout)
            .http2_only(config.http2_only)
            .build(connector);
        Self {
            client,
            http1: None,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            pinned: None,
        }
    }
}

impl<B, C> HttpTransport<B, C>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// `http://` requests over the HTTP/1 engine, unless HTTP/2 is asked for.
    fn with_http1_engine(self) -> Self {
        let tcp = tcp_connector(&self.config);
        self.with_http1_connector(tcp)
    }

    /// `http://` requests over the HTTP/1 engine and `connector`, unless HTTP/2 is
    /// asked for.
    pub(super) fn with_http1_connector<K>(mut self, connector: K) -> Self
    where
        K: Service<Uri> + Clone + Send + Sync + 'static,
        K::Response: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
        K::Future: Send,
        K::Error: Into<BoxError>,
    {
        if !self.config.http2_only {
            self.http1 = Some(Http1Pool::new(
                connector,
                self.config.max_idle_per_host,
                self.config.idle_timeout,
            ));
        }
        self
    }
}

impl<B, C> HttpTransport<B, C> {
    /// Send every request to `upstream`'s scheme and authority, whatever its URI says
    /// (the `Host` header is left alone). For one transport per instance under
    /// [`balance`](crate::balance). A URI without scheme or authority is ignored.
    #[must_use]
    pub fn with_upstream(mut self, upstream: Uri) -> Self {
        let parts = upstream.into_parts();
        self.pinned = parts.scheme.zip(parts.authority);
        self
    }

    /// The settings.
    pub const fn config(&self) -> &TransportConfig {
        &self.config
    }

    /// How many more requests may start now.
    pub fn available(&self) -> usize {
        self.in_flight.available_permits()
    }
}

impl<B, C> Service<Request<B>> for HttpTransport<B, C>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<TransportBody>;
    type Error = ProxyError;
    type Future = TransportFuture;

    /// Always ready: a full transport fails in `call`, it never queues.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Some((scheme, authority)) = &self.pinned {
            let mut parts = std::mem::take(req.uri_mut()).into_parts();
            parts.scheme = Some(scheme.clone());
            parts.authority = Some(authority.clone());
            match Uri::from_parts(parts) {
                Ok(uri) => *req.uri_mut() = uri,
                Err(_) => {
                    return TransportFuture::failed(ProxyError::Protocol);
                }
            }
        }
        let Ok(permit) = Arc::clone(&self.in_flight).try_acquire_owned() else {
            return TransportFuture::failed(ProxyError::PoolExhausted);
        };
        // Set by the proxy for a streamed client body.
        let body_watch = req.extensions().get::<BodyWatch>().cloned();
        let (inner, permit) = match &self.http1 {
            // The exchange holds the permit: also while a task finishes it for a client
            // that went away.
            Some(pool) if http1::is_plain_http(req.uri()) => {
                (Engine::Http1(pool.send(req, permit)), None)
            }
            _ => (Engine::Client(self.client.request(req)), Some(permit)),
        };
        TransportFuture {
            inner,
            permit,
            body_watch,
        }
    }
}

/// The response future of the pooled transports.
pub struct TransportFuture {
    inner: Engine,
    permit: Option<OwnedSemaphorePermit>,
    body_watch: Option<BodyWatch>,
}

enum Engine {
    Http1(Exchange),
    Client(ClientFuture),
    Failed(Option<ProxyError>),
}

impl TransportFuture {
    const fn failed(error: ProxyError) -> Self {
        Self {
            inner: Engine::Failed(Some(error)),
            permit: None,
            body_watch: None,
        }
    }

    /// The client's body fault first: HTTP/2 reports a request body that failed as a
    /// reset stream, and HTTP/1 as a user-body error, without the cause.
    fn fault(&self, err: ProxyError) -> ProxyError {
        self.body_watch
            .as_ref()
            .and_then(BodyWatch::fault)
            .unwrap_or(err)
    }
}

impl fmt::Debug for TransportFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportFuture").finish_non_exhaustive()
    }
}

impl Future for TransportFuture {
    type Output = Result<Response<TransportBody>, ProxyError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (res, lease) = match &mut self.inner {
            Engine::Failed(error) => {
                return Poll::Ready(Err(error.take().unwrap_or(ProxyError::PoolExhausted)));
            }
            Engine::Http1(exchange) => match exchange.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok((res, lease, permit))) => {
                    self.permit = permit;
                    (res, lease)
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(self.fault(err))),
            },
            Engine::Client(inner) => match Pin::new(inner).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(res)) => (res, None),
                Poll::Ready(Err(e)) => {
                    let err = self.fault(ProxyError::classify(&e));
                    tracing::debug!(error = %e, kind = %err, "transport request failed");
                    return Poll::Ready(Err(err));
                }
            },
        };
        let permit = self.permit.take();
        Poll::Ready(Ok(res.map(|body| TransportBody {
            body: Some(body),
            permit,
            lease,
        })))
    }
}

/// A pooled transport's response body. It holds the in-flight permit until the body
/// ends or is dropped, and (HTTP/1 engine) drives its upstream connection, which goes
/// back to the pool at the end of the body. Dropped before its end, it leaves the rest
/// (at most 64 KiB, 2 s) to a task that then puts the connection back, permit held.
pub struct TransportBody {
    /// Always there until the body is dropped.
    body: Option<Incoming>,
    permit: Option<OwnedSemaphorePermit>,
    lease: Option<Lease>,
}

impl fmt::Debug for TransportBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportBody").finish_non_exhaustive()
    }
}

impl TransportBody {
    fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = Pin::new(&mut *body).poll_frame(cx);
        if frame.is_ready() {
            return frame;
        }
        match self.lease.as_mut() {
            // Reads what the body waits for; a closed connection ends the body, which
            // the second poll then sees.
            Some(lease) => {
                if !lease.drive(cx) {
                    self.lease = None;
                }
                Pin::new(body).poll_frame(cx)
            }
            None => Poll::Pending,
        }
    }
}

impl Body for TransportBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = this.poll_body(cx);
        match &frame {
            Poll::Ready(None) => {
                this.permit.take();
                if let Some(lease) = this.lease.take() {
                    lease.release();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                this.permit.take();
                this.lease.take();
            }
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for TransportBody {
    fn drop(&mut self) {
        // A body read to its end (or one with nothing to read, which a server does not
        // poll) leaves its connection ready for the next request; the rest of another
        // is read by a task (bounded) so that its connection can be kept.
        if let (Some(lease), Some(body)) = (self.lease.take(), self.body.take()) {
            if body.is_end_stream() {
                lease.release();
            } else {
                lease.finish(body, self.permit.take());
            }
        }
    }
}
