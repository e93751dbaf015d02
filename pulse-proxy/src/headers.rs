//! Steps 3, 4 and 7: header hygiene on the way in and out, and what the proxy injects.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName, HeaderValue, header};
use pulse_core::{
    Identity,
    request_id::{X_CORRELATION_ID, X_REQUEST_ID},
};

/// `x-user-id`: the verified user id, injected by the proxy.
pub const X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
/// `x-user-email`: the verified user's e-mail, injected by the proxy when known.
pub const X_USER_EMAIL: HeaderName = HeaderName::from_static("x-user-email");
/// `x-forwarded-for`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-forwarded-host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `x-real-ip`.
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The address of the client that opened the connection, put into request extensions
/// by the server (with the `axum` feature, axum's `ConnectInfo<SocketAddr>` is read
/// too). Without it the proxy adds no `X-Forwarded-For` entry of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);

/// What `Host` the upstream sees.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostPolicy {
    /// The upstream's own authority (the default): the upstream routes by the name it
    /// knows itself by, not by the public one.
    #[default]
    Upstream,
    /// The client's `Host`, unchanged (it is still sent as `X-Forwarded-Host`).
    Preserve,
    /// A fixed value.
    Fixed(HeaderValue),
}

/// How much of the client's `X-Forwarded-For` / `Forwarded` chain to believe.
///
/// With `trusted_hops = 0` (the default) every forwarding header the client sent is
/// dropped: the chain the upstream sees starts with the connection's peer address.
/// With `n > 0`, `n` trusted proxies stand in front of this one; the rightmost `n`
/// entries of the inbound chain were written by them and are kept, anything left of
/// them was written by the client and is dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardedPolicy {
    trusted_hops: usize,
    proto: HeaderValue,
    forwarded: bool,
}

impl Default for ForwardedPolicy {
    fn default() -> Self {
        Self {
            trusted_hops: 0,
            proto: HeaderValue::from_static("http"),
            forwarded: true,
        }
    }
}

impl ForwardedPolicy {
    /// Trust no inbound forwarding header.
    pub fn untrusted() -> Self {
        Self::default()
    }

    /// Trust the entries written by `hops` proxies in front of this one.
    #[must_use]
    pub fn with_trusted_hops(mut self, hops: usize) -> Self {
        self.trusted_hops = hops;
        self
    }

    /// The scheme reported in `X-Forwarded-Proto` and `Forwarded: proto=` (default
    /// `http`; set `https` when TLS terminates in front of or at this proxy).
    #[must_use]
    pub fn with_proto(mut self, proto: &'static str) -> Self {
        self.proto = HeaderValue::from_static(proto);
        self
    }

    /// Whether to send the RFC 7239 `Forwarded` header besides the `X-Forwarded-*`
    /// ones (default `true`).
    #[must_use]
    pub const fn with_forwarded_header(mut self, enabled: bool) -> Self {
        self.forwarded = enabled;
        self
    }

    /// The number of trusted hops.
    pub const fn trusted_hops(&self) -> usize {
        self.trusted_hops
    }

    /// Rewrite the forwarding headers of an outbound request.
    pub(crate) fn apply(
        &self,
        headers: &mut HeaderMap,
        peer: Option<IpAddr>,
        original_host: Option<&HeaderValue>,
    ) {
        // Sized for a hop or two: one allocation each in the common case.
        let mut xff = String::with_capacity(48);
        let mut fwd = String::new();
        let mut proto = None;
        let mut host = None;
        if self.trusted_hops > 0 {
            for ip in rightmost(headers, &X_FORWARDED_FOR, self.trusted_hops) {
                if ip.parse::<IpAddr>().is_ok() {
                    push_list(&mut xff, ip);
                }
            }
            if self.forwarded {
                for element in rightmost(headers, &header::FORWARDED, self.trusted_hops) {
                    if element.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
                        push_list(&mut fwd, element);
                    }
                }
            }
            proto = single(headers, &X_FORWARDED_PROTO).cloned();
            host = single(headers, &X_FORWARDED_HOST).cloned();
        }
        // Every spelling (`X_Forwarded_For`, `x.real.ip`, …) goes, not only these names.
        pulse_core::headers::strip_forwarded(headers);
        let proto = proto.unwrap_or_else(|| self.proto.clone());
        let host = host.or_else(|| original_host.cloned());
        if let Some(ip) = peer {
            // Written in place: no string per address or element.
            start_item(&mut xff);
            push_ip(&mut xff, ip);
            if self.forwarded {
                fwd.reserve(96);
                start_item(&mut fwd);
                match ip {
                    IpAddr::V4(_) => {
                        fwd.push_str("for=");
                        push_ip(&mut fwd, ip);
                    }
                    IpAddr::V6(_) => {
                        fwd.push_str("for=\"[");
                        push_ip(&mut fwd, ip);
                        fwd.push_str("]\"");
                    }
                }
                if let Ok(p) = proto.to_str() {
                    fwd.push_str(";proto=");
                    fwd.push_str(p);
                }
                if let Some(h) = host.as_ref().and_then(|h| h.to_str().ok()) {
                    fwd.push_str(";host=\"");
                    fwd.push_str(h);
                    fwd.push('"');
                }
            }
        }
        if !xff.is_empty()
            && let Ok(v) = HeaderValue::try_from(xff)
        {
            headers.insert(X_FORWARDED_FOR, v);
        }
        if !fwd.is_empty()
            && let Ok(v) = HeaderValue::try_from(fwd)
        {
            headers.insert(header::FORWARDED, v);
        }
        headers.insert(X_FORWARDED_PROTO, proto);
        if let Some(h) = host {
            headers.insert(X_FORWARDED_HOST, h);
        }
    }
}

/// An address as `Display` writes it. IPv4, the common case, digit by digit: the
/// formatter's machinery costs about 2k instructions per address, this under 150.
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

fn push_list(list: &mut String, item: &str) {
    start_item(list);
    list.push_str(item);
}

/// The separator before a list's next item, if it has one already.
fn start_item(list: &mut String) {
    if !list.is_empty() {
        list.push_str(", ");
    }
}

/// The rightmost `n` comma-separated elements over all lines of a header, in order.
fn rightmost<'a>(headers: &'a HeaderMap, name: &HeaderName, n: usize) -> Vec<&'a str> {
    let mut all: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let skip = all.len().saturating_sub(n);
    all.drain(..skip);
    all
}

fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => Some(v),
        _ => None,
    }
}

/// The client's address, from [`ClientAddr`] or (feature `axum`) `ConnectInfo`.
pub(crate) fn client_ip(extensions: &http::Extensions) -> Option<IpAddr> {
    if let Some(ClientAddr(addr)) = extensions.get::<ClientAddr>() {
        return Some(addr.ip());
    }
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0.ip());
    }
    None
}

/// Steps 3 and 4a: drop every hop-by-hop header (the standard set and whatever each
/// `Connection` line names) and every reserved internal header, in all spellings,
/// before anything is injected.
pub(crate) fn strip_inbound(headers: &mut HeaderMap, forward_authorization: bool) {
    strip_hop_by_hop_headers(headers);
    strip_reserved_headers(headers);
    if !forward_authorization {
        headers.remove(header::AUTHORIZATION);
    }
}

/// Step 4b: the identity and correlation headers, with insert (never append).
pub(crate) fn inject_identity(
    headers: &mut HeaderMap,
    identity: Option<&Identity>,
    request_id: &HeaderValue,
) {
    if let Some(identity) = identity {
        match HeaderValue::from_str(&identity.subject) {
            Ok(v) => {
                headers.insert(X_USER_ID, v);
            }
            Err(_) => tracing::warn!("identity subject is not a valid header value; not forwarded"),
        }
        if let Some(email) = identity
            .email
            .as_deref()
            .and_then(|e| HeaderValue::from_str(e).ok())
        {
            headers.insert(X_USER_EMAIL, email);
        }
    }
    set_request_id(headers, request_id);
}

/// `X-Request-ID` and `X-Correlation-ID`, as `RequestId::set_on` writes them, from a
/// value computed once per request.
fn set_request_id(headers: &mut HeaderMap, request_id: &HeaderValue) {
    headers.insert(X_CORRELATION_ID, request_id.clone());
    headers.insert(X_REQUEST_ID, request_id.clone());
}

/// Step 7: the response loses hop-by-hop and internal headers and echoes the id.
pub(crate) fn filter_response(headers: &mut HeaderMap, request_id: &HeaderValue) {
    strip_hop_by_hop_headers(headers);
    strip_reserved_headers(headers);
    set_request_id(headers, request_id);
}

/// Whether the request asks for a protocol upgrade (`Connection: upgrade` on any line
/// and an `Upgrade` header); returns the `Upgrade` value.
pub(crate) fn upgrade_request(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if asks {
        single(headers, &header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Whether any `TE` line lists `trailers`.
pub(crate) fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
}

/// Hop-by-hop stripping that keeps `Trailer`: it is end-to-end since RFC 7230, and
/// hyper sends only the trailer fields a message's `Trailer` header declares.
fn strip_hop_by_hop_headers(headers: &mut HeaderMap) {
    if headers.contains_key(header::TRAILER) {
        let declared: Vec<HeaderValue> = headers.get_all(header::TRAILER).iter().cloned().collect();
        pulse_core::headers::strip_hop_by_hop(headers);
        for value in declared {
            headers.append(header::TRAILER, value);
        }
    } else {
        pulse_core::headers::strip_hop_by_hop(headers);
    }
}

fn strip_reserved_headers(headers: &mut HeaderMap) {
    pulse_core::headers::strip_reserved(headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let octets = [0u8, 1, 9, 10, 42, 99, 100, 109, 110, 199, 200, 250, 255];
        let mut out = String::new();
        for a in octets {
            for b in octets {
                let ip = IpAddr::from([a, b, 255 - a, b / 2]);
                out.clear();
                push_ip(&mut out, ip);
                assert_eq!(out, ip.to_string());
            }
        }
        for ip in ["::1", "2001:db8::7", "::ffff:10.0.0.1", "fe80::1:2:3:4"] {
            let ip: IpAddr = ip.parse().expect("valid address");
            out.clear();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string());
        }
    }

    #[test]
    fn untrusted_chain_is_replaced_by_the_peer() {
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, hv("6.6.6.6"));
        h.append(header::FORWARDED, hv("for=6.6.6.6"));
        h.append(X_REAL_IP, hv("6.6.6.6"));
        h.append(X_FORWARDED_PROTO, hv("https"));
        h.append(HeaderName::from_static("x_forwarded_for"), hv("6.6.6.6"));
        h.append(HeaderName::from_static("x.real.ip"), hv("6.6.6.6"));
        ForwardedPolicy::default().apply(
            &mut h,
            Some("10.0.0.1".parse().unwrap()),
            Some(&hv("gw")),
        );
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.1");
        assert_eq!(h[header::FORWARDED], "for=10.0.0.1;proto=http;host=\"gw\"");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[X_FORWARDED_HOST], "gw");
        assert!(h.get(X_REAL_IP).is_none());
        assert!(h.get("x_forwarded_for").is_none());
        assert!(h.get("x.real.ip").is_none());
    }

    #[test]
    fn trusted_hops_keep_only_the_rightmost_entries() {
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, hv("6.6.6.6, 1.1.1.1"));
        h.append(X_FORWARDED_FOR, hv("2.2.2.2"));
        ForwardedPolicy::default()
            .with_trusted_hops(2)
            .with_forwarded_header(false)
            .apply(&mut h, Some("::1".parse().unwrap()), None);
        assert_eq!(h[X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, ::1");
        assert!(h.get(header::FORWARDED).is_none());
    }

    #[test]
    fn no_peer_and_no_trust_means_no_chain() {
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, hv("6.6.6.6"));
        ForwardedPolicy::default().apply(&mut h, None, None);
        assert!(h.get(X_FORWARDED_FOR).is_none());
    }

    #[test]
    fn upgrade_detection_reads_every_connection_line() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, hv(""));
        h.append(header::CONNECTION, hv("keep-alive, Upgrade"));
        h.append(header::UPGRADE, hv("websocket"));
        assert_eq!(upgrade_request(&h), Some(hv("websocket")));
        h.remove(header::UPGRADE);
        assert_eq!(upgrade_request(&h), None);
    }
}
