//! pulse-proxy — a hardened reverse-proxy tower `Service` with pluggable transports.
//!
//! [`Proxy`] forwards an authenticated request to an internal service. It is built for
//! the gateway's position in front of services that trust the headers it sends, and it
//! gets the rules right that reverse proxies keep shipping CVEs for. For every request,
//! in this order:
//!
//! 1. **Framing.** `Content-Length` together with `Transfer-Encoding`, differing or
//!    malformed `Content-Length` values, and a `Transfer-Encoding` not ending in
//!    `chunked` are rejected with 400 ([`ProxyError::BadFraming`]).
//! 2. **Path.** Dot segments (also `..;` and `..%3B`), `%2e`, encoded `/` and `\`, a raw `\`, `%25`
//!    (double encoding), `%00`, control characters and empty segments are rejected with
//!    400 on the raw path, *before* the prefix rewrite (`/api/etl/` → `/api/v1/`); a path
//!    outside the prefix is 404. The query string is forwarded verbatim.
//! 3. **Hop-by-hop.** Every header named by any `Connection` line (an empty first line
//!    included) and the standard hop-by-hop set are removed, so `Connection: x-user-id`
//!    cannot delete what step 4 injects.
//! 4. **Reserved and forwarded headers.** `X-Internal-*` and `X-User-*` in every
//!    spelling (`X_User_Id`, `X.User.Id`, any case) are removed; `X-Forwarded-*`,
//!    `Forwarded` and `X-Real-IP` are rebuilt per the [`ForwardedPolicy`] (trusted
//!    hops). Then, with insert and never append: `X-User-ID` and `X-User-Email` from the
//!    verified [`Identity`](pulse_core::Identity) extension, `X-Request-ID` and
//!    `X-Correlation-ID`, and `Host` per the [`HostPolicy`]; `traceparent` and
//!    `tracestate` pass through. The internal credential is added by pulse-core's
//!    `InternalCredentialLayer` around the transport (it sees the identity in the
//!    outbound request's extensions).
//! 5. **Bodies** stream both ways, never collected; a request body over the limit gets
//!    413, whether its `Content-Length` says so or it grows past the limit while
//!    streaming. A client body that breaks off or is malformed while it streams (a bad
//!    chunk size, a reset mid-body) gets 400 `invalid_body`: it is marked
//!    ([`ClientBodyError`]) so that neither the answer nor a circuit breaker blames the
//!    upstream for it. Multiple `Set-Cookie` headers and trailers survive. WebSocket and other
//!    HTTP/1.1 upgrades are forwarded when enabled: the upstream's 101 comes first, then
//!    the client's, then the two connections are spliced.
//! 6. **Timeouts and errors.** Connect (transport), time-to-headers (default 30 s) and an
//!    optional total deadline. Every failure is a typed [`ProxyError`] answered with the
//!    shared JSON error body: refused, unreachable, connection lost before the answer,
//!    pool exhausted, transport not ready (`overloaded`) or circuit open → 503 with
//!    `Retry-After`, timeout (also tower's `Timeout` inside the transport stack) → 504,
//!    upstream protocol error → 502. No upstream error text reaches the client; the error is
//!    also in the response's extensions for metrics. A circuit breaker around the
//!    transport should classify with [`UpstreamClassifier`] (feature `breaker`), which
//!    counts only upstream faults ([`ProxyError::is_upstream_fault`]).
//!
//!    The proxy follows tower's readiness contract the way `LoadShed` does: it never
//!    calls a transport that has not said it is ready, and answers such a request with
//!    503 `overloaded` instead (see [`Proxy`]).
//! 7. **Response.** Hop-by-hop and internal headers are removed and the request id is
//!    echoed.
//! 8. **Retries** are off. With the `retry` feature, [`retry::RetryLayer`] around the
//!    transport resends only requests that never reached the upstream, or idempotent
//!    ones whose small bodies it buffered, under a retry budget. An upstream's own 5xx
//!    answer is never retried.
//! 9. **Load balancing** (feature `balance`): [`balance::Pool`] is a transport over
//!    several instances of the upstream: power-of-two-choices, a pulse-breaker circuit
//!    breaker per instance, passive outlier ejection, and one retry on another
//!    instance for requests that never reached theirs or are idempotent, under a retry
//!    budget.
//!
//! A **transport** is any `tower::Service<http::Request<B>>`; see [`transport`] for the
//! pooled HTTP client, the Unix-socket client and the in-process one.
//!
//! The **response cache** ([`cache::CacheLayer`]) serves repeated GETs from memory
//! (moka) or Redis: keyed per user by default, with a TTL, size bounds, request
//! coalescing (many concurrent misses, one upstream call), invalidation by mutating
//! requests under a scope, and `Cache-Control` honoured; errors are never stored.
//!
//! # Example
//!
//! The upstream here is an axum router in the same process; the client tries to spoof
//! the user id, and the upstream sees only the verified one.
//!
//! ```
//! use axum::{Router, routing::get, http::HeaderMap};
//! use http::Request;
//! use http_body_util::{BodyExt, Empty};
//! use bytes::Bytes;
//! use pulse_core::Identity;
//! use pulse_proxy::{Proxy, ProxyConfig, transport::InProcessTransport};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The internal service: echoes the user id it was given.
//! let etl = Router::new().route(
//!     "/api/v1/jobs",
//!     get(|headers: HeaderMap| async move {
//!         let ids: Vec<_> = headers.get_all("x-user-id").iter().collect();
//!         format!("{ids:?}")
//!     }),
//! );
//! let config = ProxyConfig::new("http://etl.internal:8001".parse()?)?
//!     .with_prefix_rewrite("/api/etl/", "/api/v1/");
//! let proxy = Proxy::new(InProcessTransport::new(etl), config);
//!
//! let mut request = Request::get("/api/etl/jobs")
//!     .header("x-user-id", "admin")      // spoofed by the client
//!     .header("X_User_Id", "admin")      // and in a spelling some servers fold
//!     .header("connection", "x-user-id") // and trying to delete the real one
//!     .body(Empty::<Bytes>::new())?;
//! // What the JWT layer in front of the proxy puts there after verifying the token:
//! request.extensions_mut().insert(Identity::new("user-42"));
//!
//! let response = proxy.oneshot(request).await?;
//! assert_eq!(response.status(), 200);
//! assert!(response.headers().contains_key("x-request-id"));
//! let body = response.into_body().collect().await?.to_bytes();
//! assert_eq!(body, r#"["user-42"]"#);
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `http` | yes | [`transport::HttpTransport`]: pooled HTTP/1.1 on hyper's connection API for `http://` upstreams, hyper-util's client for HTTPS and HTTP/2 |
//! | `unix` | no | [`transport::UnixTransport`] (unix only; implies `http`) |
//! | `tls` | no | `HttpTransport::https`: rustls to `https://` upstreams (implies `http`) |
//! | `retry` | no | [`retry::RetryLayer`]: budgeted retries of safe requests |
//! | `breaker` | no | pulse-breaker's `BreakerOpen` (from a breaker around the transport) becomes [`ProxyError::CircuitOpen`]: 503 + `Retry-After`; `UpstreamClassifier` for that breaker |
//! | `balance` | no | [`balance::Pool`]: p2c over instances, a breaker each, outlier ejection, retries on another instance (implies `breaker`) |
//! | `axum` | no | the client address from axum's `ConnectInfo<SocketAddr>` |
//! | `cache` | no | [`cache`]: the response cache (moka in memory) |
//! | `cache-redis` | no | `cache::RedisStore`: a response cache shared by several gateways (`redis`: its former name) |
//! | `full` | no | all of the above |
//!
//! Without default features the core (the rules above, identity injection, upgrades,
//! [`transport::InProcessTransport`]) depends on pulse-core's core only: no JWT, no cache.
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod body;
#[cfg(feature = "cache")]
pub mod cache;
mod config;
pub mod error;
mod framing;
mod future;
pub mod headers;
mod path;
mod service;
pub mod transport;
mod upgrade;

#[cfg(feature = "balance")]
pub mod balance;
#[cfg(feature = "breaker")]
mod classifier;
#[cfg(feature = "retry")]
pub mod retry;

pub use body::{ClientBodyError, ProxyRequestBody, UpstreamBody};
#[cfg(feature = "breaker")]
pub use classifier::UpstreamClassifier;
pub use config::{
    DEFAULT_MAX_REQUEST_BODY, DEFAULT_RESPONSE_TIMEOUT, InvalidUpstream, ProxyConfig,
};
pub use error::{ProxyError, TimeoutPhase};
pub use framing::check_framing;
pub use future::ResponseFuture;
pub use headers::{ClientAddr, ForwardedPolicy, HostPolicy};
pub use path::{PrefixRewrite, check_path};
pub use service::{Proxy, ProxyLayer, ProxyResponseBody};

/// The README's Rust blocks, compiled and run as doctests (they use these features).
#[cfg(all(doctest, feature = "http", feature = "breaker"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
