//! # Pulse
//!
//! Secure service-to-service communication for tower and hyper. This facade re-exports
//! the Pulse crates behind features, and hosts the workspace's examples and benchmarks.
//!
//! | feature   | crate                                   | default |
//! |-----------|-----------------------------------------|---------|
//! | `core`    | [`pulse_core`]: errors, identity, JWT, RBAC, internal auth, correlation ids, header hygiene, health | yes |
//! | `breaker` | [`pulse_breaker`]: circuit-breaker tower layer | yes |
//! | `proxy`   | [`pulse_proxy`]: hardened reverse-proxy service, transports, response cache | yes |
//! | `etl`     | [`pulse_etl`]: job engine, its internal HTTP API and client | yes |
//! | `full`    | all of the above | no |
//!
//! Each crate is re-exported under its own name (`pulse::pulse_core`, `pulse::breaker`,
//! `pulse::proxy`, `pulse::etl`); pulse-core is not renamed to `core`, which would
//! shadow the standard library's `core` crate in `use pulse::*` and in paths.
#![warn(missing_docs)]

#[cfg(feature = "core")]
#[doc(inline)]
pub use pulse_core;

#[cfg(feature = "breaker")]
#[doc(inline)]
pub use pulse_breaker as breaker;

#[cfg(feature = "proxy")]
#[doc(inline)]
pub use pulse_proxy as proxy;

#[cfg(feature = "etl")]
#[doc(inline)]
pub use pulse_etl as etl;

/// The README's Rust blocks ("Use it in your service"), compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
