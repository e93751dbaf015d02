//! The state several gateways share through Redis (`PULSE_REDIS_URL`): login throttle
//! counters, the announcement of revocations, and (in `mod.rs`) the response cache.
//!
//! Redis is touched by logins (the throttle), logouts and other revocations (one
//! `PUBLISH`), revocation refreshes (one subscription per gateway) and cache misses —
//! never once per proxied request: the revocation list is checked in memory.
//!
//! With Redis down the gateway keeps serving, and each check degrades its own way:
//!
//! - **Login throttle: falls back to this gateway's memory.** Counting goes on, per
//!   gateway instead of per deployment (N gateways allow N× the guesses while Redis is
//!   down, never unlimited ones), and sign-in keeps working.
//! - **Revocations: never fail open.** The revocation rows live in the accounts database
//!   every gateway reads; Redis only makes other gateways learn of a change at once.
//!   Without it the list still follows the database's change counter (every second), and
//!   each failure is logged and counted (`pulse_shared_state_errors_total{check="revocation"}`).
//! - **Response cache: a miss.** The request goes to the ETL (counted as a store error).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::watch;

use super::super::accounts::AccountStore;
use super::super::accounts::revocation::RevocationList;
use super::auth::throttle::keys::ThrottleKey;
use super::auth::throttle::store::{KeyState, MemoryThrottleStore, ThrottleStore};

/// The channel revocation changes are announced on.
pub const REVOCATION_CHANNEL: &str = "pulse:revocations";
/// How long one Redis command may take before the check degrades.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// Count a failure of the shared store for `check` (and log it).
fn shared_state_error(check: &'static str, error: &dyn std::fmt::Display) {
    metrics::counter!("pulse_shared_state_errors_total", "check" => check).increment(1);
    tracing::warn!(check, %error, "shared state (Redis) failed");
}

/// A connection manager to `url` (it reconnects on its own), with short timeouts.
pub async fn connect(url: &str) -> anyhow::Result<(redis::Client, ConnectionManager)> {
    let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("PULSE_REDIS_URL: {e}"))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(1))
        .set_response_timeout(REDIS_TIMEOUT)
        .set_number_of_retries(1);
    let manager = tokio::time::timeout(
        Duration::from_secs(3),
        client.get_connection_manager_with_config(config),
    )
    .await
    .map_err(|_| anyhow::anyhow!("Redis at PULSE_REDIS_URL did not answer"))?
    .map_err(|e| anyhow::anyhow!("Redis at PULSE_REDIS_URL: {e}"))?;
    Ok((client, manager))
}

/// Login throttle counters in Redis, shared by every gateway; this gateway's memory
/// when Redis fails (see the module docs).
pub struct RedisThrottleStore {
    conn: ConnectionManager,
    prefix: String,
    fallback: MemoryThrottleStore,
}

impl std::fmt::Debug for RedisThrottleStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisThrottleStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// `INCR` the failures; the first one of a window sets its expiry.
const ADD_FAILURE: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n";

/// Lock for `ARGV[1]` ms unless a longer lock is there.
const LOCK: &str = r"
local left = redis.call('PTTL', KEYS[1])
if left < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], '1', 'PX', ARGV[1]) end
return 1";

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl RedisThrottleStore {
    /// Counters under `prefix` (`pulse:throttle:`) on `conn`.
    pub fn new(conn: ConnectionManager, prefix: impl Into<String>) -> Self {
        Self {
            conn,
            prefix: prefix.into(),
            fallback: MemoryThrottleStore::default(),
        }
    }

    fn failures_key(&self, key: &ThrottleKey) -> String {
        format!("{}{}:f", self.prefix, key.to_hex())
    }

    fn lock_key(&self, key: &ThrottleKey) -> String {
        format!("{}{}:l", self.prefix, key.to_hex())
    }

    async fn try_add_failure(&self, key: &ThrottleKey, window: Duration) -> anyhow::Result<u32> {
        let mut conn = self.conn.clone();
        let n: u32 = redis::cmd("EVAL")
            .arg(ADD_FAILURE)
            .arg(1)
            .arg(self.failures_key(key))
            .arg(millis(window))
            .query_async(&mut conn)
            .await?;
        Ok(n)
    }

    async fn try_lock(&self, key: &ThrottleKey, duration: Duration) -> anyhow::Result<()> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("EVAL")
            .arg(LOCK)
            .arg(1)
            .arg(self.lock_key(key))
            .arg(millis(duration))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn try_state(&self, keys: &[ThrottleKey]) -> anyhow::Result<Vec<KeyState>> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.get(self.failures_key(key)).pttl(self.lock_key(key));
        }
        let answers: Vec<(Option<u32>, i64)> = pipe.query_async(&mut conn).await?;
        Ok(answers
            .into_iter()
            .map(|(failures, left)| KeyState {
                failures: failures.unwrap_or(0),
                locked_for: u64::try_from(left)
                    .ok()
                    .filter(|ms| *ms > 0)
                    .map(Duration::from_millis),
            })
            .collect())
    }

    async fn try_clear(&self, key: &ThrottleKey) -> anyhow::Result<()> {
        let mut conn = self.conn.clone();
        let _: i64 = conn
            .del(&[self.failures_key(key), self.lock_key(key)])
            .await?;
        Ok(())
    }
}

impl ThrottleStore for RedisThrottleStore {
    fn add_failure(
        &self,
        key: ThrottleKey,
        window: Duration,
    ) -> BoxFuture<'_, anyhow::Result<u32>> {
        Box::pin(async move {
            match self.try_add_failure(&key, window).await {
                Ok(n) => Ok(n),
                Err(error) => {
                    shared_state_error("login_throttle", &error);
                    self.fallback.add_failure(key, window).await
                }
            }
        })
    }

    fn lock(&self, key: ThrottleKey, duration: Duration) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            // Also locally: the lock holds on this gateway if Redis goes away.
            self.fallback.lock(key, duration).await?;
            if let Err(error) = self.try_lock(&key, duration).await {
                shared_state_error("login_throttle", &error);
            }
            Ok(())
        })
    }

    fn state<'a>(
        &'a self,
        keys: &'a [ThrottleKey],
    ) -> BoxFuture<'a, anyhow::Result<Vec<KeyState>>> {
        Box::pin(async move {
            let local = self.fallback.state(keys).await?;
            match self.try_state(keys).await {
                // The stricter of the two: what this gateway counted while Redis was
                // away still counts.
                Ok(shared) => Ok(shared
                    .into_iter()
                    .zip(local)
                    .map(|(s, l)| KeyState {
                        failures: s.failures.max(l.failures),
                        locked_for: s.locked_for.max(l.locked_for),
                    })
                    .collect()),
                Err(error) => {
                    shared_state_error("login_throttle", &error);
                    Ok(local)
                }
            }
        })
    }

    fn clear(&self, key: ThrottleKey) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            self.fallback.clear(key).await?;
            if let Err(error) = self.try_clear(&key).await {
                shared_state_error("login_throttle", &error);
            }
            Ok(())
        })
    }
}

/// Announce this gateway's revocations on [`REVOCATION_CHANNEL`] and refresh the list
/// from the accounts database as soon as another gateway announces one. Failures are
/// logged and counted, and the connection is tried again every second; meanwhile the
/// list follows the database's change counter (see the module docs).
pub fn spawn_revocation_sync(
    client: redis::Client,
    conn: ConnectionManager,
    list: RevocationList,
    store: AccountStore,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let me: Arc<str> = Arc::from(super::super::config::random_hex(8));
    let mut local = list.local_changes();
    tokio::spawn(async move {
        loop {
            let session = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(REVOCATION_CHANNEL).await?;
                tracing::info!("following revocations announced through Redis");
                // Changes made while the subscription was down: read them now.
                if let Err(error) = list.refresh(&store).await {
                    tracing::warn!(%error, "cannot read revocations");
                }
                let mut messages = pubsub.on_message();
                loop {
                    tokio::select! {
                        message = messages.next() => {
                            let Some(message) = message else {
                                anyhow::bail!("the Redis subscription ended");
                            };
                            let from: String = message.get_payload().unwrap_or_default();
                            if from != *me {
                                metrics::counter!("pulse_revocation_announcements_total", "direction" => "received").increment(1);
                                if let Err(error) = list.refresh(&store).await {
                                    metrics::counter!("pulse_shared_state_errors_total", "check" => "revocation").increment(1);
                                    tracing::error!(%error, "announced revocation not read from the database; the poll will retry");
                                }
                            }
                        }
                        changed = local.changed() => {
                            if changed.is_err() {
                                return Ok(());
                            }
                            let mut conn = conn.clone();
                            let sent: redis::RedisResult<i64> = conn.publish(REVOCATION_CHANNEL, &*me).await;
                            match sent {
                                Ok(_) => metrics::counter!("pulse_revocation_announcements_total", "direction" => "sent").increment(1),
                                Err(error) => {
                                    metrics::counter!("pulse_shared_state_errors_total", "check" => "revocation").increment(1);
                                    tracing::error!(%error, "revocation not announced through Redis; other gateways learn it from the database poll");
                                }
                            }
                        }
                    }
                }
            };
            let result: anyhow::Result<()> = tokio::select! {
                result = session => result,
                _ = stop.wait_for(|s| *s) => return,
            };
            match result {
                Ok(()) => return,
                Err(error) => {
                    metrics::counter!("pulse_shared_state_errors_total", "check" => "revocation")
                        .increment(1);
                    tracing::error!(%error, "revocation announcements through Redis unavailable; following the database poll only");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    })
}
