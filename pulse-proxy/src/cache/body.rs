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
        Tee { #[pin] body: B, state: TeeState },
    }
}

/// The recording side of a teed body.
///
/// The recording completes as soon as the body is known to be complete: after the
/// frame that brings it to its exact length, or after which the upstream body reports
/// its end, or at the end of the stream. A server such as hyper stops polling a body
/// once it has written its `Content-Length`, so waiting for the end of the stream
/// would never store a sized body. The frame that completes the body is held until the
/// entry is written, so a client that has the whole body finds the entry.
struct TeeState {
    /// `None` once the recording is complete or given up.
    recorder: Option<Recorder>,
    /// The write of the complete recording.
    finishing: Option<Finishing>,
    /// The frame that completed the body, released once `finishing` is done.
    last: Option<Frame<Bytes>>,
}

impl TeeState {
    fn give_up(&mut self) {
        if let Some(rec) = self.recorder.take() {
            rec.give_up();
        }
    }

    /// Completes the recording, exactly once (the recorder is taken).
    fn complete(&mut self, last: Option<Frame<Bytes>>) {
        if let Some(rec) = self.recorder.take() {
            self.finishing = Some(rec.finish());
        }
        self.last = last;
    }
}

impl Drop for TeeState {
    fn drop(&mut self) {
        // The upstream body was complete; only its last frame was not delivered yet:
        // the response is good, so the write still happens and the waiters get it. A
        // recording dropped before it is complete is never stored: its guard abandons
        // the flight and the waiters start over.
        if let Some(finishing) = self.finishing.take() {
            finishing.detach();
        }
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
                state: TeeState {
                    recorder: Some(recorder),
                    finishing: None,
                    last: None,
                },
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
            KindProj::Tee { mut body, state } => loop {
                if let Some(finishing) = state.finishing.as_mut() {
                    let stored = match finishing.put.as_mut() {
                        Some(put) => Some(ready!(put.as_mut().poll(cx)).is_ok()),
                        None => None,
                    };
                    if let Some(finishing) = state.finishing.take() {
                        finishing.done(stored);
                    }
                    return Poll::Ready(state.last.take().map(Ok));
                }
                let frame = ready!(body.as_mut().poll_frame(cx));
                // Complete or given up: the rest (if any) streams through.
                let Some(rec) = state.recorder.as_mut() else {
                    return Poll::Ready(frame);
                };
                match frame {
                    Some(Ok(frame)) => {
                        if !rec.record(&frame) {
                            // Too large, longer than announced, or trailers: serve it,
                            // don't store it.
                            state.give_up();
                            return Poll::Ready(Some(Ok(frame)));
                        }
                        if !rec.is_complete(body.is_end_stream()) {
                            return Poll::Ready(Some(Ok(frame)));
                        }
                        state.complete(Some(frame));
                    }
                    Some(Err(err)) => {
                        state.give_up();
                        return Poll::Ready(Some(Err(err)));
                    }
                    None => state.complete(None),
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Stored { data } => data.is_none(),
            Kind::Inner { body } => body.is_end_stream(),
            // While recording, the body is only at its end once the entry is written.
            Kind::Tee { body, state } => {
                state.recorder.is_none()
                    && state.finishing.is_none()
                    && state.last.is_none()
                    && body.is_end_stream()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Stored { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Inner { body } => body.size_hint(),
            Kind::Tee { body, state } => {
                let inner = body.size_hint();
                let held = state
                    .last
                    .as_ref()
                    .and_then(Frame::data_ref)
                    .map_or(0, |d| d.len() as u64);
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower().saturating_add(held));
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper.saturating_add(held));
                }
                hint
            }
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

impl Finishing {
    /// Waits for the write, then shares the response.
    pub(crate) async fn run(mut self) {
        let stored = match self.put.take() {
            Some(put) => Some(put.await.is_ok()),
            None => None,
        };
        self.done(stored);
    }

    /// Finishes the write in the background (its body was dropped). Without a Tokio
    /// runtime to run it on, the response is shared with the waiters, unstored.
    fn detach(self) {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if self.put.is_some() => drop(handle.spawn(self.run())),
            _ => self.done(None),
        }
    }
}

/// Records a streaming body up to `max` bytes.
pub(crate) struct Recorder {
    buf: BytesMut,
    max: usize,
    /// The exact length of the body, when known in advance.
    expected: Option<u64>,
    status: StatusCode,
    headers: HeaderMap,
    ticket: StoreTicket,
}

impl Recorder {
    /// A recorder for a body of `expected` bytes (when known) and at most `max`.
    pub(crate) fn new(
        max: usize,
        expected: Option<u64>,
        status: StatusCode,
        headers: HeaderMap,
        ticket: StoreTicket,
    ) -> Self {
        Self {
            buf: BytesMut::new(),
            max,
            expected,
            status,
            headers,
            ticket,
        }
    }

    /// Records a data frame; false when it cannot be stored: trailers, or data over
    /// the limit or past the announced length.
    fn record(&mut self, frame: &Frame<Bytes>) -> bool {
        let Some(data) = frame.data_ref() else {
            return false;
        };
        let len = self.buf.len() + data.len();
        if len > self.max || self.expected.is_some_and(|expected| len as u64 > expected) {
            return false;
        }
        self.buf.extend_from_slice(data);
        true
    }

    /// Whether the body is complete: it has its announced length, or the upstream body
    /// reports its end (`end`).
    pub(crate) fn is_complete(&self, end: bool) -> bool {
        end || self.expected == Some(self.buf.len() as u64)
    }

    fn give_up(self) {
        self.ticket.give_up();
    }

    /// Starts the write of the recording.
    pub(crate) fn finish(self) -> Finishing {
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
