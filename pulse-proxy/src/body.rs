//! Request and response bodies of the proxy: streamed frame by frame, never collected,
//! with the request-body limit and the total deadline enforced on the way.

use std::{
    error::Error as StdError,
    fmt,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use crate::error::{BoxError, ProxyError, TimeoutPhase};

/// The error a request body yields once it has grown past the proxy's limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLimitExceeded {
    limit: u64,
}

impl BodyLimitExceeded {
    /// The limit in bytes.
    pub const fn limit(&self) -> u64 {
        self.limit
    }

    pub(crate) fn limit_of(err: &(dyn StdError + 'static)) -> Option<u64> {
        err.downcast_ref::<Self>().map(|e| e.limit)
    }
}

impl fmt::Display for BodyLimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request body larger than {} bytes", self.limit)
    }
}

impl StdError for BodyLimitExceeded {}

/// The error a request body yields when the client's own body fails while the proxy
/// streams it upstream: a malformed chunk (`Transfer-Encoding: chunked` with a chunk
/// size of `ZZ`), a connection closed or reset mid-body, a body shorter than its
/// `Content-Length`.
///
/// It wraps the client body's error (its [`source`](StdError::source)) and stays
/// findable in the source chain of whatever the transport returns: hyper reports a
/// failed request body as its "user body" error with this one as the cause.
/// [`ProxyError::classify`] maps it to [`ProxyError::InvalidBody`] (400
/// `invalid_body`), which is never an upstream fault and so never counts against a
/// circuit breaker.
///
/// ```
/// use std::error::Error;
/// use pulse_proxy::{ProxyError, body::ClientBodyError};
///
/// let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
/// let err = ClientBodyError::new(reset);
/// assert!(err.source().is_some());
/// // Even a reset, which from the upstream would be a fault, is the client's here.
/// assert_eq!(ProxyError::classify(&err), ProxyError::InvalidBody);
/// assert!(!ProxyError::InvalidBody.is_upstream_fault());
/// ```
#[derive(Debug)]
pub struct ClientBodyError {
    source: BoxError,
}

impl ClientBodyError {
    /// Wraps the client body's error.
    pub fn new(source: impl Into<BoxError>) -> Self {
        Self {
            source: source.into(),
        }
    }

    /// The client body's error, consuming this one.
    pub fn into_source(self) -> BoxError {
        self.source
    }
}

impl fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("client request body failed")
    }
}

impl StdError for ClientBodyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// What went wrong with a streamed request body, if anything: shared between the body
/// (which sets it) and the response future and transport (which read it), so that
/// the client's fault decides the answer even when the transport reports the aborted
/// body in its own words (a reset HTTP/2 stream, an upstream answer to a truncated
/// body).
#[derive(Clone, Debug)]
pub(crate) struct BodyWatch {
    fault: Arc<AtomicU8>,
    limit: u64,
}

const NO_FAULT: u8 = 0;
const OVER_LIMIT: u8 = 1;
const CLIENT_FAILED: u8 = 2;

impl BodyWatch {
    fn set(&self, fault: u8) {
        // The first fault wins; a limit trip is final.
        let _ = self
            .fault
            .compare_exchange(NO_FAULT, fault, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The client's fault, as the error the proxy answers with.
    pub(crate) fn fault(&self) -> Option<ProxyError> {
        match self.fault.load(Ordering::Acquire) {
            OVER_LIMIT => Some(ProxyError::BodyTooLarge { limit: self.limit }),
            CLIENT_FAILED => Some(ProxyError::InvalidBody),
            _ => None,
        }
    }
}

pin_project! {
    /// The body of the request the proxy sends upstream: the client's body streamed
    /// through a size limit, or a small buffered copy that can be sent again.
    ///
    /// A streamed body fails with [`BodyLimitExceeded`] past the limit and with
    /// [`ClientBodyError`] when the client's body itself fails, so the client's
    /// faults stay distinguishable from the upstream's.
    pub struct ProxyRequestBody<B> {
        #[pin]
        kind: ReqKind<B>,
    }
}

pin_project! {
    #[project = ReqKindProj]
    enum ReqKind<B> {
        Empty,
        Buffered { data: Option<Bytes> },
        Streaming {
            #[pin]
            body: B,
            remaining: u64,
            limit: u64,
            watch: BodyWatch,
        },
    }
}

impl<B> fmt::Debug for ProxyRequestBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            ReqKind::Empty => "empty",
            ReqKind::Buffered { .. } => "buffered",
            ReqKind::Streaming { .. } => "streaming",
        };
        f.debug_struct("ProxyRequestBody")
            .field("kind", &kind)
            .finish()
    }
}

impl<B> ProxyRequestBody<B> {
    /// An empty body.
    pub const fn empty() -> Self {
        Self {
            kind: ReqKind::Empty,
        }
    }

    /// A complete body held in memory; it can be cloned for a retry.
    pub fn buffered(data: Bytes) -> Self {
        if data.is_empty() {
            return Self::empty();
        }
        Self {
            kind: ReqKind::Buffered { data: Some(data) },
        }
    }

    /// The client's body, streamed, failing with [`BodyLimitExceeded`] past `limit`
    /// and with [`ClientBodyError`] when the client's body fails.
    pub(crate) fn streaming(body: B, limit: u64) -> (Self, BodyWatch) {
        let watch = BodyWatch {
            fault: Arc::new(AtomicU8::new(NO_FAULT)),
            limit,
        };
        let this = Self {
            kind: ReqKind::Streaming {
                body,
                remaining: limit,
                limit,
                watch: watch.clone(),
            },
        };
        (this, watch)
    }

    /// A copy for sending again, when the body is empty or buffered.
    pub fn try_clone(&self) -> Option<Self> {
        match &self.kind {
            ReqKind::Empty => Some(Self::empty()),
            ReqKind::Buffered { data } => Some(Self {
                kind: ReqKind::Buffered { data: data.clone() },
            }),
            ReqKind::Streaming { .. } => None,
        }
    }
}

impl<B> Body for ProxyRequestBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            ReqKindProj::Empty => Poll::Ready(None),
            ReqKindProj::Buffered { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ReqKindProj::Streaming {
                body,
                remaining,
                limit,
                watch,
            } => {
                let frame = match ready!(body.poll_frame(cx)) {
                    None => return Poll::Ready(None),
                    Some(Err(e)) => {
                        watch.set(CLIENT_FAILED);
                        return Poll::Ready(Some(Err(Box::new(ClientBodyError::new(e)))));
                    }
                    Some(Ok(frame)) => frame,
                };
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > *remaining {
                        watch.set(OVER_LIMIT);
                        return Poll::Ready(Some(Err(Box::new(BodyLimitExceeded {
                            limit: *limit,
                        }))));
                    }
                    *remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            ReqKind::Empty => true,
            ReqKind::Buffered { data } => data.is_none(),
            ReqKind::Streaming { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ReqKind::Empty => SizeHint::with_exact(0),
            ReqKind::Buffered { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ReqKind::Streaming { body, .. } => body.size_hint(),
        }
    }
}

pin_project! {
    /// The upstream's response body, streamed to the client. Upstream errors become a
    /// bare [`ProxyError::Protocol`] (their text is logged, never sent), and an optional
    /// total deadline ends the stream with [`ProxyError::Timeout`].
    pub struct UpstreamBody<B> {
        #[pin]
        body: B,
        deadline: Option<Pin<Box<Sleep>>>,
    }
}

impl<B> fmt::Debug for UpstreamBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("deadline", &self.deadline.is_some())
            .finish_non_exhaustive()
    }
}

impl<B> UpstreamBody<B> {
    /// Wrap an upstream body; `deadline` ends it with a timeout error.
    pub(crate) const fn new(body: B, deadline: Option<Pin<Box<Sleep>>>) -> Self {
        Self { body, deadline }
    }

    /// The wrapped body.
    pub fn into_inner(self) -> B {
        self.body
    }
}

impl<B> Body for UpstreamBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = ProxyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        let this = self.project();
        if let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Some(Err(ProxyError::Timeout {
                phase: TimeoutPhase::Total,
            })));
        }
        match ready!(this.body.poll_frame(cx)) {
            Some(Err(e)) => {
                let e: BoxError = e.into();
                tracing::debug!(error = %e, "upstream response body failed");
                Poll::Ready(Some(Err(ProxyError::Protocol)))
            }
            other => Poll::Ready(other.map(|r| r.map_err(|_| ProxyError::Protocol))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    #[tokio::test]
    async fn streaming_limit_trips() {
        let chunks = futures_util::stream::iter(vec![
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"12345"))),
            Ok(Frame::data(Bytes::from_static(b"678"))),
        ]);
        let (body, watch) = ProxyRequestBody::streaming(StreamBody::new(chunks), 6);
        let err = body.collect().await.unwrap_err();
        assert_eq!(BodyLimitExceeded::limit_of(&*err), Some(6));
        assert_eq!(watch.fault(), Some(ProxyError::BodyTooLarge { limit: 6 }));
    }

    #[tokio::test]
    async fn a_failing_client_body_is_marked_as_the_clients() {
        let chunks = futures_util::stream::iter(vec![
            Ok(Frame::data(Bytes::from_static(b"12"))),
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "client went away",
            )),
        ]);
        let (body, watch) = ProxyRequestBody::streaming(StreamBody::new(chunks), 100);
        let err = body.collect().await.unwrap_err();
        let marked = err.downcast_ref::<ClientBodyError>().expect("marked");
        // The original error is kept as the source, for logs.
        let source = marked
            .source()
            .and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            source.map(std::io::Error::kind),
            Some(std::io::ErrorKind::ConnectionReset)
        );
        assert_eq!(ProxyError::classify(&*err), ProxyError::InvalidBody);
        assert_eq!(watch.fault(), Some(ProxyError::InvalidBody));
    }

    #[tokio::test]
    async fn within_limit_passes_and_buffered_clones() {
        let (body, watch) = ProxyRequestBody::streaming(Full::new(Bytes::from("abc")), 3);
        assert!(body.try_clone().is_none());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abc");
        assert_eq!(watch.fault(), None);
        let b: ProxyRequestBody<Full<Bytes>> = ProxyRequestBody::buffered(Bytes::from("x"));
        let c = b.try_clone().unwrap();
        assert_eq!(c.collect().await.unwrap().to_bytes(), "x");
    }
}
