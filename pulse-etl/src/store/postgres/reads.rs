//! The read-only queries.

use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::rows::{RUN_COLUMNS, event_from_row, fetch_run, run_from_row, u32_of};
use crate::model::{Attempt, InstanceId, LogLine, Run, RunId, StateCounts};
use crate::store::StoreError;
use crate::store::common::{ACTIVE_STATES, log_line, parse_state, to_u64};

pub(super) async fn get_run(pool: &PgPool, id: RunId) -> Result<Option<Run>, StoreError> {
    let mut conn = pool.acquire().await?;
    fetch_run(&mut conn, id, false).await
}

pub(super) async fn list_runs(
    pool: &PgPool,
    job_name: Option<&str>,
    limit: u32,
) -> Result<Vec<Run>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {RUN_COLUMNS} FROM etl_runs WHERE ($1::text IS NULL OR job_name = $1) \
         ORDER BY created_at DESC, id DESC LIMIT $2"
    ))
    .bind(job_name)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(run_from_row).collect()
}

pub(super) async fn latest_runs(pool: &PgPool) -> Result<Vec<Run>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT DISTINCT ON (job_name) {RUN_COLUMNS} FROM etl_runs \
         ORDER BY job_name, created_at DESC, id DESC"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter().map(run_from_row).collect()
}

pub(super) async fn active_runs(
    pool: &PgPool,
    job_name: Option<&str>,
) -> Result<Vec<Run>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {RUN_COLUMNS} FROM etl_runs WHERE state IN {ACTIVE_STATES} \
         AND ($1::text IS NULL OR job_name = $1) ORDER BY created_at"
    ))
    .bind(job_name)
    .fetch_all(pool)
    .await?;
    rows.iter().map(run_from_row).collect()
}

pub(super) async fn count_states(pool: &PgPool) -> Result<StateCounts, StoreError> {
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

pub(super) async fn attempts(pool: &PgPool, id: RunId) -> Result<Vec<Attempt>, StoreError> {
    let rows = sqlx::query(
        "SELECT number, instance_id, started_at, lease_expires_at, heartbeat_at, \
         finished_at, outcome, error, checkpoint FROM etl_attempts WHERE run_id = $1 \
         ORDER BY number",
    )
    .bind(id.as_uuid())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Attempt {
                run_id: id,
                number: u32_of(row.try_get("number")?, "number")?,
                instance_id: InstanceId::from(row.try_get::<Uuid, _>("instance_id")?),
                started_at: row.try_get("started_at")?,
                lease_expires_at: row.try_get("lease_expires_at")?,
                heartbeat_at: row.try_get("heartbeat_at")?,
                finished_at: row.try_get("finished_at")?,
                outcome: row.try_get("outcome")?,
                error: row.try_get("error")?,
                checkpoint: row.try_get("checkpoint")?,
            })
        })
        .collect()
}

pub(super) async fn logs(pool: &PgPool, id: RunId) -> Result<Vec<LogLine>, StoreError> {
    let rows = sqlx::query(
        "SELECT seq, run_id, job_name, at, payload FROM etl_events \
         WHERE run_id = $1 AND kind = 'log' ORDER BY seq",
    )
    .bind(id.as_uuid())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .filter_map(|row| match event_from_row(row) {
            Ok(event) => log_line(event).map(Ok),
            Err(err) => Some(Err(err)),
        })
        .collect()
}

pub(super) async fn last_schedule_slots(
    pool: &PgPool,
) -> Result<Vec<(String, time::OffsetDateTime)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT job_name, MAX(slot) FROM etl_schedule_slots GROUP BY job_name ORDER BY job_name",
    )
    .fetch_all(pool)
    .await?)
}
