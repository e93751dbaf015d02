//! Keys, each pinned to one algorithm.

use std::{fmt, sync::Arc};

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
    pub(super) kid: Option<Arc<str>>,
    alg: Algorithm,
    /// Shared: key sources hand out clones on every request.
    verifying: Arc<Verifying>,
}

struct Verifying {
    key: DecodingKey,
    /// jsonwebtoken's validation reduced to the signature and the pinned algorithm,
    /// built once per key.
    validation: jsonwebtoken::Validation,
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
    /// curve, `EdDSA`). Symmetric (`oct`) keys and keys whose `use` is not `sig` are
    /// refused: they do not belong in a published set of verification keys.
    pub fn from_jwk(jwk: &jsonwebtoken::jwk::Jwk) -> Result<Self, KeyError> {
        use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, PublicKeyUse};

        // A key published for another use (encryption) never verifies signatures.
        if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
            return Err(KeyError::InvalidKey { kind: "JWK" });
        }
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
        // The time and audience checks are the verifier's own (injectable clock,
        // lifetime, strict types); jsonwebtoken checks signature and algorithm only.
        let mut validation = jsonwebtoken::Validation::new(alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        Ok(Self {
            kid: None,
            alg,
            verifying: Arc::new(Verifying { key, validation }),
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

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.verifying.key
    }

    pub(crate) fn validation(&self) -> &jsonwebtoken::Validation {
        &self.verifying.validation
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
    fn debug_hides_key_material() {
        let key = VerificationKey::hmac([b'z'; 32]).unwrap();
        assert!(!format!("{key:?}").contains("zzzz"));
    }
}
