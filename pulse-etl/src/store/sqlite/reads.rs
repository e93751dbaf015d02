//! The read-only queries.

use sqlx::{Row, SqlitePool};

use super::rows::{RUN_COLUMNS, event_from_row, fetch_run, opt_json, opt_time, run_from_row};
use crate::model::{Attempt, InstanceId, LogLine, Run, RunEvent, RunId, StateCounts};
use crate::store::StoreError;
use crate::store::common::{
    ACTIVE_STATES, from_micros, log_line, parse_state, parse_uuid, to_u32, to_u64,
};

pub(super) async fn get_run(pool: &SqlitePool, id: RunId) -> Result<Option<Run>, StoreError> {
    let mut conn = pool.acquire().await?;
    fetch_run(&mut conn, id).await
}

pub(super) async fn list_runs(
    pool: &SqlitePool,
    job_name: Option<&str>,
    limit: u32,
) -> Result<Vec<Run>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {RUN_COLUMNS} FROM etl_runs WHERE (?1 IS NULL OR job_name = ?1) \
         ORDER BY created_at DESC, id DESC LIMIT ?2"
    ))
    .bind(job_name)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(run_from_row).collect()
}

pub(super) async fn latest_runs(pool: &SqlitePool) -> Result<Vec<Run>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {RUN_COLUMNS} FROM (SELECT *, ROW_NUMBER() OVER \
         (PARTITION BY job_name ORDER BY created_at DESC, id DESC) AS position \
         FROM etl_runs) WHERE position = 1 ORDER BY job_name"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter().map(run_from_row).collect()
}

pub(super) async fn active_runs(
    pool: &SqlitePool,
    job_name: Option<&str>,
) -> Result<Vec<Run>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {RUN_COLUMNS} FROM etl_runs WHERE state IN {ACTIVE_STATES} \
         AND (?1 IS NULL OR job_name = ?1) ORDER BY created_at"
    ))
    .bind(job_name)
    .fetch_all(pool)
    .await?;
    rows.iter().map(run_from_row).collect()
}

pub(super) async fn count_states(pool: &SqlitePool) -> Result<StateCounts, StoreError> {
    let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM etl_runs GROUP BY state")
        .fetch_all(pool)
        .await?;
    let mut counts = StateCounts::default();
    for row in rows {
        let state: String = row.try_get("state")?;
        counts.add(parse_state(&state)?, to_u64(row.try_get("n")?, "count")?);
    }
    Ok(counts)
}

pub(super) async fn attempts(pool: &SqlitePool, id: RunId) -> Result<Vec<Attempt>, StoreError> {
    let rows = sqlx::query(
        "SELECT number, instance_id, started_at, lease_expires_at, heartbeat_at, \
         finished_at, outcome, error, checkpoint FROM etl_attempts WHERE run_id = ? \
         ORDER BY number",
    )
    .bind(id.to_string())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let instance: String = row.try_get("instance_id")?;
            Ok(Attempt {
                run_id: id,
                number: to_u32(row.try_get("number")?, "number")?,
                instance_id: InstanceId::from(parse_uuid(&instance, "instance_id")?),
                started_at: from_micros(row.try_get("started_at")?)?,
                lease_expires_at: from_micros(row.try_get("lease_expires_at")?)?,
                heartbeat_at: from_micros(row.try_get("heartbeat_at")?)?,
                finished_at: opt_time(row.try_get("finished_at")?)?,
                outcome: row.try_get("outcome")?,
                error: row.try_get("error")?,
                checkpoint: opt_json(row.try_get("checkpoint")?, "checkpoint")?,
            })
        })
        .collect()
}

pub(super) async fn logs(pool: &SqlitePool, id: RunId) -> Result<Vec<LogLine>, StoreError> {
    let rows = sqlx::query(
        "SELECT seq, run_id, job_name, at, payload FROM etl_events \
         WHERE run_id = ? AND kind = 'log' ORDER BY seq",
    )
    .bind(id.to_string())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .filter_map(|row| match event_from_row(row) {
            Ok(event) => log_line(event).map(Ok),
            Err(err) => Some(Err(err)),
        })
        .collect()
}

pub(super) async fn events_since(
    pool: &SqlitePool,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<RunEvent>, StoreError> {
    let rows = sqlx::query(
        "SELECT seq, run_id, job_name, at, payload FROM etl_events WHERE seq > ? \
         ORDER BY seq LIMIT ?",
    )
    .bind(after_seq)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(event_from_row).collect()
}

pub(super) async fn latest_event_seq(pool: &SqlitePool) -> Result<i64, StoreError> {
    let seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM etl_events")
        .fetch_one(pool)
        .await?;
    Ok(seq)
}

pub(super) async fn last_schedule_slots(
    pool: &SqlitePool,
) -> Result<Vec<(String, time::OffsetDateTime)>, StoreError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT job_name, MAX(slot) FROM etl_schedule_slots GROUP BY job_name ORDER BY job_name",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(job, slot)| Ok((job, from_micros(slot)?)))
        .collect()
}
