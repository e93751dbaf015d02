//! Row decoding and the statements several writes share.

use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use time::OffsetDateTime;

use crate::model::{Progress, Run, RunEvent, RunEventKind, RunId, RunState};
use crate::store::common::{
    SLOT_STATES, Transition, event_kind_name, event_payload, from_micros, parse_json, parse_state,
    parse_uuid, to_micros, to_u32, to_u64,
};
use crate::store::{NewRun, StoreError};

pub(super) const RUN_COLUMNS: &str = "id, job_name, state, params, requested_by, created_at, started_at, \
     finished_at, attempts, max_attempts, progress_done, progress_total, progress_message, \
     error, result, checkpoint";

pub(super) fn run_from_row(row: &SqliteRow) -> Result<Run, StoreError> {
    let id: String = row.try_get("id")?;
    let state: String = row.try_get("state")?;
    let params: String = row.try_get("params")?;
    let result: Option<String> = row.try_get("result")?;
    let total: Option<i64> = row.try_get("progress_total")?;
    Ok(Run {
        id: RunId::from_uuid(parse_uuid(&id, "id")?),
        job_name: row.try_get("job_name")?,
        state: parse_state(&state)?,
        params: parse_json(&params, "params")?,
        requested_by: row.try_get("requested_by")?,
        created_at: from_micros(row.try_get("created_at")?)?,
        started_at: opt_time(row.try_get("started_at")?)?,
        finished_at: opt_time(row.try_get("finished_at")?)?,
        attempts: to_u32(row.try_get("attempts")?, "attempts")?,
        progress: Progress {
            done: to_u64(row.try_get("progress_done")?, "progress_done")?,
            total: total.map(|t| to_u64(t, "progress_total")).transpose()?,
            message: row.try_get("progress_message")?,
        },
        error: row.try_get("error")?,
        result: result.map(|r| parse_json(&r, "result")).transpose()?,
    })
}

pub(super) fn opt_time(value: Option<i64>) -> Result<Option<OffsetDateTime>, StoreError> {
    value.map(from_micros).transpose()
}

pub(super) fn opt_json(value: Option<String>, column: &str) -> Result<Option<Value>, StoreError> {
    value.map(|text| parse_json(&text, column)).transpose()
}

pub(super) fn event_from_row(row: &SqliteRow) -> Result<RunEvent, StoreError> {
    let run_id: String = row.try_get("run_id")?;
    let payload: String = row.try_get("payload")?;
    Ok(RunEvent {
        seq: row.try_get("seq")?,
        run_id: RunId::from_uuid(parse_uuid(&run_id, "run_id")?),
        job_name: row.try_get("job_name")?,
        at: from_micros(row.try_get("at")?)?,
        kind: serde_json::from_str(&payload)
            .map_err(|err| StoreError::Corrupt(format!("event payload: {err}")))?,
    })
}

pub(super) async fn insert_event(
    conn: &mut SqliteConnection,
    run_id: RunId,
    job_name: &str,
    at: OffsetDateTime,
    kind: &RunEventKind,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO etl_events (run_id, job_name, at, kind, payload) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(run_id.to_string())
    .bind(job_name)
    .bind(to_micros(at))
    .bind(event_kind_name(kind))
    .bind(event_payload(kind))
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn fetch_run(
    conn: &mut SqliteConnection,
    id: RunId,
) -> Result<Option<Run>, StoreError> {
    let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM etl_runs WHERE id = ?"))
        .bind(id.to_string())
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(run_from_row).transpose()
}

pub(super) async fn must_fetch_run(
    conn: &mut SqliteConnection,
    id: RunId,
) -> Result<Run, StoreError> {
    fetch_run(conn, id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("run {id} vanished")))
}

pub(super) async fn insert_run(
    conn: &mut SqliteConnection,
    new: &NewRun,
) -> Result<Run, StoreError> {
    let now = to_micros(new.created_at);
    sqlx::query(
        "INSERT INTO etl_runs (id, job_name, state, params, requested_by, idempotency_key, \
         created_at, updated_at, max_attempts, next_attempt_at) \
         VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(new.id.to_string())
    .bind(&new.job_name)
    .bind(new.params.to_string())
    .bind(&new.requested_by)
    .bind(&new.idempotency_key)
    .bind(now)
    .bind(now)
    .bind(i64::from(new.max_attempts.max(1)))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let kind = RunEventKind::State {
        state: RunState::Pending,
        attempt: 0,
        error: None,
    };
    insert_event(conn, new.id, &new.job_name, new.created_at, &kind).await?;
    must_fetch_run(conn, new.id).await
}

pub(super) async fn active_slot_holder(
    conn: &mut SqliteConnection,
    job_name: &str,
) -> Result<Option<(RunId, RunState)>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT id, state FROM etl_runs WHERE job_name = ? AND state IN {SLOT_STATES}"
    ))
    .bind(job_name)
    .fetch_optional(conn)
    .await?;
    row.map(|row| -> Result<_, StoreError> {
        let id: String = row.try_get("id")?;
        let state: String = row.try_get("state")?;
        Ok((
            RunId::from_uuid(parse_uuid(&id, "id")?),
            parse_state(&state)?,
        ))
    })
    .transpose()
}

/// Moves the active run of a job out of the way for a forced start.
pub(super) async fn cancel_for_force(
    conn: &mut SqliteConnection,
    job_name: &str,
    now: OffsetDateTime,
) -> Result<Option<RunId>, StoreError> {
    let Some((id, state)) = active_slot_holder(&mut *conn, job_name).await? else {
        return Ok(None);
    };
    let run = must_fetch_run(&mut *conn, id).await?;
    let next = if state == RunState::Running {
        RunState::Cancelling
    } else {
        RunState::Cancelled
    };
    apply_cancel(conn, &run, next, now).await?;
    Ok(Some(id))
}

pub(super) async fn apply_cancel(
    conn: &mut SqliteConnection,
    run: &Run,
    next: RunState,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let finished = (next == RunState::Cancelled).then(|| to_micros(now));
    sqlx::query(
        "UPDATE etl_runs SET state = ?, updated_at = ?, finished_at = COALESCE(?, finished_at) \
         WHERE id = ?",
    )
    .bind(next.as_str())
    .bind(to_micros(now))
    .bind(finished)
    .bind(run.id.to_string())
    .execute(&mut *conn)
    .await?;
    let kind = RunEventKind::State {
        state: next,
        attempt: run.attempts,
        error: None,
    };
    insert_event(conn, run.id, &run.job_name, now, &kind).await
}

/// Writes a transition of a run whose attempt `attempt` ends, with its event.
pub(super) async fn apply_transition(
    conn: &mut SqliteConnection,
    run_id: RunId,
    job_name: &str,
    attempt: u32,
    transition: &Transition,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE etl_runs SET state = ?, error = ?, result = COALESCE(?, result), \
         next_attempt_at = COALESCE(?, next_attempt_at), finished_at = ?, lease_owner = NULL, \
         lease_expires_at = NULL, updated_at = ?, max_attempts = max_attempts + ? WHERE id = ?",
    )
    .bind(transition.state.as_str())
    .bind(&transition.error)
    .bind(transition.result.as_ref().map(Value::to_string))
    .bind(transition.next_attempt_at.map(to_micros))
    .bind(transition.finished_at.map(to_micros))
    .bind(to_micros(now))
    .bind(transition.extra_attempts)
    .bind(run_id.to_string())
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE etl_attempts SET finished_at = ?, outcome = ?, error = ? \
         WHERE run_id = ? AND number = ? AND finished_at IS NULL",
    )
    .bind(to_micros(now))
    .bind(transition.attempt_outcome)
    .bind(&transition.attempt_error)
    .bind(run_id.to_string())
    .bind(i64::from(attempt))
    .execute(&mut *conn)
    .await?;
    insert_event(conn, run_id, job_name, now, &transition.event(attempt)).await
}

/// The fence condition on `etl_runs`, binding run id, attempt and instance in order.
pub(super) const FENCE: &str =
    "id = ? AND attempts = ? AND lease_owner = ? AND state IN ('running','cancelling')";
