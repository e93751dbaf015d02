//! A response cache for `GET` requests, as a tower layer.
//!
//! [`CacheLayer`] wraps any `Service<http::Request<B>>` (the proxy, a router) and
//!
//! - answers a `GET` (or `HEAD`) from a stored `200` response when one is fresh,
//!   keyed by method, path and query plus the verified user ([`KeyPart::Identity`], the
//!   default) or any other [`KeyPart`]: one user never sees another's entry unless the
//!   key is configured without a user part;
//! - makes one upstream call for many concurrent misses of one key (*coalescing*): the
//!   others wait and share its response; if the first is dropped they start over and
//!   one of them leads; if its response cannot be shared they each go upstream;
//! - makes every entry under a resource prefix stale when a `POST`, `PUT`, `PATCH` or
//!   `DELETE` goes to that prefix ([`CacheLayer::with_scope`],
//!   [`CacheLayer::with_invalidation`]), in O(1) with a generation counter per prefix;
//! - stores only what is safe to store: configured statuses (default `200`; server
//!   errors never), no `Set-Cookie`, no `Cache-Control: no-store`/`private`/`no-cache`
//!   on the request or the response, `Vary` only on headers in the key, no event
//!   streams, no upgrades, and bodies up to a limit (default 1 MiB; larger ones stream
//!   through untouched);
//! - answers with `X-Cache: HIT | MISS | BYPASS` (can be turned off) and `Age` on hits;
//! - counts hits, misses, coalesced requests and more in a [`CacheStats`] handle.
//!
//! Stores: [`MemoryStore`] (moka, bounded by bytes and entries) and, with the `cache-redis`
//! feature, `RedisStore` (shared by several gateways). Coalescing is in process and
//! works with either. A failing store never fails a request: it is forwarded uncached.
//!
//! # Example
//!
//! A second identical `GET` by the same user is a hit and never reaches the upstream:
//!
//! ```
//! use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
//!
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use pulse_core::Identity;
//! use pulse_proxy::cache::{CacheLayer, MemoryStore};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let calls = Arc::new(AtomicUsize::new(0));
//! let upstream = service_fn({
//!     let calls = calls.clone();
//!     move |_req: Request<Full<Bytes>>| {
//!         calls.fetch_add(1, Ordering::SeqCst);
//!         async { Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("[]")))) }
//!     }
//! });
//! let layer = CacheLayer::new(MemoryStore::new()).with_scope("/api/etl/jobs");
//! let cache = layer.layer(upstream);
//!
//! let get = || {
//!     let mut req = Request::get("/api/etl/jobs").body(Full::default()).unwrap();
//!     req.extensions_mut().insert(Identity::new("user-1"));
//!     req
//! };
//! let first = cache.clone().oneshot(get()).await.unwrap();
//! assert_eq!(first.headers()["x-cache"], "MISS");
//! assert_eq!(first.into_body().collect().await.unwrap().to_bytes(), "[]");
//!
//! let second = cache.clone().oneshot(get()).await.unwrap();
//! assert_eq!(second.headers()["x-cache"], "HIT");
//! assert_eq!(second.into_body().collect().await.unwrap().to_bytes(), "[]");
//! assert_eq!(calls.load(Ordering::SeqCst), 1);
//! assert_eq!(layer.stats().snapshot().hits, 1);
//! # }
//! ```
//!
//! # In the gateway
//!
//! The cache sits after authentication and RBAC (so the identity is verified and a
//! forbidden request is never answered from the cache) and before the breaker and the
//! proxy (so a hit costs the upstream nothing):
//!
//! ```text
//! CorrelationId → Trace → JWT → RBAC → Cache → CircuitBreaker → Proxy
//! ```
//!
//! Keyed per verified user (the default), short-lived, with starting or cancelling a
//! run making the job lists stale, and its counters kept for `/metrics`:
//!
//! ```
//! use std::time::Duration;
//!
//! use pulse_proxy::cache::{CacheLayer, MemoryStore};
//!
//! let cache = CacheLayer::new(MemoryStore::new())
//!     .with_ttl(Duration::from_secs(5))
//!     .with_scope("/api/etl/jobs")
//!     .with_invalidation("/api/etl/runs", ["/api/etl/runs", "/api/etl/jobs"]);
//! let metrics = cache.stats();
//! // ServiceBuilder::new().layer(jwt).layer(rbac).layer(cache).layer(breaker).service(proxy)
//! assert_eq!(metrics.snapshot().hits, 0);
//! ```
//!
//! Several gateways share one cache, and see each other's invalidations, with
//! `RedisStore::connect(url).await?` (feature `cache-redis`) in place of `MemoryStore::new()`.
//!
//! An entry is stored once its body has been read to the end by the client that caused
//! it; its coalesced waiters are answered at that moment.

mod body;
mod coalesce;
mod future;
mod key;
mod layer;
mod lookup;
mod policy;
mod service;
mod stats;
pub mod store;

use http::HeaderName;

pub use body::CacheBody;
pub use future::ResponseFuture;
pub use key::{CacheKey, KeyPart};
pub use layer::{CacheLayer, DEFAULT_MAX_BODY_BYTES, DEFAULT_TTL};
pub use service::Cache;
pub use stats::{CacheStats, CacheStatsSnapshot};
#[cfg(feature = "cache-redis")]
pub use store::RedisStore;
pub use store::{CacheStore, CachedResponse, MemoryStore, MemoryStoreBuilder, StoreError};

/// `x-cache`: `HIT`, `MISS` or `BYPASS`.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
