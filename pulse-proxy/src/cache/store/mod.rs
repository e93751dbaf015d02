//! Where cached responses live: the [`CacheStore`] trait, the in-memory
//! [`MemoryStore`] and, with the `cache-redis` feature, the shared `RedisStore`.
//!
//! A store keeps entries and one generation counter per scope (path prefix). An entry
//! is stored with the sum of its scopes' generations as they were when its request
//! looked the key up; a mutation increments the counters of the scopes it touches, so
//! every entry under them is stale at once, in O(1), and a response fetched before the
//! mutation can never be stored as fresh after it.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::key::CacheKey;

mod memory;
#[cfg(feature = "cache-redis")]
mod redis;

pub use memory::{MemoryStore, MemoryStoreBuilder};
#[cfg(feature = "cache-redis")]
pub use redis::RedisStore;

/// A boxed error from a store's backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The future a [`CacheStore`] method returns.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;

/// A store failure. The cache never fails a request because of one: it forwards the
/// request uncached and counts the failure in [`CacheStats`](super::CacheStats).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached or refused the command.
    #[error("cache backend failed")]
    Backend(#[source] BoxError),
    /// A stored value could not be decoded.
    #[error("corrupt cache entry")]
    Corrupt,
}

/// A response as stored: status, headers and the complete body.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CachedResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers, without per-request ones (`X-Request-ID`, `Age`, `X-Cache`).
    pub headers: HeaderMap,
    /// The complete body.
    pub body: Bytes,
}

impl CachedResponse {
    /// A stored response.
    pub const fn new(status: StatusCode, headers: HeaderMap, body: Bytes) -> Self {
        Self {
            status,
            headers,
            body,
        }
    }

    /// The size of the entry in bytes: body plus headers (names, values and a small
    /// overhead per header).
    pub fn size_bytes(&self) -> usize {
        self.body.len()
            + self
                .headers
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 32)
                .sum::<usize>()
    }
}

/// An entry found by [`CacheStore::get`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoredEntry {
    /// The response.
    pub response: Arc<CachedResponse>,
    /// The generation sum the entry was stored under.
    pub generation: u64,
    /// How long ago it was stored.
    pub age: Duration,
}

impl StoredEntry {
    /// An entry.
    pub const fn new(response: Arc<CachedResponse>, generation: u64, age: Duration) -> Self {
        Self {
            response,
            generation,
            age,
        }
    }
}

/// The answer of [`CacheStore::get`]: the entry if one is present and unexpired, and
/// the current generation sum of the key's scopes. The entry is fresh only when its
/// generation equals the current one.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Lookup {
    /// The unexpired entry, if any (possibly stale by generation).
    pub entry: Option<StoredEntry>,
    /// The current sum of the generations of the key's scopes.
    pub generation: u64,
}

impl Lookup {
    /// A lookup result.
    pub const fn new(entry: Option<StoredEntry>, generation: u64) -> Self {
        Self { entry, generation }
    }

    /// The entry if it is fresh (stored under the current generation).
    pub fn fresh(self) -> Option<StoredEntry> {
        self.entry.filter(|e| e.generation == self.generation)
    }
}

/// A backend for the response cache.
///
/// Methods return `'static` boxed futures, so a store is used behind `Arc<dyn
/// CacheStore>` and its futures can outlive the borrow (implementations clone their
/// handles into the future). Request coalescing happens in the layer, in process, and
/// works with any store.
pub trait CacheStore: Send + Sync + 'static {
    /// The entry under `key` if present and unexpired, with the current generation sum
    /// of `key.scopes()` (unknown scopes count as 0).
    fn get(&self, key: &CacheKey) -> StoreFuture<Lookup>;

    /// Stores `response` under `key` for `ttl`, tagged with `generation` (the value
    /// [`CacheStore::get`] returned when the request started).
    fn put(
        &self,
        key: &CacheKey,
        response: Arc<CachedResponse>,
        generation: u64,
        ttl: Duration,
    ) -> StoreFuture<()>;

    /// Increments the generation of every scope in `scopes`, making every entry under
    /// them stale.
    fn invalidate(&self, scopes: &[Arc<str>]) -> StoreFuture<()>;
}

impl<T: CacheStore + ?Sized> CacheStore for Arc<T> {
    fn get(&self, key: &CacheKey) -> StoreFuture<Lookup> {
        (**self).get(key)
    }

    fn put(
        &self,
        key: &CacheKey,
        response: Arc<CachedResponse>,
        generation: u64,
        ttl: Duration,
    ) -> StoreFuture<()> {
        (**self).put(key, response, generation, ttl)
    }

    fn invalidate(&self, scopes: &[Arc<str>]) -> StoreFuture<()> {
        (**self).invalidate(scopes)
    }
}
