//! [`CacheLayer`]: the configuration of a response cache.

use std::{fmt, sync::Arc, time::Duration};

use http::StatusCode;
use tower_layer::Layer;

use super::{
    Cache, CacheStats,
    coalesce::Flights,
    key::{Invalidation, KeyPart},
    policy::StoragePolicy,
    store::CacheStore,
};

/// Default time-to-live of an entry.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// Default largest body stored (1 MiB); larger responses stream through uncached.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// The layer's settings (shared by every service it builds).
#[derive(Clone, Debug)]
pub(crate) struct CacheConfig {
    pub(crate) storage: StoragePolicy,
    pub(crate) key_parts: Vec<KeyPart>,
    pub(crate) invalidation: Invalidation,
    pub(crate) x_cache: bool,
}

/// What every [`Cache`] of one layer shares: settings, store, flights, counters.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) config: CacheConfig,
    pub(crate) store: Arc<dyn CacheStore>,
    pub(crate) flights: Arc<Flights>,
    pub(crate) stats: CacheStats,
}

/// A [`Layer`] that caches `GET` responses of the service it wraps (see the
/// [module docs](super)).
///
/// Every service the layer builds shares one store, one set of in-flight requests
/// (so coalescing spans them) and one [`CacheStats`].
#[derive(Clone)]
#[must_use]
pub struct CacheLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl CacheLayer {
    /// A cache over `store`: TTL 30 s, bodies up to 1 MiB, status 200 only, keyed per
    /// verified user ([`KeyPart::Identity`]), every mutation flushing everything until
    /// scopes are configured, `X-Cache` on.
    pub fn new(store: impl CacheStore) -> Self {
        Self::from_arc(Arc::new(store))
    }

    /// A cache over a shared store.
    pub fn from_arc(store: Arc<dyn CacheStore>) -> Self {
        Self {
            shared: Arc::new(Shared {
                config: CacheConfig {
                    storage: StoragePolicy {
                        ttl: DEFAULT_TTL,
                        statuses: vec![StatusCode::OK],
                        max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                    },
                    key_parts: vec![KeyPart::Identity],
                    invalidation: Invalidation::default(),
                    x_cache: true,
                },
                store,
                flights: Arc::default(),
                stats: CacheStats::default(),
            }),
        }
    }

    fn config_mut(&mut self) -> &mut CacheConfig {
        // Layers are configured before they build services; a layer changed after that
        // gets its own settings, still sharing store, flights and counters.
        &mut Arc::make_mut(&mut self.shared).config
    }

    /// The longest an entry is served (default 30 s). A response's `s-maxage` or
    /// `max-age` can shorten it, never lengthen it.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.config_mut().storage.ttl = ttl;
        self
    }

    /// The largest body stored (default 1 MiB). A response with a larger
    /// `Content-Length` streams through untouched; one of unknown length is recorded
    /// while it streams and dropped from recording once it passes the limit.
    pub fn with_max_body_bytes(mut self, max: usize) -> Self {
        self.config_mut().storage.max_body_bytes = max;
        self
    }

    /// The statuses that may be stored (default: 200 only). Errors are never worth
    /// caching; add 203, 204, 301 or 404 only with care.
    pub fn with_cacheable_statuses(
        mut self,
        statuses: impl IntoIterator<Item = StatusCode>,
    ) -> Self {
        self.config_mut().storage.statuses = statuses
            .into_iter()
            .filter(|s| !s.is_server_error())
            .collect();
        self
    }

    /// Replaces the key parts (default `[KeyPart::Identity]`). With no user part the
    /// cache is shared across users: pass an empty list only for public resources.
    pub fn with_key_parts(mut self, parts: impl IntoIterator<Item = KeyPart>) -> Self {
        self.config_mut().key_parts = parts.into_iter().collect();
        self
    }

    /// Adds one key part.
    pub fn with_key_part(mut self, part: KeyPart) -> Self {
        self.config_mut().key_parts.push(part);
        self
    }

    /// A resource prefix such as `/api/etl/jobs`: a mutation (`POST`, `PUT`, `PATCH`,
    /// `DELETE`) of anything under it makes every cached `GET` under it stale.
    pub fn with_scope(self, prefix: &str) -> Self {
        self.with_invalidation(prefix, [prefix])
    }

    /// A mutation of anything under `mutation_prefix` makes every cached `GET` under
    /// each of `scopes` stale (for example cancelling a run under `/api/etl/runs`
    /// changes what `/api/etl/jobs` shows).
    pub fn with_invalidation<'a>(
        mut self,
        mutation_prefix: &str,
        scopes: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let scopes = scopes.into_iter().map(Arc::from).collect();
        self.config_mut()
            .invalidation
            .add_rule(mutation_prefix, scopes);
        self
    }

    /// Whether a mutation that matches no configured prefix makes the whole cache stale
    /// (default `true`, the safe choice). Turn it off when every mutating route is
    /// covered by [`CacheLayer::with_scope`] or [`CacheLayer::with_invalidation`].
    pub fn with_flush_on_unmatched_mutation(mut self, flush: bool) -> Self {
        self.config_mut().invalidation.set_flush_unmatched(flush);
        self
    }

    /// Whether responses carry `X-Cache: HIT | MISS | BYPASS` (default `true`).
    pub fn with_x_cache_header(mut self, enabled: bool) -> Self {
        self.config_mut().x_cache = enabled;
        self
    }

    /// The counters of every service this layer builds.
    pub fn stats(&self) -> CacheStats {
        self.shared.stats.clone()
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = Cache<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Cache::new(inner, self)
    }
}
