//! The accounts database: one sqlx `Any` pool over SQLite or PostgreSQL (every query is
//! written once, with `$1` placeholders, which both accept), the few places where the
//! dialects differ, and the versioned migrations.

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{Any, AnyConnection, AnyPool, Connection, Executor, Row, Transaction};

use super::error::AccountError;
use super::migrations::MIGRATIONS;
use super::users::AdminGuard;

/// The prefix of every table of the gateway: its tables live beside the job store's,
/// in the same database (and PostgreSQL schema), without touching them.
pub const TABLE_PREFIX: &str = "gateway_";

/// Which SQL the database speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite (a file in the data folder, or in memory for tests).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Dialect {
    /// The dialect of a database URL.
    pub fn of(url: &str) -> Self {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::Postgres
        } else {
            Self::Sqlite
        }
    }

    /// What locks a row read for update; SQLite's write transactions lock the whole
    /// database already (they begin `IMMEDIATE`).
    pub const fn for_update(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR UPDATE",
        }
    }

    /// An auto-numbered primary key column.
    pub const fn serial_primary_key(self) -> &'static str {
        match self {
            Self::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
            Self::Postgres => "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        }
    }
}

/// A pool on the accounts database and its dialect. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    pool: AnyPool,
    dialect: Dialect,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never printed.
        f.debug_struct("Database")
            .field("dialect", &self.dialect)
            .finish_non_exhaustive()
    }
}

/// How long to wait for a connection (an unreachable server is an error after it).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Database {
    /// Connect to `url` (`sqlite://path`, `sqlite::memory:`, a bare path, or
    /// `postgres://…`), with PostgreSQL's tables in `schema` (created if missing), and
    /// bring the tables up to date.
    pub async fn connect(url: &str, schema: Option<&str>) -> Result<Self, AccountError> {
        install_default_drivers();
        let dialect = Dialect::of(url);
        let db = match dialect {
            Dialect::Postgres => Self::connect_postgres(url, schema).await?,
            Dialect::Sqlite => Self::connect_sqlite(url).await?,
        };
        db.migrate().await?;
        Ok(db)
    }

    async fn connect_sqlite(url: &str) -> Result<Self, AccountError> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        let in_memory = path == ":memory:" || path.is_empty();
        let (url, connections) = if in_memory {
            // One connection: each in-memory connection would be a database of its own.
            ("sqlite::memory:".to_owned(), 1)
        } else {
            if let Some(parent) = std::path::Path::new(path).parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent).map_err(|err| {
                    AccountError::Unreachable(format!("creating {}: {err}", parent.display()))
                })?;
            }
            let url = if path.contains('?') {
                format!("sqlite://{path}")
            } else {
                format!("sqlite://{path}?mode=rwc")
            };
            (url, 4)
        };
        let pool = AnyPoolOptions::new()
            .max_connections(connections)
            .min_connections(u32::from(in_memory))
            .idle_timeout((!in_memory).then_some(Duration::from_secs(600)))
            .max_lifetime((!in_memory).then_some(Duration::from_secs(3600)))
            .acquire_timeout(CONNECT_TIMEOUT)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // The job store and the CLI write the same file: wait for their locks.
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|err| AccountError::Unreachable(format!("opening {path}: {err}")))?;
        if !in_memory {
            // Readers never wait for writers (the job store sets it too; it is kept in the file).
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        Ok(Self {
            pool,
            dialect: Dialect::Sqlite,
        })
    }

    async fn connect_postgres(url: &str, schema: Option<&str>) -> Result<Self, AccountError> {
        let unreachable = |err: sqlx::Error| {
            AccountError::Unreachable(format!(
                "connecting to PostgreSQL at {}: {err}",
                redact(url)
            ))
        };
        let schema = schema.map(str::to_owned);
        if let Some(schema) = &schema
            && (schema.is_empty()
                || !schema
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            return Err(AccountError::Schema(format!(
                "invalid schema name `{schema}` (letters, digits and _ only)"
            )));
        }
        // One connection first: its error says why (refused, unknown host, bad
        // password), where the pool would only say that it timed out.
        let first = tokio::time::timeout(CONNECT_TIMEOUT, AnyConnection::connect(url))
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)
            .and_then(|connected| connected)
            .map_err(unreachable)?;
        let _ = first.close().await;
        let pool = AnyPoolOptions::new()
            .max_connections(5)
            .acquire_timeout(CONNECT_TIMEOUT)
            .after_connect(move |conn, _| {
                let schema = schema.clone();
                Box::pin(async move {
                    if let Some(schema) = schema {
                        // The job store creates it too; whoever comes first.
                        conn.execute(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"").as_str())
                            .await?;
                        conn.execute(format!("SET search_path TO \"{schema}\"").as_str())
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(unreachable)?;
        Ok(Self {
            pool,
            dialect: Dialect::Postgres,
        })
    }

    /// The pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The dialect.
    pub const fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// A write transaction. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`): a transaction that reads first and then writes would otherwise fail
    /// with "database is locked" when another process wrote in between.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => self.pool.begin().await,
        }
    }

    /// With [`AdminGuard::KeepOne`] on PostgreSQL: serialise the changes that could take
    /// the last administrator away (two administrators disabling each other at once
    /// would otherwise each see the other still enabled). SQLite's write transactions
    /// are serialised already.
    pub async fn lock_administrators(
        &self,
        tx: &mut Transaction<'static, Any>,
        guard: AdminGuard,
    ) -> Result<(), sqlx::Error> {
        if guard == AdminGuard::KeepOne && self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(7021368710350468419)")
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Apply the migrations this binary knows and the database lacks, in one
    /// transaction, serialised with any other process doing the same.
    async fn migrate(&self) -> Result<(), AccountError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS gateway_migrations (\
             version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        let mut tx = self.begin().await?;
        if self.dialect == Dialect::Postgres {
            // The gateway, its CLI and other gateways may start at once.
            sqlx::query("SELECT pg_advisory_xact_lock(7021368710350468418)")
                .execute(&mut *tx)
                .await?;
        }
        let applied: Vec<i64> = sqlx::query("SELECT version FROM gateway_migrations")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| row.try_get::<i64, _>(0))
            .collect::<Result<_, _>>()?;
        let known = MIGRATIONS.last().map_or(0, |m| m.version);
        if let Some(newer) = applied.iter().find(|v| **v > known) {
            return Err(AccountError::Schema(format!(
                "the accounts tables are at version {newer}, newer than this program knows \
                 ({known}); run a newer full_stack"
            )));
        }
        for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
            for statement in migration.statements(self.dialect) {
                sqlx::query(&statement)
                    .execute(&mut *tx)
                    .await
                    .map_err(|err| {
                        AccountError::Schema(format!(
                            "migration {} ({}) failed: {err}",
                            migration.version, migration.name
                        ))
                    })?;
            }
            sqlx::query(
                "INSERT INTO gateway_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(migration.version)
            .bind(migration.name)
            .bind(super::now_millis())
            .execute(&mut *tx)
            .await?;
            tracing::info!(
                version = migration.version,
                name = migration.name,
                "accounts migration applied"
            );
        }
        tx.commit().await?;
        Ok(())
    }
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{host}{}", &rest[authority_end..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password_in_messages() {
        assert_eq!(
            redact("postgres://pulse:s3cret@db:5432/pulse"),
            "postgres://pulse@db:5432/pulse"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
        assert_eq!(redact("sqlite://data/pulse.db"), "sqlite://data/pulse.db");
    }
}
