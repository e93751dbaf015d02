//! The audit trail: an append-only table of security events (who, whom, what, when,
//! from where), read newest first with filters and paging, pruned after the retention.

use serde::Serialize;
use serde_json::Value;
use sqlx::{Any, Row, Transaction};

use super::{AccountError, AccountStore, Origin};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    /// A login with the right password of an enabled user.
    LoginSucceeded,
    /// A login refused: unknown user, wrong password, disabled user.
    LoginFailed,
    /// A login refused by the throttle (recorded once a minute per account and client).
    LoginThrottled,
    /// A refresh token rotated.
    Refresh,
    /// A rotated refresh token presented again: its whole family was revoked.
    RefreshReuse,
    /// A logout.
    Logout,
    /// A user added.
    UserAdded,
    /// A user removed.
    UserRemoved,
    /// A user disabled.
    UserDisabled,
    /// A user enabled.
    UserEnabled,
    /// A user's roles changed.
    UserRolesChanged,
    /// A user's password changed.
    PasswordChanged,
    /// A role added.
    RoleAdded,
    /// A role removed.
    RoleRemoved,
    /// A job started through the gateway.
    JobStarted,
    /// A run cancelled through the gateway.
    RunCancelled,
}

impl AuditAction {
    /// Every action.
    pub const ALL: [Self; 16] = [
        Self::LoginSucceeded,
        Self::LoginFailed,
        Self::LoginThrottled,
        Self::Refresh,
        Self::RefreshReuse,
        Self::Logout,
        Self::UserAdded,
        Self::UserRemoved,
        Self::UserDisabled,
        Self::UserEnabled,
        Self::UserRolesChanged,
        Self::PasswordChanged,
        Self::RoleAdded,
        Self::RoleRemoved,
        Self::JobStarted,
        Self::RunCancelled,
    ];

    /// The stable name (the API's `action`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::LoginSucceeded => "login_succeeded",
            Self::LoginFailed => "login_failed",
            Self::LoginThrottled => "login_throttled",
            Self::Refresh => "refresh",
            Self::RefreshReuse => "refresh_reuse",
            Self::Logout => "logout",
            Self::UserAdded => "user_added",
            Self::UserRemoved => "user_removed",
            Self::UserDisabled => "user_disabled",
            Self::UserEnabled => "user_enabled",
            Self::UserRolesChanged => "user_roles_changed",
            Self::PasswordChanged => "password_changed",
            Self::RoleAdded => "role_added",
            Self::RoleRemoved => "role_removed",
            Self::JobStarted => "job_started",
            Self::RunCancelled => "run_cancelled",
        }
    }

    /// The action named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// An event to record.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// What happened.
    pub action: AuditAction,
    /// Who did it, where from.
    pub origin: Origin,
    /// Whom or what it was done to (a user id, a role, a job).
    pub target: Option<String>,
    /// The particulars (an object).
    pub detail: Value,
}

impl AuditEvent {
    /// `action` by `origin` on `target`, with `detail`.
    pub fn new(action: AuditAction, origin: &Origin, target: Option<&str>, detail: Value) -> Self {
        Self {
            action,
            origin: origin.clone(),
            target: target.map(str::to_owned),
            detail,
        }
    }
}

/// A recorded event, as the API answers it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// Increasing id (the paging cursor).
    pub id: i64,
    /// When, RFC 3339.
    #[schema(format = DateTime)]
    pub at: String,
    /// What.
    pub action: String,
    /// Who.
    pub actor: Option<String>,
    /// Whom or what.
    pub target: Option<String>,
    /// The particulars.
    pub detail: Value,
    /// The request's correlation id.
    pub request_id: Option<String>,
    /// The client's address.
    pub client_addr: Option<String>,
}

/// The most events one page holds.
pub const MAX_PAGE: u32 = 200;
/// Events per page unless asked otherwise.
pub const DEFAULT_PAGE: u32 = 50;

/// Which events to read: every filter given must match; newest first, `limit` of them,
/// older than the event `before`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this action.
    pub action: Option<AuditAction>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this target.
    pub target: Option<String>,
    /// At or after (ms since the epoch).
    pub since: Option<i64>,
    /// Before (ms since the epoch).
    pub until: Option<i64>,
    /// Page size, 1..=[`MAX_PAGE`].
    pub limit: u32,
    /// Older than this id.
    pub before: Option<i64>,
}

/// One page of events and the cursor of the next (older) one.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub events: Vec<AuditRecord>,
    /// Pass as `before` for the next page; none when this is the last.
    pub next_before: Option<i64>,
}

/// A bound value of a filter.
enum Arg {
    Text(String),
    Int(i64),
}

/// Append `event` inside `tx`, at `now`.
pub(crate) async fn append(
    tx: &mut Transaction<'static, Any>,
    event: &AuditEvent,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO gateway_audit_events \
         (at, action, actor, target, detail, request_id, client_addr) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(now)
    .bind(event.action.as_str())
    .bind(event.origin.actor.clone())
    .bind(event.target.clone())
    .bind(event.detail.to_string())
    .bind(event.origin.request_id.clone())
    .bind(event.origin.client_addr.clone())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl AccountStore {
    /// Record `event` on its own.
    pub async fn record(&self, event: &AuditEvent) -> Result<(), AccountError> {
        let mut tx = self.db.begin().await?;
        append(&mut tx, event, self.now()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Record `event`, logging (not returning) a failure: for events whose request must
    /// not fail because the trail could not be written (a login, a job start).
    pub async fn record_or_log(&self, event: &AuditEvent) {
        if let Err(error) = self.record(event).await {
            tracing::error!(%error, action = event.action.as_str(), "writing an audit event failed");
        }
    }

    /// A page of events.
    pub async fn audit_events(&self, query: &AuditQuery) -> Result<AuditPage, AccountError> {
        let mut sql = String::from(
            "SELECT id, at, action, actor, target, detail, request_id, client_addr \
             FROM gateway_audit_events WHERE 1 = 1",
        );
        let mut conditions: Vec<(&str, Arg)> = Vec::new();
        if let Some(action) = query.action {
            conditions.push(("action =", Arg::Text(action.as_str().to_owned())));
        }
        if let Some(actor) = &query.actor {
            conditions.push(("actor =", Arg::Text(actor.clone())));
        }
        if let Some(target) = &query.target {
            conditions.push(("target =", Arg::Text(target.clone())));
        }
        if let Some(since) = query.since {
            conditions.push(("at >=", Arg::Int(since)));
        }
        if let Some(until) = query.until {
            conditions.push(("at <", Arg::Int(until)));
        }
        if let Some(before) = query.before {
            conditions.push(("id <", Arg::Int(before)));
        }
        for (i, (condition, _)) in conditions.iter().enumerate() {
            sql.push_str(&format!(" AND {condition} ${}", i + 1));
        }
        let limit = query.limit.clamp(1, MAX_PAGE);
        sql.push_str(&format!(
            " ORDER BY id DESC LIMIT ${}",
            conditions.len() + 1
        ));
        let mut select = sqlx::query(&sql);
        for (_, arg) in conditions {
            select = match arg {
                Arg::Text(text) => select.bind(text),
                Arg::Int(number) => select.bind(number),
            };
        }
        // One more than asked: whether there is a next page.
        let rows = select
            .bind(i64::from(limit) + 1)
            .fetch_all(self.db.pool())
            .await?;
        let mut events = rows
            .iter()
            .map(|row| {
                let detail: String = row.try_get("detail")?;
                Ok(AuditRecord {
                    id: row.try_get("id")?,
                    at: super::rfc3339(row.try_get("at")?),
                    action: row.try_get("action")?,
                    actor: row.try_get("actor")?,
                    target: row.try_get("target")?,
                    detail: serde_json::from_str(&detail).unwrap_or(Value::Null),
                    request_id: row.try_get("request_id")?,
                    client_addr: row.try_get("client_addr")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let next_before = if events.len() > limit as usize {
            events.truncate(limit as usize);
            events.last().map(|e| e.id)
        } else {
            None
        };
        Ok(AuditPage {
            events,
            next_before,
        })
    }

    /// Delete up to `batch` events older than `before` (ms since the epoch); returns how
    /// many went. Small batches keep each transaction (and SQLite's write lock) short.
    pub async fn prune_audit(&self, before: i64, batch: u32) -> Result<u64, AccountError> {
        let mut tx = self.db.begin().await?;
        let deleted = sqlx::query(
            "DELETE FROM gateway_audit_events WHERE id IN \
             (SELECT id FROM gateway_audit_events WHERE at < $1 ORDER BY id LIMIT $2)",
        )
        .bind(before)
        .bind(i64::from(batch.max(1)))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::test_support::store;
    use super::*;

    #[tokio::test]
    async fn events_page_newest_first_with_filters() {
        let store = store().await;
        for i in 0..5 {
            let action = if i % 2 == 0 {
                AuditAction::Logout
            } else {
                AuditAction::Refresh
            };
            let origin = Origin::actor(format!("u{i}"));
            store
                .record(&AuditEvent::new(
                    action,
                    &origin,
                    Some("t"),
                    json!({"i": i}),
                ))
                .await
                .unwrap();
        }
        let page = store
            .audit_events(&AuditQuery {
                limit: 2,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        let ids: Vec<_> = page.events.iter().map(|e| e.detail["i"].clone()).collect();
        assert_eq!(ids, [json!(4), json!(3)]);
        let next = store
            .audit_events(&AuditQuery {
                limit: 2,
                before: page.next_before,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(next.events[0].detail["i"], 2);
        let logouts = store
            .audit_events(&AuditQuery {
                action: Some(AuditAction::Logout),
                actor: Some("u2".into()),
                limit: 50,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(logouts.events.len(), 1);
        assert_eq!(logouts.next_before, None);
        assert_eq!(logouts.events[0].action, "logout");
    }

    #[tokio::test]
    async fn the_trail_is_append_only_and_pruned_in_batches() {
        let clock = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(1_000));
        let now = std::sync::Arc::clone(&clock);
        let store = store()
            .await
            .with_clock(move || now.load(std::sync::atomic::Ordering::SeqCst));
        for _ in 0..5 {
            store
                .record(&AuditEvent::new(
                    AuditAction::Logout,
                    &Origin::default(),
                    None,
                    json!({}),
                ))
                .await
                .unwrap();
        }
        clock.store(9_000, std::sync::atomic::Ordering::SeqCst);
        store
            .record(&AuditEvent::new(
                AuditAction::Logout,
                &Origin::default(),
                None,
                json!({}),
            ))
            .await
            .unwrap();
        let update = sqlx::query("UPDATE gateway_audit_events SET actor = 'forged'")
            .execute(store.db.pool())
            .await;
        assert!(update.is_err(), "an audit row was changed");
        assert_eq!(store.prune_audit(5_000, 2).await.unwrap(), 2);
        assert_eq!(store.prune_audit(5_000, 2).await.unwrap(), 2);
        assert_eq!(store.prune_audit(5_000, 2).await.unwrap(), 1);
        assert_eq!(store.prune_audit(5_000, 2).await.unwrap(), 0);
        let left = store
            .audit_events(&AuditQuery {
                limit: 50,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(left.events.len(), 1);
    }
}
