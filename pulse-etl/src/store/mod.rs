//! Job stores: one [`JobStore`] trait, implemented by [`SqliteStore`] (embedded, the
//! default) and [`PgStore`] (many workers on one PostgreSQL database).
//!
//! A store owns every invariant that must survive a crash, so the engine holds none:
//! - one active run per job, by a partial unique index;
//! - a state change and its event row written in one transaction;
//! - every write of an attempt fenced by its attempt number (and instance id), so a
//!   stalled worker cannot overwrite a run that another worker has taken over;
//! - idempotency keys unique; schedule slots unique.
//!
//! Time always comes from the caller (the engine's [`WallClock`](crate::engine::WallClock)), never
//! from the database, so tests can drive leases with a manual clock.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::model::{
    Attempt, InstanceId, LogLevel, LogLine, Progress, Run, RunEvent, RunId, StateCounts,
};

// The state machine every store shares (the in-memory one included); some helpers are
// only for the SQL stores.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
mod common;
mod error;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use error::StoreError;
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{PgStore, PgStoreOptions};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// A connection pool of the store's database, for jobs that load data next to the runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StorePool {
    /// A SQLite pool.
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
    /// A PostgreSQL pool (its connections' `search_path` is the store's schema).
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
    /// No database: a [`MemoryStore`] (jobs that load into tables of their own need a
    /// SQL store).
    Memory,
}

/// Identifies one attempt of one run, for fenced writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttemptFence {
    /// The run.
    pub run_id: RunId,
    /// The attempt number.
    pub attempt: u32,
    /// The instance executing it.
    pub instance_id: InstanceId,
}

/// A run to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    /// Its id.
    pub id: RunId,
    /// Its job.
    pub job_name: String,
    /// Its parameters (a JSON object).
    pub params: Value,
    /// Who requested it.
    pub requested_by: Option<String>,
    /// A retried start with the same key returns this run instead of a new one.
    pub idempotency_key: Option<String>,
    /// The most attempts it may take.
    pub max_attempts: u32,
    /// Cancel the job's active run (if any) and create this one anyway.
    pub force: bool,
    /// Its creation time.
    pub created_at: OffsetDateTime,
}

/// What [`JobStore::create_run`] did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CreateOutcome {
    /// The run was created (committed). `replaced` is the active run that `force` cancelled.
    Created {
        /// The new run.
        run: Run,
        /// The run that was cancelled to make room, if any.
        replaced: Option<RunId>,
    },
    /// A run with the same idempotency key exists: the first answer.
    Existing(Run),
    /// The job has an active run and `force` was not set.
    AlreadyActive(RunId),
}

/// A run claimed for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// The run, now `running`.
    pub run: Run,
    /// The attempt's fence.
    pub fence: AttemptFence,
    /// The checkpoint cursor saved by an earlier attempt.
    pub checkpoint: Option<Value>,
    /// When the new lease runs out.
    pub lease_expires_at: OffsetDateTime,
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseStatus {
    /// The lease was renewed.
    Held,
    /// The lease was renewed, and a cancel was requested: stop the job.
    CancelRequested,
    /// The attempt no longer holds the run: stop at once, write nothing.
    Lost,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// The job succeeded.
    Succeeded {
        /// Its result.
        result: Option<Value>,
    },
    /// The job failed; `retry_at` is when the next attempt may start (`None`: fatal).
    /// The store retries only while attempts remain.
    Failed {
        /// The error.
        error: String,
        /// When to retry, if the error is retryable.
        retry_at: Option<OffsetDateTime>,
    },
    /// The job stopped because of a cancel.
    Cancelled,
    /// The engine is shutting down and hands the run back for another worker, without
    /// counting the attempt against the retry budget.
    HandedBack,
}

/// What [`JobStore::request_cancel`] did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CancelOutcome {
    /// The run was not executing and is now `cancelled`.
    Cancelled(Run),
    /// The run is executing and is now `cancelling`; its worker stops it.
    Cancelling(Run),
    /// The run had already finished; nothing changed.
    AlreadyFinished(Run),
    /// No such run.
    NotFound,
}

/// What one sweep of expired leases did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Runs put back to `retrying` for another attempt.
    pub retried: Vec<RunId>,
    /// Runs failed because they were out of attempts.
    pub failed: Vec<RunId>,
    /// Runs whose cancel completed because their worker died.
    pub cancelled: Vec<RunId>,
}

impl SweepReport {
    /// `true` when the sweep changed nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.retried.is_empty() && self.failed.is_empty() && self.cancelled.is_empty()
    }
}

/// What one retention batch may delete ([`JobStore::prune`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneBatch {
    /// Events (other than log lines) stamped before this go.
    pub events_before: OffsetDateTime,
    /// Finished runs (with their attempts, events and log lines) that finished before
    /// this go — except the latest run of each job — and so do schedule slots before
    /// it, except each job's newest.
    pub runs_before: OffsetDateTime,
    /// The most rows of each kind one batch deletes.
    pub limit: u32,
}

/// What one retention batch deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Events deleted (by age, or with their run).
    pub events: u64,
    /// Runs deleted.
    pub runs: u64,
    /// Schedule slots deleted.
    pub slots: u64,
    /// `true` when another instance held the retention lock: nothing was done.
    pub busy: bool,
}

impl PruneReport {
    /// `true` when some kind hit `limit`: there may be more to delete.
    #[must_use]
    pub fn is_full(&self, limit: u32) -> bool {
        let limit = u64::from(limit);
        self.events >= limit || self.runs >= limit || self.slots >= limit
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: Self) {
        self.events += other.events;
        self.runs += other.runs;
        self.slots += other.slots;
        self.busy |= other.busy;
    }
}

/// Where runs, attempts, events and schedule slots live.
///
/// Both implementations pass one shared test suite. All times are passed in by the
/// caller.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn kind(&self) -> &'static str;

    /// The connection pool, for jobs' own tables.
    fn pool(&self) -> StorePool;

    /// A counter bumped after every write this store commits and, for PostgreSQL, on
    /// every notification from other instances: wakes workers and the event pump.
    fn changes(&self) -> watch::Receiver<u64>;

    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Creates a run, honouring idempotency keys, the one-active-run rule and `force`,
    /// in one transaction with its `pending` event.
    async fn create_run(&self, new: NewRun) -> Result<CreateOutcome, StoreError>;

    /// Claims the oldest due `pending`/`retrying` run of one of `jobs` whose job has no
    /// other run executing, starting attempt `attempts + 1` with a lease until
    /// `now + lease`.
    async fn claim(
        &self,
        instance: InstanceId,
        jobs: &[String],
        now: OffsetDateTime,
        lease: Duration,
    ) -> Result<Option<Claim>, StoreError> {
        Ok(self.claim_many(instance, jobs, now, lease, 1).await?.pop())
    }

    /// Claims up to `max` runs at once, as [`JobStore::claim`] claims one (oldest due
    /// first, at most one per job); fewer (or none) when fewer are due.
    async fn claim_many(
        &self,
        instance: InstanceId,
        jobs: &[String],
        now: OffsetDateTime,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Claim>, StoreError>;

    /// Renews the attempt's lease until `now + lease`.
    async fn heartbeat(
        &self,
        fence: &AttemptFence,
        now: OffsetDateTime,
        lease: Duration,
    ) -> Result<LeaseStatus, StoreError>;

    /// Fails with [`StoreError::Fenced`] unless the attempt still holds the run.
    async fn check_fence(&self, fence: &AttemptFence) -> Result<(), StoreError>;

    /// Stores progress (fenced) with its event.
    async fn record_progress(
        &self,
        fence: &AttemptFence,
        progress: &Progress,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Appends a log line (fenced) as an event.
    async fn append_log(
        &self,
        fence: &AttemptFence,
        level: LogLevel,
        message: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Saves the checkpoint cursor (fenced) on the run and the attempt.
    async fn save_checkpoint(
        &self,
        fence: &AttemptFence,
        cursor: &Value,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Ends the attempt (fenced) and moves the run to its next state, with its event.
    async fn finish_attempt(
        &self,
        fence: &AttemptFence,
        outcome: AttemptOutcome,
        now: OffsetDateTime,
    ) -> Result<Run, StoreError>;

    /// Ends the attempt as [`JobStore::finish_attempt`] does, then claims one run of
    /// `jobs` for the worker this frees (for the fence's instance, leased until
    /// `now + lease`), so a busy worker goes from one run to the next in one round
    /// trip where the store can. A claim that fails after the finish committed only
    /// means no claim.
    async fn finish_and_claim(
        &self,
        fence: &AttemptFence,
        outcome: AttemptOutcome,
        now: OffsetDateTime,
        jobs: &[String],
        lease: Duration,
    ) -> Result<(Run, Option<Claim>), StoreError> {
        let run = self.finish_attempt(fence, outcome, now).await?;
        let claim = claim_after_finish(self, fence, now, jobs, lease).await;
        Ok((run, claim))
    }

    /// Cancels a run: at once when it is not executing, else by moving it to `cancelling`.
    async fn request_cancel(
        &self,
        id: RunId,
        now: OffsetDateTime,
    ) -> Result<CancelOutcome, StoreError>;

    /// Reclaims every run whose lease expired before `now`: `retrying` while attempts
    /// remain, else `failed`; `cancelling` ones become `cancelled`.
    async fn sweep_expired(&self, now: OffsetDateTime) -> Result<SweepReport, StoreError>;

    /// Fires one schedule slot: records `(job, slot)` and creates `new` in the same
    /// transaction. Returns `None` when the slot was already fired (by any instance) or
    /// the job has an active run (the slot is then consumed too).
    async fn fire_schedule(
        &self,
        slot: OffsetDateTime,
        new: NewRun,
    ) -> Result<Option<Run>, StoreError>;

    /// Deletes one batch of what retention lets go (see [`PruneBatch`]), in one short
    /// transaction, and raises the [`events_pruned_through`](Self::events_pruned_through)
    /// mark. Only one instance prunes at a time (PostgreSQL: a transaction-level advisory
    /// lock; another instance gets [`PruneReport::busy`]).
    async fn prune(&self, batch: PruneBatch) -> Result<PruneReport, StoreError>;

    /// The highest event sequence number retention deleted (0 when none): a subscriber
    /// resuming after an older one has missed events and must reload.
    async fn events_pruned_through(&self) -> Result<i64, StoreError>;

    /// The newest slot fired (or consumed) of every job that has one, by job name.
    async fn last_schedule_slots(&self) -> Result<Vec<(String, OffsetDateTime)>, StoreError>;

    /// One run.
    async fn get_run(&self, id: RunId) -> Result<Option<Run>, StoreError>;

    /// The newest runs first, of one job or of all.
    async fn list_runs(&self, job_name: Option<&str>, limit: u32) -> Result<Vec<Run>, StoreError>;

    /// The latest run of every job that ever ran.
    async fn latest_runs(&self) -> Result<Vec<Run>, StoreError>;

    /// The runs of one job that are pending, running, retrying or cancelling.
    async fn active_runs(&self, job_name: Option<&str>) -> Result<Vec<Run>, StoreError>;

    /// How many runs are in each state.
    async fn count_states(&self) -> Result<StateCounts, StoreError>;

    /// A run's attempts, in order.
    async fn attempts(&self, id: RunId) -> Result<Vec<Attempt>, StoreError>;

    /// A run's log, oldest first.
    async fn logs(&self, id: RunId) -> Result<Vec<LogLine>, StoreError>;

    /// Events after `after_seq`, oldest first, at most `limit`.
    async fn events_since(&self, after_seq: i64, limit: u32) -> Result<Vec<RunEvent>, StoreError>;

    /// The newest event's sequence number (0 when there is none).
    async fn latest_event_seq(&self) -> Result<i64, StoreError>;
}

/// The claim of [`JobStore::finish_and_claim`] after its finish committed: one run for
/// the worker the finish freed; a failure only means no claim.
pub(crate) async fn claim_after_finish<S: JobStore + ?Sized>(
    store: &S,
    fence: &AttemptFence,
    now: OffsetDateTime,
    jobs: &[String],
    lease: Duration,
) -> Option<Claim> {
    match store
        .claim_many(fence.instance_id, jobs, now, lease, 1)
        .await
    {
        Ok(mut claims) => claims.pop(),
        Err(err) => {
            tracing::warn!(error = %err, "claiming after a finish failed");
            None
        }
    }
}
