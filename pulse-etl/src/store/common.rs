//! What both stores decide the same way: the state machine of attempts, cancels and
//! sweeps, and the event rows that go with each change.

use serde_json::Value;
use time::OffsetDateTime;

use super::{AttemptOutcome, CancelOutcome, StoreError, SweepReport};
use crate::model::{LogLine, Run, RunEvent, RunEventKind, RunId, RunState};

/// The error written when a sweep reclaims a run whose worker stopped heartbeating.
pub(crate) const LEASE_EXPIRED: &str = "lease expired: the worker stopped heartbeating";

/// The change one event describes, ready to be written.
pub(crate) struct Transition {
    /// The run's next state.
    pub(crate) state: RunState,
    /// The run's error afterwards.
    pub(crate) error: Option<String>,
    /// The run's result afterwards (only on success).
    pub(crate) result: Option<Value>,
    /// When the next attempt may start (for `retrying`).
    pub(crate) next_attempt_at: Option<OffsetDateTime>,
    /// When the run finished (for terminal states).
    pub(crate) finished_at: Option<OffsetDateTime>,
    /// How the attempt ended, for its row.
    pub(crate) attempt_outcome: &'static str,
    /// The attempt's error, for its row.
    pub(crate) attempt_error: Option<String>,
    /// Attempts added back to the budget (a handed-back attempt does not count).
    pub(crate) extra_attempts: i64,
}

impl Transition {
    fn terminal(
        state: RunState,
        now: OffsetDateTime,
        attempt_outcome: &'static str,
        error: Option<String>,
    ) -> Self {
        Self {
            state,
            attempt_error: error.clone(),
            error,
            result: None,
            next_attempt_at: None,
            finished_at: Some(now),
            attempt_outcome,
            extra_attempts: 0,
        }
    }

    /// The state event to write with this transition.
    pub(crate) fn event(&self, attempt: u32) -> RunEventKind {
        RunEventKind::State {
            state: self.state,
            attempt,
            error: self.error.clone(),
        }
    }
}

/// The run's next state when attempt `attempts` (of `max_attempts`) ends with `outcome`
/// while the run is in `state` (`running` or `cancelling`).
pub(crate) fn finish_transition(
    state: RunState,
    attempts: u32,
    max_attempts: u32,
    outcome: AttemptOutcome,
    now: OffsetDateTime,
) -> Transition {
    let cancelling = state == RunState::Cancelling;
    match outcome {
        AttemptOutcome::Succeeded { result } => {
            let mut transition = Transition::terminal(RunState::Succeeded, now, "succeeded", None);
            transition.result = result;
            transition
        }
        AttemptOutcome::Failed { error, .. } if cancelling => Transition {
            attempt_error: Some(error),
            ..Transition::terminal(RunState::Cancelled, now, "cancelled", None)
        },
        AttemptOutcome::Failed {
            error,
            retry_at: Some(retry_at),
        } if attempts < max_attempts => Transition {
            state: RunState::Retrying,
            attempt_error: Some(error.clone()),
            error: Some(error),
            result: None,
            next_attempt_at: Some(retry_at),
            finished_at: None,
            attempt_outcome: "failed",
            extra_attempts: 0,
        },
        AttemptOutcome::Failed { error, .. } => {
            Transition::terminal(RunState::Failed, now, "failed", Some(error))
        }
        AttemptOutcome::Cancelled => {
            Transition::terminal(RunState::Cancelled, now, "cancelled", None)
        }
        AttemptOutcome::HandedBack if cancelling => {
            Transition::terminal(RunState::Cancelled, now, "cancelled", None)
        }
        AttemptOutcome::HandedBack => Transition {
            state: RunState::Retrying,
            error: None,
            result: None,
            next_attempt_at: Some(now),
            finished_at: None,
            attempt_outcome: "handed_back",
            attempt_error: None,
            extra_attempts: 1,
        },
    }
}

/// The run's next state when the sweeper finds its lease expired.
pub(crate) fn sweep_transition(
    state: RunState,
    attempts: u32,
    max_attempts: u32,
    now: OffsetDateTime,
) -> Transition {
    if state == RunState::Cancelling {
        return Transition {
            attempt_error: Some(LEASE_EXPIRED.to_owned()),
            ..Transition::terminal(RunState::Cancelled, now, "lease_expired", None)
        };
    }
    finish_transition(
        state,
        attempts,
        max_attempts,
        AttemptOutcome::Failed {
            error: LEASE_EXPIRED.to_owned(),
            retry_at: Some(now),
        },
        now,
    )
    .with_attempt_outcome("lease_expired")
}

impl Transition {
    fn with_attempt_outcome(mut self, outcome: &'static str) -> Self {
        self.attempt_outcome = outcome;
        self
    }
}

/// The state a cancel moves a run in `state` to; `None` when it changes nothing (the
/// run finished, or is already cancelling).
pub(crate) fn cancel_next(state: RunState) -> Option<RunState> {
    match state {
        state if state.is_terminal() => None,
        RunState::Cancelling => None,
        RunState::Running => Some(RunState::Cancelling),
        _ => Some(RunState::Cancelled),
    }
}

/// The outcome of a cancel that moved `run` (as it is now) to `next`, or changed
/// nothing (`None`).
pub(crate) fn cancel_outcome(run: Run, next: Option<RunState>) -> CancelOutcome {
    match next {
        Some(RunState::Cancelled) => CancelOutcome::Cancelled(run),
        None if run.state.is_terminal() => CancelOutcome::AlreadyFinished(run),
        _ => CancelOutcome::Cancelling(run),
    }
}

impl SweepReport {
    /// Counts a run the sweep moved to `state`.
    pub(crate) fn record(&mut self, id: RunId, state: RunState) {
        match state {
            RunState::Retrying => self.retried.push(id),
            RunState::Cancelled => self.cancelled.push(id),
            _ => self.failed.push(id),
        }
    }
}

/// Microseconds since the Unix epoch (SQLite stores times as such integers).
pub(crate) fn to_micros(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

/// The inverse of [`to_micros`].
pub(crate) fn from_micros(micros: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .map_err(|err| StoreError::Corrupt(format!("timestamp {micros}: {err}")))
}

/// Truncates to the microsecond, the precision both databases keep.
pub(crate) fn truncate_micros(at: OffsetDateTime) -> OffsetDateTime {
    from_micros(to_micros(at)).unwrap_or(at)
}

/// Reads a stored integer as `u32`, refusing negatives.
pub(crate) fn to_u32(value: i64, column: &str) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column} = {value}")))
}

/// Reads a stored integer as `u64`, refusing negatives.
pub(crate) fn to_u64(value: i64, column: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column} = {value}")))
}

/// Stores a `u64` as a signed integer, saturating.
pub(crate) fn from_u64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Parses a stored state.
pub(crate) fn parse_state(value: &str) -> Result<RunState, StoreError> {
    value
        .parse()
        .map_err(|err: crate::model::UnknownRunState| StoreError::Corrupt(err.to_string()))
}

/// Parses stored JSON text.
#[cfg(feature = "sqlite")]
pub(crate) fn parse_json(text: &str, column: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(|err| StoreError::Corrupt(format!("{column}: {err}")))
}

/// Parses a stored UUID text.
#[cfg(feature = "sqlite")]
pub(crate) fn parse_uuid(text: &str, column: &str) -> Result<uuid::Uuid, StoreError> {
    uuid::Uuid::parse_str(text).map_err(|err| StoreError::Corrupt(format!("{column}: {err}")))
}

/// The event row's `kind` column.
pub(crate) fn event_kind_name(kind: &RunEventKind) -> &'static str {
    match kind {
        RunEventKind::State { .. } => "state",
        RunEventKind::Progress { .. } => "progress",
        RunEventKind::Log { .. } => "log",
    }
}

/// A log event as a log line.
pub(crate) fn log_line(event: RunEvent) -> Option<LogLine> {
    match event.kind {
        RunEventKind::Log {
            level,
            message,
            attempt,
        } => Some(LogLine {
            seq: event.seq,
            attempt,
            at: event.at,
            level,
            message,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

    fn failed(retry: bool) -> AttemptOutcome {
        AttemptOutcome::Failed {
            error: "boom".into(),
            retry_at: retry.then_some(NOW),
        }
    }

    #[test]
    fn retryable_failures_retry_while_attempts_remain() {
        let t = finish_transition(RunState::Running, 1, 3, failed(true), NOW);
        assert_eq!(t.state, RunState::Retrying);
        assert_eq!(t.next_attempt_at, Some(NOW));
        let t = finish_transition(RunState::Running, 3, 3, failed(true), NOW);
        assert_eq!(t.state, RunState::Failed);
        let t = finish_transition(RunState::Running, 1, 3, failed(false), NOW);
        assert_eq!(t.state, RunState::Failed);
        assert_eq!(t.error.as_deref(), Some("boom"));
    }

    #[test]
    fn a_cancel_under_way_wins_over_failures_and_hand_backs() {
        let t = finish_transition(RunState::Cancelling, 1, 3, failed(true), NOW);
        assert_eq!(t.state, RunState::Cancelled);
        let t = finish_transition(RunState::Cancelling, 1, 3, AttemptOutcome::HandedBack, NOW);
        assert_eq!(t.state, RunState::Cancelled);
        let t = sweep_transition(RunState::Cancelling, 1, 3, NOW);
        assert_eq!(t.state, RunState::Cancelled);
    }

    #[test]
    fn hand_back_does_not_spend_an_attempt() {
        let t = finish_transition(RunState::Running, 3, 3, AttemptOutcome::HandedBack, NOW);
        assert_eq!(t.state, RunState::Retrying);
        assert_eq!(t.extra_attempts, 1);
    }

    #[test]
    fn sweep_retries_then_fails() {
        assert_eq!(
            sweep_transition(RunState::Running, 1, 2, NOW).state,
            RunState::Retrying
        );
        let last = sweep_transition(RunState::Running, 2, 2, NOW);
        assert_eq!(last.state, RunState::Failed);
        assert_eq!(last.attempt_outcome, "lease_expired");
    }

    #[test]
    fn micros_round_trip() {
        let at = datetime!(2026-01-01 00:00:00.123456789 UTC);
        assert_eq!(
            from_micros(to_micros(at)).unwrap(),
            datetime!(2026-01-01 00:00:00.123456 UTC)
        );
    }
}
