//! Header hygiene: strip hop-by-hop headers and the reserved headers that only Pulse
//! itself may set.
//!
//! - [`strip_hop_by_hop`] removes every header named by any `Connection` line, and the
//!   standard hop-by-hop set ([`HOP_BY_HOP`]).
//! - [`strip_reserved`] removes `X-Internal-*` and `X-User-*` in every spelling:
//!   header names are case-insensitive (and [`HeaderName`] is lower-case already),
//!   and many servers treat `_` and `.` like `-`, so `x_user_id` and `x.user.id` are
//!   the same header to them as `X-User-ID`.
//! - [`strip_forwarded`] removes `X-Forwarded-*`, `Forwarded` and `X-Real-IP` (same
//!   spellings), for requests that did not come from a trusted hop.
//!
//! Every value of a matched name goes, not only the first. All three are cheap when
//! there is nothing to remove: one pass over the names, no allocation.
//! [`HeaderHygiene`] bundles them into a policy and [`StripHeadersLayer`] applies it
//! to the requests (and optionally the responses) of a service.
//!
//! ```
//! use http::{HeaderMap, HeaderValue};
//! use pulse_core::headers::{strip_hop_by_hop, strip_reserved};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("x-user-id", HeaderValue::from_static("admin"));
//! headers.insert("x_user_id", HeaderValue::from_static("admin"));
//! headers.append("x.internal.auth", HeaderValue::from_static("guess-1"));
//! headers.append("x.internal.auth", HeaderValue::from_static("guess-2"));
//! headers.insert("connection", HeaderValue::from_static("close, x-secret"));
//! headers.insert("x-secret", HeaderValue::from_static("hop"));
//! headers.insert("accept", HeaderValue::from_static("application/json"));
//!
//! strip_reserved(&mut headers);
//! strip_hop_by_hop(&mut headers);
//!
//! assert_eq!(headers.len(), 1);
//! assert_eq!(headers["accept"], "application/json");
//! ```

mod layer;
#[cfg(test)]
mod tests;

pub use layer::{ResponseFuture, StripHeaders, StripHeadersLayer};

use http::{HeaderMap, HeaderName, header};

/// The standard hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy
/// `Keep-Alive` and `Proxy-Connection`).
pub const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Remove hop-by-hop headers: every header named in any `Connection` line (a
/// comma-separated list of names), then the standard set [`HOP_BY_HOP`], all values.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|line| line.as_bytes().split(|b| *b == b','))
            .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    // One pass over the names present is cheaper than hashing all nine for removal.
    remove_matching(headers, |name| HOP_BY_HOP.contains(name));
}

/// Remove every reserved header: `X-Internal-*` and `X-User-*` (also exactly
/// `X-Internal` and `X-User`), with `_` or `.` in place of any `-`, all values.
///
/// Clients must never be able to send these: services behind the gateway read the
/// caller's identity from them. See [`is_reserved`].
pub fn strip_reserved(headers: &mut HeaderMap) {
    remove_matching(headers, is_reserved);
}

/// Remove the headers by which a previous hop reports the client: `X-Forwarded-*`,
/// `X-Real-IP` (with `_`/`.` variants) and `Forwarded`, all values. Use it on requests
/// that did not come from a trusted proxy. See [`is_forwarded`].
pub fn strip_forwarded(headers: &mut HeaderMap) {
    remove_matching(headers, is_forwarded);
}

/// Whether `name` is a reserved header (see [`strip_reserved`]).
pub fn is_reserved(name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    x_prefixed(name, b"internal") || x_prefixed(name, b"user")
}

/// Whether `name` is a forwarding header (see [`strip_forwarded`]).
pub fn is_forwarded(name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    name == b"forwarded" || x_prefixed(name, b"forwarded") || spelled(name, b"x-real-ip")
}

/// Whether `name` is `x` SEP `word`, followed by nothing or by SEP, where SEP is any
/// of `-`, `_`, `.`.
fn x_prefixed(name: &[u8], word: &[u8]) -> bool {
    let rest = match name {
        [b'x', sep, rest @ ..] if is_separator(*sep) => rest,
        _ => return false,
    };
    match rest.strip_prefix(word) {
        Some([]) => true,
        Some([sep, ..]) => is_separator(*sep),
        _ => false,
    }
}

/// Whether `name` equals `canonical` (written with `-`), allowing `_` or `.` for `-`.
fn spelled(name: &[u8], canonical: &[u8]) -> bool {
    name.len() == canonical.len()
        && name
            .iter()
            .zip(canonical)
            .all(|(n, c)| n == c || (*c == b'-' && is_separator(*n)))
}

const fn is_separator(b: u8) -> bool {
    matches!(b, b'-' | b'_' | b'.')
}

/// Remove every name matching `pred`, allocating only when there is something to
/// remove.
fn remove_matching(headers: &mut HeaderMap, pred: fn(&HeaderName) -> bool) {
    if !headers.keys().any(pred) {
        return;
    }
    let doomed: Vec<HeaderName> = headers.keys().filter(|n| pred(n)).cloned().collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Which headers to strip. The default strips everything: hop-by-hop, reserved and
/// forwarding headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderHygiene {
    hop_by_hop: bool,
    trusted_forwarded: bool,
}

impl Default for HeaderHygiene {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderHygiene {
    /// Strip hop-by-hop, reserved and forwarding headers.
    pub const fn new() -> Self {
        Self {
            hop_by_hop: true,
            trusted_forwarded: false,
        }
    }

    /// Whether to strip hop-by-hop headers (default `true`). A server layer in front
    /// of a WebSocket route must keep `Connection`/`Upgrade`: pass `false` there.
    #[must_use]
    pub const fn with_hop_by_hop(mut self, strip: bool) -> Self {
        self.hop_by_hop = strip;
        self
    }

    /// Whether the previous hop is a trusted proxy whose `X-Forwarded-*`, `Forwarded`
    /// and `X-Real-IP` are kept (default `false`: they are stripped).
    #[must_use]
    pub const fn with_trusted_forwarded(mut self, trusted: bool) -> Self {
        self.trusted_forwarded = trusted;
        self
    }

    /// Apply the policy to a header map. Reserved headers are always stripped.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if self.hop_by_hop {
            strip_hop_by_hop(headers);
        }
        strip_reserved(headers);
        if !self.trusted_forwarded {
            strip_forwarded(headers);
        }
    }
}
