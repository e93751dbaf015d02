//! The gateway's revocation list: what its JWT verifier checks on every request (see
//! pulse-core's `TokenRevocation`), in memory.
//!
//! It holds revoked token ids (logouts), revoked sessions (logouts, refresh-token reuse)
//! and per-user "valid after" stamps (password, roles, disable, removal). Entries only
//! ever get added or move later, and each is dropped once no token it could refuse can
//! still be alive (at most the access-token lifetime plus a margin), so its size is
//! bounded by the revocations of one token lifetime.
//!
//! It is filled from the database at start, and kept current by
//! [`RevocationList::watch`]: every [`POLL_INTERVAL`] it reads the one-row change counter
//! that every change bumps (from this gateway, another one, or the CLI in another
//! process) and, when it moved, merges the rows in again. The gateway's own changes are
//! also applied here at once, and announced: with `PULSE_REDIS_URL` the other gateways
//! hear of it through Redis and read the rows at once (`backend::shared`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use pulse_core::jwt::{Claims, Revoked, TokenRevocation};
use tokio::sync::watch;

use super::sessions::RevocationRows;
use super::{AccountError, AccountStore};

/// How often a gateway looks at the change counter.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Lists {
    /// Revoked `jti` → until when (ms).
    tokens: HashMap<String, i64>,
    /// Revoked `sid` → until when (ms).
    sessions: HashMap<String, i64>,
    /// `sub` → valid after (unix seconds): tokens with an older `iat` are revoked.
    stamps: HashMap<String, u64>,
    /// The change counter last merged.
    version: Option<i64>,
}

/// The in-memory revocation list. Cheap to clone; clones share the lists.
#[derive(Debug, Clone)]
pub struct RevocationList {
    lists: Arc<RwLock<Lists>>,
    /// Bumped by every change this gateway makes (announced to the others).
    local: Arc<watch::Sender<u64>>,
}

impl Default for RevocationList {
    fn default() -> Self {
        Self {
            lists: Arc::default(),
            local: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl TokenRevocation for RevocationList {
    fn check(&self, claims: &Claims) -> Result<(), Revoked> {
        let lists = self.lists.read().unwrap_or_else(|p| p.into_inner());
        if claims
            .jti
            .as_ref()
            .is_some_and(|jti| lists.tokens.contains_key(jti))
        {
            return Err(Revoked::Token);
        }
        if claims
            .sid
            .as_ref()
            .is_some_and(|sid| lists.sessions.contains_key(sid))
        {
            return Err(Revoked::Session);
        }
        if let Some(sub) = &claims.sub
            && let Some(valid_after) = lists.stamps.get(sub)
            && claims.iat.unwrap_or(0) < *valid_after
        {
            return Err(Revoked::Subject);
        }
        Ok(())
    }
}

fn seconds(ms: i64) -> u64 {
    u64::try_from(ms.div_euclid(1000)).unwrap_or(0)
}

impl RevocationList {
    /// A list with everything `store` holds now.
    pub async fn load(store: &AccountStore) -> Result<Self, AccountError> {
        let list = Self::default();
        list.refresh(store).await?;
        Ok(list)
    }

    /// Merge the database's revocations in if the change counter moved; drop expired
    /// entries. Returns whether it read them.
    pub async fn refresh(&self, store: &AccountStore) -> Result<bool, AccountError> {
        let version = store.change_version().await?;
        if self.version() == Some(version) {
            return Ok(false);
        }
        let rows = store.load_revocations(store.now()).await?;
        self.merge(rows, version, store.now());
        Ok(true)
    }

    /// Read the database again whatever the counter says (after this gateway's
    /// changes, which are then announced to the other gateways).
    pub async fn reload(&self, store: &AccountStore) -> Result<(), AccountError> {
        let version = store.change_version().await?;
        let rows = store.load_revocations(store.now()).await?;
        self.merge(rows, version, store.now());
        self.announce();
        Ok(())
    }

    /// Changes this gateway made (for announcing them to the others).
    pub fn local_changes(&self) -> watch::Receiver<u64> {
        self.local.subscribe()
    }

    fn announce(&self) {
        self.local.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn version(&self) -> Option<i64> {
        self.lists.read().unwrap_or_else(|p| p.into_inner()).version
    }

    fn merge(&self, rows: RevocationRows, version: i64, now: i64) {
        let mut lists = self.lists.write().unwrap_or_else(|p| p.into_inner());
        // Merged, never replaced: a revocation this gateway applied while the rows were
        // being read stays.
        for (jti, until) in rows.tokens {
            let entry = lists.tokens.entry(jti).or_insert(until);
            *entry = (*entry).max(until);
        }
        for (sid, until) in rows.sessions {
            let entry = lists.sessions.entry(sid).or_insert(until);
            *entry = (*entry).max(until);
        }
        for (sub, valid_after) in rows.stamps {
            let entry = lists.stamps.entry(sub).or_insert(0);
            *entry = (*entry).max(seconds(valid_after));
        }
        lists.tokens.retain(|_, until| *until > now);
        lists.sessions.retain(|_, until| *until > now);
        lists.version = Some(version.max(lists.version.unwrap_or(version)));
    }

    /// Drop stamps older than any token that can still be alive (`max_age`).
    pub fn prune_stamps(&self, now: i64, max_age: Duration) {
        let oldest = seconds(now - super::duration_millis(max_age));
        self.lists
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .stamps
            .retain(|_, valid_after| *valid_after > oldest);
    }

    /// Refuse the token `jti` until `until` (ms), at once.
    pub fn revoke_token(&self, jti: &str, until: i64) {
        let mut lists = self.lists.write().unwrap_or_else(|p| p.into_inner());
        let entry = lists.tokens.entry(jti.to_owned()).or_insert(until);
        *entry = (*entry).max(until);
        drop(lists);
        self.announce();
    }

    /// Refuse every token of the session `sid` until `until` (ms), at once.
    pub fn revoke_session(&self, sid: &str, until: i64) {
        let mut lists = self.lists.write().unwrap_or_else(|p| p.into_inner());
        let entry = lists.sessions.entry(sid.to_owned()).or_insert(until);
        *entry = (*entry).max(until);
        drop(lists);
        self.announce();
    }

    /// How many entries the lists hold (tokens, sessions, stamps).
    pub fn len(&self) -> (usize, usize, usize) {
        let lists = self.lists.read().unwrap_or_else(|p| p.into_inner());
        (lists.tokens.len(), lists.sessions.len(), lists.stamps.len())
    }

    /// Keep the list current until `stop` turns true: poll the change counter every
    /// `interval`. A database that cannot be read is logged, and the list kept as it
    /// is (revocations already known keep working).
    pub fn watch(
        &self,
        store: AccountStore,
        interval: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let list = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                match list.refresh(&store).await {
                    Ok(_) if failing => {
                        failing = false;
                        tracing::info!("revocation list current again");
                    }
                    Ok(_) => {}
                    Err(error) if !failing => {
                        failing = true;
                        tracing::error!(%error, "cannot read revocations; the list is kept as it is");
                    }
                    Err(_) => {}
                }
                list.prune_stamps(
                    store.now(),
                    store.policy().access_ttl + super::REVOCATION_MARGIN,
                );
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Origin;
    use super::super::test_support::{hashing, store};
    use super::super::users::UserKey;
    use super::*;

    fn claims(sub: &str, iat: u64, jti: &str, sid: Option<&str>) -> Claims {
        let mut claims = Claims::default();
        claims.sub = Some(sub.to_owned());
        claims.iat = Some(iat);
        claims.jti = Some(jti.to_owned());
        claims.sid = sid.map(str::to_owned);
        claims
    }

    #[tokio::test]
    async fn changes_from_another_store_are_picked_up_when_the_counter_moves() {
        let store = store().await;
        let hash = hashing().hash("correct horse").unwrap();
        let user = store
            .add_user("ada@example.org", &hash, &[], &Origin::default())
            .await
            .unwrap();
        let list = RevocationList::load(&store).await.unwrap();
        let now = seconds(store.now());
        assert_eq!(list.check(&claims(&user.id, now, "j1", None)), Ok(()));
        assert!(!list.refresh(&store).await.unwrap(), "nothing moved");
        store
            .set_disabled(UserKey::Id(&user.id), true, &Origin::cli())
            .await
            .unwrap();
        assert!(list.refresh(&store).await.unwrap());
        assert_eq!(
            list.check(&claims(&user.id, now, "j1", None)),
            Err(Revoked::Subject)
        );
        // A token issued no earlier than the stamp passes; another user is untouched.
        assert_eq!(list.check(&claims(&user.id, now + 1, "j2", None)), Ok(()));
        assert_eq!(list.check(&claims("someone", now, "j3", None)), Ok(()));
    }

    #[test]
    fn local_revocations_apply_at_once_and_survive_a_merge_of_older_rows() {
        let list = RevocationList::default();
        list.revoke_token("j1", 10_000);
        list.revoke_session("s1", 10_000);
        // Rows read before those revocations were written.
        list.merge(RevocationRows::default(), 3, 5_000);
        assert_eq!(list.check(&claims("u", 1, "j1", None)), Err(Revoked::Token));
        assert_eq!(
            list.check(&claims("u", 1, "j2", Some("s1"))),
            Err(Revoked::Session)
        );
        // Once expired, entries go.
        list.merge(RevocationRows::default(), 4, 10_000);
        assert_eq!(list.len(), (0, 0, 0));
    }
}
