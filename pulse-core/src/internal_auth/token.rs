//! Signed internal tokens: the gateway mints, the internal service verifies and takes
//! the user identity from the token.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use http::{HeaderMap, HeaderValue};

use super::{
    Authenticated, Caller, CallerKind, CredentialOutcome, CredentialVerifier,
    DEFAULT_INTERNAL_TOKEN_LIFETIME, INTERNAL_TOKEN_TYPE, X_INTERNAL_TOKEN,
};
use crate::{
    identity::Identity,
    jwt::{Claims, IssueError, JwtVerifier, KeySource, SigningKey, TokenError, TokenIssuer},
};

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The longest internal token lifetime a receiver accepts by default: 60 seconds, what
/// [`InternalTokenMinter`] mints by default ([`DEFAULT_INTERNAL_TOKEN_LIFETIME`]).
/// Raise both together.
pub const DEFAULT_MAX_INTERNAL_TOKEN_LIFETIME: Duration = DEFAULT_INTERNAL_TOKEN_LIFETIME;

/// Mints short-lived internal tokens on the gateway: `iss` = the gateway, `aud` = the
/// target service, `sub`/`email`/`roles`/`permissions` from the user's
/// [`Identity`], a fresh `jti`, `iat`/`exp` (default lifetime
/// [`DEFAULT_INTERNAL_TOKEN_LIFETIME`]) and the `typ` header [`INTERNAL_TOKEN_TYPE`],
/// so a user token is never mistaken for an internal one, nor an internal one for a
/// user token (a user-token [`JwtVerifier`] refuses this type).
///
/// Use a key of its own, not the user-token secret; the types and audiences keep the
/// two kinds apart even when someone does not.
///
/// ```
/// use pulse_core::{Identity, internal_auth::{InternalTokenMinter, InternalTokenVerifier}, jwt::{SigningKey, VerificationKey}};
///
/// let secret = [9u8; 32];
/// let minter = InternalTokenMinter::new(SigningKey::hmac(secret)?, "pulse-gateway");
/// let verifier = InternalTokenVerifier::new(VerificationKey::hmac(secret)?, "pulse-gateway", "pulse-etl");
///
/// let token = minter.mint(&Identity::new("u1").with_permissions(["etl.access"]), "pulse-etl")?;
/// let identity = verifier.verify(&token).unwrap();
/// assert_eq!(identity.subject, "u1");
///
/// let for_other_service = minter.mint(&Identity::new("u1"), "pulse-billing")?;
/// assert!(verifier.verify(&for_other_service).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct InternalTokenMinter {
    issuer: TokenIssuer,
    issuer_id: String,
    reuse: Option<Reuse>,
}

/// Tokens kept for reuse: the latest one per subject, with the identity and audience it
/// was minted for.
#[derive(Clone)]
struct Reuse {
    window_secs: u64,
    tokens: moka::sync::Cache<String, Arc<Minted>>,
}

struct Minted {
    identity: Identity,
    audience: String,
    issued_at: u64,
    value: HeaderValue,
}

impl InternalTokenMinter {
    /// A minter signing with `key` as `issuer` (the gateway's service id).
    pub fn new(key: SigningKey, issuer: impl Into<String>) -> Self {
        let issuer_id = issuer.into();
        Self {
            issuer: TokenIssuer::new(key)
                .with_issuer(issuer_id.clone())
                .with_lifetime(DEFAULT_INTERNAL_TOKEN_LIFETIME)
                .with_type(INTERNAL_TOKEN_TYPE),
            issuer_id,
            reuse: None,
        }
    }

    /// Reuse a minted token for the same identity and audience while it is younger
    /// than `window` (whole seconds; off by default: a fresh token, with a fresh `jti`,
    /// per call). Signing is the costly part of forwarding a request on a user's behalf;
    /// with reuse a busy user costs one signature per window. A receiver then sees each
    /// token at most `window` old, so it stays valid for the lifetime minus `window`:
    /// keep `window` well below the lifetime (a quarter, say; more than half the
    /// lifetime is used as half, whatever the order of the builders). Tokens are kept for at
    /// most `max_users` subjects, the latest token of each, never past `window`.
    ///
    /// Not for receivers with [`InternalTokenVerifier::with_replay_protection`], which
    /// accept each `jti` once.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pulse_core::{Identity, internal_auth::InternalTokenMinter, jwt::SigningKey};
    ///
    /// let minter = InternalTokenMinter::new(SigningKey::hmac([9u8; 32])?, "pulse-gateway")
    ///     .with_reuse(Duration::from_secs(15), 10_000);
    /// let alice = Identity::new("alice").with_permissions(["etl.access"]);
    /// let first = minter.mint(&alice, "pulse-etl")?;
    /// assert_eq!(minter.mint(&alice, "pulse-etl")?, first);
    /// // Another audience or another identity gets a token of its own.
    /// assert_ne!(minter.mint(&alice, "pulse-billing")?, first);
    /// assert_ne!(minter.mint(&alice.clone().with_roles(["admin"]), "pulse-etl")?, first);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn with_reuse(mut self, window: Duration, max_users: u64) -> Self {
        self.reuse = (window.as_secs() > 0).then(|| Reuse {
            window_secs: window.as_secs(),
            tokens: moka::sync::Cache::builder()
                .max_capacity(max_users)
                .time_to_live(window)
                .build(),
        });
        self
    }

    /// How long minted tokens live (default [`DEFAULT_INTERNAL_TOKEN_LIFETIME`]).
    /// Receivers refuse tokens living longer than their cap
    /// ([`DEFAULT_MAX_INTERNAL_TOKEN_LIFETIME`] by default): raise it there too.
    #[must_use]
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.issuer = self.issuer.with_lifetime(lifetime);
        self
    }

    /// Read the time from `clock` instead of the system clock (for tests).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.issuer = self.issuer.with_clock(clock);
        self
    }

    /// The issuer id written into `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer_id
    }

    /// A token for `identity`, addressed to the service `audience` (a fresh one, or
    /// with [`with_reuse`](Self::with_reuse) a recent one minted for the same).
    pub fn mint(&self, identity: &Identity, audience: &str) -> Result<String, IssueError> {
        let value = self.mint_header(identity, audience)?;
        // A JWT is base64url and dots: always visible ASCII.
        Ok(String::from_utf8_lossy(value.as_bytes()).into_owned())
    }

    /// [`InternalTokenMinter::mint`] as a sensitive header value for
    /// [`X_INTERNAL_TOKEN`].
    pub fn mint_header(
        &self,
        identity: &Identity,
        audience: &str,
    ) -> Result<HeaderValue, IssueError> {
        let Some(reuse) = &self.reuse else {
            return self.sign(identity, audience).map(|(value, _)| value);
        };
        let now = unix_seconds(self.issuer.now());
        if let Some(minted) = reuse.tokens.get(identity.subject.as_str())
            && minted.identity == *identity
            && minted.audience == audience
            // Young enough on the minter's own clock (and never from its future); never
            // more than half the lifetime, so a reused token has time left to be used.
            && (minted.issued_at..minted.issued_at + self.reuse_window_secs(reuse))
                .contains(&now)
        {
            return Ok(minted.value.clone());
        }
        let (value, issued_at) = self.sign(identity, audience)?;
        reuse.tokens.insert(
            identity.subject.clone(),
            Arc::new(Minted {
                identity: identity.clone(),
                audience: audience.to_owned(),
                issued_at,
                value: value.clone(),
            }),
        );
        Ok(value)
    }

    /// The reuse window in use: the configured one, at most half the lifetime.
    fn reuse_window_secs(&self, reuse: &Reuse) -> u64 {
        reuse.window_secs.min(self.issuer.lifetime().as_secs() / 2)
    }

    /// A freshly signed token as a sensitive header value, with its `iat`.
    fn sign(&self, identity: &Identity, audience: &str) -> Result<(HeaderValue, u64), IssueError> {
        let issued =
            self.issuer
                .issue_for(identity, Some(audience), &crate::jwt::IssueOptions::new())?;
        let issued_at = unix_seconds(issued.expires_at).saturating_sub(issued.expires_in);
        // A JWT is base64url and dots: always a valid header value.
        let mut value = HeaderValue::from_maybe_shared(bytes::Bytes::from(issued.access_token))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        value.set_sensitive(true);
        Ok((value, issued_at))
    }
}

impl fmt::Debug for InternalTokenMinter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InternalTokenMinter")
            .field("issuer", &self.issuer_id)
            .field("lifetime", &self.issuer.lifetime())
            .field(
                "reuse_window_secs",
                &self.reuse.as_ref().map(|reuse| reuse.window_secs),
            )
            .finish_non_exhaustive()
    }
}

/// Verifies internal tokens on the receiving service: signature (algorithm pinned per
/// key), `typ` = [`INTERNAL_TOKEN_TYPE`] (a user token, `at+jwt`, is refused even when
/// signed with the same key), `iss` = the gateway, `aud` = this service, `exp` and
/// `iat` required, lifetime at most [`DEFAULT_MAX_INTERNAL_TOKEN_LIFETIME`] (raise it
/// with [`map_verifier`](Self::map_verifier) when the minter's lifetime is longer). As a
/// [`CredentialVerifier`] it reads [`X_INTERNAL_TOKEN`] and yields the caller (the
/// issuer) and the user [`Identity`] from the token.
#[derive(Clone)]
pub struct InternalTokenVerifier {
    verifier: JwtVerifier,
    replay: Option<moka::sync::Cache<String, u64>>,
}

/// Keeps a seen `jti` until its token has expired (plus leeway), never longer.
struct UntilExpired {
    leeway: u64,
}

impl moka::Expiry<String, u64> for UntilExpired {
    fn expire_after_create(&self, _jti: &String, exp: &u64, _at: Instant) -> Option<Duration> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Some(Duration::from_secs(
            exp.saturating_add(self.leeway).saturating_sub(now),
        ))
    }
}

impl InternalTokenVerifier {
    /// A verifier accepting tokens signed by `keys`, issued by `issuer` for `audience`
    /// (this service's id).
    pub fn new(
        keys: impl KeySource,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Self {
        Self {
            verifier: JwtVerifier::new(keys)
                .with_issuer(issuer)
                .with_audience(audience)
                .with_required_type(INTERNAL_TOKEN_TYPE)
                .with_max_lifetime(DEFAULT_MAX_INTERNAL_TOKEN_LIFETIME),
            replay: None,
        }
    }

    /// Adjust the underlying [`JwtVerifier`] (leeway, lifetime, clock, more issuers).
    #[must_use]
    pub fn map_verifier(mut self, f: impl FnOnce(JwtVerifier) -> JwtVerifier) -> Self {
        self.verifier = f(self.verifier);
        self
    }

    /// Accept each token once: remember every `jti` until its token expires and refuse
    /// a second use (tokens without `jti` are then refused too). Holds at most
    /// `max_entries` ids; size it above the request rate times the token lifetime,
    /// since an id evicted early could be replayed. The gateway mints a token per
    /// request, so keep its [`InternalCredentialLayer`](super::InternalCredentialLayer)
    /// inside any retry layer, so that each retry gets a fresh token. Call it after
    /// [`map_verifier`](Self::map_verifier): ids are kept for the leeway set then.
    #[must_use]
    pub fn with_replay_protection(mut self, max_entries: u64) -> Self {
        let leeway = self.verifier.leeway().as_secs();
        self.replay = Some(
            moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .expire_after(UntilExpired { leeway })
                .build(),
        );
        self
    }

    /// Verify a token and return the user identity it carries.
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        self.verify_claims(token)?
            .to_identity()
            .ok_or(TokenError::MissingClaim("sub"))
    }

    fn verify_claims(&self, token: &str) -> Result<Claims, TokenError> {
        let claims = self.verifier.verify_claims(token)?;
        if let Some(seen) = &self.replay {
            let jti = claims.jti.clone().ok_or(TokenError::MissingClaim("jti"))?;
            let exp = claims.exp.unwrap_or_default();
            if !seen.entry(jti).or_insert(exp).is_fresh() {
                return Err(TokenError::Replayed);
            }
        }
        Ok(claims)
    }
}

impl fmt::Debug for InternalTokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InternalTokenVerifier")
            .field("verifier", &self.verifier)
            .field("replay_protection", &self.replay.is_some())
            .finish()
    }
}

impl CredentialVerifier for InternalTokenVerifier {
    fn remove_credential(&self, headers: &mut HeaderMap) {
        headers.remove(X_INTERNAL_TOKEN);
    }

    fn verify(&self, headers: &HeaderMap) -> CredentialOutcome {
        let mut values = headers.get_all(&X_INTERNAL_TOKEN).iter();
        let value = match (values.next(), values.next()) {
            (None, _) => return CredentialOutcome::Absent,
            (Some(value), None) => value,
            (Some(_), Some(_)) => return CredentialOutcome::Invalid,
        };
        let Ok(token) = value.to_str() else {
            return CredentialOutcome::Invalid;
        };
        let claims = match self.verify_claims(token.trim()) {
            Ok(claims) => claims,
            Err(err) => {
                tracing::debug!(reason = err.as_str(), "internal token refused");
                return CredentialOutcome::Invalid;
            }
        };
        match (claims.to_identity(), claims.iss) {
            (Some(identity), Some(iss)) => CredentialOutcome::Valid(
                Authenticated::new(Caller::new(iss, CallerKind::Token)).with_identity(identity),
            ),
            _ => CredentialOutcome::Invalid,
        }
    }
}
