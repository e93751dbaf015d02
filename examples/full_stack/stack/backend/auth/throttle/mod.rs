//! Login throttling: failures are counted per (account, client address), per client
//! address and per account, under fixed-size keyed hashes, in a [`ThrottleStore`].
//!
//! The policy ([`ThrottlePolicy`]) lets nobody lock a real user out: only the
//! (account, client) pair and the client address are ever refused (429); the account as a
//! whole is only slowed down (a short delay before each check), so a stranger guessing
//! the admin's password from elsewhere never stops the admin from signing in.
//!
//! The store holds counters and locks only; the policy lives here. The in-process
//! [`MemoryThrottleStore`] is bounded in entries (and each entry is fixed-size), so
//! no client can grow it by sending long or many e-mails; a shared store (Redis, for
//! several gateways) implements the same four calls.

pub mod keys;
pub mod store;

use std::net::IpAddr;
use std::time::Duration;

use self::keys::AttemptKeys;
pub use self::keys::ThrottleKeys;
pub use self::store::MemoryThrottleStore;
use self::store::ThrottleStore;

/// The numbers of the login throttle (see the README for the policy in words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// The window failures are counted in, from the first failure of a key.
    pub window: Duration,
    /// Failures of one account from one client address before that pair is refused.
    pub pair_limit: u32,
    /// Failures from one client address (any accounts) before the address is refused.
    pub client_limit: u32,
    /// The first refusal; each further failure past a limit doubles it.
    pub first_lockout: Duration,
    /// The longest refusal.
    pub max_lockout: Duration,
    /// Failures of one account (from anywhere) after which each attempt on it waits.
    pub account_slow_after: u32,
    /// That wait. The account is never refused: a stranger may slow a user, not lock them out.
    pub account_delay: Duration,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(15 * 60),
            pair_limit: 5,
            client_limit: 30,
            first_lockout: Duration::from_secs(30),
            max_lockout: Duration::from_secs(15 * 60),
            account_slow_after: 10,
            account_delay: Duration::from_secs(1),
        }
    }
}

impl ThrottlePolicy {
    /// The refusal after `failures` failures against `limit`, if any: the first lockout
    /// at the limit, doubled with each failure past it, capped.
    fn lockout(&self, failures: u32, limit: u32) -> Option<Duration> {
        let past = failures.checked_sub(limit)?;
        let doubled = self
            .first_lockout
            .checked_mul(1u32.checked_shl(past).unwrap_or(u32::MAX))
            .unwrap_or(self.max_lockout);
        Some(doubled.min(self.max_lockout))
    }
}

/// What the throttle says about an attempt before the password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Check the password now.
    Proceed,
    /// Check it after this wait (the account has many recent failures).
    Delay(Duration),
    /// Refuse with 429 and this `Retry-After`.
    Refuse(Duration),
}

/// The login throttle: a [`ThrottlePolicy`] over a [`ThrottleStore`].
pub struct LoginThrottle {
    policy: ThrottlePolicy,
    keys: ThrottleKeys,
    store: Box<dyn ThrottleStore>,
}

impl std::fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginThrottle")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl LoginThrottle {
    /// `policy` over `store`, with keys derived by `keys`.
    pub fn new(policy: ThrottlePolicy, keys: ThrottleKeys, store: impl ThrottleStore) -> Self {
        Self {
            policy,
            keys,
            store: Box::new(store),
        }
    }

    /// The keys of an attempt on `account` from `client`.
    pub fn keys(&self, account: &str, client: IpAddr) -> AttemptKeys {
        self.keys.for_attempt(account, client)
    }

    /// Whether to check an attempt now, later, or not at all. A store that fails lets
    /// the attempt through (logged): the hashing pool still bounds the guessing rate,
    /// and sign-in keeps working while a shared store is down.
    pub async fn admit(&self, keys: &AttemptKeys) -> Admission {
        let all = [keys.pair, keys.client, keys.account];
        let states = match self.store.state(&all).await {
            Ok(states) => states,
            Err(error) => {
                tracing::warn!(%error, "login throttle store failed; attempt not throttled");
                return Admission::Proceed;
            }
        };
        let get = |i: usize| states.get(i).copied().unwrap_or_default();
        let (pair, client, account) = (get(0), get(1), get(2));
        let refused = [pair.locked_for, client.locked_for]
            .into_iter()
            .flatten()
            .max();
        if let Some(wait) = refused {
            return Admission::Refuse(wait);
        }
        if account.failures >= self.policy.account_slow_after {
            return Admission::Delay(self.policy.account_delay);
        }
        Admission::Proceed
    }

    /// Count a failed attempt under its three keys, and refuse the pair or the client
    /// address once past their limits.
    pub async fn record_failure(&self, keys: &AttemptKeys) {
        if let Err(error) = self.try_record_failure(keys).await {
            tracing::warn!(%error, "login throttle store failed; failure not counted");
        }
    }

    async fn try_record_failure(&self, keys: &AttemptKeys) -> anyhow::Result<()> {
        let window = self.policy.window;
        let pair = self.store.add_failure(keys.pair, window).await?;
        let client = self.store.add_failure(keys.client, window).await?;
        self.store.add_failure(keys.account, window).await?;
        if let Some(lockout) = self.policy.lockout(pair, self.policy.pair_limit) {
            self.store.lock(keys.pair, lockout).await?;
        }
        if let Some(lockout) = self.policy.lockout(client, self.policy.client_limit) {
            self.store.lock(keys.client, lockout).await?;
        }
        Ok(())
    }

    /// A successful sign-in forgets the pair's failures (the address's and the
    /// account's stay: a stranger's own account must not reset their budget).
    pub async fn record_success(&self, keys: &AttemptKeys) {
        if let Err(error) = self.store.clear(keys.pair).await {
            tracing::warn!(%error, "login throttle store failed; success not recorded");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    const USER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

    fn throttle() -> LoginThrottle {
        LoginThrottle::new(
            ThrottlePolicy::default(),
            ThrottleKeys::new(b"test secret"),
            MemoryThrottleStore::default(),
        )
    }

    async fn fail(throttle: &LoginThrottle, account: &str, client: IpAddr, times: u32) {
        let keys = throttle.keys(account, client);
        for _ in 0..times {
            throttle.record_failure(&keys).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_pair_is_refused_after_five_failures_with_a_doubling_lockout() {
        let t = throttle();
        let keys = t.keys("admin@pulse.local", STRANGER);
        fail(&t, "admin@pulse.local", STRANGER, 4).await;
        assert_eq!(t.admit(&keys).await, Admission::Proceed);
        fail(&t, "admin@pulse.local", STRANGER, 1).await;
        assert_eq!(
            t.admit(&keys).await,
            Admission::Refuse(Duration::from_secs(30))
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            t.admit(&keys).await,
            Admission::Refuse(Duration::from_secs(20))
        );
        // After the lock, one more failure (still in the window) locks for 60 s.
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(t.admit(&keys).await, Admission::Proceed);
        fail(&t, "admin@pulse.local", STRANGER, 1).await;
        assert_eq!(
            t.admit(&keys).await,
            Admission::Refuse(Duration::from_secs(60))
        );
        // The window (15 min from the first failure) ends; the lock too.
        tokio::time::advance(Duration::from_secs(15 * 60)).await;
        assert_eq!(t.admit(&keys).await, Admission::Proceed);
        fail(&t, "admin@pulse.local", STRANGER, 1).await;
        assert_eq!(t.admit(&keys).await, Admission::Proceed);
    }

    #[tokio::test(start_paused = true)]
    async fn lockouts_are_capped() {
        let policy = ThrottlePolicy::default();
        assert_eq!(policy.lockout(4, 5), None);
        assert_eq!(policy.lockout(5, 5), Some(Duration::from_secs(30)));
        assert_eq!(policy.lockout(6, 5), Some(Duration::from_secs(60)));
        assert_eq!(policy.lockout(10, 5), Some(Duration::from_secs(15 * 60)));
        assert_eq!(
            policy.lockout(u32::MAX, 5),
            Some(Duration::from_secs(15 * 60))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stranger_never_locks_the_user_out_only_slows_them() {
        let t = throttle();
        // The stranger fails far past every limit, on the user's account.
        fail(&t, "admin@pulse.local", STRANGER, 100).await;
        let stranger = t.keys("admin@pulse.local", STRANGER);
        assert!(matches!(t.admit(&stranger).await, Admission::Refuse(_)));
        // The user, from their own address, is slowed (the account is under attack),
        // never refused.
        let user = t.keys("admin@pulse.local", USER);
        assert_eq!(
            t.admit(&user).await,
            Admission::Delay(Duration::from_secs(1))
        );
        // Another account from the user's address is not even slowed.
        let other = t.keys("viewer@pulse.local", USER);
        assert_eq!(t.admit(&other).await, Admission::Proceed);
    }

    #[tokio::test(start_paused = true)]
    async fn the_client_address_is_refused_after_many_accounts_fail() {
        let t = throttle();
        for i in 0..29 {
            fail(&t, &format!("user{i}@pulse.local"), STRANGER, 1).await;
        }
        let fresh = t.keys("fresh@pulse.local", STRANGER);
        assert_eq!(t.admit(&fresh).await, Admission::Proceed);
        fail(&t, "user29@pulse.local", STRANGER, 1).await;
        assert_eq!(
            t.admit(&fresh).await,
            Admission::Refuse(Duration::from_secs(30))
        );
        // Other addresses are unaffected.
        let user = t.keys("fresh@pulse.local", USER);
        assert_eq!(t.admit(&user).await, Admission::Proceed);
    }

    #[tokio::test(start_paused = true)]
    async fn success_forgets_the_pair_but_not_the_address() {
        let t = throttle();
        fail(&t, "viewer@pulse.local", USER, 4).await;
        let keys = t.keys("viewer@pulse.local", USER);
        t.record_success(&keys).await;
        fail(&t, "viewer@pulse.local", USER, 4).await;
        assert_eq!(t.admit(&keys).await, Admission::Proceed);
        let state = t.store.state(&[keys.client]).await.unwrap();
        assert_eq!(state[0].failures, 8);
    }
}
