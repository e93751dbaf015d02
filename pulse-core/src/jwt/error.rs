//! Errors of JWT set-up, verification and issuing.

/// A configuration that Pulse refuses at set-up: a short HMAC secret, a key that does
/// not parse, an algorithm that does not fit the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// An HMAC secret shorter than [`MIN_HMAC_SECRET_BYTES`](super::MIN_HMAC_SECRET_BYTES).
    #[error("HMAC secret is {len} bytes, at least {min} are required")]
    SecretTooShort {
        /// The length of the secret that was given.
        len: usize,
        /// The minimum length.
        min: usize,
    },
    /// The algorithm does not belong to the key's family (e.g. `RS256` for an EC key).
    #[error("algorithm {alg:?} does not fit a {family} key")]
    AlgorithmMismatch {
        /// The algorithm that was asked for.
        alg: jsonwebtoken::Algorithm,
        /// The family of the key.
        family: &'static str,
    },
    /// The key material does not parse (bad PEM or DER).
    #[error("{kind} key does not parse")]
    InvalidKey {
        /// What kind of key was expected.
        kind: &'static str,
    },
    /// No jsonwebtoken crypto provider is available in this build.
    #[error("no jsonwebtoken crypto provider is installed")]
    NoCryptoProvider,
    /// The key file could not be read.
    #[error("reading key file failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Why a bearer token was refused.
///
/// Every variant is answered with the same 401 `invalid_token` (or `unauthorized` for
/// [`TokenError::Missing`]); the variant only goes to the logs, never to the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// No `Authorization: Bearer` header.
    #[error("no bearer token")]
    Missing,
    /// More than one `Authorization` header.
    #[error("more than one Authorization header")]
    DuplicateHeader,
    /// The header is not `Bearer <token>` with a token made of visible ASCII.
    #[error("malformed Authorization header")]
    MalformedHeader,
    /// The token is larger than the configured cap.
    #[error("token larger than {max} bytes")]
    TooLarge {
        /// The cap in bytes.
        max: usize,
    },
    /// Not three base64url segments with a JSON header naming a known algorithm.
    #[error("malformed token")]
    Malformed,
    /// No configured key matches the token's `kid` (or it has none and several keys
    /// are configured).
    #[error("no key for this token")]
    UnknownKey,
    /// The token's `alg` is not the algorithm pinned to the selected key.
    #[error("algorithm not allowed for this key")]
    AlgorithmNotAllowed,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The claims are not a JSON object of the expected types.
    #[error("claims malformed or of the wrong type")]
    InvalidClaims,
    /// A required claim is missing.
    #[error("claim {0} missing")]
    MissingClaim(&'static str),
    /// The `typ` header is not the one this verifier requires.
    #[error("wrong token type")]
    WrongType,
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not valid yet")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `exp - iat` (or `exp - now`) is longer than the maximum lifetime.
    #[error("token lifetime over the maximum")]
    LifetimeTooLong,
    /// `iss` is not the expected issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not contain the expected audience.
    #[error("wrong audience")]
    WrongAudience,
    /// The token's `jti` was seen before by a verifier with replay protection.
    #[error("token already used")]
    Replayed,
    /// The token verified, but the verifier's [`TokenRevocation`](super::TokenRevocation)
    /// hook says it was revoked since it was issued.
    #[error("{0}")]
    Revoked(super::Revoked),
}

impl TokenError {
    /// The stable short name of the failure, for logs and metrics.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::DuplicateHeader => "duplicate_header",
            Self::MalformedHeader => "malformed_header",
            Self::TooLarge { .. } => "too_large",
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::BadSignature => "bad_signature",
            Self::InvalidClaims => "invalid_claims",
            Self::MissingClaim(_) => "missing_claim",
            Self::WrongType => "wrong_type",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedInFuture => "issued_in_future",
            Self::LifetimeTooLong => "lifetime_too_long",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::Replayed => "replayed",
            Self::Revoked(_) => "revoked",
        }
    }
}

/// Issuing a token failed (a signing error in the crypto provider; rare).
#[derive(Debug, thiserror::Error)]
#[error("signing the token failed")]
#[non_exhaustive]
pub struct IssueError {
    #[source]
    source: jsonwebtoken::errors::Error,
}

impl IssueError {
    pub(crate) const fn new(source: jsonwebtoken::errors::Error) -> Self {
        Self { source }
    }
}
