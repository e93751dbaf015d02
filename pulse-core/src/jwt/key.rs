//! Keys, each pinned to one algorithm, and the sets verifiers pick them from.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, RwLock},
};

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};

use super::{KeyError, MIN_HMAC_SECRET_BYTES};

/// The longest `kid` a verifier looks up; longer ones are refused unread.
pub(crate) const MAX_KID_LEN: usize = 256;

const fn family_name(family: AlgorithmFamily) -> &'static str {
    match family {
        AlgorithmFamily::Hmac => "HMAC",
        AlgorithmFamily::Rsa => "RSA",
        AlgorithmFamily::Ec => "EC",
        AlgorithmFamily::Ed => "Ed25519",
    }
}

fn check_family(alg: Algorithm, family: AlgorithmFamily) -> Result<(), KeyError> {
    if alg.family() == family {
        Ok(())
    } else {
        Err(KeyError::AlgorithmMismatch {
            alg,
            family: family_name(family),
        })
    }
}

fn check_secret(secret: &[u8]) -> Result<(), KeyError> {
    if secret.len() < MIN_HMAC_SECRET_BYTES {
        return Err(KeyError::SecretTooShort {
            len: secret.len(),
            min: MIN_HMAC_SECRET_BYTES,
        });
    }
    Ok(())
}

fn invalid(kind: &'static str) -> impl FnOnce(jsonwebtoken::errors::Error) -> KeyError {
    move |_| KeyError::InvalidKey { kind }
}

/// A key that verifies signatures, pinned to exactly one algorithm.
///
/// The algorithm comes from the configuration, never from a token: a token whose
/// header names another algorithm is refused before any signature check.
///
/// ```
/// use pulse_core::jwt::VerificationKey;
///
/// let key = VerificationKey::hmac(b"0123456789abcdef0123456789abcdef")
///     .unwrap()
///     .with_kid("2026-01");
/// assert_eq!(key.kid(), Some("2026-01"));
/// assert!(VerificationKey::hmac(b"too short").is_err());
/// ```
#[derive(Clone)]
pub struct VerificationKey {
    kid: Option<Arc<str>>,
    alg: Algorithm,
    key: DecodingKey,
}

impl VerificationKey {
    /// An HS256 secret of at least [`MIN_HMAC_SECRET_BYTES`] bytes.
    pub fn hmac(secret: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        Self::hmac_with(secret, Algorithm::HS256)
    }

    /// An HMAC secret for `HS256`, `HS384` or `HS512`.
    pub fn hmac_with(secret: impl AsRef<[u8]>, alg: Algorithm) -> Result<Self, KeyError> {
        let secret = secret.as_ref();
        check_family(alg, AlgorithmFamily::Hmac)?;
        check_secret(secret)?;
        let key = DecodingKey::from_secret(secret).map_err(invalid("HMAC"))?;
        Self::checked(key, alg)
    }

    /// An RSA public key in PEM (`BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`) for
    /// `RS256/384/512` or `PS256/384/512`.
    pub fn rsa_pem(pem: impl AsRef<[u8]>, alg: Algorithm) -> Result<Self, KeyError> {
        check_family(alg, AlgorithmFamily::Rsa)?;
        let key = DecodingKey::from_rsa_pem(pem.as_ref()).map_err(invalid("RSA"))?;
        Self::checked(key, alg)
    }

    /// An RSA public key as PKCS#1 `RSAPublicKey` DER.
    pub fn rsa_der(der: impl AsRef<[u8]>, alg: Algorithm) -> Result<Self, KeyError> {
        check_family(alg, AlgorithmFamily::Rsa)?;
        Self::checked(DecodingKey::from_rsa_der(der.as_ref()), alg)
    }

    /// An EC public key in PEM (`BEGIN PUBLIC KEY`): P-256 for `ES256`, P-384 for `ES384`.
    pub fn ec_pem(pem: impl AsRef<[u8]>, alg: Algorithm) -> Result<Self, KeyError> {
        check_family(alg, AlgorithmFamily::Ec)?;
        let key = DecodingKey::from_ec_pem(pem.as_ref()).map_err(invalid("EC"))?;
        Self::checked(key, alg)
    }

    /// An EC public key as an uncompressed SEC1 point (`04 || x || y`).
    pub fn ec_der(der: impl AsRef<[u8]>, alg: Algorithm) -> Result<Self, KeyError> {
        check_family(alg, AlgorithmFamily::Ec)?;
        Self::checked(DecodingKey::from_ec_der(der.as_ref()), alg)
    }

    /// An Ed25519 public key in PEM (`BEGIN PUBLIC KEY`), for `EdDSA`.
    pub fn ed_pem(pem: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        let key = DecodingKey::from_ed_pem(pem.as_ref()).map_err(invalid("Ed25519"))?;
        Self::checked(key, Algorithm::EdDSA)
    }

    /// An Ed25519 public key as its raw 32 bytes, for `EdDSA`.
    pub fn ed_der(der: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        Self::checked(DecodingKey::from_ed_der(der.as_ref()), Algorithm::EdDSA)
    }

    /// A key from a JSON Web Key. The algorithm is the JWK's `alg` when present and of
    /// the key's family, else the family's usual one (`RS256`, `ES256`/`ES384` by
    /// curve, `EdDSA`). Symmetric (`oct`) keys are refused: they do not belong in a
    /// published key set.
    pub fn from_jwk(jwk: &jsonwebtoken::jwk::Jwk) -> Result<Self, KeyError> {
        use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};

        let default_alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                _ => return Err(KeyError::InvalidKey { kind: "EC" }),
            },
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                Algorithm::EdDSA
            }
            _ => return Err(KeyError::InvalidKey { kind: "JWK" }),
        };
        let alg = match jwk.common.key_algorithm {
            Some(declared) => declared
                .to_string()
                .parse::<Algorithm>()
                .map_err(|_| KeyError::InvalidKey { kind: "JWK" })?,
            None => default_alg,
        };
        check_family(alg, default_alg.family())?;
        let key = DecodingKey::from_jwk(jwk).map_err(invalid("JWK"))?;
        let key = Self::checked(key, alg)?;
        Ok(match &jwk.common.key_id {
            Some(kid) => key.with_kid(kid.as_str()),
            None => key,
        })
    }

    /// Refuse at set-up what would fail (or, for short Ed25519 keys, panic inside the
    /// crypto provider) at verification time.
    fn checked(key: DecodingKey, alg: Algorithm) -> Result<Self, KeyError> {
        if jsonwebtoken::crypto::CryptoProvider::try_get_default().is_none() {
            return Err(KeyError::NoCryptoProvider);
        }
        let kind = family_name(alg.family());
        if alg.family() == AlgorithmFamily::Ed
            && key.try_get_as_bytes().map(<[u8]>::len).ok() != Some(32)
        {
            return Err(KeyError::InvalidKey { kind });
        }
        // A verifier is built from the key here exactly as at verification time; a
        // key the provider cannot use fails now instead of on every request.
        jsonwebtoken::crypto::verify("", b"", &key, alg).map_err(invalid(kind))?;
        Ok(Self {
            kid: None,
            alg,
            key,
        })
    }

    /// Set the key id (`kid`) tokens name to select this key.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<Arc<str>>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// The key id.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The one algorithm this key verifies.
    pub const fn algorithm(&self) -> Algorithm {
        self.alg
    }

    pub(crate) const fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

impl fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// A key that signs tokens, pinned to one algorithm: for [`TokenIssuer`] and
/// [`InternalTokenMinter`](crate::internal_auth::InternalTokenMinter).
///
/// [`TokenIssuer`]: super::TokenIssuer
#[derive(Clone)]
pub struct SigningKey {
    kid: Option<Arc<str>>,
    alg: Algorithm,
    key: EncodingKey,
}

impl SigningKey {
    /// An HS256 secret of at least [`MIN_HMAC_SECRET_BYTES`] bytes.
    pub fn hmac(secret: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        Self::hmac_with(secret, Algorithm::HS256)
    }

    /// An HMAC secret for `HS256`, `HS384` or `HS512`.
    pub fn hmac_with(secret: impl AsRef<[u8]>, alg: Algorithm) -> Result<Self, KeyError> {
        let secret = secret.as_ref();
        check_family(alg, AlgorithmFamily::Hmac)?;
        check_secret(secret)?;
        let key = EncodingKey::from_secret(secret).map_err(invalid("HMAC"))?;
        Self::checked(key, alg)
    }

    /// An RSA private key in PEM (PKCS#1 or PKCS#8).
    pub fn rsa_pem(pem: impl AsRef<[u8]>, alg: Algorithm) -> Result<Self, KeyError> {
        check_family(alg, AlgorithmFamily::Rsa)?;
        let key = EncodingKey::from_rsa_pem(pem.as_ref()).map_err(invalid("RSA"))?;
        Self::checked(key, alg)
    }

    /// An EC private key in PKCS#8 PEM: P-256 for `ES256`, P-384 for `ES384`.
    pub fn ec_pem(pem: impl AsRef<[u8]>, alg: Algorithm) -> Result<Self, KeyError> {
        check_family(alg, AlgorithmFamily::Ec)?;
        let key = EncodingKey::from_ec_pem(pem.as_ref()).map_err(invalid("EC"))?;
        Self::checked(key, alg)
    }

    /// An Ed25519 private key in PKCS#8 PEM, for `EdDSA`.
    pub fn ed_pem(pem: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        let key = EncodingKey::from_ed_pem(pem.as_ref()).map_err(invalid("Ed25519"))?;
        Self::checked(key, Algorithm::EdDSA)
    }

    fn checked(key: EncodingKey, alg: Algorithm) -> Result<Self, KeyError> {
        if jsonwebtoken::crypto::CryptoProvider::try_get_default().is_none() {
            return Err(KeyError::NoCryptoProvider);
        }
        // Sign once now so that a key the provider cannot use fails at set-up.
        jsonwebtoken::crypto::sign(b"probe", &key, alg)
            .map_err(invalid(family_name(alg.family())))?;
        Ok(Self {
            kid: None,
            alg,
            key,
        })
    }

    /// Set the key id written into the `kid` header of every token signed.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<Arc<str>>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// The key id.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The algorithm this key signs with.
    pub const fn algorithm(&self) -> Algorithm {
        self.alg
    }

    pub(crate) fn sign<T: serde::Serialize>(
        &self,
        typ: &str,
        claims: &T,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = jsonwebtoken::Header::new(self.alg);
        header.typ = Some(typ.to_owned());
        header.kid = self.kid.as_deref().map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.key)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Where a verifier finds the key for a token.
///
/// [`KeySet`] holds configured keys; with the `jwks` feature,
/// [`JwksSource`](super::JwksSource) holds keys fetched from a URL.
pub trait KeySource: Send + Sync + 'static {
    /// The key for this `kid`. A token without `kid` gets the only key when exactly
    /// one is configured, and none otherwise.
    fn key(&self, kid: Option<&str>) -> Option<VerificationKey>;

    /// Called when a token names a `kid` this source does not know. Sources that
    /// can refresh (JWKS) do so here, at a bounded rate and without blocking.
    fn on_unknown_kid(&self, kid: &str) {
        let _ = kid;
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
    fn short_hmac_secret_refused() {
        assert!(matches!(
            VerificationKey::hmac([0u8; 31]),
            Err(KeyError::SecretTooShort { len: 31, min: 32 })
        ));
        assert!(SigningKey::hmac([0u8; 31]).is_err());
        assert!(SigningKey::hmac([0u8; 32]).is_ok());
    }

    #[test]
    fn algorithm_must_fit_family() {
        assert!(matches!(
            VerificationKey::hmac_with([0u8; 32], Algorithm::RS256),
            Err(KeyError::AlgorithmMismatch { .. })
        ));
    }

    #[test]
    fn short_ed25519_key_refused_instead_of_panicking_later() {
        assert!(VerificationKey::ed_der([1u8; 5]).is_err());
    }

    #[test]
    fn bad_pem_refused() {
        assert!(VerificationKey::rsa_pem("not pem", Algorithm::RS256).is_err());
        assert!(VerificationKey::ec_pem("not pem", Algorithm::ES256).is_err());
        assert!(SigningKey::ed_pem("not pem").is_err());
    }

    #[test]
    fn no_kid_selects_only_key_when_exactly_one() {
        let set = KeySet::new().with_key(VerificationKey::hmac([1u8; 32]).unwrap());
        assert!(set.key(None).is_some());
        assert!(set.key(Some("x")).is_none());
        set.insert(VerificationKey::hmac([2u8; 32]).unwrap().with_kid("x"));
        assert!(set.key(None).is_none());
        assert!(set.key(Some("x")).is_some());
    }

    #[test]
    fn debug_hides_key_material() {
        let key = VerificationKey::hmac([b'z'; 32]).unwrap();
        assert!(!format!("{key:?}").contains("zzzz"));
    }
}
