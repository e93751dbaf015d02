//! Request and response bodies of the proxy: streamed frame by frame, never collected,
//! with the request-body limit and the total deadline enforced on the way.

use std::{
    error::Error as StdError,
    fmt,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
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

/// Set when a streamed request body crossed the limit, so the proxy answers 413 even
/// when the transport reports the aborted body in its own words.
#[derive(Clone, Debug)]
pub(crate) struct LimitTripped {
    flag: Arc<AtomicBool>,
    limit: u64,
}

impl LimitTripped {
    pub(crate) fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    pub(crate) const fn limit(&self) -> u64 {
        self.limit
    }
}

pin_project! {
    /// The body of the request the proxy sends upstream: the client's body streamed
    /// through a size limit, or a small buffered copy that can be sent again.
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
            tripped: LimitTripped,
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

    /// The client's body, streamed, failing with [`BodyLimitExceeded`] past `limit`.
    pub(crate) fn streaming(body: B, limit: u64) -> (Self, LimitTripped) {
        let tripped = LimitTripped {
            flag: Arc::new(AtomicBool::new(false)),
            limit,
        };
        let this = Self {
            kind: ReqKind::Streaming {
                body,
                remaining: limit,
                limit,
                tripped: tripped.clone(),
            },
        };
        (this, tripped)
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
                tripped,
            } => {
                let frame = match ready!(body.poll_frame(cx)) {
                    None => return Poll::Ready(None),
                    Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                    Some(Ok(frame)) => frame,
                };
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > *remaining {
                        tripped.flag.store(true, Ordering::Release);
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
        let (body, tripped) = ProxyRequestBody::streaming(StreamBody::new(chunks), 6);
        let err = body.collect().await.unwrap_err();
        assert_eq!(BodyLimitExceeded::limit_of(&*err), Some(6));
        assert!(tripped.is_set());
    }

    #[tokio::test]
    async fn within_limit_passes_and_buffered_clones() {
        let (body, tripped) = ProxyRequestBody::streaming(Full::new(Bytes::from("abc")), 3);
        assert!(body.try_clone().is_none());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abc");
        assert!(!tripped.is_set());
        let b: ProxyRequestBody<Full<Bytes>> = ProxyRequestBody::buffered(Bytes::from("x"));
        let c = b.try_clone().unwrap();
        assert_eq!(c.collect().await.unwrap().to_bytes(), "x");
    }
}
