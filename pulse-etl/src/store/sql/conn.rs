//! Statements as SQL text plus parameters, and rows read by column, the same way on
//! either database: each backend binds a [`Param`] and reads a column in its own types
//! (SQLite keeps ids as text, times as microseconds and JSON as text; PostgreSQL has
//! `uuid`, `timestamptz` and `jsonb`).

use async_trait::async_trait;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::model::{InstanceId, RunId};
use crate::store::StoreError;

/// One statement parameter, in the protocol's terms.
#[derive(Debug, Clone)]
pub(crate) enum Param<'a> {
    Id(Option<Uuid>),
    /// A list of ids (`= ANY($n)` on PostgreSQL, `IN (SELECT value FROM json_each($n))`
    /// on SQLite).
    Ids(Vec<Uuid>),
    Text(Option<&'a str>),
    /// A list of names, as [`Param::Ids`].
    Names(&'a [String]),
    Int(Option<i64>),
    Bool(bool),
    Time(Option<OffsetDateTime>),
    Json(Option<Value>),
}

impl From<RunId> for Param<'_> {
    fn from(id: RunId) -> Self {
        Self::Id(Some(id.as_uuid()))
    }
}

impl From<InstanceId> for Param<'_> {
    fn from(id: InstanceId) -> Self {
        Self::Id(Some(id.as_uuid()))
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(text: &'a str) -> Self {
        Self::Text(Some(text))
    }
}

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(text: Option<&'a str>) -> Self {
        Self::Text(text)
    }
}

impl<'a> From<&'a [String]> for Param<'a> {
    fn from(names: &'a [String]) -> Self {
        Self::Names(names)
    }
}

impl From<i64> for Param<'_> {
    fn from(n: i64) -> Self {
        Self::Int(Some(n))
    }
}

impl From<Option<i64>> for Param<'_> {
    fn from(n: Option<i64>) -> Self {
        Self::Int(n)
    }
}

impl From<u32> for Param<'_> {
    fn from(n: u32) -> Self {
        Self::Int(Some(i64::from(n)))
    }
}

impl From<bool> for Param<'_> {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}

impl From<OffsetDateTime> for Param<'_> {
    fn from(at: OffsetDateTime) -> Self {
        Self::Time(Some(at))
    }
}

impl From<Option<OffsetDateTime>> for Param<'_> {
    fn from(at: Option<OffsetDateTime>) -> Self {
        Self::Time(at)
    }
}

impl From<Value> for Param<'_> {
    fn from(value: Value) -> Self {
        Self::Json(Some(value))
    }
}

impl From<Option<Value>> for Param<'_> {
    fn from(value: Option<Value>) -> Self {
        Self::Json(value)
    }
}

/// SQL text (from `queries/<dialect>/`) and its parameters, `$1` first.
#[derive(Debug, Clone)]
pub(crate) struct Stmt<'a> {
    pub(crate) sql: &'static str,
    pub(crate) params: Vec<Param<'a>>,
}

impl<'a> Stmt<'a> {
    pub(crate) fn new(sql: &'static str) -> Self {
        Self {
            sql,
            params: Vec::new(),
        }
    }

    /// Adds the next parameter.
    #[must_use]
    pub(crate) fn bind(mut self, param: impl Into<Param<'a>>) -> Self {
        self.params.push(param.into());
        self
    }
}

/// A connection (or transaction) that runs [`Stmt`]s.
#[async_trait]
pub(crate) trait SqlConn: Send {
    /// A result row.
    type Row: SqlRow;

    /// Every row.
    async fn all(&mut self, stmt: Stmt<'_>) -> Result<Vec<Self::Row>, StoreError>;

    /// The first row, if any.
    async fn optional(&mut self, stmt: Stmt<'_>) -> Result<Option<Self::Row>, StoreError>;

    /// Runs it; how many rows it changed.
    async fn exec(&mut self, stmt: Stmt<'_>) -> Result<u64, StoreError>;
}

/// Implements [`SqlConn`] for a sqlx connection type, over the function `query` in
/// scope that turns a [`Stmt`] into a sqlx query with the backend's value types.
macro_rules! sql_conn {
    ($conn:ty, $row:ty) => {
        #[async_trait]
        impl SqlConn for $conn {
            type Row = $row;

            async fn all(&mut self, stmt: Stmt<'_>) -> Result<Vec<$row>, StoreError> {
                Ok(query(stmt).fetch_all(self).await?)
            }

            async fn optional(&mut self, stmt: Stmt<'_>) -> Result<Option<$row>, StoreError> {
                Ok(query(stmt).fetch_optional(self).await?)
            }

            async fn exec(&mut self, stmt: Stmt<'_>) -> Result<u64, StoreError> {
                Ok(query(stmt).execute(self).await?.rows_affected())
            }
        }
    };
}
pub(crate) use sql_conn;

/// A result row, read by column name.
pub(crate) trait SqlRow: Send + Sync {
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError>;
    fn opt_id(&self, column: &str) -> Result<Option<Uuid>, StoreError>;
    fn opt_time(&self, column: &str) -> Result<Option<OffsetDateTime>, StoreError>;
    fn opt_json(&self, column: &str) -> Result<Option<Value>, StoreError>;
    fn boolean(&self, column: &str) -> Result<bool, StoreError>;

    fn text(&self, column: &str) -> Result<String, StoreError> {
        self.opt_text(column)?.ok_or_else(|| null(column))
    }

    fn int(&self, column: &str) -> Result<i64, StoreError> {
        self.opt_int(column)?.ok_or_else(|| null(column))
    }

    fn id(&self, column: &str) -> Result<Uuid, StoreError> {
        self.opt_id(column)?.ok_or_else(|| null(column))
    }

    fn time(&self, column: &str) -> Result<OffsetDateTime, StoreError> {
        self.opt_time(column)?.ok_or_else(|| null(column))
    }

    fn json(&self, column: &str) -> Result<Value, StoreError> {
        self.opt_json(column)?.ok_or_else(|| null(column))
    }
}

fn null(column: &str) -> StoreError {
    StoreError::Corrupt(format!("{column} is NULL"))
}
