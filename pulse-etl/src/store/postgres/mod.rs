//! The scale-out store: one PostgreSQL database shared by every engine instance.
//!
//! The hot path is one statement (one round trip, one commit) per step: a create with
//! its `pending` event; a claim of up to one run per free worker with `FOR UPDATE SKIP
//! LOCKED`, their attempt rows and `running` events; a fenced finish with its attempt
//! row and event. No transaction is held while a job runs, and the rarer cases (an
//! idempotency key that exists, `force`, a finish of a cancelling run or of the last
//! attempt) take the longer transactions. After each commit a `NOTIFY` goes out on a
//! connection of its own (asynchronous commit, coalesced), and each store `LISTEN`s, so
//! every instance wakes its workers and streams every event. Commits are never
//! serialised: event order is kept by the readers (see `events.rs`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool, Row};
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::common::{
    EXECUTING_STATES, event_kind_name, finish_transition, from_u64, parse_state, sweep_transition,
    truncate_micros,
};
use super::{
    AttemptFence, AttemptOutcome, CancelOutcome, Claim, CreateOutcome, JobStore, LeaseStatus,
    NewRun, StoreError, StorePool, SweepReport,
};
use crate::model::{
    Attempt, InstanceId, LogLevel, LogLine, Progress, Run, RunEvent, RunEventKind, RunId, RunState,
    StateCounts,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

mod events;
mod reads;
mod retention;
mod rows;

use rows::{
    FENCE, RUN_COLUMNS, active_slot_holder, attempt_i32, by_idempotency_key, cancel_event,
    fetch_run, lock_key, must_fetch_run, pending_event, run_from_row, u32_of,
};

/// How to connect a [`PgStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgStoreOptions {
    url: String,
    schema: Option<String>,
    max_connections: u32,
    application_name: Option<String>,
    idle_in_transaction_timeout: Duration,
    acquire_timeout: Duration,
}

impl PgStoreOptions {
    /// Connects to `url` (`postgres://user@host:5432/db`), tables in `public`.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: None,
            max_connections: 10,
            application_name: None,
            idle_in_transaction_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(3),
        }
    }

    /// Keeps the tables in `schema` (created if missing): several stores can share one
    /// database, e.g. one per test. Letters, digits and `_` only.
    #[must_use]
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The `application_name` of the store's connections (shown in `pg_stat_activity`).
    #[must_use]
    pub fn with_application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }

    /// How long the server lets one of the store's sessions sit idle inside a
    /// transaction before ending it (default 10 s). The store's transactions are short;
    /// the limit frees the row locks of a worker that froze in the middle of one (a
    /// paused VM, SIGSTOP), so other instances can reclaim its runs.
    #[must_use]
    pub fn with_idle_in_transaction_timeout(mut self, timeout: Duration) -> Self {
        self.idle_in_transaction_timeout = timeout.max(Duration::from_millis(100));
        self
    }

    /// How long an operation waits for a connection (default 3 s) before it fails with
    /// [`StoreError::Unavailable`]: with the server down, the API answers 503 within this
    /// bound instead of holding the request while the pool retries the connect.
    #[must_use]
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout.max(Duration::from_millis(100));
        self
    }

    /// The pool's size.
    #[must_use]
    pub fn with_max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(2);
        self
    }
}

/// The PostgreSQL job store.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<PgInner>,
}

struct PgInner {
    pool: PgPool,
    changes: watch::Sender<u64>,
    channel: String,
    lock_key: i64,
    listener: JoinHandle<()>,
    /// Wakes `notifier`: this store committed a change other instances should see.
    notify_others: Arc<Notify>,
    notifier: JoinHandle<()>,
    events: events::EventOrder,
}

impl Drop for PgInner {
    fn drop(&mut self) {
        self.listener.abort();
        self.notifier.abort();
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("channel", &self.inner.channel)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url`, applies the embedded migrations and starts listening for
    /// other instances' changes.
    ///
    /// # Errors
    /// [`StoreError::Config`] for a bad URL, [`StoreError::Unavailable`] when the server
    /// cannot be reached, [`StoreError::Migrate`] when a migration fails.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(PgStoreOptions::new(url)).await
    }

    /// Connects with options.
    ///
    /// # Errors
    /// As [`PgStore::connect`].
    pub async fn connect_with(options: PgStoreOptions) -> Result<Self, StoreError> {
        let mut connect: PgConnectOptions = options
            .url
            .parse()
            .map_err(|err: sqlx::Error| StoreError::Config(err.to_string()))?;
        let schema = options
            .schema
            .clone()
            .unwrap_or_else(|| "public".to_owned());
        if schema.is_empty()
            || !schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(StoreError::Config(format!(
                "invalid schema name `{schema}`"
            )));
        }
        if let Some(name) = &options.application_name {
            connect = connect.application_name(name);
        }
        if options.schema.is_some() {
            let mut conn = connect.connect().await?;
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                .execute(&mut conn)
                .await?;
            connect = connect.options([("search_path", schema.as_str())]);
        }
        let idle_ms = options.idle_in_transaction_timeout.as_millis().to_string();
        connect = connect.options([("idle_in_transaction_session_timeout", idle_ms.as_str())]);
        // Notifications carry nothing that must survive a crash: their transactions
        // need not wait for the WAL flush.
        let notifier_connect = connect.clone().options([("synchronous_commit", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await?;
        MIGRATOR.run(&pool).await?;
        let channel = format!("pulse_etl_{schema}");
        // This store's own notifications come back to its listener: it knows them by
        // this tag and does not wake its workers twice.
        let tag = Uuid::new_v4().simple().to_string();
        let (changes, _) = watch::channel(0_u64);
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(&channel).await?;
        let notify = changes.clone();
        let own_tag = tag.clone();
        let listener = tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(notification) if notification.payload() == own_tag => continue,
                    Ok(_) => {}
                    Err(err) => {
                        // The listener reconnects on the next recv; notifications sent
                        // meanwhile are lost, so wake everyone to re-read the store.
                        tracing::warn!(error = %err, "LISTEN connection failed");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
                notify.send_modify(|n| *n = n.wrapping_add(1));
            }
        });
        let notify_others = Arc::new(Notify::new());
        let notifier = tokio::spawn(notify_others_task(
            notifier_connect,
            channel.clone(),
            tag,
            Arc::clone(&notify_others),
        ));
        Ok(Self {
            inner: Arc::new(PgInner {
                pool,
                changes,
                lock_key: lock_key(&schema),
                channel,
                listener,
                notify_others,
                notifier,
                events: events::EventOrder::default(),
            }),
        })
    }

    /// The store as a trait object, as [`JobEngine::launch`](crate::JobEngine::launch) takes it.
    #[must_use]
    pub fn into_dyn(self) -> Arc<dyn JobStore> {
        Arc::new(self)
    }

    /// The underlying pool.
    #[must_use]
    pub fn pg_pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Stops listening for other instances and closes the pool; later calls fail with
    /// [`StoreError::Unavailable`].
    pub async fn close(&self) {
        // The LISTEN connection is checked out for the listener's life, and closing a
        // pool waits for every checked-out connection: stop the listener first.
        self.inner.listener.abort();
        self.inner.notifier.abort();
        self.inner.pool.close().await;
    }

    /// After a commit: wakes this instance's workers and event pump, and has the
    /// notifier tell the other instances.
    fn bump(&self) {
        self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
        self.inner.notify_others.notify_one();
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        Ok(self.inner.pool.begin().await?)
    }
}

#[async_trait]
impl JobStore for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn pool(&self) -> StorePool {
        StorePool::Postgres(self.inner.pool.clone())
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.inner.pool).await?;
        Ok(())
    }

    async fn create_run(&self, new: NewRun) -> Result<CreateOutcome, StoreError> {
        if !new.force
            && let Some(run) = self.create_unopposed(&new).await?
        {
            self.bump();
            return Ok(CreateOutcome::Created {
                run,
                replaced: None,
            });
        }
        // Something stood in the way (the idempotency key's run, the job's active run),
        // or `force` must cancel the active run: find out what in a transaction. A
        // concurrent start can win the race between our check and our insert; the
        // unique indexes catch it, and a second pass reports what won.
        for _ in 0..3 {
            let mut tx = self.begin().await?;
            if let Some(key) = &new.idempotency_key
                && let Some(run) = by_idempotency_key(&mut tx, key).await?
            {
                return Ok(CreateOutcome::Existing(run));
            }
            let active = active_slot_holder(&mut tx, &new.job_name, new.force).await?;
            if let (Some(active), false) = (&active, new.force) {
                return Ok(CreateOutcome::AlreadyActive(active.id));
            }
            // Row writes first, event rows (and their advisory lock) last, in every
            // transaction: whoever holds the event lock waits for nothing else.
            let mut cancelled = None;
            if let Some(active) = active {
                let next = if active.state == RunState::Running {
                    RunState::Cancelling
                } else {
                    RunState::Cancelled
                };
                self.set_cancel_state(&mut tx, &active, next, new.created_at)
                    .await?;
                cancelled = Some((active, next));
            }
            if let Some(run) = self.insert_run_row(&mut tx, &new).await? {
                if let Some((active, next)) = &cancelled {
                    self.insert_event(
                        &mut tx,
                        active.id,
                        &active.job_name,
                        new.created_at,
                        &cancel_event(active, *next),
                    )
                    .await?;
                }
                self.insert_event(
                    &mut tx,
                    run.id,
                    &run.job_name,
                    run.created_at,
                    &pending_event(),
                )
                .await?;
                tx.commit().await?;
                self.bump();
                return Ok(CreateOutcome::Created {
                    run,
                    replaced: cancelled.map(|(active, _)| active.id),
                });
            }
            tx.rollback().await?;
        }
        Err(StoreError::conflict(
            "create_run kept conflicting with concurrent starts",
        ))
    }

    async fn claim(
        &self,
        instance: InstanceId,
        jobs: &[String],
        now: OffsetDateTime,
        lease: Duration,
    ) -> Result<Option<Claim>, StoreError> {
        Ok(self.claim_many(instance, jobs, now, lease, 1).await?.pop())
    }

    async fn claim_many(
        &self,
        instance: InstanceId,
        jobs: &[String],
        now: OffsetDateTime,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Claim>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let now = truncate_micros(now);
        let expires = now + lease;
        let running = RunEventKind::State {
            state: RunState::Running,
            attempt: 0,
            error: None,
        };
        // One statement: pick, start, write the attempt rows and the events (each
        // event's attempt number filled in from its run). Row locks first, the events'
        // shared lock last.
        let rows = sqlx::query(&format!(
            "WITH {} SELECT * FROM claimed ORDER BY next_attempt_at, created_at",
            claim_ctes(ClaimParams {
                instance: 1,
                expires: 2,
                now: 3,
                jobs: 4,
                wanted: "$5",
                event_kind: 6,
                event_payload: 7,
                lock_key: 8,
            })
        ))
        .bind(instance.as_uuid())
        .bind(expires)
        .bind(now)
        .bind(jobs)
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .bind(event_kind_name(&running))
        .bind(sqlx::types::Json(&running))
        .bind(self.inner.lock_key)
        .fetch_all(&self.inner.pool)
        .await?;
        let claims = rows
            .iter()
            .map(|row| claim_from_row(row, instance, expires))
            .collect::<Result<Vec<_>, StoreError>>()?;
        if !claims.is_empty() {
            self.bump();
        }
        Ok(claims)
    }

    async fn heartbeat(
        &self,
        fence: &AttemptFence,
        now: OffsetDateTime,
        lease: Duration,
    ) -> Result<LeaseStatus, StoreError> {
        let expires = now + lease;
        let mut tx = self.begin().await?;
        let state: Option<String> = sqlx::query_scalar(&format!(
            "UPDATE etl_runs SET lease_expires_at = $4, heartbeat_at = $5 WHERE {FENCE} \
             RETURNING state"
        ))
        .bind(fence.run_id.as_uuid())
        .bind(attempt_i32(fence.attempt))
        .bind(fence.instance_id.as_uuid())
        .bind(expires)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(state) = state else {
            return Ok(LeaseStatus::Lost);
        };
        sqlx::query(
            "UPDATE etl_attempts SET lease_expires_at = $1, heartbeat_at = $2 \
             WHERE run_id = $3 AND number = $4",
        )
        .bind(expires)
        .bind(now)
        .bind(fence.run_id.as_uuid())
        .bind(attempt_i32(fence.attempt))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(if parse_state(&state)? == RunState::Cancelling {
            LeaseStatus::CancelRequested
        } else {
            LeaseStatus::Held
        })
    }

    async fn check_fence(&self, fence: &AttemptFence) -> Result<(), StoreError> {
        let held: Option<i32> =
            sqlx::query_scalar(&format!("SELECT 1 FROM etl_runs WHERE {FENCE}"))
                .bind(fence.run_id.as_uuid())
                .bind(attempt_i32(fence.attempt))
                .bind(fence.instance_id.as_uuid())
                .fetch_optional(&self.inner.pool)
                .await?;
        held.map(drop).ok_or(StoreError::Fenced)
    }

    async fn record_progress(
        &self,
        fence: &AttemptFence,
        progress: &Progress,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let job_name: Option<String> = sqlx::query_scalar(&format!(
            "UPDATE etl_runs SET progress_done = $4, progress_total = $5, progress_message = $6, \
             updated_at = $7 WHERE {FENCE} RETURNING job_name"
        ))
        .bind(fence.run_id.as_uuid())
        .bind(attempt_i32(fence.attempt))
        .bind(fence.instance_id.as_uuid())
        .bind(from_u64(progress.done))
        .bind(progress.total.map(from_u64))
        .bind(&progress.message)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let job_name = job_name.ok_or(StoreError::Fenced)?;
        let kind = RunEventKind::Progress {
            progress: progress.clone(),
        };
        self.insert_event(&mut tx, fence.run_id, &job_name, now, &kind)
            .await?;
        tx.commit().await?;
        self.bump();
        Ok(())
    }

    async fn append_log(
        &self,
        fence: &AttemptFence,
        level: LogLevel,
        message: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let job_name: Option<String> = sqlx::query_scalar(&format!(
            "SELECT job_name FROM etl_runs WHERE {FENCE} FOR SHARE"
        ))
        .bind(fence.run_id.as_uuid())
        .bind(attempt_i32(fence.attempt))
        .bind(fence.instance_id.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
        let job_name = job_name.ok_or(StoreError::Fenced)?;
        let kind = RunEventKind::Log {
            level,
            message: message.to_owned(),
            attempt: fence.attempt,
        };
        self.insert_event(&mut tx, fence.run_id, &job_name, now, &kind)
            .await?;
        tx.commit().await?;
        self.bump();
        Ok(())
    }

    async fn save_checkpoint(
        &self,
        fence: &AttemptFence,
        cursor: &Value,
        _now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(&format!(
            "UPDATE etl_runs SET checkpoint = $4 WHERE {FENCE}"
        ))
        .bind(fence.run_id.as_uuid())
        .bind(attempt_i32(fence.attempt))
        .bind(fence.instance_id.as_uuid())
        .bind(cursor)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Fenced);
        }
        sqlx::query("UPDATE etl_attempts SET checkpoint = $1 WHERE run_id = $2 AND number = $3")
            .bind(cursor)
            .bind(fence.run_id.as_uuid())
            .bind(attempt_i32(fence.attempt))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn finish_attempt(
        &self,
        fence: &AttemptFence,
        outcome: AttemptOutcome,
        now: OffsetDateTime,
    ) -> Result<Run, StoreError> {
        let now = truncate_micros(now);
        if let Some((run, _)) = self.finish_running(fence, &outcome, now, None).await? {
            self.bump();
            return Ok(run);
        }
        self.finish_in_transaction(fence, outcome, now).await
    }

    async fn finish_and_claim(
        &self,
        fence: &AttemptFence,
        outcome: AttemptOutcome,
        now: OffsetDateTime,
        jobs: &[String],
        lease: Duration,
    ) -> Result<(Run, Option<Claim>), StoreError> {
        let now = truncate_micros(now);
        if let Some(finished) = self
            .finish_running(fence, &outcome, now, Some((jobs, lease)))
            .await?
        {
            self.bump();
            return Ok(finished);
        }
        // Not the common case: finish alone; the engine's claim loop takes the worker.
        Ok((self.finish_in_transaction(fence, outcome, now).await?, None))
    }

    async fn request_cancel(
        &self,
        id: RunId,
        now: OffsetDateTime,
    ) -> Result<CancelOutcome, StoreError> {
        let now = truncate_micros(now);
        let mut tx = self.begin().await?;
        let Some(run) = fetch_run(&mut tx, id, true).await? else {
            return Ok(CancelOutcome::NotFound);
        };
        let next = match run.state {
            state if state.is_terminal() => return Ok(CancelOutcome::AlreadyFinished(run)),
            RunState::Cancelling => return Ok(CancelOutcome::Cancelling(run)),
            RunState::Running => RunState::Cancelling,
            _ => RunState::Cancelled,
        };
        self.apply_cancel(&mut tx, &run, next, now).await?;
        let run = must_fetch_run(&mut tx, id).await?;
        tx.commit().await?;
        self.bump();
        Ok(if next == RunState::Cancelled {
            CancelOutcome::Cancelled(run)
        } else {
            CancelOutcome::Cancelling(run)
        })
    }

    async fn sweep_expired(&self, now: OffsetDateTime) -> Result<SweepReport, StoreError> {
        let now = truncate_micros(now);
        let mut tx = self.begin().await?;
        let rows = sqlx::query(&format!(
            "SELECT id, job_name, state, attempts, max_attempts FROM etl_runs \
             WHERE state IN {EXECUTING_STATES} AND lease_expires_at < $1 \
             ORDER BY id FOR UPDATE SKIP LOCKED"
        ))
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let mut report = SweepReport::default();
        for row in rows {
            let id = RunId::from_uuid(row.try_get::<Uuid, _>("id")?);
            let job_name: String = row.try_get("job_name")?;
            let state: String = row.try_get("state")?;
            let attempts = u32_of(row.try_get("attempts")?, "attempts")?;
            let max_attempts = u32_of(row.try_get("max_attempts")?, "max_attempts")?;
            let transition = sweep_transition(parse_state(&state)?, attempts, max_attempts, now);
            self.apply_transition(&mut tx, id, &job_name, attempts, &transition, now)
                .await?;
            match transition.state {
                RunState::Retrying => report.retried.push(id),
                RunState::Cancelled => report.cancelled.push(id),
                _ => report.failed.push(id),
            }
        }
        tx.commit().await?;
        if !report.is_empty() {
            self.bump();
        }
        Ok(report)
    }

    async fn fire_schedule(
        &self,
        slot: OffsetDateTime,
        new: NewRun,
    ) -> Result<Option<Run>, StoreError> {
        let slot = truncate_micros(slot);
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO etl_schedule_slots (job_name, slot, fired_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&new.job_name)
        .bind(slot)
        .bind(new.created_at)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Ok(None);
        }
        if active_slot_holder(&mut tx, &new.job_name, false)
            .await?
            .is_some()
        {
            tx.commit().await?;
            return Ok(None);
        }
        let Some(run) = self.insert_run_row(&mut tx, &new).await? else {
            tx.commit().await?;
            return Ok(None);
        };
        sqlx::query("UPDATE etl_schedule_slots SET run_id = $1 WHERE job_name = $2 AND slot = $3")
            .bind(run.id.as_uuid())
            .bind(&new.job_name)
            .bind(slot)
            .execute(&mut *tx)
            .await?;
        self.insert_event(
            &mut tx,
            run.id,
            &run.job_name,
            run.created_at,
            &pending_event(),
        )
        .await?;
        tx.commit().await?;
        self.bump();
        Ok(Some(run))
    }

    async fn get_run(&self, id: RunId) -> Result<Option<Run>, StoreError> {
        reads::get_run(&self.inner.pool, id).await
    }

    async fn list_runs(&self, job_name: Option<&str>, limit: u32) -> Result<Vec<Run>, StoreError> {
        reads::list_runs(&self.inner.pool, job_name, limit).await
    }

    async fn latest_runs(&self) -> Result<Vec<Run>, StoreError> {
        reads::latest_runs(&self.inner.pool).await
    }

    async fn active_runs(&self, job_name: Option<&str>) -> Result<Vec<Run>, StoreError> {
        reads::active_runs(&self.inner.pool, job_name).await
    }

    async fn count_states(&self) -> Result<StateCounts, StoreError> {
        reads::count_states(&self.inner.pool).await
    }

    async fn attempts(&self, id: RunId) -> Result<Vec<Attempt>, StoreError> {
        reads::attempts(&self.inner.pool, id).await
    }

    async fn logs(&self, id: RunId) -> Result<Vec<LogLine>, StoreError> {
        reads::logs(&self.inner.pool, id).await
    }

    async fn events_since(&self, after_seq: i64, limit: u32) -> Result<Vec<RunEvent>, StoreError> {
        self.inner
            .events
            .events_since(&self.inner.pool, self.inner.lock_key, after_seq, limit)
            .await
    }

    async fn prune(&self, batch: super::PruneBatch) -> Result<super::PruneReport, StoreError> {
        let report = retention::prune(&self.inner.pool, self.inner.lock_key, batch).await?;
        Ok(report)
    }

    async fn events_pruned_through(&self) -> Result<i64, StoreError> {
        retention::events_pruned_through(&self.inner.pool).await
    }

    async fn last_schedule_slots(&self) -> Result<Vec<(String, OffsetDateTime)>, StoreError> {
        reads::last_schedule_slots(&self.inner.pool).await
    }

    async fn latest_event_seq(&self) -> Result<i64, StoreError> {
        // The largest committed seq may lie above one still in flight: settle first.
        self.inner
            .events
            .settle_in_flight(&self.inner.pool, self.inner.lock_key)
            .await
    }
}

impl PgStore {
    /// The general finish: any state, any outcome, in a transaction.
    async fn finish_in_transaction(
        &self,
        fence: &AttemptFence,
        outcome: AttemptOutcome,
        now: OffsetDateTime,
    ) -> Result<Run, StoreError> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM etl_runs WHERE {FENCE} FOR UPDATE"
        ))
        .bind(fence.run_id.as_uuid())
        .bind(attempt_i32(fence.attempt))
        .bind(fence.instance_id.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
        let row = row.ok_or(StoreError::Fenced)?;
        let run = run_from_row(&row)?;
        let max_attempts = u32_of(row.try_get("max_attempts")?, "max_attempts")?;
        let transition = finish_transition(run.state, run.attempts, max_attempts, outcome, now);
        self.apply_transition(
            &mut tx,
            run.id,
            &run.job_name,
            fence.attempt,
            &transition,
            now,
        )
        .await?;
        let run = must_fetch_run(&mut tx, run.id).await?;
        tx.commit().await?;
        self.bump();
        Ok(run)
    }
}

/// Where [`claim_ctes`] finds its values: parameter numbers, and the SQL expression of
/// how many runs to claim.
pub(super) struct ClaimParams {
    pub(super) instance: u8,
    pub(super) expires: u8,
    pub(super) now: u8,
    pub(super) jobs: u8,
    pub(super) wanted: &'static str,
    pub(super) event_kind: u8,
    pub(super) event_payload: u8,
    pub(super) lock_key: u8,
}

/// The common table expressions of a claim (`next`, `claimed`, `claimed_attempt`,
/// `claimed_event`): pick the runs, start them, write their attempt rows and their
/// `running` events (each event's attempt number filled in from its run). Row locks
/// first, the events' shared lock last. `claimed` returns the runs and their
/// `next_attempt_at`.
pub(super) fn claim_ctes(p: ClaimParams) -> String {
    let ClaimParams {
        instance,
        expires,
        now,
        jobs,
        wanted,
        event_kind,
        event_payload,
        lock_key,
    } = p;
    let columns = RUN_COLUMNS
        .split(", ")
        .map(|column| format!("etl_runs.{column}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "next AS (SELECT id FROM etl_claimable(${now}, ${jobs}, {wanted}) AS next (id)), \
         claimed AS (UPDATE etl_runs SET state = 'running', attempts = attempts + 1, \
           lease_owner = ${instance}, lease_expires_at = ${expires}, heartbeat_at = ${now}, \
           started_at = COALESCE(started_at, ${now}), updated_at = ${now} \
           FROM next WHERE etl_runs.id = next.id RETURNING {columns}, etl_runs.next_attempt_at), \
         claimed_attempt AS (INSERT INTO etl_attempts (run_id, number, instance_id, started_at, \
           lease_expires_at, heartbeat_at) \
           SELECT id, attempts, ${instance}, ${now}, ${expires}, ${now} FROM claimed RETURNING run_id), \
         claimed_event AS (INSERT INTO etl_events (run_id, job_name, at, kind, payload) \
           SELECT c.id, c.job_name, ${now}, ${event_kind}, \
             jsonb_set(${event_payload}::jsonb, '{{attempt}}', to_jsonb(c.attempts)) \
           FROM claimed c JOIN claimed_attempt a ON a.run_id = c.id \
           CROSS JOIN (SELECT pg_advisory_xact_lock_shared(${lock_key})) AS writer)"
    )
}

/// A claimed run, from a row of `claimed`.
pub(super) fn claim_from_row(
    row: &sqlx::postgres::PgRow,
    instance: InstanceId,
    expires: OffsetDateTime,
) -> Result<Claim, StoreError> {
    let run = run_from_row(row)?;
    Ok(Claim {
        fence: AttemptFence {
            run_id: run.id,
            attempt: run.attempts,
            instance_id: instance,
        },
        checkpoint: row.try_get("checkpoint")?,
        lease_expires_at: expires,
        run,
    })
}

/// Sends one `NOTIFY` on `channel` whenever woken, however many commits woke it since
/// the last one, on a connection of its own with asynchronous commit: a `NOTIFY` inside
/// the writing transactions would serialise their commits (PostgreSQL orders the
/// notification queue by holding one lock through each notifying commit).
async fn notify_others_task(
    connect: PgConnectOptions,
    channel: String,
    tag: String,
    wake: Arc<Notify>,
) {
    let mut conn: Option<sqlx::PgConnection> = None;
    loop {
        wake.notified().await;
        // A broken connection is replaced once per wake-up; a database that stays away
        // costs one failed connect per wake-up, and the other instances poll meanwhile.
        for retry in [false, true] {
            if conn.is_none() {
                match connect.connect().await {
                    Ok(fresh) => conn = Some(fresh),
                    Err(err) => {
                        tracing::warn!(error = %err, "NOTIFY connection failed");
                        break;
                    }
                }
            }
            let Some(open) = conn.as_mut() else { break };
            match sqlx::query("SELECT pg_notify($1, $2)")
                .bind(&channel)
                .bind(&tag)
                .execute(open)
                .await
            {
                Ok(_) => break,
                Err(err) => {
                    conn = None;
                    if retry {
                        tracing::warn!(error = %err, "NOTIFY failed");
                    }
                }
            }
        }
    }
}
