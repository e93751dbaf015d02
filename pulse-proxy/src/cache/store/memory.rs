//! The in-memory store: a moka cache bounded by bytes and entries, with a per-entry
//! time-to-live.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use moka::{Expiry, future::Cache};
use tokio::time::Instant;

use super::{CacheKey, CacheStore, CachedResponse, Lookup, StoreFuture, StoredEntry};

/// Default bound on the bytes held (64 MiB).
const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default bound on the number of entries.
const DEFAULT_MAX_ENTRIES: u64 = 10_000;

#[derive(Debug)]
struct MemEntry {
    response: Arc<CachedResponse>,
    generation: u64,
    stored_at: Instant,
    ttl: Duration,
    weight: u32,
}

/// Lets moka drop entries at their own time-to-live. Freshness is still checked on
/// every read against tokio's clock, so paused-time tests see exact expiry.
struct PerEntryTtl;

impl Expiry<Arc<str>, Arc<MemEntry>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &Arc<str>,
        value: &Arc<MemEntry>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The in-memory [`CacheStore`]: a [moka](https://docs.rs/moka) cache bounded by total
/// bytes and by entry count, each entry with its own time-to-live. Cheap to clone;
/// clones share the entries.
///
/// ```
/// use pulse_proxy::cache::MemoryStore;
///
/// let store = MemoryStore::builder()
///     .with_max_bytes(8 * 1024 * 1024)
///     .with_max_entries(1_000)
///     .build();
/// assert_eq!(store.entry_count(), 0);
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    entries: Cache<Arc<str>, Arc<MemEntry>>,
    generations: Mutex<HashMap<Arc<str>, u64>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.inner.entries.entry_count())
            .field("bytes", &self.inner.entries.weighted_size())
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// A store bounded by 64 MiB and 10 000 entries.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder to set the bounds.
    pub const fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            max_bytes: DEFAULT_MAX_BYTES,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }

    /// The approximate number of entries (moka applies writes lazily; see
    /// [`MemoryStore::run_pending_tasks`]).
    pub fn entry_count(&self) -> u64 {
        self.inner.entries.entry_count()
    }

    /// The approximate weighted size in bytes.
    pub fn weighted_size(&self) -> u64 {
        self.inner.entries.weighted_size()
    }

    /// Applies pending evictions now, so that the counts are exact.
    pub async fn run_pending_tasks(&self) {
        self.inner.entries.run_pending_tasks().await;
    }

    fn generation_of(&self, scopes: &[Arc<str>]) -> u64 {
        let generations = self
            .inner
            .generations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        scopes
            .iter()
            .map(|scope| generations.get(scope).copied().unwrap_or(0))
            .fold(0u64, u64::wrapping_add)
    }
}

/// Builds a [`MemoryStore`].
#[derive(Clone, Debug)]
#[must_use]
pub struct MemoryStoreBuilder {
    max_bytes: u64,
    max_entries: u64,
}

impl MemoryStoreBuilder {
    /// The bound on total bytes (bodies, headers and keys). Default 64 MiB.
    pub const fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The bound on the number of entries. Default 10 000.
    pub const fn with_max_entries(mut self, max_entries: u64) -> Self {
        self.max_entries = max_entries;
        self
    }

    /// The store.
    pub fn build(self) -> MemoryStore {
        // One weigher enforces both bounds: every entry weighs at least
        // max_bytes / max_entries, so at most max_entries of them fit.
        let min_weight = self.max_bytes / self.max_entries.max(1);
        let min_weight = u32::try_from(min_weight.max(1)).unwrap_or(u32::MAX);
        let entries = Cache::builder()
            .max_capacity(self.max_bytes)
            .weigher(move |_key: &Arc<str>, entry: &Arc<MemEntry>| entry.weight.max(min_weight))
            .expire_after(PerEntryTtl)
            .build();
        MemoryStore {
            inner: Arc::new(Inner {
                entries,
                generations: Mutex::default(),
            }),
        }
    }
}

impl CacheStore for MemoryStore {
    fn get(&self, key: &CacheKey) -> StoreFuture<Lookup> {
        let this = self.clone();
        let key = key.clone();
        Box::pin(async move {
            let generation = this.generation_of(key.scopes());
            let entry = match this.inner.entries.get(key.as_arc()).await {
                Some(entry) => {
                    let age = entry.stored_at.elapsed();
                    if age < entry.ttl {
                        Some(StoredEntry::new(
                            entry.response.clone(),
                            entry.generation,
                            age,
                        ))
                    } else {
                        this.inner.entries.invalidate(key.as_arc()).await;
                        None
                    }
                }
                None => None,
            };
            Ok(Lookup::new(entry, generation))
        })
    }

    fn put(
        &self,
        key: &CacheKey,
        response: Arc<CachedResponse>,
        generation: u64,
        ttl: Duration,
    ) -> StoreFuture<()> {
        let this = self.clone();
        let key = key.as_arc().clone();
        Box::pin(async move {
            let weight = u32::try_from(response.size_bytes() + key.len() + 64).unwrap_or(u32::MAX);
            let entry = MemEntry {
                response,
                generation,
                stored_at: Instant::now(),
                ttl,
                weight,
            };
            this.inner.entries.insert(key, Arc::new(entry)).await;
            Ok(())
        })
    }

    fn invalidate(&self, scopes: &[Arc<str>]) -> StoreFuture<()> {
        {
            let mut generations = self
                .inner
                .generations
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for scope in scopes {
                let counter = generations.entry(scope.clone()).or_insert(0);
                *counter = counter.wrapping_add(1);
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    fn response(body: &'static str) -> Arc<CachedResponse> {
        Arc::new(CachedResponse::new(
            StatusCode::OK,
            HeaderMap::new(),
            Bytes::from_static(body.as_bytes()),
        ))
    }

    fn key(text: &str, scopes: &[&str]) -> CacheKey {
        CacheKey::new(
            text,
            scopes
                .iter()
                .map(|s| Arc::<str>::from(*s))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_on_tokio_time() {
        let store = MemoryStore::new();
        let k = key("GET /a", &[""]);
        store
            .put(&k, response("a"), 0, Duration::from_secs(10))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(9)).await;
        let hit = store.get(&k).await.unwrap().fresh().unwrap();
        assert_eq!(hit.age, Duration::from_secs(9));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(store.get(&k).await.unwrap().fresh().is_none());
    }

    #[tokio::test]
    async fn invalidating_a_scope_stales_its_entries_only() {
        let store = MemoryStore::new();
        let jobs = key("GET /jobs/1", &["", "/jobs"]);
        let runs = key("GET /runs/1", &["", "/runs"]);
        for k in [&jobs, &runs] {
            let generation = store.get(k).await.unwrap().generation;
            store
                .put(k, response("x"), generation, Duration::from_secs(60))
                .await
                .unwrap();
        }
        store.invalidate(&[Arc::from("/jobs")]).await.unwrap();
        assert!(store.get(&jobs).await.unwrap().fresh().is_none());
        assert!(store.get(&runs).await.unwrap().fresh().is_some());
        store.invalidate(&[Arc::from("")]).await.unwrap();
        assert!(store.get(&runs).await.unwrap().fresh().is_none());
    }

    #[tokio::test]
    async fn entry_bound_holds() {
        let store = MemoryStore::builder()
            .with_max_bytes(1024 * 1024)
            .with_max_entries(4)
            .build();
        for i in 0..32 {
            let k = key(&format!("GET /{i}"), &[""]);
            store
                .put(&k, response("x"), 0, Duration::from_secs(60))
                .await
                .unwrap();
        }
        store.run_pending_tasks().await;
        assert!(store.entry_count() <= 4, "{}", store.entry_count());
    }

    #[tokio::test]
    async fn byte_bound_holds() {
        let store = MemoryStore::builder()
            .with_max_bytes(4096)
            .with_max_entries(1_000)
            .build();
        let big: &'static str = Box::leak("x".repeat(1000).into_boxed_str());
        for i in 0..32 {
            let k = key(&format!("GET /{i}"), &[""]);
            store
                .put(&k, response(big), 0, Duration::from_secs(60))
                .await
                .unwrap();
        }
        store.run_pending_tasks().await;
        assert!(store.weighted_size() <= 4096, "{}", store.weighted_size());
    }
}
