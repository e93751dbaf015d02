//! [`KeyRing`]: shared secrets with ids, compared in constant time.

use std::{
    fmt,
    path::Path,
    sync::{Arc, PoisonError, RwLock},
};

use http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use super::{
    Authenticated, Caller, CallerKind, CredentialOutcome, CredentialVerifier, X_INTERNAL_AUTH,
};

/// The environment variable Pulse services read their key ring from
/// (`id:secret,id:secret`, the first entry being the key sent).
pub const INTERNAL_KEYS_ENV: &str = "PULSE_INTERNAL_KEYS";

/// The shortest internal key accepted: 32 bytes.
pub const MIN_INTERNAL_KEY_BYTES: usize = 32;

/// A key ring could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRingError {
    /// A key shorter than [`MIN_INTERNAL_KEY_BYTES`]; the message names its id only.
    #[error("internal key {id:?} is {len} bytes, at least {min} are required")]
    KeyTooShort {
        /// The key's id.
        id: String,
        /// The length given.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// A key with characters that cannot travel in a header (only visible ASCII
    /// without `,` is allowed).
    #[error("internal key {id:?} has characters other than visible ASCII without ','")]
    InvalidKey {
        /// The key's id.
        id: String,
    },
    /// An entry that is not `id:secret`, or an empty or invalid id.
    #[error("key entry {position} is not `id:secret` with an id of [A-Za-z0-9._-]")]
    InvalidEntry {
        /// The 1-based position of the entry.
        position: usize,
    },
    /// The same id twice.
    #[error("key id {0:?} appears twice")]
    DuplicateId(String),
    /// No key at all.
    #[error("no internal key configured")]
    Empty,
    /// The environment variable is not set or not UTF-8.
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    /// The key file could not be read.
    #[error("reading the key file failed: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone)]
struct RingKey {
    id: Arc<str>,
    digest: [u8; 32],
    value: HeaderValue,
}

/// Several active shared secrets, each with an id, for `X-Internal-Auth`.
///
/// The first key is the one a service sends ([`KeyRing::primary`]); every key is
/// accepted. Rotation without downtime: [`insert`](KeyRing::insert) the new key on
/// every receiver, [`set_primary`](KeyRing::set_primary) it on the senders,
/// [`remove`](KeyRing::remove) the old one. Clones share the same ring.
///
/// A presented secret is hashed with SHA-256 and compared with every key's digest in
/// constant time, without early exit, so neither which key matched nor any key's
/// length leaks through timing. `Debug` prints ids only; header values built from the
/// ring are marked sensitive.
///
/// ```
/// use pulse_core::internal_auth::KeyRing;
///
/// let ring = KeyRing::parse("k2:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb,k1:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")?;
/// assert_eq!(ring.primary().map(|(id, _)| id), Some("k2".into()));
/// assert_eq!(ring.verify(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").as_deref(), Some("k1"));
/// assert_eq!(ring.verify(b"wrong"), None);
/// assert!(!format!("{ring:?}").contains("aaaa"));
/// assert!(KeyRing::parse("k:short").is_err());
/// # Ok::<(), pulse_core::internal_auth::KeyRingError>(())
/// ```
#[derive(Clone, Default)]
pub struct KeyRing {
    keys: Arc<RwLock<Vec<RingKey>>>,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl KeyRing {
    /// An empty ring (which verifies nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Parse `id:secret,id:secret,…` (the format of `PULSE_INTERNAL_KEYS`); entries
    /// may also be separated by newlines; blank entries and lines starting with `#`
    /// are skipped. The first entry is the primary key.
    pub fn parse(spec: &str) -> Result<Self, KeyRingError> {
        let ring = Self::new();
        // A comment is a whole line: its text may hold commas.
        let entries = spec
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty() && !e.starts_with('#'));
        for (i, entry) in entries.enumerate() {
            let (id, secret) = entry
                .split_once(':')
                .ok_or(KeyRingError::InvalidEntry { position: i + 1 })?;
            let id = id.trim();
            if !valid_id(id) {
                return Err(KeyRingError::InvalidEntry { position: i + 1 });
            }
            if ring.contains(id) {
                return Err(KeyRingError::DuplicateId(id.to_owned()));
            }
            ring.insert(id, secret.trim())?;
        }
        if ring.is_empty() {
            return Err(KeyRingError::Empty);
        }
        Ok(ring)
    }

    /// Parse the environment variable `var` (usually [`INTERNAL_KEYS_ENV`]).
    pub fn from_env(var: &str) -> Result<Self, KeyRingError> {
        let spec = std::env::var(var).map_err(|_| KeyRingError::MissingEnv(var.to_owned()))?;
        Self::parse(&spec)
    }

    /// Parse a file in the [`KeyRing::parse`] format.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KeyRingError> {
        Self::parse(&std::fs::read_to_string(path)?)
    }

    /// Add a key at the end of the ring, or replace the secret of an existing id in
    /// place. The secret must be at least [`MIN_INTERNAL_KEY_BYTES`] of visible ASCII
    /// without `,`.
    pub fn insert(&self, id: &str, secret: impl AsRef<[u8]>) -> Result<(), KeyRingError> {
        let secret = secret.as_ref();
        if !valid_id(id) {
            return Err(KeyRingError::InvalidEntry { position: 1 });
        }
        if secret.len() < MIN_INTERNAL_KEY_BYTES {
            return Err(KeyRingError::KeyTooShort {
                id: id.to_owned(),
                len: secret.len(),
                min: MIN_INTERNAL_KEY_BYTES,
            });
        }
        if !secret.iter().all(|b| b.is_ascii_graphic() && *b != b',') {
            return Err(KeyRingError::InvalidKey { id: id.to_owned() });
        }
        let mut value = HeaderValue::from_bytes(secret)
            .map_err(|_| KeyRingError::InvalidKey { id: id.to_owned() })?;
        value.set_sensitive(true);
        let key = RingKey {
            id: Arc::from(id),
            digest: Sha256::digest(secret).into(),
            value,
        };
        let mut keys = self.write();
        match keys.iter_mut().find(|k| &*k.id == id) {
            Some(existing) => *existing = key,
            None => keys.push(key),
        }
        Ok(())
    }

    /// Make the key `id` the one sent; whether it is in the ring.
    pub fn set_primary(&self, id: &str) -> bool {
        let mut keys = self.write();
        match keys.iter().position(|k| &*k.id == id) {
            Some(pos) => {
                let key = keys.remove(pos);
                keys.insert(0, key);
                true
            }
            None => false,
        }
    }

    /// Remove the key `id`; whether it was in the ring.
    pub fn remove(&self, id: &str) -> bool {
        let mut keys = self.write();
        let before = keys.len();
        keys.retain(|k| &*k.id != id);
        keys.len() != before
    }

    /// Whether the ring holds a key with this id.
    pub fn contains(&self, id: &str) -> bool {
        self.read().iter().any(|k| &*k.id == id)
    }

    /// The key ids, primary first.
    pub fn ids(&self) -> Vec<Arc<str>> {
        self.read().iter().map(|k| Arc::clone(&k.id)).collect()
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// The key a service sends: its id and its secret as a sensitive header value.
    pub fn primary(&self) -> Option<(Arc<str>, HeaderValue)> {
        self.read()
            .first()
            .map(|k| (Arc::clone(&k.id), k.value.clone()))
    }

    /// The id of the key `presented` equals, if any; constant time over the ring.
    pub fn verify(&self, presented: &[u8]) -> Option<Arc<str>> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let keys = self.read();
        let mut matched = Choice::from(0);
        let mut index = 0u64;
        for (i, key) in keys.iter().enumerate() {
            let equal = key.digest.ct_eq(&digest);
            index = u64::conditional_select(&index, &(i as u64), equal);
            matched |= equal;
        }
        if bool::from(matched) {
            usize::try_from(index)
                .ok()
                .and_then(|i| keys.get(i))
                .map(|k| Arc::clone(&k.id))
        } else {
            None
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<RingKey>> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<RingKey>> {
        self.keys.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl CredentialVerifier for KeyRing {
    fn remove_credential(&self, headers: &mut HeaderMap) {
        headers.remove(X_INTERNAL_AUTH);
    }

    fn verify(&self, headers: &HeaderMap) -> CredentialOutcome {
        let mut values = headers.get_all(&X_INTERNAL_AUTH).iter();
        match (values.next(), values.next()) {
            (None, _) => CredentialOutcome::Absent,
            (Some(value), None) => match KeyRing::verify(self, value.as_bytes()) {
                Some(id) => CredentialOutcome::Valid(Authenticated::new(Caller::new(
                    id.to_string(),
                    CallerKind::Key,
                ))),
                None => CredentialOutcome::Invalid,
            },
            (Some(_), Some(_)) => CredentialOutcome::Invalid,
        }
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing").field("ids", &self.ids()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn parse_errors() {
        assert!(matches!(KeyRing::parse(""), Err(KeyRingError::Empty)));
        assert!(matches!(
            KeyRing::parse("nocolon"),
            Err(KeyRingError::InvalidEntry { position: 1 })
        ));
        assert!(matches!(
            KeyRing::parse(&format!("a:{A},a:{B}")),
            Err(KeyRingError::DuplicateId(_))
        ));
        assert!(matches!(
            KeyRing::parse("a:short"),
            Err(KeyRingError::KeyTooShort { len: 5, .. })
        ));
        assert!(matches!(
            KeyRing::parse(&format!("bad id:{A}")),
            Err(KeyRingError::InvalidEntry { .. })
        ));
    }

    #[test]
    fn error_messages_never_contain_secrets() {
        let err = KeyRing::parse("k:secret-but-short").unwrap_err();
        assert!(!err.to_string().contains("secret-but-short"));
    }

    #[test]
    fn file_format_allows_lines_and_comments() {
        let ring = KeyRing::parse(&format!("# rotation 2026\nk2:{B}\n\nk1:{A}\n")).unwrap();
        assert_eq!(ring.ids(), vec![Arc::from("k2"), Arc::from("k1")]);
        // A comment may hold commas (it used to be split into bogus entries).
        let ring = KeyRing::parse(&format!(
            "# rotation: k2 sends, k1 still accepted, until 2026-12-06\nk2:{B}\nk1:{A}\n"
        ))
        .unwrap();
        assert_eq!(ring.ids(), vec![Arc::from("k2"), Arc::from("k1")]);
    }

    #[test]
    fn rotation() {
        let ring = KeyRing::parse(&format!("old:{A}")).unwrap();
        ring.insert("new", B).unwrap();
        assert!(ring.set_primary("new"));
        assert_eq!(&*ring.primary().unwrap().0, "new");
        assert_eq!(ring.verify(A.as_bytes()).as_deref(), Some("old"));
        assert!(ring.remove("old"));
        assert_eq!(ring.verify(A.as_bytes()), None);
        assert_eq!(ring.verify(B.as_bytes()).as_deref(), Some("new"));
    }

    #[test]
    fn primary_value_is_sensitive() {
        let ring = KeyRing::parse(&format!("k:{A}")).unwrap();
        assert!(ring.primary().unwrap().1.is_sensitive());
    }

    #[test]
    fn prefix_and_extension_of_a_key_do_not_match() {
        let ring = KeyRing::parse(&format!("k:{A}")).unwrap();
        assert_eq!(ring.verify(&A.as_bytes()[..35]), None);
        assert_eq!(ring.verify(format!("{A}a").as_bytes()), None);
        assert_eq!(ring.verify(b""), None);
    }
}
