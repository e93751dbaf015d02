//! Rows read back into the model, the same way from either database.

use crate::model::{Attempt, InstanceId, Progress, Run, RunEvent, RunId};
use crate::store::StoreError;
use crate::store::common::{parse_state, to_u32, to_u64};

use super::conn::SqlRow;

/// A run, from a row with the run columns (`queries/*/run_by_id.sql`).
pub(crate) fn run_from_row(row: &impl SqlRow) -> Result<Run, StoreError> {
    Ok(Run {
        id: RunId::from_uuid(row.id("id")?),
        job_name: row.text("job_name")?,
        state: parse_state(&row.text("state")?)?,
        params: row.json("params")?,
        requested_by: row.opt_text("requested_by")?,
        created_at: row.time("created_at")?,
        started_at: row.opt_time("started_at")?,
        finished_at: row.opt_time("finished_at")?,
        attempts: to_u32(row.int("attempts")?, "attempts")?,
        progress: Progress {
            done: to_u64(row.int("progress_done")?, "progress_done")?,
            total: row
                .opt_int("progress_total")?
                .map(|total| to_u64(total, "progress_total"))
                .transpose()?,
            message: row.opt_text("progress_message")?,
        },
        error: row.opt_text("error")?,
        result: row.opt_json("result")?,
    })
}

/// The run's `max_attempts` column.
pub(crate) fn max_attempts(row: &impl SqlRow) -> Result<u32, StoreError> {
    to_u32(row.int("max_attempts")?, "max_attempts")
}

/// An event, from `seq, run_id, job_name, at, payload`.
pub(crate) fn event_from_row(row: &impl SqlRow) -> Result<RunEvent, StoreError> {
    Ok(RunEvent {
        seq: row.int("seq")?,
        run_id: RunId::from_uuid(row.id("run_id")?),
        job_name: row.text("job_name")?,
        at: row.time("at")?,
        kind: serde_json::from_value(row.json("payload")?)
            .map_err(|err| StoreError::Corrupt(format!("event payload: {err}")))?,
    })
}

/// An attempt of `run_id`, from a row of `queries/*/attempts.sql`.
pub(crate) fn attempt_from_row(run_id: RunId, row: &impl SqlRow) -> Result<Attempt, StoreError> {
    Ok(Attempt {
        run_id,
        number: to_u32(row.int("number")?, "number")?,
        instance_id: InstanceId::from(row.id("instance_id")?),
        started_at: row.time("started_at")?,
        lease_expires_at: row.time("lease_expires_at")?,
        heartbeat_at: row.time("heartbeat_at")?,
        finished_at: row.opt_time("finished_at")?,
        outcome: row.opt_text("outcome")?,
        error: row.opt_text("error")?,
        checkpoint: row.opt_json("checkpoint")?,
    })
}
