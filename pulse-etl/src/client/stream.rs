//! The streams of the event route: raw server-sent events and decoded run updates.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tower::Service;

use super::sse::{Pending, SseDecoder, SseEvent};
use super::{BoxError, ClientError, EtlClient};
use crate::api::{RUN_EVENT, RunUpdate};

/// The first wait before reconnecting a followed event stream.
pub const FOLLOW_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait before reconnecting a followed event stream.
pub const FOLLOW_MAX_BACKOFF: Duration = Duration::from_secs(5);

impl<S, B> EtlClient<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    /// The run updates after the SSE id `last_event_id` (all stored ones for
    /// `Some(0)`, only new ones for `None`), for as long as the stream is polled:
    /// a refused, failed or ended connection is retried with backoff
    /// ([`FOLLOW_INITIAL_BACKOFF`] doubling up to [`FOLLOW_MAX_BACKOFF`]) and resumed
    /// after the last event received, so the service replays what was missed. Errors
    /// are logged, never yielded; the stream never ends.
    ///
    /// This is what a gateway feeding its WebSocket clients from one upstream
    /// subscription wants.
    pub fn follow(
        &self,
        last_event_id: Option<i64>,
    ) -> impl Stream<Item = RunUpdate> + Send + 'static {
        let state = Follow {
            client: self.clone(),
            current: None,
            last_event_id,
            backoff: None,
        };
        futures_util::stream::unfold(state, Follow::next)
    }
}

/// The state of [`EtlClient::follow`].
struct Follow<S> {
    client: EtlClient<S>,
    current: Option<RunUpdates>,
    last_event_id: Option<i64>,
    /// The wait before the next connection; `None` for the first one.
    backoff: Option<Duration>,
}

impl<S, B> Follow<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    async fn next(mut self) -> Option<(RunUpdate, Self)> {
        loop {
            let Some(updates) = self.current.as_mut() else {
                if let Some(wait) = self.backoff {
                    tokio::time::sleep(wait).await;
                }
                self.backoff = Some(self.backoff.map_or(FOLLOW_INITIAL_BACKOFF, |wait| {
                    (wait * 2).min(FOLLOW_MAX_BACKOFF)
                }));
                match self.client.events_after(self.last_event_id).await {
                    Ok(updates) => self.current = Some(updates),
                    Err(err) => tracing::warn!(error = %err, "subscribing to ETL events failed"),
                }
                continue;
            };
            let item = updates.next().await;
            if let Some(id) = updates.last_event_id() {
                self.last_event_id = Some(id);
            }
            match item {
                Some(Ok(update)) => {
                    self.backoff = Some(FOLLOW_INITIAL_BACKOFF);
                    return Some((update, self));
                }
                Some(Err(ClientError::Decode(err))) => {
                    tracing::warn!(error = %err, "skipping an ETL event that could not be read");
                }
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "the ETL event stream broke; reconnecting");
                    self.current = None;
                }
                None => {
                    tracing::info!("the ETL event stream ended; reconnecting");
                    self.current = None;
                }
            }
        }
    }
}

/// The run updates of [`EtlClient::events`].
pub struct RunUpdates {
    inner: SseEvents,
    last_event_id: Option<i64>,
}

impl RunUpdates {
    pub(crate) const fn new(inner: SseEvents, last_event_id: Option<i64>) -> Self {
        Self {
            inner,
            last_event_id,
        }
    }

    /// The SSE id of the latest event received: pass it to
    /// [`EtlClient::events_after`] to resume after a broken connection without a gap.
    #[must_use]
    pub const fn last_event_id(&self) -> Option<i64> {
        self.last_event_id
    }
}

impl Stream for RunUpdates {
    type Item = Result<RunUpdate, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let event = match std::task::ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                Some(Ok(event)) => event,
                Some(Err(err)) => return Poll::Ready(Some(Err(err))),
                None => return Poll::Ready(None),
            };
            if let Some(id) = event.id.as_deref().and_then(|id| id.parse().ok()) {
                self.last_event_id = Some(id);
            }
            if event.event == RUN_EVENT {
                let update = serde_json::from_str::<RunUpdate>(&event.data)
                    .map_err(|err| ClientError::Decode(err.to_string()));
                return Poll::Ready(Some(update));
            }
        }
    }
}

impl fmt::Debug for RunUpdates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunUpdates")
            .field("last_event_id", &self.last_event_id)
            .finish_non_exhaustive()
    }
}

/// The raw server-sent events of [`EtlClient::sse_events`].
pub struct SseEvents {
    inner: Pin<Box<dyn Stream<Item = Result<SseEvent, ClientError>> + Send>>,
}

impl SseEvents {
    /// The events of a `text/event-stream` body. A body error is yielded once as
    /// [`ClientError::Transport`], and no byte for `idle` as
    /// [`ClientError::StreamIdle`]; then the stream ends.
    pub(crate) fn from_body<B>(body: B, idle: Option<Duration>) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let state = (Some(Box::pin(body)), SseDecoder::new(), Pending::new());
        let stream = futures_util::stream::unfold(
            state,
            move |(mut body, mut decoder, mut pending)| async move {
                loop {
                    if let Some(event) = pending.pop_front() {
                        return Some((Ok(event), (body, decoder, pending)));
                    }
                    let next = body.as_mut()?.frame();
                    let frame = match idle {
                        // Any frame counts, a keep-alive comment too.
                        Some(idle) => match tokio::time::timeout(idle, next).await {
                            Ok(frame) => frame,
                            Err(_) => {
                                let err = ClientError::StreamIdle(idle);
                                return Some((Err(err), (None, decoder, pending)));
                            }
                        },
                        None => next.await,
                    };
                    match frame {
                        Some(Ok(frame)) => {
                            if let Ok(data) = frame.into_data() {
                                pending.extend(decoder.push(&data));
                            }
                        }
                        Some(Err(err)) => {
                            let err = ClientError::Transport(err.into());
                            return Some((Err(err), (None, decoder, pending)));
                        }
                        None => return None,
                    }
                }
            },
        );
        Self {
            inner: Box::pin(stream),
        }
    }
}

impl Stream for SseEvents {
    type Item = Result<SseEvent, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for SseEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseEvents").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body::Frame;
    use http_body_util::StreamBody;
    use tokio::sync::mpsc;

    use super::*;

    /// A body fed by the test, chunk by chunk.
    fn body() -> (
        mpsc::UnboundedSender<&'static str>,
        impl Body<Data = Bytes, Error = Infallible> + Send + 'static,
    ) {
        let (tx, rx) = mpsc::unbounded_channel::<&'static str>();
        let frames = futures_util::stream::unfold(rx, |mut rx| async move {
            let chunk = rx.recv().await?;
            Some((Ok(Frame::data(Bytes::from_static(chunk.as_bytes()))), rx))
        });
        (tx, StreamBody::new(frames))
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_comments_hold_an_idle_stream_open_and_silence_ends_it() {
        let idle = Duration::from_secs(3);
        let (tx, body) = body();
        let mut events = SseEvents::from_body(body, Some(idle));
        tx.send("id: 1\nevent: run\ndata: {}\n\n").unwrap();
        let first = events.next().await.unwrap().unwrap();
        assert_eq!(first.id.as_deref(), Some("1"));
        // A comment every second for ten seconds: no event, and not idle.
        let comments = tokio::spawn(async move {
            for _ in 0..10 {
                tx.send(":\n\n").unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            tx.send("id: 2\nevent: run\ndata: {}\n\n").unwrap();
            // Then silence, the sender kept (a frozen peer never closes).
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        let started = tokio::time::Instant::now();
        let second = events.next().await.unwrap().unwrap();
        assert_eq!(second.id.as_deref(), Some("2"));
        assert!(started.elapsed() >= Duration::from_secs(10));
        let stalled = tokio::time::Instant::now();
        match events.next().await {
            Some(Err(ClientError::StreamIdle(after))) => assert_eq!(after, idle),
            other => panic!("expected StreamIdle, got {other:?}"),
        }
        assert!(stalled.elapsed() >= idle);
        assert!(events.next().await.is_none(), "then the stream ends");
        comments.abort();
    }
}
