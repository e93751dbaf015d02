//! Internal service authentication: only callers holding an internal credential reach
//! an internal service, and the user identity they act for arrives signed.
//!
//! **Server side** — [`InternalAuthLayer`] lets through requests whose path is exactly
//! one of the exempt paths (e.g. `/health`; `/health/`, `//health` or
//! `/health/../api` are *not* exempt) and requests carrying a valid credential; it
//! answers everything else with `403 {"error": "Internal authentication required",
//! "code": "internal_auth_required", ...}`. On success the [`Caller`] and, for signed
//! tokens, the user's [`Identity`] are in the request extensions, and the credential
//! headers are removed so handlers and logs never see them.
//!
//! Credentials are checked by [`CredentialVerifier`]s; two kinds come with Pulse:
//!
//! - [`KeyRing`]: shared secrets with ids in `X-Internal-Auth`, several active at once
//!   for rotation, compared in constant time;
//! - [`InternalTokenVerifier`]: short-lived tokens minted by the gateway with
//!   [`InternalTokenMinter`] in `X-Internal-Token`, carrying the user identity — the
//!   internal service takes the identity from the signed token, never from plain
//!   `X-User-*` headers.
//!
//! **Client side** — [`InternalCredentialLayer`] adds the credential to outbound
//! requests: the ring's primary key and/or a token freshly minted for the request's
//! [`Identity`] extension (insert, not append; marked sensitive).
//!
//! In the Pulse stack the gateway runs `JwtAuthLayer` (user tokens) in front of its
//! proxy and `InternalCredentialLayer::new().with_key(KeyRing::from_env(INTERNAL_KEYS_ENV)?)
//! .with_token(minter, "pulse-etl")` on the proxy's outbound side; the ETL service runs
//! `InternalAuthLayer::new(ring).with_verifier(InternalTokenVerifier::new(key,
//! "pulse-gateway", "pulse-etl")).with_exempt_paths(["/health"])?` and reads the
//! user from the `Identity` extension. Tools calling the ETL service directly send
//! `X-Internal-Auth: <secret>` and act without a user identity.
//!
//! ```
//! use http::{Request, Response, StatusCode};
//! use pulse_core::{Identity, internal_auth::*, jwt::{SigningKey, VerificationKey}};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ring = KeyRing::parse("etl-1:0123456789abcdef0123456789abcdef")?;
//! let token_key = [5u8; 32];
//!
//! // The ETL service: key or signed token, /health open.
//! let etl = ServiceBuilder::new()
//!     .layer(
//!         InternalAuthLayer::new(ring.clone())
//!             .with_verifier(InternalTokenVerifier::new(
//!                 VerificationKey::hmac(token_key)?, "pulse-gateway", "pulse-etl"))
//!             .with_exempt_paths(["/health"])?,
//!     )
//!     .service(service_fn(|req: Request<String>| async move {
//!         let user = req.extensions().get::<Identity>().map(|id| id.subject.clone());
//!         Ok::<_, std::convert::Infallible>(Response::new(user.unwrap_or_default()))
//!     }));
//!
//! // The gateway's outbound stack: key and a token minted for the user.
//! let minter = InternalTokenMinter::new(SigningKey::hmac(token_key)?, "pulse-gateway");
//! let client = ServiceBuilder::new()
//!     .layer(InternalCredentialLayer::new().with_key(ring).with_token(minter, "pulse-etl"))
//!     .service(etl.clone());
//!
//! let mut req = Request::builder().uri("/api/v1/jobs").body(String::new())?;
//! req.extensions_mut().insert(Identity::new("user-7"));
//! assert_eq!(client.oneshot(req).await?.status(), StatusCode::OK);
//!
//! let direct = Request::builder().uri("/api/v1/jobs").body(String::new())?;
//! assert_eq!(etl.clone().oneshot(direct).await?.status(), StatusCode::FORBIDDEN);
//! let health = Request::builder().uri("/health").body(String::new())?;
//! assert_eq!(etl.oneshot(health).await?.status(), StatusCode::OK);
//! # Ok(()) }
//! ```

use std::time::Duration;

use http::{HeaderMap, HeaderName};

use crate::identity::Identity;

mod client;
mod key_ring;
mod layer;
mod paths;
mod service;
mod token;

pub use client::{InternalCredential, InternalCredentialLayer};
pub use key_ring::{INTERNAL_KEYS_ENV, KeyRing, KeyRingError, MIN_INTERNAL_KEY_BYTES};
pub use layer::InternalAuthLayer;
pub use paths::InvalidExemptPath;
pub use service::InternalAuth;
pub use token::{DEFAULT_MAX_INTERNAL_TOKEN_LIFETIME, InternalTokenMinter, InternalTokenVerifier};

/// The response future of [`InternalAuth`].
pub use crate::jwt::ResponseFuture;

/// `x-internal-auth`: a shared secret of the [`KeyRing`].
pub const X_INTERNAL_AUTH: HeaderName = HeaderName::from_static("x-internal-auth");
/// `x-internal-token`: a signed internal token.
pub const X_INTERNAL_TOKEN: HeaderName = HeaderName::from_static("x-internal-token");
/// The headers that carry internal credentials. Mark them sensitive before any
/// logging layer (e.g. tower-http's `SetSensitiveRequestHeadersLayer`), and never
/// let them in from outside (the gateway strips every `X-Internal-*` header).
pub const CREDENTIAL_HEADERS: [HeaderName; 2] = [X_INTERNAL_AUTH, X_INTERNAL_TOKEN];
/// The `typ` header of internal tokens.
pub const INTERNAL_TOKEN_TYPE: &str = "pulse-internal+jwt";
/// The default lifetime of a minted internal token: 60 seconds.
pub const DEFAULT_INTERNAL_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// The service that called, as established by internal authentication; in request
/// extensions after [`InternalAuth`] accepted the request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Caller {
    /// The key id ([`CallerKind::Key`]) or the token's issuer ([`CallerKind::Token`]).
    pub id: String,
    /// How the caller authenticated.
    pub kind: CallerKind,
}

impl Caller {
    /// A caller.
    pub fn new(id: impl Into<String>, kind: CallerKind) -> Self {
        Self {
            id: id.into(),
            kind,
        }
    }
}

/// How a [`Caller`] authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallerKind {
    /// A shared key of the [`KeyRing`].
    Key,
    /// A signed internal token.
    Token,
}

/// A successful credential check: who called and, when the credential carries one,
/// the user they act for.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Authenticated {
    /// The calling service.
    pub caller: Caller,
    /// The user identity, from a signed credential only.
    pub identity: Option<Identity>,
}

impl Authenticated {
    /// A caller without user identity.
    pub const fn new(caller: Caller) -> Self {
        Self {
            caller,
            identity: None,
        }
    }

    /// Attach the user identity (only from a verified, signed credential).
    #[must_use]
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }
}

/// What a [`CredentialVerifier`] found in a request.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum CredentialOutcome {
    /// This kind of credential is not present.
    Absent,
    /// Present and valid.
    Valid(Authenticated),
    /// Present and not valid (wrong, expired, repeated header, …).
    Invalid,
}

/// A kind of internal credential. [`InternalAuthLayer`] asks each of its verifiers;
/// a request passes when at least one finds a valid credential and none finds an
/// invalid one.
pub trait CredentialVerifier: Send + Sync + 'static {
    /// Check the request's headers.
    fn verify(&self, headers: &HeaderMap) -> CredentialOutcome;

    /// Remove this credential's headers (done after verification, so the inner
    /// service never sees secrets).
    fn remove_credential(&self, headers: &mut HeaderMap);
}

#[cfg(feature = "axum")]
mod extract {
    use axum::extract::{FromRequestParts, OptionalFromRequestParts};
    use http::request::Parts;

    use super::Caller;
    use crate::error::ApiError;

    /// Fails closed: without [`InternalAuth`](super::InternalAuth) in front there is
    /// no caller and the handler is never reached (403).
    impl<S: Send + Sync> FromRequestParts<S> for Caller {
        type Rejection = ApiError;

        async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
            parts
                .extensions
                .get::<Caller>()
                .cloned()
                .ok_or_else(|| ApiError::internal_auth_required().with_request_id_from(parts))
        }
    }

    impl<S: Send + Sync> OptionalFromRequestParts<S> for Caller {
        type Rejection = std::convert::Infallible;

        async fn from_request_parts(
            parts: &mut Parts,
            _state: &S,
        ) -> Result<Option<Self>, Self::Rejection> {
            Ok(parts.extensions.get::<Caller>().cloned())
        }
    }
}
