//! [`VerifiedTokenCache`]: verify each token once on hot paths.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use moka::{Expiry, sync::Cache};
use sha2::{Digest, Sha256};

use super::{Claims, claims::unix_seconds};
use crate::identity::Identity;

/// A cache of verified tokens, keyed by the SHA-256 of the token (the token itself
/// is never stored), each entry evicted when its token expires.
///
/// Attach it with [`JwtVerifier::with_cache`](super::JwtVerifier::with_cache). Clones
/// share the same entries.
///
/// ```
/// use pulse_core::{Identity, jwt::{JwtVerifier, SigningKey, TokenIssuer, VerificationKey, VerifiedTokenCache}};
///
/// let secret = [7u8; 32];
/// let cache = VerifiedTokenCache::new(10_000);
/// let verifier = JwtVerifier::new(VerificationKey::hmac(secret)?).with_cache(cache.clone());
/// let token = TokenIssuer::new(SigningKey::hmac(secret)?).issue(&Identity::new("u1"))?;
///
/// verifier.verify(&token.access_token)?;
/// cache.run_pending_tasks();
/// assert_eq!(cache.entry_count(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct VerifiedTokenCache {
    entries: Cache<[u8; 32], Entry>,
}

#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) identity: Identity,
    /// For the revocation check, which runs on cache hits too.
    pub(crate) claims: Arc<Claims>,
    pub(crate) exp: u64,
}

struct UntilExpiry;

impl Expiry<[u8; 32], Entry> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Entry,
        _created_at: Instant,
    ) -> Option<Duration> {
        let now = unix_seconds(SystemTime::now());
        Some(Duration::from_secs(value.exp.saturating_sub(now)))
    }
}

impl VerifiedTokenCache {
    /// A cache holding at most `max_entries` tokens.
    pub fn new(max_entries: u64) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(max_entries)
                .expire_after(UntilExpiry)
                .build(),
        }
    }

    fn key(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    pub(crate) fn get(&self, token: &str) -> Option<Entry> {
        self.entries.get(&Self::key(token))
    }

    pub(crate) fn insert(&self, token: &str, identity: Identity, claims: Arc<Claims>, exp: u64) {
        self.entries.insert(
            Self::key(token),
            Entry {
                identity,
                claims,
                exp,
            },
        );
    }

    /// Forget every token (e.g. after removing a key).
    pub fn clear(&self) {
        self.entries.invalidate_all();
    }

    /// The number of cached tokens (approximate until [`Self::run_pending_tasks`]).
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Apply pending evictions and counts now (they otherwise happen lazily).
    pub fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks();
    }
}

impl fmt::Debug for VerifiedTokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedTokenCache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}
