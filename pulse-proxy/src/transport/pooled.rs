//! [`HttpTransport`]: hyper-util's pooled client behind a fail-fast in-flight cap.

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
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

use super::TransportConfig;
use crate::{
    body::BodyWatch,
    error::{BoxError, ProxyError},
};

/// The pooled HTTP transport: hyper-util's legacy client (keep-alive pool, HTTP/1.1
/// or HTTP/2) with a hard cap on requests in flight that fails fast.
///
/// `B` is the request body type; `C` the connector (plain TCP by default, rustls with
/// `HttpTransport::https` (feature `tls`), a Unix socket in [`UnixTransport`](super::UnixTransport)).
/// Clones share the pool and the cap.
pub struct HttpTransport<B, C = HttpConnector> {
    client: Client<C, B>,
    in_flight: Arc<Semaphore>,
    config: TransportConfig,
    pinned: Option<(Scheme, Authority)>,
}

impl<B, C: Clone> Clone for HttpTransport<B, C> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
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
        Self::with_connector(tcp_connector(&config), config)
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
        Self::with_connector(https, config)
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
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            pinned: None,
        }
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
        match Arc::clone(&self.in_flight).try_acquire_owned() {
            Ok(permit) => TransportFuture {
                // Set by the proxy for a streamed client body.
                body_watch: req.extensions().get::<BodyWatch>().cloned(),
                inner: Some(self.client.request(req)),
                permit: Some(permit),
                error: None,
            },
            Err(_) => TransportFuture::failed(ProxyError::PoolExhausted),
        }
    }
}

/// The response future of the pooled transports.
pub struct TransportFuture {
    inner: Option<ClientFuture>,
    permit: Option<OwnedSemaphorePermit>,
    error: Option<ProxyError>,
    body_watch: Option<BodyWatch>,
}

impl TransportFuture {
    const fn failed(error: ProxyError) -> Self {
        Self {
            inner: None,
            permit: None,
            error: Some(error),
            body_watch: None,
        }
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
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(Err(self.error.take().unwrap_or(ProxyError::PoolExhausted)));
        };
        match Pin::new(inner).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(res)) => {
                let permit = self.permit.take();
                Poll::Ready(Ok(res.map(|body| TransportBody { body, permit })))
            }
            Poll::Ready(Err(e)) => {
                // The client's body fault first: HTTP/2 reports a request body that
                // failed as a reset stream, without the cause.
                let err = self
                    .body_watch
                    .as_ref()
                    .and_then(BodyWatch::fault)
                    .unwrap_or_else(|| ProxyError::classify(&e));
                tracing::debug!(error = %e, kind = %err, "transport request failed");
                Poll::Ready(Err(err))
            }
        }
    }
}

pin_project! {
    /// A pooled transport's response body; it holds the in-flight permit until the
    /// body ends or is dropped.
    pub struct TransportBody {
        #[pin]
        body: Incoming,
        permit: Option<OwnedSemaphorePermit>,
    }
}

impl fmt::Debug for TransportBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportBody").finish_non_exhaustive()
    }
}

impl Body for TransportBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let frame = this.body.poll_frame(cx);
        if matches!(frame, Poll::Ready(None | Some(Err(_)))) {
            this.permit.take();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
