//! The load step shared by the seed jobs: idempotent upserts of normalised
//! [`SourceItem`]s into `etl_source_items`, next to the runs in the store's database.

use time::OffsetDateTime;

use crate::job::JobError;
use crate::model::RunId;
use crate::store::StorePool;

/// One item of a source, normalised: a row of `etl_source_items`, keyed by
/// `(source, external_id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceItem {
    /// `jira` or `github`.
    pub source: String,
    /// The source's stable id of the item (Jira's issue id, GitHub's issue id).
    pub external_id: String,
    /// The human key: `PULSE-12` (Jira) or `owner/repo#12` (GitHub).
    pub key: String,
    /// `issue`, `pull_request`, or Jira's issue type in lower case.
    pub kind: String,
    /// The title (Jira's summary).
    pub title: String,
    /// The state, as the source names it (`open`, `closed`, `In Progress`, …).
    pub state: String,
    /// When the source last changed the item, as the source wrote it.
    pub updated_at: String,
    /// Where a person can see the item.
    pub url: Option<String>,
}

const UPSERT_SQLITE: &str = "INSERT INTO etl_source_items \
     (source, external_id, item_key, kind, title, state, updated_at, url, run_id, synced_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
     ON CONFLICT (source, external_id) DO UPDATE SET \
     item_key = excluded.item_key, kind = excluded.kind, title = excluded.title, \
     state = excluded.state, updated_at = excluded.updated_at, url = excluded.url, \
     run_id = excluded.run_id, synced_at = excluded.synced_at";

/// What a seed job says on a store without tables.
const NO_TABLES: &str =
    "the seed jobs load into SQL tables: run them on a SQLite or PostgreSQL store";

/// Upserts one page of items in one transaction; returns how many rows were written.
///
/// Re-loading an item overwrites its row, so a retried page or a second run never
/// duplicates anything.
pub(crate) async fn upsert_items(
    pool: &StorePool,
    run_id: RunId,
    items: &[SourceItem],
    now: OffsetDateTime,
) -> Result<u64, JobError> {
    let failed = |err: sqlx::Error| {
        JobError::retryable(format!("loading {} items failed: {err}", items.len()))
    };
    let mut written = 0;
    match pool {
        #[cfg(feature = "sqlite")]
        StorePool::Sqlite(pool) => {
            let synced_at = i64::try_from(now.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX);
            let mut tx = pool.begin().await.map_err(failed)?;
            for item in items {
                written += sqlx::query(UPSERT_SQLITE)
                    .bind(&item.source)
                    .bind(&item.external_id)
                    .bind(&item.key)
                    .bind(&item.kind)
                    .bind(&item.title)
                    .bind(&item.state)
                    .bind(&item.updated_at)
                    .bind(&item.url)
                    .bind(run_id.to_string())
                    .bind(synced_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(failed)?
                    .rows_affected();
            }
            tx.commit().await.map_err(failed)?;
        }
        #[cfg(feature = "postgres")]
        StorePool::Postgres(pool) => {
            let mut tx = pool.begin().await.map_err(failed)?;
            for item in items {
                // Same statement: `excluded` and `$n` placeholders work on both.
                written += sqlx::query(UPSERT_SQLITE)
                    .bind(&item.source)
                    .bind(&item.external_id)
                    .bind(&item.key)
                    .bind(&item.kind)
                    .bind(&item.title)
                    .bind(&item.state)
                    .bind(&item.updated_at)
                    .bind(&item.url)
                    .bind(run_id.as_uuid())
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(failed)?
                    .rows_affected();
            }
            tx.commit().await.map_err(failed)?;
        }
        StorePool::Memory => return Err(JobError::fatal(NO_TABLES)),
    }
    Ok(written)
}

/// How many items of `source` (`jira`, `github`) are loaded.
///
/// # Errors
/// The database's error.
pub async fn count_items(pool: &StorePool, source: &str) -> Result<u64, sqlx::Error> {
    const SQL: &str = "SELECT COUNT(*) FROM etl_source_items WHERE source = $1";
    let count: i64 = match pool {
        #[cfg(feature = "sqlite")]
        StorePool::Sqlite(pool) => sqlx::query_scalar(SQL).bind(source).fetch_one(pool).await?,
        #[cfg(feature = "postgres")]
        StorePool::Postgres(pool) => sqlx::query_scalar(SQL).bind(source).fetch_one(pool).await?,
        StorePool::Memory => return Err(sqlx::Error::Configuration(NO_TABLES.into())),
    };
    Ok(u64::try_from(count).unwrap_or(0))
}

/// The loaded items of `source`, by key.
///
/// # Errors
/// The database's error.
pub async fn list_items(pool: &StorePool, source: &str) -> Result<Vec<SourceItem>, sqlx::Error> {
    const SQL: &str = "SELECT source, external_id, item_key, kind, title, state, updated_at, url \
         FROM etl_source_items WHERE source = $1 ORDER BY item_key";
    type Row = (
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        Option<String>,
    );
    let rows: Vec<Row> = match pool {
        #[cfg(feature = "sqlite")]
        StorePool::Sqlite(pool) => sqlx::query_as(SQL).bind(source).fetch_all(pool).await?,
        #[cfg(feature = "postgres")]
        StorePool::Postgres(pool) => sqlx::query_as(SQL).bind(source).fetch_all(pool).await?,
        StorePool::Memory => return Err(sqlx::Error::Configuration(NO_TABLES.into())),
    };
    Ok(rows
        .into_iter()
        .map(
            |(source, external_id, key, kind, title, state, updated_at, url)| SourceItem {
                source,
                external_id,
                key,
                kind,
                title,
                state,
                updated_at,
                url,
            },
        )
        .collect())
}
