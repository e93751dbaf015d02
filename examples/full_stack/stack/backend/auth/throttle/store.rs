//! Where throttle counters live: the [`ThrottleStore`] calls, and the bounded
//! in-process [`MemoryThrottleStore`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use super::keys::ThrottleKey;

/// A key's state as a store reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyState {
    /// Failures counted in the key's current window.
    pub failures: u32,
    /// How much longer the key is refused, if it is.
    pub locked_for: Option<Duration>,
}

/// Where the counters live: in this process ([`MemoryThrottleStore`]) or shared by
/// several gateways. Times are durations, never instants, so a shared store can keep
/// them as expiries (`PEXPIRE`/`PTTL`) on its own clock.
pub trait ThrottleStore: Send + Sync + 'static {
    /// Count one failure under `key` and return the count in its window. The window
    /// opens at the first failure and lasts `window`; a failure after it opens a new one.
    fn add_failure(&self, key: ThrottleKey, window: Duration)
    -> BoxFuture<'_, anyhow::Result<u32>>;

    /// Refuse `key` for `duration` from now (a longer lock already there is kept).
    fn lock(&self, key: ThrottleKey, duration: Duration) -> BoxFuture<'_, anyhow::Result<()>>;

    /// The state of each of `keys`, in order.
    fn state<'a>(&'a self, keys: &'a [ThrottleKey])
    -> BoxFuture<'a, anyhow::Result<Vec<KeyState>>>;

    /// Forget `key`'s failures and lock.
    fn clear(&self, key: ThrottleKey) -> BoxFuture<'_, anyhow::Result<()>>;
}

/// The in-process [`ThrottleStore`]: at most `capacity` fixed-size entries. When full,
/// expired entries go first, then the tenth closest to expiry, so a flood of fresh
/// keys costs the oldest counters, never unbounded memory.
#[derive(Debug)]
pub struct MemoryThrottleStore {
    entries: Mutex<HashMap<ThrottleKey, Entry>>,
    capacity: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    window_ends: Instant,
    locked_until: Option<Instant>,
}

impl Entry {
    fn expires(&self) -> Instant {
        self.locked_until
            .map_or(self.window_ends, |locked| locked.max(self.window_ends))
    }
}

/// Entries kept by default: about 100 bytes each, so about 10 MiB at most.
pub const DEFAULT_CAPACITY: usize = 100_000;

impl Default for MemoryThrottleStore {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl MemoryThrottleStore {
    /// A store of at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The entries held now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock_entries().len()
    }

    fn lock_entries(&self) -> std::sync::MutexGuard<'_, HashMap<ThrottleKey, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry of `key`, made room for and created when missing.
    fn entry<'m>(
        &self,
        map: &'m mut HashMap<ThrottleKey, Entry>,
        key: ThrottleKey,
        now: Instant,
    ) -> &'m mut Entry {
        if map.len() >= self.capacity && !map.contains_key(&key) {
            map.retain(|_, e| e.expires() > now);
            if map.len() >= self.capacity {
                // Evict the tenth closest to expiry, so the next inserts are O(1) again.
                let mut by_expiry: Vec<(Instant, ThrottleKey)> =
                    map.iter().map(|(k, e)| (e.expires(), *k)).collect();
                let cut = (self.capacity / 10).clamp(1, by_expiry.len());
                by_expiry.select_nth_unstable_by_key(cut - 1, |(expires, _)| *expires);
                for (_, key) in &by_expiry[..cut] {
                    map.remove(key);
                }
            }
        }
        map.entry(key).or_insert(Entry {
            failures: 0,
            window_ends: now,
            locked_until: None,
        })
    }
}

impl ThrottleStore for MemoryThrottleStore {
    fn add_failure(
        &self,
        key: ThrottleKey,
        window: Duration,
    ) -> BoxFuture<'_, anyhow::Result<u32>> {
        let now = Instant::now();
        let mut map = self.lock_entries();
        let entry = self.entry(&mut map, key, now);
        if entry.window_ends <= now {
            entry.failures = 0;
            entry.window_ends = now + window;
        }
        entry.failures = entry.failures.saturating_add(1);
        let failures = entry.failures;
        Box::pin(std::future::ready(Ok(failures)))
    }

    fn lock(&self, key: ThrottleKey, duration: Duration) -> BoxFuture<'_, anyhow::Result<()>> {
        let now = Instant::now();
        let mut map = self.lock_entries();
        let entry = self.entry(&mut map, key, now);
        let until = now + duration;
        entry.locked_until = Some(entry.locked_until.map_or(until, |l| l.max(until)));
        Box::pin(std::future::ready(Ok(())))
    }

    fn state<'a>(
        &'a self,
        keys: &'a [ThrottleKey],
    ) -> BoxFuture<'a, anyhow::Result<Vec<KeyState>>> {
        let now = Instant::now();
        let map = self.lock_entries();
        let states = keys
            .iter()
            .map(|key| match map.get(key) {
                Some(entry) => KeyState {
                    failures: if entry.window_ends > now {
                        entry.failures
                    } else {
                        0
                    },
                    locked_for: entry
                        .locked_until
                        .filter(|until| *until > now)
                        .map(|until| until - now),
                },
                None => KeyState::default(),
            })
            .collect();
        Box::pin(std::future::ready(Ok(states)))
    }

    fn clear(&self, key: ThrottleKey) -> BoxFuture<'_, anyhow::Result<()>> {
        self.lock_entries().remove(&key);
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::super::keys::ThrottleKeys;
    use super::*;

    const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    const USER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

    #[tokio::test(start_paused = true)]
    async fn unique_long_emails_cost_one_fixed_entry_each_and_the_store_is_capped() {
        let store = MemoryThrottleStore::new(50);
        let keys = ThrottleKeys::new(b"secret");
        let big = "x".repeat(1 << 20);
        for i in 0..100 {
            let attempt = keys.for_attempt(&format!("{i}{big}"), STRANGER);
            store
                .add_failure(attempt.account, Duration::from_secs(60))
                .await
                .unwrap();
            assert!(store.len() <= 50, "{} entries", store.len());
        }
        // The newest entries survive the evictions.
        let last = keys.for_attempt(&format!("99{big}"), STRANGER);
        let state = store.state(&[last.account]).await.unwrap();
        assert_eq!(state[0].failures, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_store_drops_expired_entries_first() {
        let store = MemoryThrottleStore::new(10);
        let keys = ThrottleKeys::new(b"secret");
        let key = |i: u32| keys.for_attempt(&i.to_string(), USER).account;
        // One long-lived entry, nine that expire.
        store
            .add_failure(key(0), Duration::from_secs(600))
            .await
            .unwrap();
        for i in 1..10 {
            store
                .add_failure(key(i), Duration::from_secs(1))
                .await
                .unwrap();
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        store
            .add_failure(key(10), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(store.len(), 2);
        assert_eq!(store.state(&[key(0)]).await.unwrap()[0].failures, 1);
    }
}
