//! [`UnixTransport`]: the pooled client over a Unix-domain socket.

use std::{
    fmt,
    future::Future,
    io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response, Uri};
use http_body::Body;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tower_service::Service;

use super::{HttpTransport, TransportBody, TransportConfig, TransportFuture};
use crate::error::{BoxError, ProxyError};

/// A hyper-util connector that opens every connection to one socket path, whatever
/// the request URI's authority (which still becomes the `Host`).
#[derive(Clone, Debug)]
pub struct UnixConnector {
    path: Arc<Path>,
    connect_timeout: Option<Duration>,
}

impl UnixConnector {
    /// A connector to the socket at `path`.
    pub fn new(path: impl Into<PathBuf>, connect_timeout: Option<Duration>) -> Self {
        Self {
            path: Arc::from(path.into()),
            connect_timeout,
        }
    }
}

impl Service<Uri> for UnixConnector {
    type Response = TokioIo<UnixStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let path = Arc::clone(&self.path);
        let timeout = self.connect_timeout;
        Box::pin(async move {
            let connect = UnixStream::connect(&*path);
            let stream = match timeout {
                Some(t) => tokio::time::timeout(t, connect).await.map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "unix connect timed out")
                })??,
                None => connect.await?,
            };
            Ok(TokioIo::new(stream))
        })
    }
}

/// The pooled transport over a Unix-domain socket: same engines, cap and timeouts as
/// [`HttpTransport`]. Give the proxy an `http://` upstream URI; its authority is only
/// used as the `Host`.
pub struct UnixTransport<B> {
    inner: HttpTransport<B, UnixConnector>,
}

impl<B> Clone for UnixTransport<B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<B> fmt::Debug for UnixTransport<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("UnixTransport").field(&self.inner).finish()
    }
}

impl<B> UnixTransport<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// A transport to the socket at `path`.
    pub fn new(path: impl Into<PathBuf>, config: TransportConfig) -> Self {
        let connector = UnixConnector::new(path, config.connect_timeout);
        Self {
            inner: HttpTransport::with_connector(connector.clone(), config)
                .with_http1_connector(connector),
        }
    }

    /// How many more requests may start now.
    pub fn available(&self) -> usize {
        self.inner.available()
    }
}

impl<B> Service<Request<B>> for UnixTransport<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<TransportBody>;
    type Error = ProxyError;
    type Future = TransportFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.inner.call(req)
    }
}
