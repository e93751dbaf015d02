//! [`StoreError`]: every database failure sorted by cause at the store boundary, so the
//! API can answer each with the right status.

use std::error::Error as StdError;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
use sqlx::error::{DatabaseError, ErrorKind};

/// A boxed error source.
type Source = Box<dyn StdError + Send + Sync + 'static>;

/// An error of a store.
///
/// Database failures are sorted by cause where they happen, so that callers can tell
/// an outage from a conflict, bad input or a bug:
///
/// | cause | variant | the API answers |
/// |---|---|---|
/// | connection refused or reset, I/O, TLS, pool closed or timed out, busy or locked database, server shutting down, statement timeout, deadlock | [`StoreError::Unavailable`] | `503 store_unavailable` + `Retry-After` |
/// | unique, primary-key, foreign-key or exclusion constraint | [`StoreError::Conflict`] | `409 conflict` |
/// | a value the database refuses: out of range, malformed, too long, NULL where none is allowed, failing a CHECK | [`StoreError::InvalidInput`] | `422 validation_failed` |
/// | anything else: SQL errors, values that do not decode, protocol errors | [`StoreError::Database`] | `500 internal_error` |
///
/// sqlx's error is the variant's [`source`](std::error::Error::source), for logs; it
/// is not part of the variant's type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be reached or did not answer in time: connection refused
    /// or reset, I/O or TLS failure, pool closed or timed out, database busy or locked,
    /// server shutting down, statement timeout, deadlock. Worth retrying later.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] Source),
    /// A unique, primary-key, foreign-key or exclusion constraint refused the write: it
    /// conflicts with what is stored.
    #[error("constraint violated: {0}")]
    Conflict(#[source] Source),
    /// The database refused a value: out of range, malformed, too long, NULL where none
    /// is allowed, or failing a CHECK constraint.
    #[error("value refused by the database: {0}")]
    InvalidInput(#[source] Source),
    /// Any other database failure: an SQL error, a value that does not decode, a
    /// protocol error. A bug, or a database not in the shape the store expects.
    #[error("database error: {0}")]
    Database(#[source] Source),
    /// Applying the embedded migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[source] Source),
    /// The attempt no longer holds the run: another attempt took it over, or it ended.
    #[error("the attempt no longer holds the run's lease")]
    Fenced,
    /// A stored row could not be read back (a bug or a foreign write).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The store's configuration is invalid (bad URL, bad schema name).
    #[error("invalid store configuration: {0}")]
    Config(String),
}

impl StoreError {
    /// `true` when the database is unreachable or overloaded ([`StoreError::Unavailable`]):
    /// the request may succeed later (503), unlike a bug (500).
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// A conflict the store detected itself, without a database error (e.g. a write
    /// that kept losing races with concurrent ones).
    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        StoreError::Conflict(message.into().into())
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
/// Sorts a sqlx error by cause: see the variants of [`StoreError`].
impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        cause(&err).wrap(Box::new(err))
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        match err {
            // A database that cannot be reached is no broken migration.
            sqlx::migrate::MigrateError::Execute(inner) if cause(&inner) == Cause::Unavailable => {
                StoreError::Unavailable(Box::new(inner))
            }
            other => StoreError::Migrate(Box::new(other)),
        }
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Unavailable,
    Conflict,
    InvalidInput,
    Bug,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn cause(err: &sqlx::Error) -> Cause {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Cause::Unavailable,
        sqlx::Error::Database(db) => classify_database(db.as_ref()),
        _ => Cause::Bug,
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl Cause {
    fn wrap(self, source: Source) -> StoreError {
        match self {
            Cause::Unavailable => StoreError::Unavailable(source),
            Cause::Conflict => StoreError::Conflict(source),
            Cause::InvalidInput => StoreError::InvalidInput(source),
            Cause::Bug => StoreError::Database(source),
        }
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn classify_database(db: &dyn DatabaseError) -> Cause {
    #[cfg(feature = "postgres")]
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        return classify_sqlstate(pg.code());
    }
    #[cfg(feature = "sqlite")]
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
        && let Some(code) = db.code().and_then(|code| code.parse::<i32>().ok())
    {
        return classify_sqlite(code);
    }
    match db.kind() {
        ErrorKind::UniqueViolation | ErrorKind::ForeignKeyViolation => Cause::Conflict,
        ErrorKind::NotNullViolation | ErrorKind::CheckViolation => Cause::InvalidInput,
        _ => Cause::Bug,
    }
}

#[cfg(feature = "postgres")]
/// PostgreSQL SQLSTATE codes (PostgreSQL manual, appendix A).
fn classify_sqlstate(code: &str) -> Cause {
    match code {
        // unique, foreign key, exclusion, restrict
        "23505" | "23503" | "23P01" | "23001" => Cause::Conflict,
        // not null, check; any other integrity constraint
        "23502" | "23514" => Cause::InvalidInput,
        _ if code.starts_with("23") => Cause::Conflict,
        // data exceptions (out of range, invalid text, too long, bad encoding, …) and
        // program limits (e.g. an index row too large)
        _ if code.starts_with("22") || code.starts_with("54") => Cause::InvalidInput,
        // admin/crash shutdown, cannot connect now, statement timeout (query canceled)
        "57P01" | "57P02" | "57P03" | "57014" => Cause::Unavailable,
        // lock not available; read-only transaction (a standby after failover)
        "55P03" | "25006" => Cause::Unavailable,
        // connection exceptions, transaction rollback (serialization failure,
        // deadlock), insufficient resources (too many connections, disk full), system
        // errors (I/O)
        _ if ["08", "40", "53", "58"]
            .iter()
            .any(|class| code.starts_with(class)) =>
        {
            Cause::Unavailable
        }
        _ => Cause::Bug,
    }
}

#[cfg(feature = "sqlite")]
/// SQLite (extended) result codes (<https://sqlite.org/rescode.html>).
fn classify_sqlite(code: i32) -> Cause {
    const CONSTRAINT: i32 = 19;
    const CONSTRAINT_CHECK: i32 = 275;
    const CONSTRAINT_NOTNULL: i32 = 1299;
    const CONSTRAINT_DATATYPE: i32 = 3091;
    match code & 0xff {
        CONSTRAINT => match code {
            CONSTRAINT_CHECK | CONSTRAINT_NOTNULL | CONSTRAINT_DATATYPE => Cause::InvalidInput,
            // unique, primary key, foreign key, trigger, …
            _ => Cause::Conflict,
        },
        // TOOBIG (string or blob too large), MISMATCH (datatype mismatch)
        18 | 20 => Cause::InvalidInput,
        // BUSY, LOCKED (after the busy timeout), NOMEM, READONLY, IOERR, FULL,
        // CANTOPEN, PROTOCOL (file locking)
        5 | 6 | 7 | 8 | 10 | 13 | 14 | 15 => Cause::Unavailable,
        // ERROR (SQL error), CORRUPT, NOTADB, RANGE, …
        _ => Cause::Bug,
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use std::time::Duration;

    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use sqlx::{ConnectOptions, Connection, SqliteConnection, SqlitePool};

    use super::*;

    fn kind(err: &StoreError) -> &'static str {
        match err {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Conflict(_) => "conflict",
            StoreError::InvalidInput(_) => "invalid_input",
            StoreError::Database(_) => "database",
            _ => "other",
        }
    }

    async fn failing(conn: &mut SqliteConnection, sql: &str) -> StoreError {
        let err = sqlx::query(sql)
            .execute(conn)
            .await
            .expect_err("the statement should fail");
        StoreError::from(err)
    }

    #[tokio::test]
    async fn sqlite_errors_are_sorted_by_cause() {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        for setup in [
            "PRAGMA foreign_keys = ON",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE, \
             n INTEGER NOT NULL CHECK (n >= 0), parent INTEGER REFERENCES t (id))",
            "INSERT INTO t VALUES (1, 'a', 1, NULL)",
        ] {
            sqlx::query(setup).execute(&mut conn).await.unwrap();
        }
        for (sql, expected) in [
            ("INSERT INTO t VALUES (2, 'a', 1, NULL)", "conflict"),
            ("INSERT INTO t VALUES (1, 'b', 1, NULL)", "conflict"),
            ("INSERT INTO t VALUES (3, 'c', 1, 99)", "conflict"),
            ("INSERT INTO t VALUES (4, 'd', NULL, NULL)", "invalid_input"),
            ("INSERT INTO t VALUES (5, 'e', -1, NULL)", "invalid_input"),
            (
                "INSERT INTO t VALUES ('six', 'f', 1, NULL)",
                "invalid_input",
            ),
            ("SELECT * FROM no_such_table", "database"),
            ("SELEC 1", "database"),
        ] {
            assert_eq!(kind(&failing(&mut conn, sql).await), expected, "{sql}");
        }
        // a value that does not decode into the type asked for
        let decode = sqlx::query_scalar::<_, i64>("SELECT 'not a number'")
            .fetch_one(&mut conn)
            .await
            .unwrap_err();
        assert_eq!(kind(&decode.into()), "database");
        let missing_row = sqlx::query_scalar::<_, i64>("SELECT 1 WHERE 0")
            .fetch_one(&mut conn)
            .await
            .unwrap_err();
        assert_eq!(kind(&missing_row.into()), "database");
    }

    #[tokio::test]
    async fn sqlite_outages_are_unavailable() {
        // a closed pool
        let pool = SqlitePool::connect("sqlite::memory:").await.unwrap();
        pool.close().await;
        let err = sqlx::query("SELECT 1").execute(&pool).await.unwrap_err();
        assert!(StoreError::from(err).is_unavailable());

        // a file that cannot be opened
        let dir = tempfile::tempdir().unwrap();
        let err = SqliteConnectOptions::new()
            .filename(dir.path().join("no/such/dir/jobs.db"))
            .connect()
            .await
            .unwrap_err();
        assert!(StoreError::from(err).is_unavailable());

        // a database another writer keeps locked past the busy timeout
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("busy.db"))
            .create_if_missing(true)
            .busy_timeout(Duration::ZERO);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .unwrap();
        let mut holder = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        sqlx::query("CREATE TABLE t (x)")
            .execute(&mut *holder)
            .await
            .unwrap();
        let err = pool.begin_with("BEGIN IMMEDIATE").await.unwrap_err();
        let err = StoreError::from(err);
        assert!(err.is_unavailable(), "{err}");
        holder.rollback().await.unwrap();
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn sqlstates_are_sorted_by_cause() {
        for (code, expected) in [
            ("23505", Cause::Conflict),     // unique_violation
            ("23503", Cause::Conflict),     // foreign_key_violation
            ("23P01", Cause::Conflict),     // exclusion_violation
            ("23502", Cause::InvalidInput), // not_null_violation
            ("23514", Cause::InvalidInput), // check_violation
            ("22003", Cause::InvalidInput), // numeric_value_out_of_range
            ("22P02", Cause::InvalidInput), // invalid_text_representation
            ("22001", Cause::InvalidInput), // string_data_right_truncation
            ("22021", Cause::InvalidInput), // character_not_in_repertoire
            ("22P05", Cause::InvalidInput), // untranslatable_character
            ("54000", Cause::InvalidInput), // program_limit_exceeded
            ("08006", Cause::Unavailable),  // connection_failure
            ("57P01", Cause::Unavailable),  // admin_shutdown
            ("57014", Cause::Unavailable),  // query_canceled (statement timeout)
            ("53300", Cause::Unavailable),  // too_many_connections
            ("40001", Cause::Unavailable),  // serialization_failure
            ("40P01", Cause::Unavailable),  // deadlock_detected
            ("55P03", Cause::Unavailable),  // lock_not_available
            ("42601", Cause::Bug),          // syntax_error
            ("42P01", Cause::Bug),          // undefined_table
            ("42703", Cause::Bug),          // undefined_column
            ("XX000", Cause::Bug),          // internal_error
        ] {
            assert_eq!(classify_sqlstate(code), expected, "{code}");
        }
    }

    #[test]
    fn the_sqlx_error_is_the_source_not_the_variant() {
        let err = StoreError::from(sqlx::Error::PoolTimedOut);
        assert!(err.is_unavailable());
        let source = std::error::Error::source(&err).expect("a source");
        assert!(source.downcast_ref::<sqlx::Error>().is_some());
        assert_eq!(
            err.to_string(),
            "database unavailable: pool timed out while waiting for an open connection"
        );
        assert!(!StoreError::from(sqlx::Error::RowNotFound).is_unavailable());
        assert!(!StoreError::Fenced.is_unavailable());
    }
}
