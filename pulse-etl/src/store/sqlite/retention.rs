//! Retention on SQLite: old events, finished runs and schedule slots deleted in small
//! batches (one writer at a time: the store's write lock).

use sqlx::SqliteConnection;

use crate::store::common::to_micros;
use crate::store::{PruneBatch, PruneReport, StoreError};

pub(super) async fn prune(
    conn: &mut SqliteConnection,
    batch: PruneBatch,
) -> Result<PruneReport, StoreError> {
    let limit = i64::from(batch.limit.max(1));
    let runs_before = to_micros(batch.runs_before);
    let mut report = PruneReport::default();
    let aged: Vec<i64> = sqlx::query_scalar(
        "DELETE FROM etl_events WHERE seq IN (SELECT seq FROM etl_events \
         WHERE at < ? AND kind <> 'log' ORDER BY seq LIMIT ?) RETURNING seq",
    )
    .bind(to_micros(batch.events_before))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut through = aged.iter().max().copied();
    report.events = count(aged.len());

    // Finished before the cut-off, and not the latest run of its job.
    let runs: Vec<String> = sqlx::query_scalar(
        "SELECT r.id FROM etl_runs r \
         WHERE r.state IN ('succeeded', 'failed', 'cancelled') AND r.finished_at < ? \
         AND EXISTS (SELECT 1 FROM etl_runs n WHERE n.job_name = r.job_name \
                     AND (n.created_at, n.id) > (r.created_at, r.id)) \
         ORDER BY r.finished_at LIMIT ?",
    )
    .bind(runs_before)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    if !runs.is_empty() {
        let ids = serde_json::to_string(&runs)
            .map_err(|err| StoreError::Corrupt(format!("run ids: {err}")))?;
        let seqs: Vec<i64> = sqlx::query_scalar(
            "DELETE FROM etl_events WHERE run_id IN (SELECT value FROM json_each(?)) \
             RETURNING seq",
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        through = through.max(seqs.iter().max().copied());
        report.events += count(seqs.len());
        sqlx::query("DELETE FROM etl_attempts WHERE run_id IN (SELECT value FROM json_each(?))")
            .bind(&ids)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "UPDATE etl_schedule_slots SET run_id = NULL \
             WHERE run_id IN (SELECT value FROM json_each(?))",
        )
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
        report.runs =
            sqlx::query("DELETE FROM etl_runs WHERE id IN (SELECT value FROM json_each(?))")
                .bind(&ids)
                .execute(&mut *conn)
                .await?
                .rows_affected();
    }

    // Old slots, but each job's newest stays: catch-up counts from it.
    report.slots = sqlx::query(
        "DELETE FROM etl_schedule_slots WHERE (job_name, slot) IN (\
           SELECT o.job_name, o.slot FROM etl_schedule_slots o WHERE o.slot < ? \
           AND o.slot < (SELECT MAX(m.slot) FROM etl_schedule_slots m \
                         WHERE m.job_name = o.job_name) \
           ORDER BY o.slot LIMIT ?)",
    )
    .bind(runs_before)
    .bind(limit)
    .execute(&mut *conn)
    .await?
    .rows_affected();

    if let Some(seq) = through {
        sqlx::query(
            "UPDATE etl_retention SET events_pruned_through = MAX(events_pruned_through, ?) \
             WHERE id = 1",
        )
        .bind(seq)
        .execute(&mut *conn)
        .await?;
    }
    Ok(report)
}

pub(super) async fn events_pruned_through(conn: &sqlx::SqlitePool) -> Result<i64, StoreError> {
    let through: Option<i64> =
        sqlx::query_scalar("SELECT events_pruned_through FROM etl_retention WHERE id = 1")
            .fetch_optional(conn)
            .await?;
    Ok(through.unwrap_or(0))
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}
