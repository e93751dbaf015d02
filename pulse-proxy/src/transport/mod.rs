//! Transports: how the proxy reaches its upstream.
//!
//! A transport is any `tower::Service<http::Request<B>>` that returns an
//! `http::Response`. Three ship here:
//!
//! | transport | reaches the upstream over | feature |
//! | --- | --- | --- |
//! | [`HttpTransport`] | pooled TCP connections, optional rustls TLS | `http` (default), `tls` |
//! | [`UnixTransport`] | pooled Unix-domain-socket connections | `unix` (default, unix only) |
//! | [`InProcessTransport`] | a call into any tower service, e.g. the ETL router | always |
//!
//! The two pooled transports share [`TransportConfig`]: connect timeout, idle pool
//! size and timeout, and a hard cap on requests in flight that fails fast with
//! [`ProxyError::PoolExhausted`](crate::ProxyError::PoolExhausted) (503) instead of
//! queueing, which hyper-util's client alone does not offer.
//!
//! Plain `http://` upstreams are spoken to over HTTP/1.1 on hyper's connection API with
//! a pool kept here: the task that sends a request polls its upstream connection until
//! the response body ends, so a proxied request costs no task switch and no channel
//! hop. `https://` upstreams and HTTP/2 go through hyper-util's client (ALPN,
//! multiplexing). [`HttpTransport`] says which takes what.

use std::time::Duration;

mod in_process;
pub use in_process::InProcessTransport;

#[cfg(feature = "http")]
mod http1;
#[cfg(feature = "http")]
mod pooled;
#[cfg(feature = "http")]
pub use pooled::{HttpTransport, TransportBody, TransportFuture};

/// The transport [`HttpTransport::https`] builds (TLS to `https://` upstreams, plain
/// TCP to `http://` ones), for naming it in a struct or a type alias.
#[cfg(feature = "tls")]
pub type HttpsTransport<B> = HttpTransport<
    B,
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
>;

#[cfg(all(feature = "unix", feature = "http", unix))]
mod unix;
#[cfg(all(feature = "unix", feature = "http", unix))]
pub use unix::{UnixConnector, UnixTransport};

/// The default most idle connections kept per upstream host: as many as may be in
/// flight, so a steady load reuses its connections instead of closing and reopening
/// the ones above a smaller idle cap (a TIME-WAIT socket each).
pub const DEFAULT_MAX_IDLE_PER_HOST: usize = DEFAULT_MAX_IN_FLIGHT;
/// The default idle timeout: below the 60 s keep-alive most servers use, so the pool
/// drops a connection before the upstream closes it under a request.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// The default cap on requests in flight (and so on open HTTP/1 connections): sized
/// for a gateway, and no more than a server's usual connection cap (512).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 512;
/// The default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of the pooled transports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) max_idle_per_host: usize,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_in_flight: usize,
    pub(crate) http2_only: bool,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            max_idle_per_host: DEFAULT_MAX_IDLE_PER_HOST,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            http2_only: false,
        }
    }
}

impl TransportConfig {
    /// The defaults: connect timeout 5 s, at most 512 requests in flight, as many idle
    /// connections per host kept and closed after 50 s idle, HTTP/1.1.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long opening a connection may take (`None`: no limit).
    #[must_use]
    pub const fn with_connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The most idle connections kept per host.
    #[must_use]
    pub const fn with_max_idle_per_host(mut self, max: usize) -> Self {
        self.max_idle_per_host = max;
        self
    }

    /// How long an idle connection is kept (`None`: forever). Keep it below the
    /// upstream's keep-alive timeout.
    #[must_use]
    pub const fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The most requests in flight at once; one more fails at once with
    /// `PoolExhausted`.
    #[must_use]
    pub const fn with_max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max;
        self
    }

    /// Speak HTTP/2 with prior knowledge (h2c, or h2 over TLS).
    #[must_use]
    pub const fn with_http2_only(mut self, enabled: bool) -> Self {
        self.http2_only = enabled;
        self
    }

    /// The connect timeout.
    pub const fn connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }

    /// The cap on requests in flight.
    pub const fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }
}
