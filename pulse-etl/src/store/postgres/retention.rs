//! Retention on PostgreSQL: the batches are the shared protocol's
//! (`store/sql/retention.rs`); one instance prunes at a time, by a transaction-level
//! advisory lock another instance does not wait for.

/// Mixed into the schema's event-lock key: the schema's retention lock.
pub(super) const RETENTION_LOCK: i64 = 0x7265_7465_6e74;

#[cfg(test)]
mod tests {
    use super::RETENTION_LOCK;
    use crate::store::postgres::tests::test_support::fresh_store;
    use crate::store::{JobStore, PruneBatch};

    /// Against a real database: while another session holds the schema's retention lock,
    /// a batch does nothing and says so; once it is released, the batch runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL (PULSE_TEST_DATABASE_URL)"]
    async fn one_instance_prunes_at_a_time() {
        use sqlx::Connection;

        let (store, url, schema) = fresh_store().await;
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
