//! The response body of the cache: a stored body, the upstream body as it streams, or
//! the upstream body being recorded for storage.

use std::{
    fmt,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::{
    CacheStats,
    coalesce::{FlightGuard, Outcome},
    key::CacheKey,
    store::{CacheStore, CachedResponse, StoreFuture},
};

pin_project! {
    /// The body of a response that passed through a [`Cache`](super::Cache): either a
    /// stored body or the upstream body, streamed (and, for a cacheable response of
    /// unknown length, recorded on the way up to the body limit).
    pub struct CacheBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Stored { data: Option<Bytes> },
        Inner { #[pin] body: B },
        Tee {
            #[pin]
            body: B,
            recorder: Option<Recorder>,
            finishing: Option<Finishing>,
        },
    }
}

impl<B> fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Stored { .. } => "stored",
            Kind::Inner { .. } => "inner",
            Kind::Tee { .. } => "tee",
        };
        f.debug_struct("CacheBody").field("kind", &kind).finish()
    }
}

impl<B> CacheBody<B> {
    /// A complete body (a hit, or a response shared by a flight's leader).
    pub(crate) fn stored(data: Bytes) -> Self {
        Self {
            kind: Kind::Stored {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    /// The upstream body, untouched.
    pub(crate) const fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// The upstream body, recorded for storage on the way.
    pub(crate) const fn tee(body: B, recorder: Recorder) -> Self {
        Self {
            kind: Kind::Tee {
                body,
                recorder: Some(recorder),
                finishing: None,
            },
        }
    }

    /// Whether the body is served from the cache.
    pub fn is_stored(&self) -> bool {
        matches!(self.kind, Kind::Stored { .. })
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Stored { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Tee {
                mut body,
                recorder,
                finishing,
            } => loop {
                if let Some(pending) = finishing.as_mut() {
                    let stored = match pending.put.as_mut() {
                        Some(put) => Some(ready!(put.as_mut().poll(cx)).is_ok()),
                        None => None,
                    };
                    if let Some(pending) = finishing.take() {
                        pending.done(stored);
                    }
                    return Poll::Ready(None);
                }
                match ready!(body.as_mut().poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        if let Some(rec) = recorder.as_mut() {
                            let fits = frame
                                .data_ref()
                                .is_some_and(|data| rec.buf.len() + data.len() <= rec.max);
                            match (fits, frame.data_ref()) {
                                (true, Some(data)) => rec.buf.extend_from_slice(data),
                                // Too large, or trailers: serve it, don't store it.
                                _ => {
                                    if let Some(rec) = recorder.take() {
                                        rec.give_up();
                                    }
                                }
                            }
                        }
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    Some(Err(err)) => {
                        if let Some(rec) = recorder.take() {
                            rec.give_up();
                        }
                        return Poll::Ready(Some(Err(err)));
                    }
                    None => match recorder.take() {
                        Some(rec) => *finishing = Some(rec.finish()),
                        None => return Poll::Ready(None),
                    },
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Stored { data } => data.is_none(),
            Kind::Inner { body } => body.is_end_stream(),
            // Must be polled to the end, so the recording is stored.
            Kind::Tee {
                body,
                recorder,
                finishing,
            } => recorder.is_none() && finishing.is_none() && body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Stored { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Inner { body } | Kind::Tee { body, .. } => body.size_hint(),
        }
    }
}

/// Everything needed to store a response once its body is complete, and to release the
/// waiters of its flight.
pub(crate) struct StoreTicket {
    pub(crate) store: Arc<dyn CacheStore>,
    pub(crate) key: CacheKey,
    pub(crate) generation: u64,
    /// `None`: share the response with the waiters, but don't store it (an error).
    pub(crate) ttl: Option<Duration>,
    pub(crate) stats: CacheStats,
    pub(crate) guard: FlightGuard,
}

impl StoreTicket {
    /// Starts the write of `response` (when it may be stored).
    pub(crate) fn put(self, response: CachedResponse) -> Finishing {
        let response = Arc::new(response);
        let put = self.ttl.map(|ttl| {
            self.store
                .put(&self.key, response.clone(), self.generation, ttl)
        });
        Finishing {
            put,
            response,
            stats: self.stats,
            guard: self.guard,
        }
    }

    /// The response turned out not to be storable: waiters go upstream themselves.
    pub(crate) fn give_up(self) {
        self.guard.complete(Outcome::GoUpstream);
    }
}

/// A write in progress; when it ends the waiters get the response.
pub(crate) struct Finishing {
    pub(crate) put: Option<StoreFuture<()>>,
    response: Arc<CachedResponse>,
    stats: CacheStats,
    guard: FlightGuard,
}

impl Finishing {
    /// Counts the write (`None`: there was none) and shares the response with the
    /// flight's waiters, even when the write failed: the response itself is good.
    pub(crate) fn done(self, stored: Option<bool>) {
        match stored {
            Some(true) => self.stats.stored(),
            Some(false) => self.stats.store_error(),
            None => {}
        }
        self.guard.complete(Outcome::Shared {
            stored: stored.is_some(),
            response: self.response,
        });
    }
}

/// Records a streaming body up to `max` bytes.
pub(crate) struct Recorder {
    buf: BytesMut,
    max: usize,
    status: StatusCode,
    headers: HeaderMap,
    ticket: StoreTicket,
}

impl Recorder {
    pub(crate) fn new(
        max: usize,
        status: StatusCode,
        headers: HeaderMap,
        ticket: StoreTicket,
    ) -> Self {
        Self {
            buf: BytesMut::new(),
            max,
            status,
            headers,
            ticket,
        }
    }

    fn give_up(self) {
        self.ticket.give_up();
    }

    fn finish(self) -> Finishing {
        let body = self.buf.freeze();
        let headers = storable_headers(&self.headers, body.len());
        self.ticket
            .put(CachedResponse::new(self.status, headers, body))
    }
}

/// The headers worth storing: the response's own, without the per-request ones
/// (request ids, `Age`, `X-Cache`) and framing (`Transfer-Encoding`), with an exact
/// `Content-Length`.
pub(crate) fn storable_headers(headers: &HeaderMap, body_len: usize) -> HeaderMap {
    let mut out = headers.clone();
    for name in [
        pulse_core::request_id::X_REQUEST_ID,
        pulse_core::request_id::X_CORRELATION_ID,
        header::AGE,
        super::X_CACHE,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
    ] {
        out.remove(name);
    }
    out.insert(header::CONTENT_LENGTH, http::HeaderValue::from(body_len));
    out
}
