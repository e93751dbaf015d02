//! Row decoding and the statements several writes share.

use std::time::Duration;

use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;

use super::{ClaimParams, PgStore, claim_ctes, claim_from_row};
use crate::model::{Progress, Run, RunEvent, RunEventKind, RunId, RunState};
use crate::store::common::{
    SLOT_STATES, Transition, event_kind_name, finish_transition, parse_state, to_u32, to_u64,
    truncate_micros,
};
use crate::store::{AttemptFence, AttemptOutcome, Claim, NewRun, StoreError};

pub(super) const RUN_COLUMNS: &str = "id, job_name, state, params, requested_by, created_at, started_at, \
     finished_at, attempts, max_attempts, progress_done, progress_total, progress_message, \
     error, result, checkpoint";

/// The fence condition on `etl_runs`: `$1` run id, `$2` attempt, `$3` instance.
pub(super) const FENCE: &str =
    "id = $1 AND attempts = $2 AND lease_owner = $3 AND state IN ('running','cancelling')";

impl PgStore {
    /// Writes an event row. The shared advisory lock is taken in the statement, before
    /// the row draws its `seq`, and held until commit (see `events.rs`); other
    /// instances are notified after the commit ([`PgStore::bump`]).
    pub(super) async fn insert_event(
        &self,
        conn: &mut PgConnection,
        run_id: RunId,
        job_name: &str,
        at: OffsetDateTime,
        kind: &RunEventKind,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO etl_events (run_id, job_name, at, kind, payload) \
             SELECT $1, $2, $3, $4, $5 FROM (SELECT pg_advisory_xact_lock_shared($6)) AS writer",
        )
        .bind(run_id.as_uuid())
        .bind(job_name)
        .bind(at)
        .bind(event_kind_name(kind))
        .bind(sqlx::types::Json(kind))
        .bind(self.inner.lock_key)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// The common start in one statement: the run and its `pending` event, unless a
    /// unique index objects (the idempotency key exists, or the job has an active run);
    /// then `None`, and nothing was written.
    pub(super) async fn create_unopposed(&self, new: &NewRun) -> Result<Option<Run>, StoreError> {
        let at = truncate_micros(new.created_at);
        let pending = pending_event();
        let row = sqlx::query(&format!(
            "WITH run AS (INSERT INTO etl_runs (id, job_name, state, params, requested_by, \
               idempotency_key, created_at, updated_at, max_attempts, next_attempt_at) \
               VALUES ($1, $2, 'pending', $3, $4, $5, $6, $6, $7, $6) \
               ON CONFLICT DO NOTHING RETURNING {RUN_COLUMNS}), \
             event AS (INSERT INTO etl_events (run_id, job_name, at, kind, payload) \
               SELECT run.id, run.job_name, run.created_at, $8, $9 FROM run \
               CROSS JOIN (SELECT pg_advisory_xact_lock_shared($10)) AS writer) \
             SELECT {RUN_COLUMNS} FROM run"
        ))
        .bind(new.id.as_uuid())
        .bind(&new.job_name)
        .bind(&new.params)
        .bind(&new.requested_by)
        .bind(&new.idempotency_key)
        .bind(at)
        .bind(i32::try_from(new.max_attempts.max(1)).unwrap_or(i32::MAX))
        .bind(event_kind_name(&pending))
        .bind(sqlx::types::Json(&pending))
        .bind(self.inner.lock_key)
        .fetch_optional(&self.inner.pool)
        .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    /// The common finish in one statement: the attempt of a run still `running` ends
    /// (fenced), with its attempt row and event; with `next`, the same statement claims
    /// one run of `next.0` for the worker it frees (leased for `next.1`). `None` when
    /// the run is not in that case (fenced off, `cancelling`, or a retryable failure of
    /// its last attempt): nothing was written or claimed, and the caller takes the
    /// general path.
    pub(super) async fn finish_running(
        &self,
        fence: &AttemptFence,
        outcome: &AttemptOutcome,
        now: OffsetDateTime,
        next: Option<(&[String], Duration)>,
    ) -> Result<Option<(Run, Option<Claim>)>, StoreError> {
        // Only a retryable failure depends on the attempts left: the statement checks
        // that one remains for the `retrying` transition computed here.
        let needs_attempts_left = matches!(
            outcome,
            AttemptOutcome::Failed {
                retry_at: Some(_),
                ..
            }
        );
        let transition = finish_transition(
            RunState::Running,
            fence.attempt,
            fence.attempt.saturating_add(1),
            outcome.clone(),
            now,
        );
        let event = transition.event(fence.attempt);
        let finish = format!(
            "run AS (UPDATE etl_runs SET state = $4, error = $5, result = COALESCE($6, result), \
               next_attempt_at = COALESCE($7, next_attempt_at), finished_at = $8, \
               lease_owner = NULL, lease_expires_at = NULL, updated_at = $9, \
               max_attempts = max_attempts + $10 \
               WHERE id = $1 AND attempts = $2 AND lease_owner = $3 AND state = 'running' \
               AND (NOT $11 OR attempts < max_attempts) RETURNING {RUN_COLUMNS}), \
             attempt AS (UPDATE etl_attempts a SET finished_at = $9, outcome = $12, error = $13 \
               FROM run WHERE a.run_id = run.id AND a.number = $2 AND a.finished_at IS NULL \
               RETURNING a.run_id), \
             event AS (INSERT INTO etl_events (run_id, job_name, at, kind, payload) \
               SELECT run.id, run.job_name, $9, $14, $15 FROM run \
               LEFT JOIN attempt ON attempt.run_id = run.id \
               CROSS JOIN (SELECT pg_advisory_xact_lock_shared($16)) AS writer)"
        );
        let statement = if next.is_some() {
            // The claim runs only when the finish did: `wanted` is 1 or 0.
            let claim = claim_ctes(ClaimParams {
                instance: 3,
                expires: 18,
                now: 9,
                jobs: 17,
                wanted: "(SELECT count(*) FROM run)",
                event_kind: 19,
                event_payload: 20,
                lock_key: 16,
            });
            format!(
                "WITH {finish}, {claim} \
                 SELECT false AS claimed, {RUN_COLUMNS} FROM run \
                 UNION ALL SELECT true, {RUN_COLUMNS} FROM claimed"
            )
        } else {
            format!("WITH {finish} SELECT false AS claimed, {RUN_COLUMNS} FROM run")
        };
        let running = RunEventKind::State {
            state: RunState::Running,
            attempt: 0,
            error: None,
        };
        let expires = next.map(|(_, lease)| now + lease);
        let mut query = sqlx::query(&statement)
            .bind(fence.run_id.as_uuid())
            .bind(attempt_i32(fence.attempt))
            .bind(fence.instance_id.as_uuid())
            .bind(transition.state.as_str())
            .bind(&transition.error)
            .bind(&transition.result)
            .bind(transition.next_attempt_at)
            .bind(transition.finished_at)
            .bind(now)
            .bind(i32::try_from(transition.extra_attempts).unwrap_or(0))
            .bind(needs_attempts_left)
            .bind(transition.attempt_outcome)
            .bind(&transition.attempt_error)
            .bind(event_kind_name(&event))
            .bind(sqlx::types::Json(&event))
            .bind(self.inner.lock_key);
        if let (Some((jobs, _)), Some(expires)) = (next, expires) {
            query = query
                .bind(jobs)
                .bind(expires)
                .bind(event_kind_name(&running))
                .bind(sqlx::types::Json(running.clone()));
        }
        let rows = query.fetch_all(&self.inner.pool).await?;
        let mut finished = None;
        let mut claimed = None;
        for row in &rows {
            if row.try_get::<bool, _>("claimed")? {
                if let Some(expires) = expires {
                    claimed = Some(claim_from_row(row, fence.instance_id, expires)?);
                }
            } else {
                finished = Some(run_from_row(row)?);
            }
        }
        Ok(finished.map(|run| (run, claimed)))
    }

    pub(super) async fn insert_run_row(
        &self,
        conn: &mut PgConnection,
        new: &NewRun,
    ) -> Result<Option<Run>, StoreError> {
        let at = truncate_micros(new.created_at);
        let row = sqlx::query(&format!(
            "INSERT INTO etl_runs (id, job_name, state, params, requested_by, idempotency_key, \
             created_at, updated_at, max_attempts, next_attempt_at) \
             VALUES ($1, $2, 'pending', $3, $4, $5, $6, $6, $7, $6) \
             ON CONFLICT DO NOTHING RETURNING {RUN_COLUMNS}"
        ))
        .bind(new.id.as_uuid())
        .bind(&new.job_name)
        .bind(&new.params)
        .bind(&new.requested_by)
        .bind(&new.idempotency_key)
        .bind(at)
        .bind(i32::try_from(new.max_attempts.max(1)).unwrap_or(i32::MAX))
        .fetch_optional(conn)
        .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    pub(super) async fn set_cancel_state(
        &self,
        conn: &mut PgConnection,
        run: &Run,
        next: RunState,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let finished = (next == RunState::Cancelled).then_some(now);
        sqlx::query(
            "UPDATE etl_runs SET state = $1, updated_at = $2, \
             finished_at = COALESCE($3, finished_at) WHERE id = $4",
        )
        .bind(next.as_str())
        .bind(now)
        .bind(finished)
        .bind(run.id.as_uuid())
        .execute(conn)
        .await?;
        Ok(())
    }

    pub(super) async fn apply_cancel(
        &self,
        conn: &mut PgConnection,
        run: &Run,
        next: RunState,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.set_cancel_state(&mut *conn, run, next, now).await?;
        self.insert_event(conn, run.id, &run.job_name, now, &cancel_event(run, next))
            .await
    }

    pub(super) async fn apply_transition(
        &self,
        conn: &mut PgConnection,
        run_id: RunId,
        job_name: &str,
        attempt: u32,
        transition: &Transition,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE etl_runs SET state = $1, error = $2, result = COALESCE($3, result), \
             next_attempt_at = COALESCE($4, next_attempt_at), finished_at = $5, \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = $6, \
             max_attempts = max_attempts + $7 WHERE id = $8",
        )
        .bind(transition.state.as_str())
        .bind(&transition.error)
        .bind(&transition.result)
        .bind(transition.next_attempt_at)
        .bind(transition.finished_at)
        .bind(now)
        .bind(i32::try_from(transition.extra_attempts).unwrap_or(0))
        .bind(run_id.as_uuid())
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "UPDATE etl_attempts SET finished_at = $1, outcome = $2, error = $3 \
             WHERE run_id = $4 AND number = $5 AND finished_at IS NULL",
        )
        .bind(now)
        .bind(transition.attempt_outcome)
        .bind(&transition.attempt_error)
        .bind(run_id.as_uuid())
        .bind(attempt_i32(attempt))
        .execute(&mut *conn)
        .await?;
        self.insert_event(conn, run_id, job_name, now, &transition.event(attempt))
            .await
    }
}

pub(super) fn pending_event() -> RunEventKind {
    RunEventKind::State {
        state: RunState::Pending,
        attempt: 0,
        error: None,
    }
}

pub(super) fn cancel_event(run: &Run, next: RunState) -> RunEventKind {
    RunEventKind::State {
        state: next,
        attempt: run.attempts,
        error: None,
    }
}

/// A stable advisory-lock key per schema (FNV-1a).
pub(super) fn lock_key(schema: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("pulse_etl_events:{schema}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

pub(super) fn attempt_i32(attempt: u32) -> i32 {
    i32::try_from(attempt).unwrap_or(i32::MAX)
}

pub(super) fn u32_of(value: i32, column: &str) -> Result<u32, StoreError> {
    to_u32(i64::from(value), column)
}

pub(super) fn run_from_row(row: &PgRow) -> Result<Run, StoreError> {
    let state: String = row.try_get("state")?;
    let total: Option<i64> = row.try_get("progress_total")?;
    Ok(Run {
        id: RunId::from_uuid(row.try_get("id")?),
        job_name: row.try_get("job_name")?,
        state: parse_state(&state)?,
        params: row.try_get("params")?,
        requested_by: row.try_get("requested_by")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        attempts: u32_of(row.try_get("attempts")?, "attempts")?,
        progress: Progress {
            done: to_u64(row.try_get("progress_done")?, "progress_done")?,
            total: total.map(|t| to_u64(t, "progress_total")).transpose()?,
            message: row.try_get("progress_message")?,
        },
        error: row.try_get("error")?,
        result: row.try_get("result")?,
    })
}

pub(super) fn event_from_row(row: &PgRow) -> Result<RunEvent, StoreError> {
    let payload: Value = row.try_get("payload")?;
    Ok(RunEvent {
        seq: row.try_get("seq")?,
        run_id: RunId::from_uuid(row.try_get("run_id")?),
        job_name: row.try_get("job_name")?,
        at: row.try_get("at")?,
        kind: serde_json::from_value(payload)
            .map_err(|err| StoreError::Corrupt(format!("event payload: {err}")))?,
    })
}

pub(super) async fn fetch_run(
    conn: &mut PgConnection,
    id: RunId,
    lock: bool,
) -> Result<Option<Run>, StoreError> {
    let suffix = if lock { " FOR UPDATE" } else { "" };
    let row = sqlx::query(&format!(
        "SELECT {RUN_COLUMNS} FROM etl_runs WHERE id = $1{suffix}"
    ))
    .bind(id.as_uuid())
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(run_from_row).transpose()
}

pub(super) async fn must_fetch_run(conn: &mut PgConnection, id: RunId) -> Result<Run, StoreError> {
    fetch_run(conn, id, false)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("run {id} vanished")))
}

pub(super) async fn by_idempotency_key(
    conn: &mut PgConnection,
    key: &str,
) -> Result<Option<Run>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {RUN_COLUMNS} FROM etl_runs WHERE idempotency_key = $1"
    ))
    .bind(key)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(run_from_row).transpose()
}

pub(super) async fn active_slot_holder(
    conn: &mut PgConnection,
    job_name: &str,
    lock: bool,
) -> Result<Option<Run>, StoreError> {
    let suffix = if lock { " FOR UPDATE" } else { "" };
    let row = sqlx::query(&format!(
        "SELECT {RUN_COLUMNS} FROM etl_runs WHERE job_name = $1 AND state IN {SLOT_STATES}{suffix}"
    ))
    .bind(job_name)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(run_from_row).transpose()
}
