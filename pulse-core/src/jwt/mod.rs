//! User authentication with JSON Web Tokens, secure by default.
//!
//! [`JwtAuthLayer`] reads exactly one `Authorization: Bearer <token>` header (scheme
//! case-insensitive), verifies the token with a [`JwtVerifier`] and puts the
//! [`Identity`](crate::Identity) it carries into request extensions. Every failure is
//! answered by the layer itself with a 401 carrying
//! `WWW-Authenticate: Bearer error="invalid_token"` (or plain `Bearer` when no token
//! was sent) and the JSON error body — never a 500, and the inner service is not
//! called.
//!
//! What "secure by default" means here:
//!
//! - **Algorithms are pinned per key.** The `kid` selects a key (a token without `kid`
//!   gets the only key, when exactly one is configured); the key decides the
//!   algorithm. A token whose `alg` differs — `none`, `HS256` against an RSA key — is
//!   refused before any signature check. `jku`, `x5u` and `jwk` headers are ignored.
//! - **HMAC secrets have at least [`MIN_HMAC_SECRET_BYTES`] bytes**, refused at set-up
//!   otherwise.
//! - **Each kind of token has its own type.** [`TokenIssuer`] writes the `typ` header
//!   [`USER_TOKEN_TYPE`] (`at+jwt`, RFC 9068); internal service tokens carry
//!   `pulse-internal+jwt`. A verifier refuses every other kind: by default it accepts
//!   `at+jwt`, `JWT` or no `typ`; with [`JwtVerifier::with_required_type`] only the
//!   types named. So a token minted for one purpose is never accepted for another,
//!   even when both are signed with the same key.
//! - **Time claims:** `exp` and `iat` required ([`JwtVerifier::require_issued_at`]);
//!   `nbf` and `iat` checked; leeway [`DEFAULT_LEEWAY`], capped; lifetime at most
//!   [`DEFAULT_MAX_LIFETIME`], which is what [`TokenIssuer`] issues
//!   ([`DEFAULT_TOKEN_LIFETIME`]): set both together when you change one.
//! - **`iss`/`aud` required once configured**; a token with an `aud` is refused by a
//!   verifier that has none configured. Give each audience its own name (the gateway's
//!   user tokens `pulse-api`, an internal service's tokens its service id).
//! - **Strict claim types** (see [`Claims`]) and a size cap of [`MAX_TOKEN_BYTES`].
//!
//! Keys: HMAC, RSA, EC and Ed25519 ([`VerificationKey`]) in a [`KeySet`] that can
//! change at run time (rotation), or, with the `jwks` feature, `JwksSource`,
//! fetched from a URL and refreshed in the background. [`TokenIssuer`] signs tokens
//! for login endpoints; [`VerifiedTokenCache`] spares hot paths repeated verification.
//!
//! **Revocation.** A verified token can still be refused by a [`TokenRevocation`] hook
//! ([`JwtVerifier::with_revocation`]), consulted on every verification (cache hits
//! included) with the token's claims: its `jti`, its session `sid`, and `sub` + `iat`
//! against a per-subject "valid after" moment. Such tokens are answered 401
//! `token_revoked`, with `WWW-Authenticate: Bearer error="invalid_token"`.
//!
//! ```
//! use http::{Request, Response, StatusCode, header::AUTHORIZATION};
//! use pulse_core::{Identity, jwt::{JwtAuthLayer, JwtVerifier, SigningKey, TokenIssuer, USER_TOKEN_TYPE, VerificationKey}};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = b"a secret of at least thirty-two bytes";
//! let issuer = TokenIssuer::new(SigningKey::hmac(secret)?)
//!     .with_issuer("pulse")
//!     .with_audience("pulse-api");
//! let verifier = JwtVerifier::new(VerificationKey::hmac(secret)?)
//!     .with_issuer("pulse")
//!     .with_audience("pulse-api")
//!     .with_required_type(USER_TOKEN_TYPE)
//!     .with_max_lifetime(issuer.lifetime());
//!
//! let service = ServiceBuilder::new()
//!     .layer(JwtAuthLayer::new(verifier))
//!     .service(service_fn(|req: Request<String>| async move {
//!         let who = req.extensions().get::<Identity>().map(|id| id.subject.clone());
//!         Ok::<_, std::convert::Infallible>(Response::new(who.unwrap_or_default()))
//!     }));
//!
//! let token = issuer.issue(&Identity::new("user-1"))?.access_token;
//! let req = Request::builder()
//!     .header(AUTHORIZATION, format!("Bearer {token}"))
//!     .body(String::new())?;
//! assert_eq!(service.clone().oneshot(req).await?.status(), StatusCode::OK);
//!
//! let res = service.oneshot(Request::new(String::new())).await?;
//! assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(res.headers()["www-authenticate"], "Bearer");
//! # Ok(()) }
//! ```

use std::time::Duration;

mod bearer;
mod cache;
mod claims;
mod error;
mod future;
mod issuer;
#[cfg(feature = "jwks")]
mod jwks;
mod key;
mod key_set;
mod layer;
mod revocation;
mod service;
mod verifier;

pub use bearer::bearer_token;
pub use cache::VerifiedTokenCache;
pub use claims::{Audience, Claims};
pub use error::{IssueError, KeyError, TokenError};
pub use future::{JwtResponseFuture, ResponseFuture};
pub use issuer::{DEFAULT_TOKEN_LIFETIME, IssueOptions, IssuedToken, TokenIssuer};
/// The signature algorithms, re-exported from `jsonwebtoken`.
pub use jsonwebtoken::Algorithm;
#[cfg(feature = "jwks")]
pub use jwks::{
    DEFAULT_FETCH_TIMEOUT, DEFAULT_MAX_JWKS_BYTES, DEFAULT_MIN_REFETCH_INTERVAL,
    DEFAULT_REFRESH_INTERVAL, JwksError, JwksSource,
};
pub use key::{SigningKey, VerificationKey};
pub use key_set::{KeyRefresh, KeySet, KeySource};
pub use layer::JwtAuthLayer;
pub use revocation::{Revoked, TokenRevocation};
pub use service::JwtAuth;
pub use verifier::{JwtVerifier, TOKEN_REVOKED};

/// The shortest HMAC secret accepted: 32 bytes (256 bits, the size of HS256's hash).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;
/// The default clock-skew leeway: 30 seconds.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// The default cap on the leeway: 5 minutes.
pub const DEFAULT_MAX_LEEWAY: Duration = Duration::from_secs(300);
/// The default maximum token lifetime (`exp - iat`): one hour, the lifetime
/// [`TokenIssuer`] issues by default ([`DEFAULT_TOKEN_LIFETIME`]). Raise it with
/// [`JwtVerifier::with_max_lifetime`] for an identity provider that issues longer ones.
pub const DEFAULT_MAX_LIFETIME: Duration = DEFAULT_TOKEN_LIFETIME;
/// The `typ` header of user access tokens (RFC 9068), written by [`TokenIssuer`].
pub const USER_TOKEN_TYPE: &str = "at+jwt";
/// The default token size cap: 8 KiB.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
