//! Counters of what the cache did, for metrics.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

/// A cloneable handle on a cache layer's counters. Every service built from one
/// [`CacheLayer`](super::CacheLayer) counts into the same handle; take a
/// [`CacheStats::snapshot`] to export them.
#[derive(Clone, Debug, Default)]
pub struct CacheStats {
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    bypasses: AtomicU64,
    coalesced: AtomicU64,
    waits: AtomicU64,
    stores: AtomicU64,
    invalidations: AtomicU64,
    store_errors: AtomicU64,
}

/// The counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStatsSnapshot {
    /// Requests answered from a stored entry.
    pub hits: u64,
    /// Cacheable requests that went upstream (each is one upstream call).
    pub misses: u64,
    /// Requests forwarded without looking at the cache (methods other than
    /// `GET`/`HEAD`, `no-store`, missing user key part, upgrades).
    pub bypasses: u64,
    /// Requests answered with the response of another request's upstream call
    /// (coalesced misses).
    pub coalesced: u64,
    /// Times a request waited for another request's upstream call.
    pub waits: u64,
    /// Responses written to the store.
    pub stores: u64,
    /// Mutations that invalidated scopes.
    pub invalidations: u64,
    /// Store operations that failed (the request then went on uncached).
    pub store_errors: u64,
}

impl CacheStatsSnapshot {
    /// Requests served without an upstream call, over all cacheable requests
    /// (`(hits + coalesced) / (hits + coalesced + misses)`), or 0 before any.
    pub fn hit_ratio(&self) -> f64 {
        let served = self.hits + self.coalesced;
        let total = served + self.misses;
        if total == 0 {
            0.0
        } else {
            served as f64 / total as f64
        }
    }
}

macro_rules! counter {
    ($($name:ident => $field:ident),* $(,)?) => {
        impl CacheStats {
            $(
                pub(crate) fn $name(&self) {
                    self.counters.$field.fetch_add(1, Ordering::Relaxed);
                }
            )*
        }
    };
}

counter! {
    hit => hits,
    miss => misses,
    bypass => bypasses,
    coalesce => coalesced,
    wait => waits,
    stored => stores,
    invalidated => invalidations,
    store_error => store_errors,
}

impl CacheStats {
    /// The current values.
    pub fn snapshot(&self) -> CacheStatsSnapshot {
        let c = &self.counters;
        CacheStatsSnapshot {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            bypasses: c.bypasses.load(Ordering::Relaxed),
            coalesced: c.coalesced.load(Ordering::Relaxed),
            waits: c.waits.load(Ordering::Relaxed),
            stores: c.stores.load(Ordering::Relaxed),
            invalidations: c.invalidations.load(Ordering::Relaxed),
            store_errors: c.store_errors.load(Ordering::Relaxed),
        }
    }
}
