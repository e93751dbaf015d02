//! A lock-free circuit-breaker [tower] `Layer` for any service, HTTP or not.
//!
//! A [`Breaker`] watches the outcomes of the calls it admits and stops calling a
//! service that keeps failing, so callers get a fast, clear rejection instead of piling
//! up on a dead upstream, and the upstream gets room to recover.
//!
//! - **Trip conditions**, combinable: failure rate over a [`SlidingWindow`] (the last N
//!   calls, or the last T seconds in buckets) once a minimum number of calls is reached;
//!   slow-call rate; N consecutive failures.
//! - **Classification** through [`Classifier`]: [`HttpClassifier`] (5xx and transport
//!   errors fail, 4xx ignored, 429 configurable), [`ErrorClassifier`] (every `Err`
//!   fails), or a closure. Cancelled calls are ignored.
//! - **Half-open** admits exactly N probes, each holding a permit in its response future
//!   (released on drop); a hung probe times out; results from an earlier state cycle are
//!   discarded (generation counter).
//! - **Open** rejects in `call` with [`BreakerOpen`] and its `retry_after`, from a
//!   [`Backoff`] policy (forced open: a configurable hint); `poll_ready` only forwards
//!   the inner service's readiness, the breaker itself never makes a caller wait
//!   (tower's load-shed discipline). [`CircuitBreakerLayer::http`] answers `503` +
//!   `Retry-After` + the JSON error body.
//! - **Control**: a cloneable [`Breaker`] handle ([`snapshot`](Breaker::snapshot),
//!   [`retry_after`](Breaker::retry_after), [`force_open`](Breaker::force_open), [`disable`](Breaker::disable),
//!   [`metrics_only`](Breaker::metrics_only), [`reset`](Breaker::reset)); an
//!   [`Observer`] for transitions and outcomes; [`KeyedBreakers`] for one breaker per
//!   upstream host with a bounded number of keys.
//!
//! The closed path takes no lock and no allocation: in the healthy steady state (a
//! full window of successes) it reads a few atomics and writes none, apart from the
//! reference count of the shared state, which [`Breaker::into_static`] removes for
//! breakers that live as long as the process. See the crate README for benchmark
//! figures, and the [tuning guide](docs::tuning) for the defaults.
//!
//! # Example: a flaky service trips and heals
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use std::time::Duration;
//!
//! use pulse_breaker::{Backoff, Breaker, BreakerConfig, BreakerOpen, CircuitBreakerLayer, State};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let healthy = Arc::new(AtomicBool::new(false));
//! let upstream = {
//!     let healthy = healthy.clone();
//!     service_fn(move |n: u32| {
//!         let ok = healthy.load(Ordering::SeqCst);
//!         async move { if ok { Ok(n) } else { Err("upstream down") } }
//!     })
//! };
//! let breaker = Breaker::new(
//!     BreakerConfig::default()
//!         .with_consecutive_failures(Some(3))
//!         .with_backoff(Backoff::constant(Duration::from_secs(5))),
//! )?;
//! let mut service = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::new(breaker.clone()))
//!     .service(upstream);
//!
//! // Three failures in a row trip the circuit…
//! for n in 0..3 {
//!     assert!(service.ready().await?.call(n).await.is_err());
//! }
//! assert_eq!(breaker.state(), State::Open);
//!
//! // …so the next call fails fast, without reaching the upstream.
//! let err = service.ready().await?.call(3).await.unwrap_err();
//! let open = err.downcast_ref::<BreakerOpen>().expect("rejected by the breaker");
//! assert_eq!(open.retry_after(), Some(Duration::from_secs(5)));
//!
//! // The upstream recovers; after the open period one probe goes through and closes it.
//! healthy.store(true, Ordering::SeqCst);
//! tokio::time::advance(Duration::from_secs(5)).await;
//! assert_eq!(service.ready().await?.call(4).await?, 4);
//! assert_eq!(breaker.state(), State::Closed);
//! # Ok(())
//! # }
//! ```
//!
//! For an HTTP transport use [`CircuitBreakerLayer::http`]: 5xx and transport errors
//! count, 4xx do not, and a rejected request gets `503` with `Retry-After` and
//! `{"error": "...", "code": "circuit_open", "request_id": <X-Request-ID or null>}`.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `tracing` | no | `observer::TracingObserver`: transitions and outcomes as `tracing` events |
//! | `metrics` | no | `observer::MetricsObserver`: counters and a state gauge with the `metrics` facade |
//! | `full` | no | both |
//!
//! [tower]: https://docs.rs/tower
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod backoff;
mod clock;
mod config;
mod error;
mod future;
mod handle;
mod keyed;
mod layer;
pub mod observer;
mod policy;
mod service;
mod state;
mod window;

pub use crate::backoff::Backoff;
pub use crate::clock::{Clock, ManualClock, TokioClock};
pub use crate::config::{BreakerConfig, ConfigError};
pub use crate::error::{
    BoxError, BreakerOpen, CIRCUIT_OPEN_CODE, RejectWith503, RejectWithError, Rejection,
    X_REQUEST_ID,
};
pub use crate::future::ResponseFuture;
pub use crate::handle::{Breaker, CallPermit};
pub use crate::keyed::{KeyedBreakers, KeyedCircuitBreaker, KeyedCircuitBreakerLayer};
pub use crate::layer::CircuitBreakerLayer;
pub use crate::observer::{NoopObserver, Observer};
pub use crate::policy::{Classifier, ErrorClassifier, HttpClassifier, Outcome};
pub use crate::service::CircuitBreaker;
pub use crate::state::{Snapshot, State};
pub use crate::window::{SlidingWindow, WindowCounts};

pub mod docs {
    //! Guides.

    #[doc = include_str!("docs/tuning.md")]
    pub mod tuning {}
}

/// The README's Rust blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
