//! The embedded store: one SQLite file in WAL mode, no server needed.
//!
//! Every multi-statement write runs in a `BEGIN IMMEDIATE` transaction, so it holds
//! SQLite's single write lock from its first statement and never fails to upgrade a
//! read snapshot; writers of one process also queue on an async mutex instead of
//! spinning on the busy handler. Several processes may share one file (they poll for
//! each other's changes).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};
use time::OffsetDateTime;
use tokio::sync::{Mutex, watch};

use super::common::{
    EXECUTING_STATES, event_payload, finish_transition, from_u64, parse_state, parse_uuid,
    sweep_transition, to_micros, to_u32,
};
use super::{
    AttemptFence, AttemptOutcome, CancelOutcome, Claim, CreateOutcome, JobStore, LeaseStatus,
    NewRun, StoreError, StorePool, SweepReport,
};
use crate::model::{
    Attempt, InstanceId, LogLevel, LogLine, Progress, Run, RunEvent, RunEventKind, RunId, RunState,
    StateCounts,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

mod reads;
mod retention;
mod rows;

use rows::{
    FENCE, RUN_COLUMNS, active_slot_holder, apply_cancel, apply_transition, cancel_for_force,
    fetch_run, insert_event, insert_run, must_fetch_run, opt_json, run_from_row,
};

/// The SQLite job store.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), pulse_etl::StoreError> {
/// use pulse_etl::{JobStore, SqliteStore};
/// let dir = tempfile::tempdir().map_err(|e| pulse_etl::StoreError::Config(e.to_string()))?;
/// let store = SqliteStore::open(dir.path().join("jobs.db")).await?;
/// store.ping().await?;
/// assert_eq!(store.kind(), "sqlite");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    write_lock: Arc<Mutex<()>>,
    changes: Arc<watch::Sender<u64>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the store in the file at `path`, in WAL mode, and
    /// applies the embedded migrations.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the file cannot be opened, [`StoreError::Migrate`]
    /// when a migration fails.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path.as_ref())
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        Self::from_pool(pool).await
    }

    /// Opens a private in-memory store (one connection; gone when dropped), for tests.
    ///
    /// # Errors
    /// As [`SqliteStore::open`].
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        Self::from_pool(pool).await
    }

    /// Wraps an existing pool and applies the migrations.
    ///
    /// # Errors
    /// [`StoreError::Migrate`] when a migration fails.
    pub async fn from_pool(pool: SqlitePool) -> Result<Self, StoreError> {
        MIGRATOR.run(&pool).await?;
        let (changes, _) = watch::channel(0_u64);
        Ok(Self {
            pool,
            write_lock: Arc::new(Mutex::new(())),
            changes: Arc::new(changes),
        })
    }

    /// The store as a trait object, as [`JobEngine::launch`](crate::JobEngine::launch) takes it.
    #[must_use]
    pub fn into_dyn(self) -> Arc<dyn JobStore> {
        Arc::new(self)
    }

    /// The underlying pool.
    #[must_use]
    pub fn sqlite_pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Runs `body` in a `BEGIN IMMEDIATE` transaction, committing on `Ok`.
    async fn write<T, F>(&self, body: F) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(
            &'c mut SqliteConnection,
        ) -> crate::job::BoxFuture<'c, Result<T, StoreError>>,
    {
        let guard = self.write_lock.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let value = body(&mut tx).await?;
        tx.commit().await?;
        drop(guard);
        Ok(value)
    }
}
#[async_trait]
impl JobStore for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn pool(&self) -> StorePool {
        StorePool::Sqlite(self.pool.clone())
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_run(&self, new: NewRun) -> Result<CreateOutcome, StoreError> {
        let outcome = self
            .write(|conn| {
                Box::pin(async move {
                    if let Some(key) = &new.idempotency_key {
                        let row = sqlx::query(&format!(
                            "SELECT {RUN_COLUMNS} FROM etl_runs WHERE idempotency_key = ?"
                        ))
                        .bind(key)
                        .fetch_optional(&mut *conn)
                        .await?;
                        if let Some(row) = row {
                            return Ok(CreateOutcome::Existing(run_from_row(&row)?));
                        }
                    }
                    let replaced = if new.force {
                        cancel_for_force(&mut *conn, &new.job_name, new.created_at).await?
                    } else if let Some((active, _)) =
                        active_slot_holder(&mut *conn, &new.job_name).await?
                    {
                        return Ok(CreateOutcome::AlreadyActive(active));
                    } else {
                        None
                    };
                    let run = insert_run(conn, &new).await?;
                    Ok(CreateOutcome::Created { run, replaced })
                })
            })
            .await?;
        if matches!(outcome, CreateOutcome::Created { .. }) {
            self.bump();
        }
        Ok(outcome)
    }

    async fn claim(
        &self,
        instance: InstanceId,
        jobs: &[String],
        now: OffsetDateTime,
        lease: Duration,
    ) -> Result<Option<Claim>, StoreError> {
        let jobs = serde_json::to_string(jobs).unwrap_or_else(|_| "[]".to_owned());
        let expires = now + lease;
        let claim = self
            .write(|conn| {
                Box::pin(async move {
                    let row = sqlx::query(&format!(
                        "UPDATE etl_runs SET state = 'running', attempts = attempts + 1, \
                         lease_owner = ?1, lease_expires_at = ?2, heartbeat_at = ?3, \
                         started_at = COALESCE(started_at, ?3), updated_at = ?3 \
                         WHERE id = (SELECT r.id FROM etl_runs r \
                           WHERE r.state IN ('pending','retrying') AND r.next_attempt_at <= ?3 \
                           AND r.job_name IN (SELECT value FROM json_each(?4)) \
                           AND NOT EXISTS (SELECT 1 FROM etl_runs o WHERE o.job_name = r.job_name \
                             AND o.state IN {EXECUTING_STATES}) \
                           ORDER BY r.next_attempt_at, r.created_at LIMIT 1) \
                         RETURNING {RUN_COLUMNS}"
                    ))
                    .bind(instance.to_string())
                    .bind(to_micros(expires))
                    .bind(to_micros(now))
                    .bind(jobs)
                    .fetch_optional(&mut *conn)
                    .await?;
                    let Some(row) = row else {
                        return Ok(None);
                    };
                    let run = run_from_row(&row)?;
                    let checkpoint: Option<String> = row.try_get("checkpoint")?;
                    sqlx::query(
                        "INSERT INTO etl_attempts (run_id, number, instance_id, started_at, \
                         lease_expires_at, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?)",
                    )
                    .bind(run.id.to_string())
                    .bind(i64::from(run.attempts))
                    .bind(instance.to_string())
                    .bind(to_micros(now))
                    .bind(to_micros(expires))
                    .bind(to_micros(now))
                    .execute(&mut *conn)
                    .await?;
                    let kind = RunEventKind::State {
                        state: RunState::Running,
                        attempt: run.attempts,
                        error: None,
                    };
                    insert_event(conn, run.id, &run.job_name, now, &kind).await?;
                    Ok(Some(Claim {
                        fence: AttemptFence {
                            run_id: run.id,
                            attempt: run.attempts,
                            instance_id: instance,
                        },
                        checkpoint: opt_json(checkpoint, "checkpoint")?,
                        lease_expires_at: expires,
                        run,
                    }))
                })
            })
            .await?;
        if claim.is_some() {
            self.bump();
        }
        Ok(claim)
    }

    async fn heartbeat(
        &self,
        fence: &AttemptFence,
        now: OffsetDateTime,
        lease: Duration,
    ) -> Result<LeaseStatus, StoreError> {
        let fence = *fence;
        let expires = to_micros(now + lease);
        self.write(|conn| {
            Box::pin(async move {
                let state: Option<String> = sqlx::query_scalar(&format!(
                    "UPDATE etl_runs SET lease_expires_at = ?, heartbeat_at = ? WHERE {FENCE} \
                     RETURNING state"
                ))
                .bind(expires)
                .bind(to_micros(now))
                .bind(fence.run_id.to_string())
                .bind(i64::from(fence.attempt))
                .bind(fence.instance_id.to_string())
                .fetch_optional(&mut *conn)
                .await?;
                let Some(state) = state else {
                    return Ok(LeaseStatus::Lost);
                };
                sqlx::query(
                    "UPDATE etl_attempts SET lease_expires_at = ?, heartbeat_at = ? \
                     WHERE run_id = ? AND number = ?",
                )
                .bind(expires)
                .bind(to_micros(now))
                .bind(fence.run_id.to_string())
                .bind(i64::from(fence.attempt))
                .execute(&mut *conn)
                .await?;
                Ok(if parse_state(&state)? == RunState::Cancelling {
                    LeaseStatus::CancelRequested
                } else {
                    LeaseStatus::Held
                })
            })
        })
        .await
    }

    async fn check_fence(&self, fence: &AttemptFence) -> Result<(), StoreError> {
        let held: Option<i64> =
            sqlx::query_scalar(&format!("SELECT 1 FROM etl_runs WHERE {FENCE}"))
                .bind(fence.run_id.to_string())
                .bind(i64::from(fence.attempt))
                .bind(fence.instance_id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        held.map(drop).ok_or(StoreError::Fenced)
    }

    async fn record_progress(
        &self,
        fence: &AttemptFence,
        progress: &Progress,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let fence = *fence;
        let progress = progress.clone();
        self.write(|conn| {
            Box::pin(async move {
                let job_name: Option<String> = sqlx::query_scalar(&format!(
                    "UPDATE etl_runs SET progress_done = ?, progress_total = ?, \
                     progress_message = ?, updated_at = ? WHERE {FENCE} RETURNING job_name"
                ))
                .bind(from_u64(progress.done))
                .bind(progress.total.map(from_u64))
                .bind(&progress.message)
                .bind(to_micros(now))
                .bind(fence.run_id.to_string())
                .bind(i64::from(fence.attempt))
                .bind(fence.instance_id.to_string())
                .fetch_optional(&mut *conn)
                .await?;
                let job_name = job_name.ok_or(StoreError::Fenced)?;
                let kind = RunEventKind::Progress { progress };
                insert_event(conn, fence.run_id, &job_name, now, &kind).await
            })
        })
        .await?;
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
        let kind = RunEventKind::Log {
            level,
            message: message.to_owned(),
            attempt: fence.attempt,
        };
        let sql = format!(
            "INSERT INTO etl_events (run_id, job_name, at, kind, payload) \
             SELECT id, job_name, ?, 'log', ? FROM etl_runs WHERE {FENCE}"
        );
        let inserted = sqlx::query(&sql)
            .bind(to_micros(now))
            .bind(event_payload(&kind))
            .bind(fence.run_id.to_string())
            .bind(i64::from(fence.attempt))
            .bind(fence.instance_id.to_string());
        let guard = self.write_lock.lock().await;
        let done = inserted.execute(&self.pool).await?;
        drop(guard);
        if done.rows_affected() == 0 {
            return Err(StoreError::Fenced);
        }
        self.bump();
        Ok(())
    }

    async fn save_checkpoint(
        &self,
        fence: &AttemptFence,
        cursor: &Value,
        _now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let fence = *fence;
        let cursor = cursor.to_string();
        self.write(|conn| {
            Box::pin(async move {
                let done =
                    sqlx::query(&format!("UPDATE etl_runs SET checkpoint = ? WHERE {FENCE}"))
                        .bind(&cursor)
                        .bind(fence.run_id.to_string())
                        .bind(i64::from(fence.attempt))
                        .bind(fence.instance_id.to_string())
                        .execute(&mut *conn)
                        .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::Fenced);
                }
                sqlx::query(
                    "UPDATE etl_attempts SET checkpoint = ? WHERE run_id = ? AND number = ?",
                )
                .bind(&cursor)
                .bind(fence.run_id.to_string())
                .bind(i64::from(fence.attempt))
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn finish_attempt(
        &self,
        fence: &AttemptFence,
        outcome: AttemptOutcome,
        now: OffsetDateTime,
    ) -> Result<Run, StoreError> {
        let fence = *fence;
        let run = self
            .write(|conn| {
                Box::pin(async move {
                    let row =
                        sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM etl_runs WHERE {FENCE}"))
                            .bind(fence.run_id.to_string())
                            .bind(i64::from(fence.attempt))
                            .bind(fence.instance_id.to_string())
                            .fetch_optional(&mut *conn)
                            .await?;
                    let row = row.ok_or(StoreError::Fenced)?;
                    let run = run_from_row(&row)?;
                    let max_attempts = to_u32(row.try_get("max_attempts")?, "max_attempts")?;
                    let transition =
                        finish_transition(run.state, run.attempts, max_attempts, outcome, now);
                    apply_transition(
                        &mut *conn,
                        run.id,
                        &run.job_name,
                        fence.attempt,
                        &transition,
                        now,
                    )
                    .await?;
                    must_fetch_run(conn, run.id).await
                })
            })
            .await?;
        self.bump();
        Ok(run)
    }

    async fn request_cancel(
        &self,
        id: RunId,
        now: OffsetDateTime,
    ) -> Result<CancelOutcome, StoreError> {
        let outcome = self
            .write(|conn| {
                Box::pin(async move {
                    let Some(run) = fetch_run(&mut *conn, id).await? else {
                        return Ok(CancelOutcome::NotFound);
                    };
                    let next = match run.state {
                        state if state.is_terminal() => {
                            return Ok(CancelOutcome::AlreadyFinished(run));
                        }
                        RunState::Cancelling => return Ok(CancelOutcome::Cancelling(run)),
                        RunState::Running => RunState::Cancelling,
                        _ => RunState::Cancelled,
                    };
                    apply_cancel(&mut *conn, &run, next, now).await?;
                    let run = must_fetch_run(conn, id).await?;
                    Ok(if next == RunState::Cancelled {
                        CancelOutcome::Cancelled(run)
                    } else {
                        CancelOutcome::Cancelling(run)
                    })
                })
            })
            .await?;
        self.bump();
        Ok(outcome)
    }

    async fn sweep_expired(&self, now: OffsetDateTime) -> Result<SweepReport, StoreError> {
        let report = self
            .write(|conn| {
                Box::pin(async move {
                    let rows = sqlx::query(&format!(
                        "SELECT id, job_name, state, attempts, max_attempts FROM etl_runs \
                         WHERE state IN {EXECUTING_STATES} AND lease_expires_at < ?"
                    ))
                    .bind(to_micros(now))
                    .fetch_all(&mut *conn)
                    .await?;
                    let mut report = SweepReport::default();
                    for row in rows {
                        let id: String = row.try_get("id")?;
                        let id = RunId::from_uuid(parse_uuid(&id, "id")?);
                        let job_name: String = row.try_get("job_name")?;
                        let state: String = row.try_get("state")?;
                        let attempts = to_u32(row.try_get("attempts")?, "attempts")?;
                        let max_attempts = to_u32(row.try_get("max_attempts")?, "max_attempts")?;
                        let transition =
                            sweep_transition(parse_state(&state)?, attempts, max_attempts, now);
                        apply_transition(&mut *conn, id, &job_name, attempts, &transition, now)
                            .await?;
                        match transition.state {
                            RunState::Retrying => report.retried.push(id),
                            RunState::Cancelled => report.cancelled.push(id),
                            _ => report.failed.push(id),
                        }
                    }
                    Ok(report)
                })
            })
            .await?;
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
        let run = self
            .write(|conn| {
                Box::pin(async move {
                    let inserted = sqlx::query(
                        "INSERT INTO etl_schedule_slots (job_name, slot, fired_at) \
                         VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    )
                    .bind(&new.job_name)
                    .bind(to_micros(slot))
                    .bind(to_micros(new.created_at))
                    .execute(&mut *conn)
                    .await?;
                    if inserted.rows_affected() == 0 {
                        return Ok(None);
                    }
                    if active_slot_holder(&mut *conn, &new.job_name)
                        .await?
                        .is_some()
                    {
                        return Ok(None);
                    }
                    let run = insert_run(&mut *conn, &new).await?;
                    sqlx::query(
                        "UPDATE etl_schedule_slots SET run_id = ? WHERE job_name = ? AND slot = ?",
                    )
                    .bind(run.id.to_string())
                    .bind(&new.job_name)
                    .bind(to_micros(slot))
                    .execute(conn)
                    .await?;
                    Ok(Some(run))
                })
            })
            .await?;
        if run.is_some() {
            self.bump();
        }
        Ok(run)
    }

    async fn get_run(&self, id: RunId) -> Result<Option<Run>, StoreError> {
        reads::get_run(&self.pool, id).await
    }

    async fn list_runs(&self, job_name: Option<&str>, limit: u32) -> Result<Vec<Run>, StoreError> {
        reads::list_runs(&self.pool, job_name, limit).await
    }

    async fn latest_runs(&self) -> Result<Vec<Run>, StoreError> {
        reads::latest_runs(&self.pool).await
    }

    async fn active_runs(&self, job_name: Option<&str>) -> Result<Vec<Run>, StoreError> {
        reads::active_runs(&self.pool, job_name).await
    }

    async fn count_states(&self) -> Result<StateCounts, StoreError> {
        reads::count_states(&self.pool).await
    }

    async fn attempts(&self, id: RunId) -> Result<Vec<Attempt>, StoreError> {
        reads::attempts(&self.pool, id).await
    }

    async fn logs(&self, id: RunId) -> Result<Vec<LogLine>, StoreError> {
        reads::logs(&self.pool, id).await
    }

    async fn events_since(&self, after_seq: i64, limit: u32) -> Result<Vec<RunEvent>, StoreError> {
        reads::events_since(&self.pool, after_seq, limit).await
    }

    async fn prune(&self, batch: super::PruneBatch) -> Result<super::PruneReport, StoreError> {
        self.write(|conn| Box::pin(retention::prune(conn, batch)))
            .await
    }

    async fn events_pruned_through(&self) -> Result<i64, StoreError> {
        retention::events_pruned_through(&self.pool).await
    }

    async fn last_schedule_slots(&self) -> Result<Vec<(String, OffsetDateTime)>, StoreError> {
        reads::last_schedule_slots(&self.pool).await
    }

    async fn latest_event_seq(&self) -> Result<i64, StoreError> {
        reads::latest_event_seq(&self.pool).await
    }
}
