//! `GET /api/v1/events`: the engine's events as server-sent events.
//!
//! Each store event becomes `event: run`, `id: <seq>`, `data: {"kind", "run", "log"?}`.
//! A subscriber without `Last-Event-ID` first receives `event: position`,
//! `id: <latest stored seq>`, `data: {"last_event_id": <seq>}`: the stream carries every
//! event after that id, so a client whose connection breaks before any run event can
//! still resume after it without a gap (clients that only listen to `run` ignore it).
//! A subscriber reads from the engine's broadcast channel, so a slow one never slows
//! the engine: when it lags it skips the events it missed (and gets a comment saying
//! how many). A client reconnecting with `Last-Event-ID` first receives every stored
//! event after that id (read page by page), then the live ones.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use http::HeaderMap;
use tokio::sync::broadcast::{self, error::RecvError};

use super::ApiState;
use super::types::{LogEntry, RunUpdate, RunUpdateKind};
use crate::engine::JobEngine;
use crate::model::{LogLine, RunEvent, RunEventKind};

/// The SSE event name of every run update.
pub const RUN_EVENT: &str = "run";
/// The SSE event name of the first event of a stream opened without `Last-Event-ID`.
pub const POSITION_EVENT: &str = "position";
/// How many stored events one replay read fetches.
const MAX_REPLAY_PAGE: u32 = 500;

/// `GET /api/v1/events`.
pub(crate) async fn events(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Subscribe before reading the backlog, so nothing falls between the two.
    let live = state.engine.subscribe();
    let resume_after = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<i64>().ok());
    // A fresh subscriber starts after the latest stored event, and is told its id.
    let position = match resume_after {
        Some(_) => None,
        None => match state.engine.latest_event_seq().await {
            Ok(seq) => Some(seq),
            Err(err) => {
                tracing::warn!(error = %err, "reading the latest event id failed");
                None
            }
        },
    };
    // Every event after `position` commits after it was read, so after the live
    // subscription: the live channel carries them all (older ones it repeats are skipped).
    let feed = Feed {
        engine: state.engine.clone(),
        live,
        backlog: VecDeque::new(),
        replaying: resume_after.is_some(),
        last_seq: resume_after.or(position).unwrap_or(i64::MIN),
        position,
    };
    Sse::new(futures_util::stream::unfold(feed, Feed::next))
        .keep_alive(KeepAlive::new().interval(state.keep_alive))
}

/// One subscriber's position: the replayed backlog, then the live channel.
struct Feed {
    engine: JobEngine,
    live: broadcast::Receiver<RunEvent>,
    backlog: VecDeque<RunEvent>,
    /// Stored events after `last_seq` may remain to be replayed.
    replaying: bool,
    last_seq: i64,
    /// The `position` event still to send first.
    position: Option<i64>,
}

impl Feed {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        if let Some(seq) = self.position.take() {
            let event = Event::default()
                .event(POSITION_EVENT)
                .id(seq.to_string())
                .data(format!("{{\"last_event_id\":{seq}}}"));
            return Some((Ok(event), self));
        }
        loop {
            if self.backlog.is_empty() && self.replaying {
                self.replay_page().await;
            }
            let event = match self.backlog.pop_front() {
                Some(event) => event,
                None => match self.live.recv().await {
                    Ok(event) => event,
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "an event subscriber lagged and skipped events");
                        let note = Event::default().comment(format!("skipped {missed} events"));
                        return Some((Ok(note), self));
                    }
                    Err(RecvError::Closed) => return None,
                },
            };
            // The live channel may repeat what the backlog already sent.
            if event.seq <= self.last_seq {
                continue;
            }
            self.last_seq = event.seq;
            if let Some(sse) = self.render(&event).await {
                return Some((Ok(sse), self));
            }
        }
    }

    /// Reads the next page of stored events after `last_seq`; a short page ends the
    /// replay (what follows comes live, duplicates skipped by sequence number).
    async fn replay_page(&mut self) {
        match self
            .engine
            .events_since(self.last_seq, MAX_REPLAY_PAGE)
            .await
        {
            Ok(events) => {
                self.replaying = events.len() >= MAX_REPLAY_PAGE as usize;
                self.backlog.extend(events);
            }
            Err(err) => {
                tracing::warn!(error = %err, "replaying events after Last-Event-ID failed");
                self.replaying = false;
            }
        }
    }

    /// The SSE event of a store event, with the run as stored now; `None` when the
    /// run cannot be read (it is skipped, the next event carries the run again).
    async fn render(&self, event: &RunEvent) -> Option<Event> {
        let (kind, log) = match &event.kind {
            RunEventKind::State { .. } => (RunUpdateKind::StateChanged, None),
            RunEventKind::Progress { .. } => (RunUpdateKind::Progress, None),
            RunEventKind::Log {
                level,
                message,
                attempt,
            } => {
                let line = LogLine {
                    seq: event.seq,
                    attempt: *attempt,
                    at: event.at,
                    level: *level,
                    message: message.clone(),
                };
                (RunUpdateKind::Log, Some(LogEntry::from(line)))
            }
        };
        let run = match self.engine.run(event.run_id).await {
            Ok(run) => run,
            Err(err) => {
                tracing::warn!(error = %err, run_id = %event.run_id, "reading the run of an event failed");
                return None;
            }
        };
        let update = RunUpdate { kind, run, log };
        Event::default()
            .event(RUN_EVENT)
            .id(event.seq.to_string())
            .json_data(&update)
            .ok()
    }
}
