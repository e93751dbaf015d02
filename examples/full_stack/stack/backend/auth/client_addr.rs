//! Which client a login comes from: the TCP peer, or — only when the request comes
//! from an authenticated hop — the address that hop forwards.
//!
//! Every browser request reaches the gateway from the frontend's address. Trusting a
//! plain `X-Forwarded-For` from that address would let anyone on it choose their own
//! throttle bucket; ignoring it would throttle every browser user as one client. So the
//! frontend authenticates itself with the internal key ring both services share (it
//! sends `X-Internal-Auth` with the ring's primary key) and writes the browser's address
//! as the last `X-Forwarded-For` entry, after dropping whatever the browser sent. The
//! gateway believes that entry only when the key verifies.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::http::HeaderMap;
use pulse_core::internal_auth::{KeyRing, X_INTERNAL_AUTH};

/// `x-forwarded-for`.
const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// Resolves a request's client address (see the module docs).
#[derive(Clone, Debug)]
pub struct ClientAddrResolver {
    ring: KeyRing,
}

impl ClientAddrResolver {
    /// Trust forwarded addresses from hops presenting a key of `ring`.
    pub fn new(ring: KeyRing) -> Self {
        Self { ring }
    }

    /// The client of a request with `headers` over a connection from `peer`. Without a
    /// peer (a request that did not come over a socket) every such client is one bucket.
    pub fn resolve(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> IpAddr {
        let peer = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip());
        let authenticated = headers
            .get(X_INTERNAL_AUTH)
            .is_some_and(|key| self.ring.verify(key.as_bytes()).is_some());
        if !authenticated {
            return peer;
        }
        // The trusted hop appends the address it saw: the last entry of the last line.
        headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .next_back()
            .and_then(|line| line.to_str().ok())
            .and_then(|line| line.rsplit(',').next())
            .and_then(|entry| entry.trim().parse::<IpAddr>().ok())
            .unwrap_or(peer)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn resolver() -> ClientAddrResolver {
        ClientAddrResolver::new(KeyRing::parse(&format!("fe:{SECRET}")).unwrap())
    }

    fn peer() -> Option<SocketAddr> {
        Some("127.0.0.1:50000".parse().unwrap())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn a_plain_forwarded_address_is_ignored() {
        let h = headers(&[(X_FORWARDED_FOR, "203.0.113.9")]);
        assert_eq!(resolver().resolve(&h, peer()), IpAddr::from([127, 0, 0, 1]));
        let wrong_key = headers(&[
            ("x-internal-auth", "not-the-key-not-the-key-not-the-key"),
            (X_FORWARDED_FOR, "203.0.113.9"),
        ]);
        assert_eq!(
            resolver().resolve(&wrong_key, peer()),
            IpAddr::from([127, 0, 0, 1])
        );
    }

    #[test]
    fn an_authenticated_hop_is_believed_for_its_own_last_entry() {
        let h = headers(&[
            ("x-internal-auth", SECRET),
            (X_FORWARDED_FOR, "198.51.100.1, 203.0.113.9"),
        ]);
        assert_eq!(
            resolver().resolve(&h, peer()),
            IpAddr::from([203, 0, 113, 9])
        );
        let v6 = headers(&[
            ("x-internal-auth", SECRET),
            (X_FORWARDED_FOR, "2001:db8::1"),
        ]);
        assert_eq!(
            resolver().resolve(&v6, peer()),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn an_authenticated_hop_without_a_usable_address_counts_as_its_peer() {
        for value in ["", "unknown", "203.0.113.9:1234, nonsense"] {
            let h = headers(&[("x-internal-auth", SECRET), (X_FORWARDED_FOR, value)]);
            assert_eq!(resolver().resolve(&h, peer()), IpAddr::from([127, 0, 0, 1]));
        }
        assert_eq!(
            resolver().resolve(&HeaderMap::new(), None),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        );
    }
}
