//! Fixed-size, keyed throttle keys: what a login attempt is counted under.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A fixed-size throttle key: an HMAC-SHA-256 of what is counted, never the raw input.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ThrottleKey([u8; 32]);

impl std::fmt::Debug for ThrottleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A short prefix is enough to tell keys apart in a test failure.
        write!(
            f,
            "ThrottleKey({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

impl ThrottleKey {
    /// Lower-case hex, for a shared store's key names.
    pub fn to_hex(self) -> String {
        use std::fmt::Write;
        self.0
            .iter()
            .fold(String::with_capacity(64), |mut out, byte| {
                let _ = write!(out, "{byte:02x}");
                out
            })
    }
}

/// The three keys one login attempt is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptKeys {
    /// This account from this client address: refused after a few failures.
    pub pair: ThrottleKey,
    /// This client address, whatever the account: refused after many failures.
    pub client: ThrottleKey,
    /// This account from anywhere: only ever slowed down.
    pub account: ThrottleKey,
}

/// Derives [`ThrottleKey`]s with a secret key, so that a dump of the store (or of a
/// shared Redis) does not list who tried to sign in, and keys cannot be precomputed.
#[derive(Clone)]
pub struct ThrottleKeys {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for ThrottleKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ThrottleKeys { .. }")
    }
}

impl ThrottleKeys {
    /// Keys derived from `secret` (every gateway sharing a store must use the same one).
    pub fn new(secret: &[u8]) -> Self {
        // Domain separation: the secret may also serve another purpose (e.g. signing).
        let mut derive = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        derive.update(b"pulse login throttle v1");
        let key = derive.finalize().into_bytes();
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        Self { mac }
    }

    /// The keys of an attempt on `account` (already normalised: trimmed, lower-cased)
    /// from `client`.
    pub fn for_attempt(&self, account: &str, client: IpAddr) -> AttemptKeys {
        let account = self.key(b"account", &[account.as_bytes()]);
        let client_bytes = client_bucket(client);
        let client = self.key(b"client", &[&client_bytes]);
        let pair = self.key(b"pair", &[&account.0, &client.0]);
        AttemptKeys {
            pair,
            client,
            account,
        }
    }

    fn key(&self, kind: &[u8], parts: &[&[u8]]) -> ThrottleKey {
        let mut mac = self.mac.clone();
        mac.update(kind);
        for part in parts {
            // Length-prefixed, so that no two different inputs hash the same bytes.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        ThrottleKey(mac.finalize().into_bytes().into())
    }
}

/// What a client address is counted as: an IPv4 address (also when IPv4-mapped), or an
/// IPv6 /64 — one subscriber usually holds a whole /64, so counting single IPv6
/// addresses would give them 2^64 fresh budgets.
fn client_bucket(client: IpAddr) -> [u8; 17] {
    let mut bucket = [0u8; 17];
    match client {
        IpAddr::V4(v4) => {
            bucket[0] = 4;
            bucket[1..5].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => {
                bucket[0] = 4;
                bucket[1..5].copy_from_slice(&v4.octets());
            }
            None => {
                bucket[0] = 6;
                bucket[1..9].copy_from_slice(&v6.octets()[..8]);
            }
        },
    }
    bucket
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

    #[test]
    fn keys_are_fixed_size_and_do_not_hold_the_input() {
        assert_eq!(std::mem::size_of::<ThrottleKey>(), 32);
        let keys = ThrottleKeys::new(b"secret");
        let long = "a".repeat(1 << 20);
        let a = keys.for_attempt(&long, STRANGER);
        let b = keys.for_attempt(&format!("{long}b"), STRANGER);
        assert_ne!(a.account, b.account);
        assert_ne!(a.pair, b.pair);
        assert_eq!(a.client, b.client);
        // Another secret, other keys: they cannot be precomputed.
        assert_ne!(ThrottleKeys::new(b"other").for_attempt(&long, STRANGER), a);
    }

    #[test]
    fn ipv6_clients_count_per_64_and_mapped_ipv4_as_ipv4() {
        let keys = ThrottleKeys::new(b"secret");
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let client = |ip| keys.for_attempt("a@b", ip).client;
        assert_eq!(client(one), client(same_64));
        assert_ne!(client(one), client(other_64));
        let mapped = IpAddr::V6(Ipv4Addr::new(127, 0, 0, 2).to_ipv6_mapped());
        assert_eq!(client(mapped), client(STRANGER));
        assert_ne!(client(IpAddr::V6(Ipv6Addr::LOCALHOST)), client(STRANGER));
    }
}
