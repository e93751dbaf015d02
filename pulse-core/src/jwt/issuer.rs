//! [`TokenIssuer`]: signs user tokens for login endpoints.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

use super::{
    Audience, Claims, IssueError, SigningKey, USER_TOKEN_TYPE, claims::unix_seconds,
    verifier::Clock,
};
use crate::identity::Identity;

/// The default lifetime of an issued user token: one hour.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Signs user tokens: `sub`, `email`, `roles`, `permissions`, `iat`, `exp`, a fresh
/// `jti`, and `iss`/`aud`/`nbf` when configured, with the `typ` header
/// [`USER_TOKEN_TYPE`] (`at+jwt`, RFC 9068) so that no verifier of another kind of
/// token accepts them.
///
/// Give the tokens an audience of their own (e.g. `pulse-api`) and have the verifier
/// require it, the type and this issuer's lifetime
/// ([`JwtVerifier::with_max_lifetime`](super::JwtVerifier::with_max_lifetime)).
///
/// ```
/// use pulse_core::{Identity, jwt::{SigningKey, TokenIssuer}};
///
/// let issuer = TokenIssuer::new(SigningKey::hmac([3u8; 32])?)
///     .with_issuer("pulse-gateway")
///     .with_audience("pulse")
///     .with_lifetime(std::time::Duration::from_secs(900));
/// let token = issuer.issue(&Identity::new("u1").with_email("u1@pulse.local"))?;
/// assert_eq!(token.token_type, "Bearer");
/// assert_eq!(token.expires_in, 900);
/// assert_eq!(token.access_token.split('.').count(), 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct TokenIssuer {
    key: SigningKey,
    issuer: Option<String>,
    audience: Option<String>,
    lifetime: Duration,
    not_before: bool,
    typ: &'static str,
    clock: Clock,
}

/// A freshly issued token, serialisable as the login answer
/// `{"access_token", "token_type": "Bearer", "expires_in"}`.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct IssuedToken {
    /// The signed token.
    pub access_token: String,
    /// Always `"Bearer"`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^Bearer$"))]
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: u64,
    /// When the token expires.
    #[serde(skip)]
    pub expires_at: SystemTime,
    /// The token's `jti`.
    #[serde(skip)]
    pub jti: String,
}

impl TokenIssuer {
    /// An issuer signing with `key`, tokens living [`DEFAULT_TOKEN_LIFETIME`].
    pub fn new(key: SigningKey) -> Self {
        Self {
            key,
            issuer: None,
            audience: None,
            lifetime: DEFAULT_TOKEN_LIFETIME,
            not_before: false,
            typ: USER_TOKEN_TYPE,
            clock: Arc::new(SystemTime::now),
        }
    }

    /// Set `iss`.
    #[must_use]
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Set `aud`.
    #[must_use]
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// How long issued tokens live (default [`DEFAULT_TOKEN_LIFETIME`]). Give the
    /// verifier the same maximum lifetime.
    #[must_use]
    pub const fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Also set `nbf` (to the issue time).
    #[must_use]
    pub const fn with_not_before(mut self, not_before: bool) -> Self {
        self.not_before = not_before;
        self
    }

    /// The time on the issuer's clock.
    #[cfg_attr(not(feature = "internal-auth"), allow(dead_code))]
    pub(crate) fn now(&self) -> SystemTime {
        (self.clock)()
    }

    /// Set the `typ` header (default [`USER_TOKEN_TYPE`]).
    #[must_use]
    #[cfg_attr(not(feature = "internal-auth"), allow(dead_code))]
    pub(crate) const fn with_type(mut self, typ: &'static str) -> Self {
        self.typ = typ;
        self
    }

    /// Read the time from `clock` instead of the system clock (for tests).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The configured lifetime.
    pub const fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Sign a token for `identity`.
    pub fn issue(&self, identity: &Identity) -> Result<IssuedToken, IssueError> {
        self.issue_for(identity, self.audience.as_deref(), &IssueOptions::new())
    }

    /// Sign a token for `identity` as [`issue`](Self::issue) does, with `options`: a
    /// session id (`sid`), an earliest issue time.
    pub fn issue_with(
        &self,
        identity: &Identity,
        options: &IssueOptions,
    ) -> Result<IssuedToken, IssueError> {
        self.issue_for(identity, self.audience.as_deref(), options)
    }

    /// Sign a token for `identity` with this audience instead of the configured one.
    pub(crate) fn issue_for(
        &self,
        identity: &Identity,
        audience: Option<&str>,
        options: &IssueOptions,
    ) -> Result<IssuedToken, IssueError> {
        let mut now = unix_seconds((self.clock)());
        if let Some(earliest) = options.not_issued_before {
            now = now.max(unix_seconds(earliest));
        }
        let lifetime = self.lifetime.as_secs();
        let exp = now.saturating_add(lifetime);
        let jti = uuid::Uuid::new_v4().to_string();
        let mut claims = Claims::for_identity(identity);
        claims.iat = Some(now);
        claims.exp = Some(exp);
        claims.nbf = self.not_before.then_some(now);
        claims.iss.clone_from(&self.issuer);
        claims.aud = audience.map(|a| Audience::One(a.to_owned()));
        claims.jti = Some(jti.clone());
        claims.sid.clone_from(&options.session_id);
        let access_token = self.key.sign(self.typ, &claims).map_err(IssueError::new)?;
        Ok(IssuedToken {
            access_token,
            token_type: "Bearer",
            expires_in: lifetime,
            expires_at: UNIX_EPOCH + Duration::from_secs(exp),
            jti,
        })
    }
}

/// What [`TokenIssuer::issue_with`] adds to a token.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use pulse_core::{Identity, jwt::{IssueOptions, JwtVerifier, SigningKey, TokenIssuer, VerificationKey}};
///
/// let issuer = TokenIssuer::new(SigningKey::hmac([4u8; 32])?);
/// let soon = SystemTime::now() + Duration::from_secs(1);
/// let options = IssueOptions::new().with_session_id("family-7").issued_no_earlier_than(soon);
/// let token = issuer.issue_with(&Identity::new("u1"), &options)?;
/// let claims = JwtVerifier::new(VerificationKey::hmac([4u8; 32])?).verify_claims(&token.access_token)?;
/// assert_eq!(claims.sid.as_deref(), Some("family-7"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IssueOptions {
    session_id: Option<String>,
    not_issued_before: Option<SystemTime>,
}

impl IssueOptions {
    /// No options: what [`TokenIssuer::issue`] does.
    pub const fn new() -> Self {
        Self {
            session_id: None,
            not_issued_before: None,
        }
    }

    /// Write the session id `sid` (OpenID Connect), so that ending the session can
    /// revoke the token (see [`TokenRevocation`](super::TokenRevocation)).
    #[must_use]
    pub fn with_session_id(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    /// Issue the token at `earliest` if the clock is behind it (`iat`, and `exp` with
    /// it, move forward; the lifetime stays).
    ///
    /// `iat` has whole seconds. A revocation of every token a subject got before a
    /// moment (a password change) is therefore kept as the next whole second, and a
    /// token issued within the same second, after the change, must not fall before it:
    /// issue it no earlier than that second. Keep `earliest` within the verifiers'
    /// leeway of now (a second is enough).
    #[must_use]
    pub const fn issued_no_earlier_than(mut self, earliest: SystemTime) -> Self {
        self.not_issued_before = Some(earliest);
        self
    }
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("key", &self.key)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("lifetime", &self.lifetime)
            .field("not_before", &self.not_before)
            .finish_non_exhaustive()
    }
}
