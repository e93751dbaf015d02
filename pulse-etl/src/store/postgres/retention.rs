//! Retention on PostgreSQL: old events, finished runs and schedule slots deleted in
//! small batches, one instance at a time.

use sqlx::PgPool;
use uuid::Uuid;

use crate::store::common::truncate_micros;
use crate::store::{PruneBatch, PruneReport, StoreError};

/// Mixed into the schema's event-lock key: the schema's retention lock.
const RETENTION_LOCK: i64 = 0x7265_7465_6e74;

pub(super) async fn prune(
    pool: &PgPool,
    lock_key: i64,
    batch: PruneBatch,
) -> Result<PruneReport, StoreError> {
    let limit = i64::from(batch.limit.max(1));
    let events_before = truncate_micros(batch.events_before);
    let runs_before = truncate_micros(batch.runs_before);
    let mut tx = pool.begin().await?;
    // Held until this transaction ends; another instance skips its turn.
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(lock_key ^ RETENTION_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(PruneReport {
            busy: true,
            ..PruneReport::default()
        });
    }
    let mut report = PruneReport::default();
    let aged: Vec<i64> = sqlx::query_scalar(
        "DELETE FROM etl_events WHERE seq IN (SELECT seq FROM etl_events \
         WHERE at < $1 AND kind <> 'log' ORDER BY seq LIMIT $2) RETURNING seq",
    )
    .bind(events_before)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let mut through = aged.iter().max().copied();
    report.events = count(aged.len());

    // Finished before the cut-off, and not the latest run of its job.
    let runs: Vec<Uuid> = sqlx::query_scalar(
        "SELECT r.id FROM etl_runs r \
         WHERE r.state IN ('succeeded', 'failed', 'cancelled') AND r.finished_at < $1 \
         AND EXISTS (SELECT 1 FROM etl_runs n WHERE n.job_name = r.job_name \
                     AND (n.created_at, n.id) > (r.created_at, r.id)) \
         ORDER BY r.finished_at LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(runs_before)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    if !runs.is_empty() {
        let seqs: Vec<i64> =
            sqlx::query_scalar("DELETE FROM etl_events WHERE run_id = ANY($1) RETURNING seq")
                .bind(&runs)
                .fetch_all(&mut *tx)
                .await?;
        through = through.max(seqs.iter().max().copied());
        report.events += count(seqs.len());
        sqlx::query("DELETE FROM etl_attempts WHERE run_id = ANY($1)")
            .bind(&runs)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE etl_schedule_slots SET run_id = NULL WHERE run_id = ANY($1)")
            .bind(&runs)
            .execute(&mut *tx)
            .await?;
        report.runs = sqlx::query("DELETE FROM etl_runs WHERE id = ANY($1)")
            .bind(&runs)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }

    // Old slots, but each job's newest stays: catch-up counts from it.
    report.slots = sqlx::query(
        "DELETE FROM etl_schedule_slots WHERE (job_name, slot) IN (\
           SELECT o.job_name, o.slot FROM etl_schedule_slots o WHERE o.slot < $1 \
           AND o.slot < (SELECT MAX(m.slot) FROM etl_schedule_slots m \
                         WHERE m.job_name = o.job_name) \
           ORDER BY o.slot LIMIT $2)",
    )
    .bind(runs_before)
    .bind(limit)
    .execute(&mut *tx)
    .await?
    .rows_affected();

    if let Some(seq) = through {
        sqlx::query(
            "UPDATE etl_retention SET events_pruned_through = GREATEST(events_pruned_through, $1) \
             WHERE id = 1",
        )
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(report)
}

pub(super) async fn events_pruned_through(pool: &PgPool) -> Result<i64, StoreError> {
    let through: Option<i64> =
        sqlx::query_scalar("SELECT events_pruned_through FROM etl_retention WHERE id = 1")
            .fetch_optional(pool)
            .await?;
    Ok(through.unwrap_or(0))
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::RETENTION_LOCK;
    use crate::store::postgres::{PgStore, PgStoreOptions};
    use crate::store::{JobStore, PruneBatch};

    /// Against a real database: while another session holds the schema's retention lock,
    /// a batch does nothing and says so; once it is released, the batch runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL (PULSE_TEST_DATABASE_URL)"]
    async fn one_instance_prunes_at_a_time() {
        use sqlx::Connection;

        let url = std::env::var("PULSE_TEST_DATABASE_URL").expect("PULSE_TEST_DATABASE_URL");
        let schema = format!("etl_test_{}", uuid::Uuid::new_v4().simple());
        let store = PgStore::connect_with(PgStoreOptions::new(&url).with_schema(&schema))
            .await
            .unwrap();
        let batch = PruneBatch {
            events_before: time::OffsetDateTime::now_utc(),
            runs_before: time::OffsetDateTime::now_utc(),
            limit: 10,
        };
        let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
        let mut held = other.begin().await.unwrap();
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(store.inner.lock_key ^ RETENTION_LOCK)
            .execute(&mut *held)
            .await
            .unwrap();
        assert!(store.prune(batch).await.unwrap().busy);
        held.commit().await.unwrap();
        assert!(!store.prune(batch).await.unwrap().busy);

        sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .execute(&mut other)
            .await
            .unwrap();
    }
}
