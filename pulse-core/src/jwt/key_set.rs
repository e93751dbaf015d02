//! Where verifiers find keys: the [`KeySource`] trait and [`KeySet`], a set of keys by
//! `kid` that can change at run time.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, RwLock},
    task::{Context, Poll},
};

use super::VerificationKey;

/// Where a verifier finds the key for a token.
///
/// [`KeySet`] holds configured keys; with the `jwks` feature, `JwksSource` holds keys
/// fetched from a URL.
#[cfg_attr(
    feature = "jwks",
    doc = "",
    doc = "See [`JwksSource`](super::JwksSource)."
)]
pub trait KeySource: Send + Sync + 'static {
    /// The key for this `kid`. A token without `kid` gets the only key when exactly
    /// one is configured, and none otherwise.
    fn key(&self, kid: Option<&str>) -> Option<VerificationKey>;

    /// Called when a token names a `kid` this source does not know. Sources that
    /// can refresh (JWKS) do so here, at a bounded rate and without blocking.
    fn on_unknown_kid(&self, kid: &str) {
        let _ = kid;
    }

    /// Called when a token names a `kid` this source does not know, by a caller that
    /// can wait ([`JwtVerifier::verify_async`](super::JwtVerifier::verify_async),
    /// [`JwtAuthLayer`](super::JwtAuthLayer)). A source that can refresh starts (or
    /// joins) a refetch and returns a [`KeyRefresh`] that ends with it, after which
    /// the caller looks the key up once more; `None` means "answer now".
    ///
    /// The default calls [`KeySource::on_unknown_kid`] and answers `None`.
    fn refresh_unknown_kid(&self, kid: &str) -> Option<KeyRefresh> {
        self.on_unknown_kid(kid);
        None
    }
}

/// A bounded wait for a key source's refetch (see [`KeySource::refresh_unknown_kid`]):
/// it ends when the refetch has ended, whether it replaced the keys or failed, or
/// when the source's bound on the wait has passed. Dropping it does not cancel the
/// refetch, which other requests may be waiting on.
pub struct KeyRefresh {
    wait: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl KeyRefresh {
    /// A wait that ends when `wait` does. The future must be bounded in time.
    pub fn new(wait: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            wait: Box::pin(wait),
        }
    }
}

impl Future for KeyRefresh {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.wait.as_mut().poll(cx)
    }
}

impl fmt::Debug for KeyRefresh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRefresh").finish_non_exhaustive()
    }
}

/// A set of verification keys by `kid`, changeable at run time for rotation without
/// downtime: add the new key, start signing with it, remove the old one once its
/// tokens have expired. Clones share the same set.
///
/// ```
/// use pulse_core::jwt::{KeySet, KeySource, VerificationKey};
///
/// let keys = KeySet::new()
///     .with_key(VerificationKey::hmac([1u8; 32]).unwrap().with_kid("old"));
/// keys.insert(VerificationKey::hmac([2u8; 32]).unwrap().with_kid("new"));
/// assert!(keys.key(Some("old")).is_some());
/// keys.remove("old");
/// assert!(keys.key(Some("old")).is_none());
/// assert!(keys.key(None).is_some()); // the only key left
/// ```
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Arc<RwLock<Keys>>,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<Arc<str>, VerificationKey>,
    /// A key configured without a `kid`; only tokens without `kid` can select it.
    unnamed: Option<VerificationKey>,
}

impl Keys {
    fn len(&self) -> usize {
        self.by_kid.len() + usize::from(self.unnamed.is_some())
    }
}

impl KeySet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a key (builder form of [`KeySet::insert`]).
    #[must_use]
    pub fn with_key(self, key: VerificationKey) -> Self {
        self.insert(key);
        self
    }

    /// Add or replace a key (by `kid`; a key without `kid` replaces the unnamed one).
    pub fn insert(&self, key: VerificationKey) {
        let mut keys = self.write();
        match key.kid.clone() {
            Some(kid) => {
                keys.by_kid.insert(kid, key);
            }
            None => keys.unnamed = Some(key),
        }
    }

    /// Remove the key with this `kid`; whether there was one.
    pub fn remove(&self, kid: &str) -> bool {
        self.write().by_kid.remove(kid).is_some()
    }

    /// Replace every key at once.
    pub fn replace_all(&self, new_keys: impl IntoIterator<Item = VerificationKey>) {
        let mut fresh = Keys::default();
        for key in new_keys {
            match key.kid.clone() {
                Some(kid) => {
                    fresh.by_kid.insert(kid, key);
                }
                None => fresh.unnamed = Some(key),
            }
        }
        *self.write() = fresh;
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key ids in the set.
    pub fn kids(&self) -> Vec<String> {
        self.read().by_kid.keys().map(|k| k.to_string()).collect()
    }

    // A poisoned lock only means a writer panicked mid-insert of a whole value; the
    // map is still consistent, so keep serving.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Keys> {
        self.keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl KeySource for KeySet {
    fn key(&self, kid: Option<&str>) -> Option<VerificationKey> {
        let keys = self.read();
        match kid {
            Some(kid) => keys.by_kid.get(kid).cloned(),
            None if keys.len() == 1 => keys
                .unnamed
                .clone()
                .or_else(|| keys.by_kid.values().next().cloned()),
            None => None,
        }
    }
}

/// A single key: selected by its own `kid`, or by a token without `kid`.
impl KeySource for VerificationKey {
    fn key(&self, kid: Option<&str>) -> Option<VerificationKey> {
        match (kid, self.kid()) {
            (None, _) => Some(self.clone()),
            (Some(asked), Some(own)) if asked == own => Some(self.clone()),
            (Some(_), _) => None,
        }
    }
}

impl<T: KeySource> KeySource for Arc<T> {
    fn key(&self, kid: Option<&str>) -> Option<VerificationKey> {
        (**self).key(kid)
    }

    fn on_unknown_kid(&self, kid: &str) {
        (**self).on_unknown_kid(kid);
    }

    fn refresh_unknown_kid(&self, kid: &str) -> Option<KeyRefresh> {
        (**self).refresh_unknown_kid(kid)
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.read();
        f.debug_struct("KeySet")
            .field("kids", &keys.by_kid.keys().collect::<Vec<_>>())
            .field("unnamed", &keys.unnamed.is_some())
            .finish()
    }
}

impl From<VerificationKey> for KeySet {
    fn from(key: VerificationKey) -> Self {
        Self::new().with_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_kid_selects_only_key_when_exactly_one() {
        let set = KeySet::new().with_key(VerificationKey::hmac([1u8; 32]).unwrap());
        assert!(set.key(None).is_some());
        assert!(set.key(Some("x")).is_none());
        set.insert(VerificationKey::hmac([2u8; 32]).unwrap().with_kid("x"));
        assert!(set.key(None).is_none());
        assert!(set.key(Some("x")).is_some());
    }
}
