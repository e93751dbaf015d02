//! The gateway's accounts: users, roles and their permissions, refresh-token sessions,
//! revocations and the audit trail, in the gateway's own tables (`gateway_*`) of the
//! main database — SQLite in the data folder by default, PostgreSQL when
//! `PULSE_DATABASE_URL` is `postgres://…` — beside the job store's tables.
//!
//! - [`AccountStore`]: every read and write, each change in one transaction with its
//!   audit row and a bump of the change counter ([`users`], [`roles`], [`sessions`],
//!   [`audit`]).
//! - [`revocation::RevocationList`]: what the gateway's hot path checks — revoked token
//!   ids, revoked sessions and per-user "valid after" stamps — in memory, refreshed
//!   when the change counter moves (polled every second), so no proxied request waits
//!   for the database.
//! - [`housekeeping`]: the audit trail's retention, expired session rows.
//! - [`cli`]: `full_stack users …` and `full_stack roles …`.
//! - [`password`]: the strength rules, generated passwords, Argon2id.

pub mod audit;
pub mod cli;
pub mod db;
pub mod error;
pub mod housekeeping;
mod migrations;
pub mod password;
pub mod revocation;
pub mod roles;
pub mod seed;
pub mod sessions;
pub mod users;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{Any, Transaction};

pub use self::db::Database;
pub use self::error::AccountError;

/// The permission of the admin API and the admin page.
pub const MANAGE_USERS: &str = "users.manage";

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> i64 {
    millis_of(SystemTime::now())
}

/// Milliseconds since the Unix epoch of `time` (0 before it).
pub fn millis_of(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `ms` milliseconds since the Unix epoch as RFC 3339 (UTC).
pub fn rfc3339(ms: i64) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Who makes a change, and from where: the audit trail's actor, request id and client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The acting user's id, `cli:<os user>` for the command line, none for anonymous.
    pub actor: Option<String>,
    /// The request's correlation id.
    pub request_id: Option<String>,
    /// The client's address.
    pub client_addr: Option<String>,
}

impl Origin {
    /// A change made by `actor`.
    pub fn actor(actor: impl Into<String>) -> Self {
        Self {
            actor: Some(actor.into()),
            ..Self::default()
        }
    }

    /// The command line, run by the operating-system user of this process.
    pub fn cli() -> Self {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".to_owned());
        Self::actor(format!("cli:{user}"))
    }
}

/// How long the tokens of a session live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Access tokens (JWT); also how long a revocation must be remembered.
    pub access_ttl: Duration,
    /// Each refresh token, from its issue (each rotation starts a new one).
    pub refresh_ttl: Duration,
}

/// Default [`SessionPolicy::access_ttl`]: 15 minutes.
pub const DEFAULT_ACCESS_TTL: Duration = Duration::from_secs(15 * 60);
/// Default [`SessionPolicy::refresh_ttl`]: 7 days.
pub const DEFAULT_REFRESH_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The clock skew verifiers tolerate past a token's expiry (pulse-core's default
/// leeway): revocations are kept this much longer.
pub const REVOCATION_MARGIN: Duration = Duration::from_secs(60);

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            access_ttl: DEFAULT_ACCESS_TTL,
            refresh_ttl: DEFAULT_REFRESH_TTL,
        }
    }
}

type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The accounts tables. Cheap to clone.
#[derive(Clone)]
pub struct AccountStore {
    db: Database,
    clock: Clock,
    policy: SessionPolicy,
}

impl std::fmt::Debug for AccountStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountStore")
            .field("db", &self.db)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl AccountStore {
    /// Open the accounts tables at `url` (see [`Database::connect`]), migrating them.
    pub async fn open(url: &str, schema: Option<&str>) -> Result<Self, AccountError> {
        Ok(Self::new(Database::connect(url, schema).await?))
    }

    /// The store over an open database, with the system clock and the default policy.
    pub fn new(db: Database) -> Self {
        Self {
            db,
            clock: Arc::new(now_millis),
            policy: SessionPolicy::default(),
        }
    }

    /// Sessions with these lifetimes.
    #[must_use]
    pub fn with_policy(mut self, policy: SessionPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Read the time (milliseconds since the epoch) from `clock` (for tests).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The session policy.
    pub const fn policy(&self) -> SessionPolicy {
        self.policy
    }

    /// The database.
    pub const fn database(&self) -> &Database {
        &self.db
    }

    /// Now, in milliseconds since the epoch, by the store's clock.
    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// The change counter: any process changing users, roles or revocations bumps it.
    pub async fn change_version(&self) -> Result<i64, AccountError> {
        let version: i64 = sqlx::query_scalar("SELECT version FROM gateway_changes WHERE id = 1")
            .fetch_one(self.db.pool())
            .await?;
        Ok(version)
    }
}

/// Tell running gateways that something changed (in the same transaction as the change).
async fn bump_changes(tx: &mut Transaction<'static, Any>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE gateway_changes SET version = version + 1 WHERE id = 1")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// `ms` as a duration's whole milliseconds (saturating).
fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A fresh in-memory store.
    pub(crate) async fn store() -> AccountStore {
        AccountStore::open("sqlite::memory:", None)
            .await
            .expect("in-memory accounts store")
    }

    /// A cheap hasher for tests.
    pub(crate) fn hashing() -> password::PasswordHashing {
        password::PasswordHashing::new(1024, 1).expect("argon2 parameters")
    }
}
