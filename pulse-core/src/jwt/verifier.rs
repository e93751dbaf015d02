//! [`JwtVerifier`]: every check a bearer token must pass, secure by default.

use std::{
    collections::HashSet,
    fmt,
    sync::Arc,
    time::{Duration, SystemTime},
};

use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;

use super::bearer::bearer_token;
use super::revocation::RevocationHook;
use super::{
    Claims, DEFAULT_LEEWAY, DEFAULT_MAX_LEEWAY, DEFAULT_MAX_LIFETIME, KeyRefresh, KeySource,
    MAX_TOKEN_BYTES, TokenError, VerifiedTokenCache, claims::unix_seconds, key::MAX_KID_LEN,
};
use crate::{
    error::{ApiError, ErrorCode},
    identity::Identity,
};

/// Where verifiers read the time; tests inject a fixed one.
pub(crate) type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Verifies bearer tokens: size, `typ`, signature with the key the `kid` selects
/// (algorithm pinned per key), then `exp` and `iat` (both required), `nbf`, lifetime,
/// `iss` and `aud`.
///
/// Defaults: the `typ` header `at+jwt` ([`USER_TOKEN_TYPE`](super::USER_TOKEN_TYPE)),
/// `JWT` or none — so an internal service token (`pulse-internal+jwt`) or any other
/// kind is refused even when signed with the right key; `iat` required ([`JwtVerifier::require_issued_at`]);
/// leeway [`DEFAULT_LEEWAY`] (capped at [`DEFAULT_MAX_LEEWAY`] unless raised with
/// [`JwtVerifier::with_max_leeway`]); maximum lifetime [`DEFAULT_MAX_LIFETIME`] (what
/// [`TokenIssuer`](super::TokenIssuer) issues by default); token size cap
/// [`MAX_TOKEN_BYTES`]. Without a configured audience a token that carries `aud` is
/// refused (RFC 7519 §4.1.3). The `jku`, `x5u` and `jwk` headers are never read: keys
/// come only from the [`KeySource`].
///
/// For your own tokens, pin everything the issuer sets: issuer, audience, type and
/// lifetime, as below.
///
/// Cheap to clone; clones share configuration, keys and cache.
///
/// ```
/// use pulse_core::{Identity, jwt::{JwtVerifier, SigningKey, TokenIssuer, USER_TOKEN_TYPE, VerificationKey}};
///
/// let secret = b"an example secret of 32 bytes!!!";
/// let issuer = TokenIssuer::new(SigningKey::hmac(secret)?)
///     .with_issuer("pulse")
///     .with_audience("pulse-api");
/// let verifier = JwtVerifier::new(VerificationKey::hmac(secret)?)
///     .with_issuer("pulse")
///     .with_audience("pulse-api")
///     .with_required_type(USER_TOKEN_TYPE)
///     .with_max_lifetime(issuer.lifetime());
///
/// let token = issuer.issue(&Identity::new("u1").with_permissions(["etl.access"]))?;
/// let identity = verifier.verify(&token.access_token)?;
/// assert_eq!(identity.subject, "u1");
/// assert!(identity.has_permission("etl.access"));
/// assert!(verifier.verify("not.a.token").is_err());
///
/// // A token for another audience, or living longer than the issuer's tokens, is refused.
/// let other = issuer.clone().with_audience("pulse-etl").issue(&Identity::new("u1"))?;
/// assert!(verifier.verify(&other.access_token).is_err());
/// let long = issuer.with_lifetime(std::time::Duration::from_secs(7200)).issue(&Identity::new("u1"))?;
/// assert!(verifier.verify(&long.access_token).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct JwtVerifier {
    config: Arc<Config>,
}

#[derive(Clone)]
struct Config {
    keys: Arc<dyn KeySource>,
    issuers: HashSet<String>,
    audiences: HashSet<String>,
    leeway: Duration,
    max_leeway: Duration,
    max_lifetime: Duration,
    max_token_bytes: usize,
    /// Normalised (see [`normalise_type`]); empty: the default policy, see
    /// [`DEFAULT_ACCEPTED_TYPES`].
    required_types: Vec<String>,
    require_iat: bool,
    clock: Clock,
    cache: Option<VerifiedTokenCache>,
    revocation: Option<RevocationHook>,
}

impl JwtVerifier {
    /// A verifier taking keys from `keys` (a [`VerificationKey`](super::VerificationKey),
    /// a [`KeySet`](super::KeySet) or a JWKS source).
    pub fn new(keys: impl KeySource) -> Self {
        Self {
            config: Arc::new(Config {
                keys: Arc::new(keys),
                issuers: HashSet::new(),
                audiences: HashSet::new(),
                leeway: DEFAULT_LEEWAY,
                max_leeway: DEFAULT_MAX_LEEWAY,
                max_lifetime: DEFAULT_MAX_LIFETIME,
                max_token_bytes: MAX_TOKEN_BYTES,
                required_types: Vec::new(),
                require_iat: true,
                clock: Arc::new(SystemTime::now),
                cache: None,
                revocation: None,
            }),
        }
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Accept tokens from this issuer (`iss`). Once one is set, `iss` is required and
    /// must be one of them. May be called several times.
    #[must_use]
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.config_mut().issuers.insert(issuer.into());
        self
    }

    /// Accept tokens for this audience (`aud`). Once one is set, `aud` is required and
    /// must contain one of them. May be called several times.
    #[must_use]
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.config_mut().audiences.insert(audience.into());
        self
    }

    /// Clock skew tolerated on `exp`, `nbf` and `iat`; never more than the cap
    /// ([`JwtVerifier::with_max_leeway`]).
    #[must_use]
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.config_mut().leeway = leeway;
        self
    }

    /// The cap on the leeway (default [`DEFAULT_MAX_LEEWAY`]).
    #[must_use]
    pub fn with_max_leeway(mut self, max_leeway: Duration) -> Self {
        self.config_mut().max_leeway = max_leeway;
        self
    }

    /// The longest lifetime accepted: `exp - iat`, and `exp - now` (so tokens without
    /// `iat` are bounded too). Default [`DEFAULT_MAX_LIFETIME`].
    #[must_use]
    pub fn with_max_lifetime(mut self, max_lifetime: Duration) -> Self {
        self.config_mut().max_lifetime = max_lifetime;
        self
    }

    /// The largest token accepted, in bytes (default [`MAX_TOKEN_BYTES`]).
    #[must_use]
    pub fn with_max_token_bytes(mut self, max: usize) -> Self {
        self.config_mut().max_token_bytes = max;
        self
    }

    /// Require this `typ` header (e.g. [`USER_TOKEN_TYPE`](super::USER_TOKEN_TYPE) or
    /// the internal token type), so that tokens of one kind are never accepted as
    /// another. May be called several times: the token's `typ` must then be one of
    /// them, and a token without `typ` is refused.
    ///
    /// Types compare as media types do (RFC 7515 §4.1.9): case-insensitively, and
    /// with or without the `application/` prefix.
    ///
    /// Without this call the verifier accepts `at+jwt`, `JWT` or no `typ` at all, and
    /// refuses every other type (among them internal service tokens).
    #[must_use]
    pub fn with_required_type(mut self, typ: impl AsRef<str>) -> Self {
        let typ = normalise_type(typ.as_ref());
        let types = &mut self.config_mut().required_types;
        if !types.contains(&typ) {
            types.push(typ);
        }
        self
    }

    /// Whether `iat` (issued at) is required; default `true`. With `iat`, the lifetime
    /// cap applies to the token's whole life (`exp - iat`), not only to what is left
    /// of it. Turn it off only for an identity provider that does not set `iat`.
    #[must_use]
    pub fn require_issued_at(mut self, required: bool) -> Self {
        self.config_mut().require_iat = required;
        self
    }

    /// Read the time from `clock` instead of the system clock (for tests).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.config_mut().clock = Arc::new(clock);
        self
    }

    /// Remember verified tokens in `cache` so a hot path verifies each token once.
    ///
    /// A cached token stays accepted until its expiry even if its key is removed
    /// meanwhile; call [`VerifiedTokenCache::clear`] after removing a key. Give each
    /// verifier its own cache: a token found in it is not checked again, so a cache
    /// shared with a verifier of other settings (type, audience) would let that
    /// verifier's tokens through.
    #[must_use]
    pub fn with_cache(mut self, cache: VerifiedTokenCache) -> Self {
        self.config_mut().cache = Some(cache);
        self
    }

    /// Consult `revocation` after every successful verification (cache hits
    /// included): a token it refuses is [`TokenError::Revoked`], answered 401
    /// `token_revoked`. It runs once per request, so it must not do I/O (see
    /// [`TokenRevocation`](super::TokenRevocation)).
    #[must_use]
    pub fn with_revocation(mut self, revocation: impl super::TokenRevocation) -> Self {
        self.config_mut().revocation = Some(RevocationHook(Arc::new(revocation)));
        self
    }

    /// The effective leeway: the configured one, capped.
    pub fn leeway(&self) -> Duration {
        self.config.leeway.min(self.config.max_leeway)
    }

    /// The maximum token lifetime.
    pub fn max_lifetime(&self) -> Duration {
        self.config.max_lifetime
    }

    /// Verify the single `Authorization: Bearer` header of a request.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, TokenError> {
        self.verify(bearer_token(headers)?)
    }

    /// Verify a token and return the identity it carries.
    ///
    /// Never waits: a token naming a `kid` the key source does not know is refused
    /// at once ([`TokenError::UnknownKey`]), and the source is told about it
    /// ([`KeySource::on_unknown_kid`]). [`JwtVerifier::verify_async`] waits for the
    /// source's refetch instead.
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        self.verify_with(token, &mut Lookup::Notify)
    }

    /// Verify a token like [`JwtVerifier::verify`], but when it names a `kid` the key
    /// source does not know and the source can refetch (a JWKS source), wait for that
    /// one bounded, rate-limited refetch (shared with every other request waiting on
    /// it) and look the key up once more. So a token signed with a key the identity
    /// provider has just started using is accepted, not refused while the new key set
    /// is on its way; a flood of made-up `kid`s still causes at most one fetch per the
    /// source's cool-down, and is refused at once during it.
    pub async fn verify_async(&self, token: &str) -> Result<Identity, TokenError> {
        let mut lookup = Lookup::Refresh(None);
        match self.verify_with(token, &mut lookup) {
            Err(TokenError::UnknownKey) => match lookup {
                Lookup::Refresh(Some(refresh)) => {
                    refresh.await;
                    self.verify_after_refresh(token)
                }
                _ => Err(TokenError::UnknownKey),
            },
            other => other,
        }
    }

    /// [`JwtVerifier::verify_async`] for the request's single `Authorization: Bearer`
    /// header.
    pub async fn authenticate_async(&self, headers: &HeaderMap) -> Result<Identity, TokenError> {
        self.verify_async(bearer_token(headers)?).await
    }

    /// The first step of an authentication that may wait: the result, or the wait
    /// after which [`JwtVerifier::verify_after_refresh`] gives it.
    pub(crate) fn authenticate_or_refresh(
        &self,
        headers: &HeaderMap,
    ) -> Result<Identity, (TokenError, Option<KeyRefresh>)> {
        let token = bearer_token(headers).map_err(|err| (err, None))?;
        let mut lookup = Lookup::Refresh(None);
        self.verify_with(token, &mut lookup)
            .map_err(|err| match lookup {
                Lookup::Refresh(refresh @ Some(_)) if err == TokenError::UnknownKey => {
                    (err, refresh)
                }
                _ => (err, None),
            })
    }

    /// The second look-up after a key refresh: an unknown `kid` is now final.
    pub(crate) fn verify_after_refresh(&self, token: &str) -> Result<Identity, TokenError> {
        self.verify_with(token, &mut Lookup::Final)
    }

    fn verify_with(&self, token: &str, lookup: &mut Lookup) -> Result<Identity, TokenError> {
        if token.len() > self.config.max_token_bytes {
            return Err(TokenError::TooLarge {
                max: self.config.max_token_bytes,
            });
        }
        let now = unix_seconds((self.config.clock)());
        let leeway = self.leeway().as_secs();
        if let Some(cache) = &self.config.cache
            && let Some(hit) = cache.get(token)
        {
            // A cached token is still subject to its expiry under this clock, and to
            // revocations made since it was cached.
            if now >= hit.exp.saturating_add(leeway) {
                return Err(TokenError::Expired);
            }
            self.check_revocation(&hit.claims)?;
            return Ok(hit.identity);
        }
        let claims = self.verify_claims_with(token, lookup)?;
        let identity = claims
            .to_identity()
            .ok_or(TokenError::MissingClaim("sub"))?;
        if let (Some(cache), Some(exp)) = (&self.config.cache, claims.exp) {
            cache.insert(token, identity.clone(), Arc::new(claims), exp);
        }
        Ok(identity)
    }

    /// Verify a token and return all its claims (never waits, like
    /// [`JwtVerifier::verify`]).
    pub fn verify_claims(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_claims_with(token, &mut Lookup::Notify)
    }

    fn verify_claims_with(&self, token: &str, lookup: &mut Lookup) -> Result<Claims, TokenError> {
        let config = &*self.config;
        if token.len() > config.max_token_bytes {
            return Err(TokenError::TooLarge {
                max: config.max_token_bytes,
            });
        }
        check_shape(token)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if !self.accepts_type(header.typ.as_deref()) {
            return Err(TokenError::WrongType);
        }
        let kid = header.kid.as_deref();
        if kid.is_some_and(|kid| kid.len() > MAX_KID_LEN) {
            return Err(TokenError::UnknownKey);
        }
        let Some(key) = config.keys.key(kid) else {
            if let Some(kid) = kid {
                match lookup {
                    Lookup::Notify => config.keys.on_unknown_kid(kid),
                    Lookup::Refresh(refresh) => *refresh = config.keys.refresh_unknown_kid(kid),
                    Lookup::Final => {}
                }
            }
            return Err(TokenError::UnknownKey);
        };
        // The key decides the algorithm; the header only has to agree with it.
        if header.alg != key.algorithm() {
            return Err(TokenError::AlgorithmNotAllowed);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, key.decoding_key(), key.validation())
            .map_err(|err| match err.into_kind() {
                ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                    TokenError::AlgorithmNotAllowed
                }
                ErrorKind::Json(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidClaimFormat(_) => {
                    TokenError::InvalidClaims
                }
                ErrorKind::Base64(_) | ErrorKind::InvalidToken => TokenError::Malformed,
                _ => TokenError::BadSignature,
            })?
            .claims;
        self.check_claims(&claims)?;
        self.check_revocation(&claims)?;
        Ok(claims)
    }

    fn check_revocation(&self, claims: &Claims) -> Result<(), TokenError> {
        match &self.config.revocation {
            Some(hook) => hook.0.check(claims).map_err(TokenError::Revoked),
            None => Ok(()),
        }
    }

    fn accepts_type(&self, typ: Option<&str>) -> bool {
        let required = &self.config.required_types;
        match typ.map(normalise_type) {
            None => required.is_empty(),
            Some(typ) if required.is_empty() => DEFAULT_ACCEPTED_TYPES.contains(&typ.as_str()),
            Some(typ) => required.contains(&typ),
        }
    }

    fn check_claims(&self, claims: &Claims) -> Result<(), TokenError> {
        let config = &*self.config;
        let now = unix_seconds((config.clock)());
        let leeway = self.leeway().as_secs();
        let max_lifetime = config.max_lifetime.as_secs();

        if claims.sub.is_none() {
            return Err(TokenError::MissingClaim("sub"));
        }
        let exp = claims.exp.ok_or(TokenError::MissingClaim("exp"))?;
        if now >= exp.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(leeway))
        {
            return Err(TokenError::NotYetValid);
        }
        if config.require_iat && claims.iat.is_none() {
            return Err(TokenError::MissingClaim("iat"));
        }
        if let Some(iat) = claims.iat {
            if iat > now.saturating_add(leeway) {
                return Err(TokenError::IssuedInFuture);
            }
            if exp.saturating_sub(iat) > max_lifetime {
                return Err(TokenError::LifetimeTooLong);
            }
        }
        if exp.saturating_sub(now) > max_lifetime.saturating_add(leeway) {
            return Err(TokenError::LifetimeTooLong);
        }
        if !config.issuers.is_empty() {
            let iss = claims
                .iss
                .as_deref()
                .ok_or(TokenError::MissingClaim("iss"))?;
            if !config.issuers.contains(iss) {
                return Err(TokenError::WrongIssuer);
            }
        }
        match (&claims.aud, config.audiences.is_empty()) {
            (None, true) => {}
            (None, false) => return Err(TokenError::MissingClaim("aud")),
            (Some(_), true) => return Err(TokenError::WrongAudience),
            (Some(aud), false) => {
                if !config.audiences.iter().any(|a| aud.contains(a)) {
                    return Err(TokenError::WrongAudience);
                }
            }
        }
        Ok(())
    }
}

/// What a key look-up does about an unknown `kid`.
enum Lookup {
    /// Tell the source and answer at once.
    Notify,
    /// Ask the source for a refetch to wait on (filled in when there is one).
    Refresh(Option<KeyRefresh>),
    /// Nothing: this is the look-up after a refetch.
    Final,
}

/// The error code of a revoked token (401, `WWW-Authenticate: Bearer error="invalid_token"`).
pub const TOKEN_REVOKED: ErrorCode = ErrorCode::new("token_revoked");

/// The `typ` values a verifier without [`JwtVerifier::with_required_type`] accepts
/// (besides none), normalised: user access tokens (RFC 9068) and plain JWTs.
const DEFAULT_ACCEPTED_TYPES: [&str; 2] = ["at+jwt", "jwt"];

/// A `typ` value as RFC 7515 §4.1.9 compares it: a media type, so case-insensitive,
/// and `application/` may be left out.
fn normalise_type(typ: &str) -> String {
    let typ = typ.to_ascii_lowercase();
    match typ.strip_prefix("application/") {
        Some(rest) => rest.to_owned(),
        None => typ,
    }
}

/// Exactly three non-empty base64url segments.
fn check_shape(token: &str) -> Result<(), TokenError> {
    let mut segments = 0;
    for segment in token.split('.') {
        segments += 1;
        if segment.is_empty()
            || !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(TokenError::Malformed);
        }
    }
    if segments == 3 {
        Ok(())
    } else {
        Err(TokenError::Malformed)
    }
}

impl TokenError {
    /// The answer to a request refused for this reason: 401 `unauthorized` when no
    /// token was sent, 401 `token_revoked` for a revoked one, 401 `invalid_token`
    /// otherwise, all with `WWW-Authenticate`.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            Self::Missing => ApiError::unauthorized(),
            Self::Revoked(_) => ApiError::new(
                http::StatusCode::UNAUTHORIZED,
                TOKEN_REVOKED,
                "Token revoked; sign in again",
            )
            .with_header(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer error=\"invalid_token\""),
            ),
            _ => ApiError::invalid_token(),
        }
    }
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &*self.config;
        f.debug_struct("JwtVerifier")
            .field("issuers", &c.issuers)
            .field("audiences", &c.audiences)
            .field("leeway", &self.leeway())
            .field("max_lifetime", &c.max_lifetime)
            .field("max_token_bytes", &c.max_token_bytes)
            .field("required_types", &c.required_types)
            .field("require_iat", &c.require_iat)
            .field("cache", &c.cache.is_some())
            .field("revocation", &c.revocation.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_needs_three_base64url_segments() {
        assert!(check_shape("a.b.c").is_ok());
        for bad in ["a.b", "a.b.c.d", "a..c", "a.b.", "a.b+.c", "a.b.c=", ""] {
            assert_eq!(check_shape(bad), Err(TokenError::Malformed), "{bad}");
        }
    }

    #[test]
    fn leeway_is_capped() {
        let key = super::super::VerificationKey::hmac([1u8; 32]).unwrap();
        let v = JwtVerifier::new(key).with_leeway(Duration::from_secs(3600));
        assert_eq!(v.leeway(), DEFAULT_MAX_LEEWAY);
        let v = v.with_max_leeway(Duration::from_secs(7200));
        assert_eq!(v.leeway(), Duration::from_secs(3600));
    }
}
