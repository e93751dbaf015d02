//! The proxy's configuration.

use std::time::Duration;

use http::{HeaderValue, Uri, uri::Authority, uri::Scheme};

use crate::{
    headers::{ForwardedPolicy, HostPolicy},
    path::PrefixRewrite,
};

/// The default request-body limit: 10 MiB.
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 10 * 1024 * 1024;
/// The default time-to-headers timeout: 30 s.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// The upstream URI given to [`ProxyConfig::new`] lacks a scheme or an authority.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("upstream URI must be absolute (scheme and authority), like http://127.0.0.1:8001")]
pub struct InvalidUpstream;

/// What the proxy does with each request: where it goes, how the path is rewritten,
/// which headers it trusts, its limits and timeouts.
///
/// ```
/// use std::time::Duration;
/// use pulse_proxy::ProxyConfig;
///
/// let config = ProxyConfig::new("http://127.0.0.1:8001".parse()?)?
///     .with_prefix_rewrite("/api/etl/", "/api/v1/")
///     .with_response_timeout(Duration::from_secs(10))
///     .with_total_timeout(Duration::from_secs(60))
///     .with_max_request_body(1024 * 1024);
/// assert_eq!(config.upstream_authority(), "127.0.0.1:8001");
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    pub(crate) upstream_host: HeaderValue,
    pub(crate) rewrite: Option<PrefixRewrite>,
    pub(crate) host: HostPolicy,
    pub(crate) forwarded: ForwardedPolicy,
    pub(crate) max_request_body: u64,
    pub(crate) response_timeout: Option<Duration>,
    pub(crate) total_timeout: Option<Duration>,
    pub(crate) upgrades: bool,
    pub(crate) forward_authorization: bool,
}

impl ProxyConfig {
    /// Forward to `upstream` (`http://host:port`; any path in it is ignored).
    pub fn new(upstream: Uri) -> Result<Self, InvalidUpstream> {
        let parts = upstream.into_parts();
        let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
            return Err(InvalidUpstream);
        };
        let upstream_host =
            HeaderValue::from_str(authority.as_str()).map_err(|_| InvalidUpstream)?;
        Ok(Self {
            scheme,
            authority,
            upstream_host,
            rewrite: None,
            host: HostPolicy::default(),
            forwarded: ForwardedPolicy::default(),
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
            response_timeout: Some(DEFAULT_RESPONSE_TIMEOUT),
            total_timeout: None,
            upgrades: false,
            forward_authorization: false,
        })
    }

    /// Forward paths under `from` to the same path under `to`, and answer 404 for any
    /// other path (default: paths are forwarded unchanged).
    #[must_use]
    pub fn with_prefix_rewrite(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.rewrite = Some(PrefixRewrite::new(from, to));
        self
    }

    /// What `Host` the upstream sees (default: the upstream's authority).
    #[must_use]
    pub fn with_host(mut self, host: HostPolicy) -> Self {
        self.host = host;
        self
    }

    /// Which inbound forwarding headers to believe (default: none).
    #[must_use]
    pub fn with_forwarded(mut self, policy: ForwardedPolicy) -> Self {
        self.forwarded = policy;
        self
    }

    /// The largest request body forwarded; larger ones get 413 (default 10 MiB).
    #[must_use]
    pub const fn with_max_request_body(mut self, bytes: u64) -> Self {
        self.max_request_body = bytes;
        self
    }

    /// How long to wait for the upstream's response headers (default 30 s).
    #[must_use]
    pub const fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = Some(timeout);
        self
    }

    /// Wait for the response headers without a time limit.
    #[must_use]
    pub const fn without_response_timeout(mut self) -> Self {
        self.response_timeout = None;
        self
    }

    /// A deadline for the whole exchange, the response body included (default none).
    /// A body still streaming at the deadline is cut off with an error.
    #[must_use]
    pub const fn with_total_timeout(mut self, timeout: Duration) -> Self {
        self.total_timeout = Some(timeout);
        self
    }

    /// Forward `Connection: upgrade` requests (WebSocket and other HTTP/1.1 upgrades):
    /// the upstream must answer 101 first, then the client gets its 101 and the two
    /// connections are spliced (default off: the upgrade headers are dropped as
    /// hop-by-hop). Needs a transport whose responses carry hyper's upgrade handle.
    #[must_use]
    pub const fn with_upgrades(mut self, enabled: bool) -> Self {
        self.upgrades = enabled;
        self
    }

    /// Forward the client's `Authorization` header (default off: the upstream gets the
    /// verified identity and the internal credential, never the user's bearer token).
    #[must_use]
    pub const fn with_forward_authorization(mut self, enabled: bool) -> Self {
        self.forward_authorization = enabled;
        self
    }

    /// The upstream's `host:port`.
    pub fn upstream_authority(&self) -> &str {
        self.authority.as_str()
    }

    /// The prefix rewrite, if any.
    pub const fn prefix_rewrite(&self) -> Option<&PrefixRewrite> {
        self.rewrite.as_ref()
    }

    /// The request-body limit in bytes.
    pub const fn max_request_body(&self) -> u64 {
        self.max_request_body
    }

    /// The time-to-headers timeout.
    pub const fn response_timeout(&self) -> Option<Duration> {
        self.response_timeout
    }

    /// The total deadline.
    pub const fn total_timeout(&self) -> Option<Duration> {
        self.total_timeout
    }

    /// Whether upgrades are forwarded.
    pub const fn upgrades(&self) -> bool {
        self.upgrades
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_upstream_is_rejected() {
        assert_eq!(
            ProxyConfig::new("/api".parse().unwrap()).unwrap_err(),
            InvalidUpstream
        );
        let c = ProxyConfig::new("http://etl:8001/ignored".parse().unwrap()).unwrap();
        assert_eq!(c.upstream_authority(), "etl:8001");
        assert_eq!(c.response_timeout(), Some(DEFAULT_RESPONSE_TIMEOUT));
        assert!(!c.upgrades());
    }
}
