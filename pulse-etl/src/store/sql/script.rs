//! The statements several transaction scripts share, over one connection.

use time::OffsetDateTime;

use crate::model::{Run, RunEventKind, RunId, RunState};
use crate::store::common::{Transition, event_kind_name};
use crate::store::{AttemptFence, NewRun, StoreError};

use super::conn::{SqlConn, Stmt};
use super::queries::Queries;
use super::rows::run_from_row;

/// One connection (usually a transaction) with its dialect's statements.
pub(crate) struct Script<'a, C> {
    pub(crate) conn: &'a mut C,
    pub(crate) q: &'static Queries,
    /// PostgreSQL's event-lock key (`insert_event.sql`); unused by SQLite.
    pub(crate) event_lock: i64,
}

/// A statement over the fence's run id, attempt and instance (`$1`, `$2`, `$3`).
pub(crate) fn fenced(sql: &'static str, fence: &AttemptFence) -> Stmt<'static> {
    Stmt::new(sql)
        .bind(fence.run_id)
        .bind(fence.attempt)
        .bind(fence.instance_id)
}

/// An event's `kind` column and JSON payload, as `insert_event.sql` and the one-statement
/// claims take them.
pub(crate) fn event_params(kind: &RunEventKind) -> (&'static str, serde_json::Value) {
    let payload = serde_json::to_value(kind).unwrap_or_else(|_| serde_json::json!({}));
    (event_kind_name(kind), payload)
}

impl<C: SqlConn> Script<'_, C> {
    /// The run `sql` finds by its one parameter.
    pub(crate) async fn run<'p>(
        &mut self,
        sql: &'static str,
        key: impl Into<super::conn::Param<'p>> + Send,
    ) -> Result<Option<Run>, StoreError> {
        let row = self.conn.optional(Stmt::new(sql).bind(key)).await?;
        row.as_ref().map(run_from_row).transpose()
    }

    /// The run, which must exist.
    pub(crate) async fn must_run(&mut self, id: RunId) -> Result<Run, StoreError> {
        self.run(self.q.run_by_id, id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("run {id} vanished")))
    }

    /// Inserts a `pending` run (without its event); `None` when a unique index objects.
    pub(crate) async fn insert_run(&mut self, new: &NewRun) -> Result<Option<Run>, StoreError> {
        let insert = with_new_run(Stmt::new(self.q.insert_run), new);
        let row = self.conn.optional(insert).await?;
        row.as_ref().map(run_from_row).transpose()
    }

    pub(crate) async fn insert_event(
        &mut self,
        run_id: RunId,
        job_name: &str,
        at: OffsetDateTime,
        kind: &RunEventKind,
    ) -> Result<(), StoreError> {
        let (name, payload) = event_params(kind);
        self.conn
            .exec(
                Stmt::new(self.q.insert_event)
                    .bind(run_id)
                    .bind(job_name)
                    .bind(at)
                    .bind(name)
                    .bind(payload)
                    .bind(self.event_lock),
            )
            .await?;
        Ok(())
    }

    /// Moves a run to `cancelling` or `cancelled` (without its event).
    pub(crate) async fn set_cancel_state(
        &mut self,
        run: &Run,
        next: RunState,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let finished = (next == RunState::Cancelled).then_some(now);
        self.conn
            .exec(
                Stmt::new(self.q.set_cancel_state)
                    .bind(next.as_str())
                    .bind(now)
                    .bind(finished)
                    .bind(run.id),
            )
            .await?;
        Ok(())
    }

    /// Moves a run to `cancelling` or `cancelled`, with its event.
    pub(crate) async fn apply_cancel(
        &mut self,
        run: &Run,
        next: RunState,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.set_cancel_state(run, next, now).await?;
        self.insert_event(run.id, &run.job_name, now, &cancel_event(run, next))
            .await
    }

    /// Writes a transition of a run whose attempt `attempt` ends, with its event.
    pub(crate) async fn apply_transition(
        &mut self,
        run_id: RunId,
        job_name: &str,
        attempt: u32,
        transition: &Transition,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let end_run = with_transition(Stmt::new(self.q.end_run), transition, now).bind(run_id);
        self.conn.exec(end_run).await?;
        self.conn
            .exec(
                Stmt::new(self.q.end_attempt)
                    .bind(now)
                    .bind(transition.attempt_outcome)
                    .bind(transition.attempt_error.as_deref())
                    .bind(run_id)
                    .bind(attempt),
            )
            .await?;
        self.insert_event(run_id, job_name, now, &transition.event(attempt))
            .await
    }
}

/// `stmt` with a new run's columns, in order: id, job, params, requester, idempotency
/// key, creation time and most attempts.
pub(crate) fn with_new_run<'a>(stmt: Stmt<'a>, new: &'a NewRun) -> Stmt<'a> {
    stmt.bind(new.id)
        .bind(new.job_name.as_str())
        .bind(new.params.clone())
        .bind(new.requested_by.as_deref())
        .bind(new.idempotency_key.as_deref())
        .bind(new.created_at)
        .bind(new.max_attempts.max(1))
}

/// `stmt` with the run columns a transition sets, in order: state, error, result,
/// next attempt, finish time, `now` (the update time) and the attempts added back.
pub(crate) fn with_transition<'a>(
    stmt: Stmt<'a>,
    transition: &'a Transition,
    now: OffsetDateTime,
) -> Stmt<'a> {
    stmt.bind(transition.state.as_str())
        .bind(transition.error.as_deref())
        .bind(transition.result.clone())
        .bind(transition.next_attempt_at)
        .bind(transition.finished_at)
        .bind(now)
        .bind(transition.extra_attempts)
}

/// The `pending` event of a new run.
pub(crate) fn pending_event() -> RunEventKind {
    RunEventKind::State {
        state: RunState::Pending,
        attempt: 0,
        error: None,
    }
}

/// The `running` event of attempt `attempt`.
pub(crate) fn running_event(attempt: u32) -> RunEventKind {
    RunEventKind::State {
        state: RunState::Running,
        attempt,
        error: None,
    }
}

/// The event of a cancel moving `run` to `next`.
pub(crate) fn cancel_event(run: &Run, next: RunState) -> RunEventKind {
    RunEventKind::State {
        state: next,
        attempt: run.attempts,
        error: None,
    }
}
