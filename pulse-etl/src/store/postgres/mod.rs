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

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, PgConnection, PgPool, Postgres, Row, Transaction};
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::common::{finish_transition, truncate_micros};
use super::sql::conn::{Param, SqlConn, SqlRow, Stmt, sql_conn};
use super::sql::queries::{Queries, queries};
use super::sql::rows::run_from_row;
use super::sql::script::{
    event_params, fenced, pending_event, running_event, with_new_run, with_transition,
};
use super::sql::{SqlBackend, claim_from_row};
use super::{AttemptFence, AttemptOutcome, Claim, JobStore, NewRun, StoreError, StorePool};
use crate::model::{Run, RunEvent};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

static QUERIES: Queries = queries!("postgres", insert_attempt: None);

mod events;
mod notify;
mod retention;
#[cfg(test)]
mod tests;

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
    /// The ids of the job sets this store registered, by the names' digest.
    job_sets: std::sync::Mutex<std::collections::HashMap<u64, i64>>,
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
        let notifier = tokio::spawn(notify::notify_others_task(
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
                job_sets: std::sync::Mutex::default(),
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
}

#[async_trait]
impl SqlBackend for PgStore {
    type Conn = PgConnection;
    type Tx = Transaction<'static, Postgres>;
    type Pooled = PoolConnection<Postgres>;

    const KIND: &'static str = "postgres";

    fn queries(&self) -> &'static Queries {
        &QUERIES
    }

    fn event_lock(&self) -> i64 {
        self.inner.lock_key
    }

    fn retention_lock(&self) -> i64 {
        self.inner.lock_key ^ retention::RETENTION_LOCK
    }

    fn store_pool(&self) -> StorePool {
        StorePool::Postgres(self.inner.pool.clone())
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Wakes this instance's workers and event pump, and has the notifier tell the
    /// other instances.
    fn committed(&self) {
        self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
        self.inner.notify_others.notify_one();
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        Ok(self.inner.pool.begin().await?)
    }

    async fn commit(tx: Transaction<'static, Postgres>) -> Result<(), StoreError> {
        Ok(tx.commit().await?)
    }

    async fn pooled(&self) -> Result<PoolConnection<Postgres>, StoreError> {
        Ok(self.inner.pool.acquire().await?)
    }

    /// The id of the job set holding exactly `jobs` (`etl_job_sets`), registered on
    /// first use: a claim sends 8 bytes instead of every name.
    async fn job_filter<'j>(&self, jobs: &'j [String]) -> Result<Param<'j>, StoreError> {
        // Every claim digests the names (3,000 in the queued benchmark): a fast hash. The
        // names are the engine's registered jobs, not client input, so the digest is
        // keyed by them alone; the database side checks the set's contents.
        let digest = foldhash::fast::FixedState::with_seed(0).hash_one(jobs);
        let known = self
            .inner
            .job_sets
            .lock()
            .ok()
            .and_then(|sets| sets.get(&digest).copied());
        let set = match known {
            Some(set) => set,
            None => self.register_job_set(jobs, digest).await?,
        };
        Ok(Param::Int(Some(set)))
    }

    async fn create_unopposed(&self, new: &NewRun) -> Result<Option<Run>, StoreError> {
        let (kind, payload) = event_params(&pending_event());
        let sql = include_str!("../../../queries/postgres/create_unopposed.sql");
        let stmt = with_new_run(Stmt::new(sql), new)
            .bind(kind)
            .bind(payload)
            .bind(self.inner.lock_key);
        let row = self.pooled().await?.optional(stmt).await?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn finish_running(
        &self,
        fence: &AttemptFence,
        outcome: &AttemptOutcome,
        now: OffsetDateTime,
        next: Option<(&[String], Duration)>,
    ) -> Result<Option<(Run, Option<Claim>)>, StoreError> {
        // Only a retryable failure depends on the attempts left: the statement checks
        // that one remains for the `retrying` transition computed here.
        let needs_attempts_left = matches!(
            outcome,
            AttemptOutcome::Failed {
                retry_at: Some(_),
                ..
            }
        );
        let transition = finish_transition(
            crate::model::RunState::Running,
            fence.attempt,
            fence.attempt.saturating_add(1),
            outcome.clone(),
            now,
        );
        let (kind, payload) = event_params(&transition.event(fence.attempt));
        let sql = if next.is_some() {
            include_str!("../../../queries/postgres/finish_running_and_claim.sql")
        } else {
            include_str!("../../../queries/postgres/finish_running.sql")
        };
        let mut stmt = with_transition(fenced(sql, fence), &transition, now)
            .bind(needs_attempts_left)
            .bind(transition.attempt_outcome)
            .bind(transition.attempt_error.as_deref())
            .bind(kind)
            .bind(payload)
            .bind(self.inner.lock_key);
        let expires = next.map(|(_, lease)| now + lease);
        if let (Some((jobs, _)), Some(expires)) = (next, expires) {
            let (kind, payload) = event_params(&running_event(0));
            let jobs = self.job_filter(jobs).await?;
            stmt = stmt.bind(jobs).bind(expires).bind(kind).bind(payload);
        }
        let rows = self.pooled().await?.all(stmt).await?;
        let mut finished = None;
        let mut claimed = None;
        for row in &rows {
            if row.boolean("claimed")? {
                if let Some(expires) = expires {
                    claimed = Some(claim_from_row(row, fence.instance_id, expires)?);
                }
            } else {
                finished = Some(run_from_row(row)?);
            }
        }
        Ok(finished.map(|run| (run, claimed)))
    }

    async fn events_since(&self, after_seq: i64, limit: u32) -> Result<Vec<RunEvent>, StoreError> {
        self.inner
            .events
            .events_since(&self.inner.pool, self.inner.lock_key, after_seq, limit)
            .await
    }

    async fn latest_event_seq(&self) -> Result<i64, StoreError> {
        // The largest committed seq may lie above one still in flight: settle first.
        self.inner
            .events
            .settle_in_flight(&self.inner.pool, self.inner.lock_key)
            .await
    }
}

/// The statement with its parameters in PostgreSQL's types; times are truncated to the
/// microsecond the database keeps, so what a write returns equals what it stored.
fn query(stmt: Stmt<'_>) -> sqlx::query::Query<'_, Postgres, PgArguments> {
    let Stmt { sql, params } = stmt;
    params
        .into_iter()
        .fold(sqlx::query(sql), |query, param| match param {
            Param::Id(id) => query.bind(id),
            Param::Ids(ids) => query.bind(ids),
            Param::Text(text) => query.bind(text),
            Param::Names(names) => query.bind(names),
            Param::Int(n) => query.bind(n),
            Param::Bool(b) => query.bind(b),
            Param::Time(at) => query.bind(at.map(truncate_micros)),
            Param::Json(value) => query.bind(value),
        })
}

sql_conn!(PgConnection, PgRow);

impl SqlRow for PgRow {
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(column)?)
    }

    /// `integer` and `bigint` columns alike.
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        match self.try_get::<Option<i64>, _>(column) {
            Ok(n) => Ok(n),
            Err(_) => Ok(self.try_get::<Option<i32>, _>(column)?.map(i64::from)),
        }
    }

    fn opt_id(&self, column: &str) -> Result<Option<Uuid>, StoreError> {
        Ok(self.try_get(column)?)
    }

    fn opt_time(&self, column: &str) -> Result<Option<OffsetDateTime>, StoreError> {
        Ok(self.try_get(column)?)
    }

    fn opt_json(&self, column: &str) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self.try_get(column)?)
    }

    fn boolean(&self, column: &str) -> Result<bool, StoreError> {
        Ok(self.try_get(column)?)
    }
}

impl PgStore {
    /// Registers `jobs` as a job set and remembers its id: the names' digest, or the
    /// next free number after it should another set hold that id.
    async fn register_job_set(&self, jobs: &[String], digest: u64) -> Result<i64, StoreError> {
        let first = i64::from_ne_bytes(digest.to_ne_bytes());
        let mut conn = self.pooled().await?;
        for offset in 0..16 {
            let set = first.wrapping_add(offset);
            let sql = include_str!("../../../queries/postgres/register_job_set.sql");
            let register = Stmt::new(sql).bind(set).bind(jobs);
            let row = conn.optional(register).await?;
            if row.map_or(Ok(false), |row| row.boolean("registered"))? {
                if let Ok(mut sets) = self.inner.job_sets.lock() {
                    sets.insert(digest, set);
                }
                return Ok(set);
            }
        }
        Err(StoreError::Corrupt(
            "no free job set id near the names' digest".to_owned(),
        ))
    }
}

/// A stable advisory-lock key per schema (FNV-1a).
fn lock_key(schema: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("pulse_etl_events:{schema}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}
