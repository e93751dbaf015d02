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
//! event after that id (read page by page), then the live ones — unless retention
//! deleted events after that id: then it first receives `event: reset`, `id: <latest
//! seq>`, `data: {"last_event_id": <seq>, "pruned_through": <seq>}`, then the current
//! state (one `run` event of kind `snapshot` per job with a run, its latest, each with the
//! same id), then the live events: never a silent gap.

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
/// The SSE event name that tells a resuming subscriber its history was deleted.
pub const RESET_EVENT: &str = "reset";
/// How many stored events one replay read fetches.
const MAX_REPLAY_PAGE: u32 = 500;

/// `GET /api/v1/events`.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "events",
    params(("last-event-id" = Option<String>, Header, description = "Resume after this event id")),
    responses(
        (status = 200, description = "`text/event-stream`: `event: run` with a RunUpdate as `data`; first `event: position` `{\"last_event_id\"}` without Last-Event-ID", content_type = "text/event-stream", body = String),
        (status = 403, response = super::openapi::InternalAuthRequired),
    ),
)]
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
    // Resuming after events that retention deleted: a reset, then the current state.
    let pruned_through = match resume_after {
        Some(after) => match state.engine.events_pruned_through().await {
            Ok(through) if after < through => Some(through),
            Ok(_) => None,
            Err(err) => {
                tracing::warn!(error = %err, "reading the retention mark failed");
                None
            }
        },
        None => None,
    };
    // A fresh subscriber starts after the latest stored event, and is told its id.
    let position = match (resume_after, pruned_through) {
        (Some(_), None) => None,
        _ => match state.engine.latest_event_seq().await {
            Ok(seq) => Some(seq),
            Err(err) => {
                tracing::warn!(error = %err, "reading the latest event id failed");
                None
            }
        },
    };
    let (resume_after, reset) = match (pruned_through, position) {
        (Some(through), Some(latest)) => (None, Some((latest, through))),
        _ => (resume_after, None),
    };
    // Every event after `position` commits after it was read, so after the live
    // subscription: the live channel carries them all (older ones it repeats are skipped).
    let feed = Feed {
        engine: state.engine.clone(),
        live,
        backlog: VecDeque::new(),
        replaying: resume_after.is_some(),
        last_seq: resume_after.or(position).unwrap_or(i64::MIN),
        position: if reset.is_some() { None } else { position },
        reset,
        ready: VecDeque::new(),
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
    /// The `reset` still to send first: `(latest seq, pruned through)`.
    reset: Option<(i64, i64)>,
    /// Rendered events to send before anything else (the snapshot after a reset).
    ready: VecDeque<Event>,
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
        if let Some((latest, through)) = self.reset.take() {
            self.ready = self.snapshot(latest).await;
            let event = Event::default()
                .event(RESET_EVENT)
                .id(latest.to_string())
                .data(format!(
                    "{{\"last_event_id\":{latest},\"pruned_through\":{through}}}"
                ));
            return Some((Ok(event), self));
        }
        if let Some(event) = self.ready.pop_front() {
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

    /// The current state after a reset: each job's latest run, as `snapshot` updates
    /// with the id `latest` (resuming after any of them continues after `latest`).
    async fn snapshot(&self, latest: i64) -> VecDeque<Event> {
        let jobs = match self.engine.jobs().await {
            Ok(jobs) => jobs,
            Err(err) => {
                tracing::warn!(error = %err, "reading the current state after a reset failed");
                return VecDeque::new();
            }
        };
        jobs.into_iter()
            .filter_map(|job| job.latest_run)
            .filter_map(|run| {
                let update = RunUpdate {
                    kind: RunUpdateKind::Snapshot,
                    run,
                    log: None,
                };
                Event::default()
                    .event(RUN_EVENT)
                    .id(latest.to_string())
                    .json_data(&update)
                    .ok()
            })
            .collect()
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
