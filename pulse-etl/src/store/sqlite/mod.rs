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
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqliteConnection, SqlitePool, Transaction};
use time::OffsetDateTime;
use tokio::sync::{Mutex, OwnedMutexGuard, watch};
use uuid::Uuid;

use super::common::{from_micros, parse_json, parse_uuid, to_micros};
use super::sql::SqlBackend;
use super::sql::conn::{Param, SqlConn, SqlRow, Stmt, sql_conn};
use super::sql::queries::{Queries, queries};
use super::{JobStore, StoreError, StorePool};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

static QUERIES: Queries = queries!("sqlite", insert_attempt: Some);

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
}

/// A write transaction holding the store's write lock until it ends.
pub(crate) struct SqliteTx {
    // Dropped first: a transaction that was not committed rolls back before the next
    // writer gets the lock.
    tx: Transaction<'static, Sqlite>,
    _writer: OwnedMutexGuard<()>,
}

impl std::ops::Deref for SqliteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for SqliteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

#[async_trait]
impl SqlBackend for SqliteStore {
    type Conn = SqliteConnection;
    type Tx = SqliteTx;
    type Pooled = PoolConnection<Sqlite>;

    const KIND: &'static str = "sqlite";

    fn queries(&self) -> &'static Queries {
        &QUERIES
    }

    fn store_pool(&self) -> StorePool {
        StorePool::Sqlite(self.pool.clone())
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn committed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// `BEGIN IMMEDIATE`, after the store's write lock: the transaction holds SQLite's
    /// single write lock from its first statement.
    async fn begin(&self) -> Result<SqliteTx, StoreError> {
        let writer = Arc::clone(&self.write_lock).lock_owned().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(SqliteTx {
            tx,
            _writer: writer,
        })
    }

    async fn commit(tx: SqliteTx) -> Result<(), StoreError> {
        let SqliteTx { tx, _writer } = tx;
        tx.commit().await?;
        Ok(())
    }

    async fn pooled(&self) -> Result<PoolConnection<Sqlite>, StoreError> {
        Ok(self.pool.acquire().await?)
    }
}

/// The statement with its parameters in SQLite's types: ids as text, times as
/// microseconds since the epoch, JSON and lists as JSON text.
fn query(stmt: Stmt<'_>) -> sqlx::query::Query<'_, Sqlite, SqliteArguments<'_>> {
    let Stmt { sql, params } = stmt;
    params
        .into_iter()
        .fold(sqlx::query(sql), |query, param| match param {
            Param::Id(id) => query.bind(id.map(|id| id.to_string())),
            Param::Ids(ids) => query.bind(json_list(ids.iter().map(Uuid::to_string))),
            Param::Text(text) => query.bind(text),
            Param::Names(names) => query.bind(json_list(names.iter().cloned())),
            Param::Int(n) => query.bind(n),
            Param::Bool(b) => query.bind(b),
            Param::Time(at) => query.bind(at.map(to_micros)),
            Param::Json(value) => query.bind(value.map(|value| value.to_string())),
        })
}

fn json_list(items: impl Iterator<Item = String>) -> String {
    serde_json::Value::Array(items.map(serde_json::Value::String).collect()).to_string()
}

sql_conn!(SqliteConnection, SqliteRow);

impl SqlRow for SqliteRow {
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(column)?)
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.try_get(column)?)
    }

    fn opt_id(&self, column: &str) -> Result<Option<Uuid>, StoreError> {
        let text: Option<String> = self.try_get(column)?;
        text.map(|text| parse_uuid(&text, column)).transpose()
    }

    fn opt_time(&self, column: &str) -> Result<Option<OffsetDateTime>, StoreError> {
        let micros: Option<i64> = self.try_get(column)?;
        micros.map(from_micros).transpose()
    }

    fn opt_json(&self, column: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let text: Option<String> = self.try_get(column)?;
        text.map(|text| parse_json(&text, column)).transpose()
    }

    fn boolean(&self, column: &str) -> Result<bool, StoreError> {
        Ok(self.try_get(column)?)
    }
}
