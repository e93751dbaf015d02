//! [`SqlBackend`]: what a database gives the shared protocol.

use std::ops::DerefMut;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::watch;

use super::conn::{Param, SqlConn, SqlRow, Stmt};
use super::queries::Queries;
use super::rows::event_from_row;
use crate::model::{Run, RunEvent};
use crate::store::{AttemptFence, AttemptOutcome, Claim, NewRun, StoreError, StorePool};

/// A database the protocol runs on.
#[async_trait]
pub(crate) trait SqlBackend: Send + Sync + 'static {
    /// A connection.
    type Conn: SqlConn;
    /// A write transaction, rolled back when dropped.
    type Tx: DerefMut<Target = Self::Conn> + Send;
    /// A pooled connection, for reads and one-statement writes.
    type Pooled: DerefMut<Target = Self::Conn> + Send;

    /// `sqlite` or `postgres`.
    const KIND: &'static str;

    /// The dialect's statements.
    fn queries(&self) -> &'static Queries;

    /// The event-lock key bound to `insert_event.sql` and the claims (PostgreSQL).
    fn event_lock(&self) -> i64 {
        0
    }

    /// The retention-lock key bound to `prune_lock.sql` (PostgreSQL).
    fn retention_lock(&self) -> i64 {
        0
    }

    fn store_pool(&self) -> StorePool;

    fn subscribe(&self) -> watch::Receiver<u64>;

    /// After a commit that changed something: wake this store's subscribers (and tell
    /// other instances, where there are any).
    fn committed(&self);

    async fn begin(&self) -> Result<Self::Tx, StoreError>;

    async fn commit(tx: Self::Tx) -> Result<(), StoreError>;

    async fn pooled(&self) -> Result<Self::Pooled, StoreError>;

    /// The parameter a claim statement takes for the jobs it may claim: the names
    /// (SQLite), or what the backend registered for them.
    async fn job_filter<'j>(&self, jobs: &'j [String]) -> Result<Param<'j>, StoreError> {
        Ok(Param::Names(jobs))
    }

    /// The common create in one statement, where the database can: `None` when a
    /// unique index objected (nothing written) or the backend has no such statement.
    async fn create_unopposed(&self, _new: &NewRun) -> Result<Option<Run>, StoreError> {
        Ok(None)
    }

    /// The common finish (a `running` run's attempt ends) in one statement, claiming
    /// the freed worker's next run with `next`, where the database can: `None` when
    /// the run is not in that case (nothing written) or the backend has no such
    /// statement.
    async fn finish_running(
        &self,
        _fence: &AttemptFence,
        _outcome: &AttemptOutcome,
        _now: OffsetDateTime,
        _next: Option<(&[String], Duration)>,
    ) -> Result<Option<(Run, Option<Claim>)>, StoreError> {
        Ok(None)
    }

    /// Events after `after_seq`, in order.
    async fn events_since(&self, after_seq: i64, limit: u32) -> Result<Vec<RunEvent>, StoreError> {
        let stmt = Stmt::new(self.queries().events_since)
            .bind(after_seq)
            .bind(limit);
        let rows = self.pooled().await?.all(stmt).await?;
        rows.iter().map(event_from_row).collect()
    }

    /// The newest event's sequence number.
    async fn latest_event_seq(&self) -> Result<i64, StoreError> {
        let stmt = Stmt::new(self.queries().latest_event_seq);
        let row = self.pooled().await?.optional(stmt).await?;
        row.map_or(Ok(0), |row| row.int("seq"))
    }
}
