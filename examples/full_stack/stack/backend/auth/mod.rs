//! Sign-in and sessions: `POST /api/auth/login`, `/refresh`, `/logout`, `GET /api/auth/me`
//! and `/setup`. Users live in the accounts store (`stack::accounts`); passwords are
//! checked on the bounded hashing pool; access tokens are short JWTs, sessions go on with
//! a rotating refresh cookie ([`session`]).
//!
//! A login is bounded everywhere an anonymous client could make it grow: the body (4 KiB),
//! the e-mail (254 bytes), the password (1 KiB), the throttle's memory (fixed-size
//! keys, capped entries, [`throttle`]) and the memory and threads of concurrent hashes
//! ([`hasher`]). Failures are throttled per (account, client address) and per client
//! address, never per account alone, so a stranger cannot lock a real user out. Unknown
//! users, wrong passwords and disabled users get the same answer after the same work.

pub mod client_addr;
pub mod hasher;
pub mod session;
pub mod throttle;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use pulse_core::Identity;
use pulse_core::error::{ApiError, ErrorCode};
use pulse_core::jwt::IssuedToken;
use pulse_core::jwt::{IssueOptions, JwtVerifier, TokenIssuer};
use pulse_core::request_id::RequestId;
use serde::{Deserialize, Serialize};

#[allow(unused_imports)] // named by the `#[utoipa::path]` annotations
use super::openapi::{
    AccountsUnavailable, BadRequest, InternalError, Invalid, LoginRefused, PayloadTooLarge,
    RateLimited, Unauthorized, UnsupportedMediaType,
};
use serde_json::json;

use self::client_addr::ClientAddrResolver;
use self::hasher::{HashingPool, Overloaded};
use self::session::RefreshCookie;
use self::throttle::keys::ThrottleKey;
use self::throttle::{Admission, LoginThrottle};
use super::super::accounts::audit::{AuditAction, AuditEvent};
use super::super::accounts::password::PasswordHashing;
use super::super::accounts::revocation::RevocationList;
use super::super::accounts::sessions::SessionUser;
use super::super::accounts::{AccountError, AccountStore, Origin};

/// The largest login body read; larger ones are answered 413.
pub const LOGIN_BODY_LIMIT: usize = 4 * 1024;
/// The longest e-mail accepted (RFC 5321's path limit), after trimming.
pub const MAX_EMAIL_BYTES: usize = 254;
/// The longest password accepted.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// What a login refused by a full hashing pool is told to wait.
pub const OVERLOADED_RETRY_AFTER: Duration = Duration::from_secs(1);
/// One `login_throttled` audit row per (account, client) and this long: a client
/// hammering a locked pair must not turn each refusal into a database write.
pub const THROTTLE_AUDIT_INTERVAL: Duration = Duration::from_secs(60);

/// Everything sign-in, sessions and the admin API share.
pub struct Auth {
    store: AccountStore,
    revocations: RevocationList,
    issuer: TokenIssuer,
    verifier: JwtVerifier,
    // Hashes the passwords the admin API sets.
    hashing: PasswordHashing,
    dummy_hash: String,
    pool: HashingPool,
    throttle: LoginThrottle,
    clients: ClientAddrResolver,
    cookie: RefreshCookie,
    demo: bool,
    throttle_audited: moka::sync::Cache<ThrottleKey, ()>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("store", &self.store)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// What [`Auth::new`] is made of.
pub struct AuthParts {
    /// The accounts.
    pub store: AccountStore,
    /// The revocation list the verifier consults (logouts are applied to it at once).
    pub revocations: RevocationList,
    /// Signs access tokens (its lifetime is the session policy's).
    pub issuer: TokenIssuer,
    /// Verifies them (for a logout's token).
    pub verifier: JwtVerifier,
    /// Hashes new passwords (admin API).
    pub hashing: PasswordHashing,
    /// Runs password checks and hashes.
    pub pool: HashingPool,
    /// Counts failures.
    pub throttle: LoginThrottle,
    /// Finds the client's address.
    pub clients: ClientAddrResolver,
    /// Whether the refresh cookie is `Secure` (served over TLS).
    pub secure_cookie: bool,
    /// Whether the demo users are seeded (the sign-in page offers them).
    pub demo: bool,
}

impl Auth {
    /// Sign-in over `parts`.
    pub fn new(parts: AuthParts) -> Result<Self, AccountError> {
        // Unknown users are checked against this, so they cost the same time.
        let dummy_hash = parts.hashing.hash(&super::super::config::random_hex(16))?;
        let cookie = RefreshCookie::new(parts.store.policy().refresh_ttl, parts.secure_cookie);
        Ok(Self {
            store: parts.store,
            revocations: parts.revocations,
            issuer: parts.issuer,
            verifier: parts.verifier,
            hashing: parts.hashing,
            dummy_hash,
            pool: parts.pool,
            throttle: parts.throttle,
            clients: parts.clients,
            cookie,
            demo: parts.demo,
            throttle_audited: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(THROTTLE_AUDIT_INTERVAL)
                .build(),
        })
    }

    /// The accounts.
    pub fn store(&self) -> &AccountStore {
        &self.store
    }

    /// The revocation list.
    pub fn revocations(&self) -> &RevocationList {
        &self.revocations
    }

    /// The hashing pool.
    pub fn pool(&self) -> &HashingPool {
        &self.pool
    }

    /// The Argon2id hasher of new passwords.
    pub fn hashing(&self) -> &PasswordHashing {
        &self.hashing
    }

    /// The client address of a request with `headers` from `peer`.
    pub fn client(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> IpAddr {
        self.clients.resolve(headers, peer)
    }

    /// An access token for a session's user: its roles and permissions as of now, its
    /// session id, issued no earlier than the user's "valid after" stamp. (A signing
    /// failure is answered 500.)
    fn issue(&self, user: &SessionUser, family: &str) -> Response {
        let identity = Identity::new(user.id.clone())
            .with_email(user.email.clone())
            .with_roles(user.roles.iter().cloned())
            .with_permissions(user.permissions.iter().cloned());
        let mut options = IssueOptions::new().with_session_id(family);
        if let Some(valid_after) = user.valid_after.and_then(|ms| u64::try_from(ms).ok()) {
            options =
                options.issued_no_earlier_than(UNIX_EPOCH + Duration::from_millis(valid_after));
        }
        let token = match self.issuer.issue_with(&identity, &options) {
            Ok(token) => token,
            Err(err) => {
                tracing::error!(error = %err, "issuing a token failed");
                return answer(Err(
                    ApiError::internal().with_message("Could not issue a token")
                ));
            }
        };
        let mut response = Json(token).into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    /// Record a refused or throttled login (best effort: the answer does not wait on it
    /// failing).
    async fn audit_login(
        &self,
        action: AuditAction,
        origin: &Origin,
        user_id: Option<&str>,
        detail: serde_json::Value,
    ) {
        self.store
            .record_or_log(&AuditEvent::new(action, origin, user_id, detail))
            .await;
    }

    /// Check the credentials of `body` from `client`: a token answer, or the error.
    async fn sign_in(
        &self,
        client: IpAddr,
        request_id: Option<String>,
        body: Result<Json<LoginBody>, JsonRejection>,
    ) -> Result<Response, ApiError> {
        let Json(body) = body.map_err(rejected)?;
        if let Some(error) = body.invalid() {
            return Err(error);
        }
        let account = body.account();
        let origin = Origin {
            actor: None,
            request_id,
            client_addr: Some(client.to_string()),
        };
        let keys = self.throttle.keys(&account, client);
        match self.throttle.admit(&keys).await {
            Admission::Proceed => {}
            Admission::Delay(wait) => {
                tracing::info!(%client, "login slowed: many recent failures on this account");
                tokio::time::sleep(wait).await;
            }
            Admission::Refuse(wait) => {
                tracing::warn!(%client, "login throttled");
                if self.throttle_audited.get(&keys.pair).is_none() {
                    self.throttle_audited.insert(keys.pair, ());
                    let detail = json!({"email": account, "retry_after_secs": wait.as_secs()});
                    self.audit_login(AuditAction::LoginThrottled, &origin, None, detail)
                        .await;
                }
                return Err(ApiError::too_many_requests(wait)
                    .with_message("Too many failed logins; try again later"));
            }
        }
        let credentials = self.store.credentials(&account).await.map_err(|error| {
            tracing::error!(%error, "reading the user failed");
            unavailable()
        })?;
        // Same work for unknown users: verify against a dummy hash, on the same pool.
        let hash = credentials
            .as_ref()
            .map_or(&self.dummy_hash, |c| &c.password_hash);
        let matches = match self.pool.verify(hash.clone(), body.password).await {
            Ok(Some(matches)) => matches,
            Ok(None) => {
                tracing::error!("a password check failed");
                return Err(ApiError::internal());
            }
            Err(Overloaded) => {
                tracing::warn!(%client, "login refused: the password-hashing pool is full");
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::new("overloaded"),
                    "Too many sign-ins at once; try again in a moment",
                )
                .with_retry_after(OVERLOADED_RETRY_AFTER));
            }
        };
        let refusal = match &credentials {
            None => Some("unknown_user"),
            Some(_) if !matches => Some("wrong_password"),
            Some(c) if c.disabled => Some("disabled"),
            Some(_) => None,
        };
        let session = match (refusal, &credentials) {
            (None, Some(credentials)) => {
                let mut origin = origin.clone();
                origin.actor = Some(credentials.id.clone());
                self.store
                    .open_session(&credentials.id, &origin)
                    .await
                    .map_err(|error| {
                        tracing::error!(%error, "opening a session failed");
                        unavailable()
                    })?
            }
            _ => None,
        };
        let Some(session) = session else {
            self.throttle.record_failure(&keys).await;
            tracing::info!(%client, reason = refusal.unwrap_or("disabled"), "login refused");
            let detail = json!({"email": account, "reason": refusal.unwrap_or("disabled")});
            let user_id = credentials.as_ref().map(|c| c.id.as_str());
            self.audit_login(AuditAction::LoginFailed, &origin, user_id, detail)
                .await;
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::new("invalid_credentials"),
                "Invalid email or password",
            ));
        };
        self.throttle.record_success(&keys).await;
        pulse_core::request_id::record_user_id(&session.user.id);
        let mut response = self.issue(&session.user, &session.family);
        if response.status().is_success() {
            self.cookie.set(&mut response, &session.refresh_token);
        }
        tracing::info!("login succeeded");
        Ok(response)
    }
}

/// 503: the accounts database cannot be used right now.
pub fn unavailable() -> ApiError {
    ApiError::service_unavailable("Sign-in is unavailable right now; try again in a moment")
        .with_retry_after(Duration::from_secs(1))
}

/// The login body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct LoginBody {
    /// The account's e-mail (at most 254 bytes once trimmed).
    #[schema(min_length = 1, max_length = 254)]
    email: String,
    /// The password (at most 1024 bytes).
    #[schema(min_length = 1, max_length = 1024)]
    password: String,
}

/// `GET /api/auth/me`: who the token says the caller is.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MeAnswer {
    /// The user id (the token's `sub`).
    pub user_id: String,
    /// The e-mail, when the token carries one.
    pub email: Option<String>,
    /// Role names.
    pub roles: Vec<String>,
    /// Permission grants.
    pub permissions: Vec<String>,
}

impl LoginBody {
    /// Why the fields cannot be checked, if they cannot: a field past its limit, or empty.
    fn invalid(&self) -> Option<ApiError> {
        let email = self.email.trim();
        if email.len() > MAX_EMAIL_BYTES {
            return Some(ApiError::unprocessable(format!(
                "The e-mail may be at most {MAX_EMAIL_BYTES} bytes"
            )));
        }
        if self.password.len() > MAX_PASSWORD_BYTES {
            return Some(ApiError::unprocessable(format!(
                "The password may be at most {MAX_PASSWORD_BYTES} bytes"
            )));
        }
        if email.is_empty() || self.password.is_empty() {
            return Some(ApiError::unprocessable("E-mail and password are required"));
        }
        None
    }

    /// The account the e-mail names: trimmed and lower-cased, as users are stored.
    fn account(&self) -> String {
        self.email.trim().to_lowercase()
    }
}

/// axum answers its own rejections in plain text; these are the JSON ones.
fn rejected(rejection: JsonRejection) -> ApiError {
    json_rejection(
        rejection,
        LOGIN_BODY_LIMIT,
        "Expected JSON {\"email\": string, \"password\": string}",
    )
}

/// The JSON error of a body axum's `Json` refused: 413 past `limit`, 415 without the
/// JSON content type, 422 (saying `shape`) for the wrong fields, 400 for broken JSON.
pub fn json_rejection(rejection: JsonRejection, limit: usize, shape: &'static str) -> ApiError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::payload_too_large()
            .with_message(format!("The body may be at most {limit} bytes")),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::new("unsupported_media_type"),
            "Expected Content-Type: application/json",
        ),
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::unprocessable(shape),
        _ => ApiError::bad_request(shape),
    }
}

/// The error as an answer, with the request's correlation id.
pub fn answer(result: Result<Response, ApiError>) -> Response {
    match result {
        Ok(response) => response,
        Err(error) => {
            let error = match RequestId::current() {
                Some(id) if error.request_id().is_none() => error.with_request_id(id.to_string()),
                _ => error,
            };
            error.into_response()
        }
    }
}

#[utoipa::path(post, path = "/api/auth/login", tag = "auth",
    request_body(content = LoginBody, content_type = "application/json", description = "At most 4 KiB"),
    responses(
        (status = 200, description = "Signed in: an access token, and the refresh cookie (HttpOnly, `Path=/api/auth/`)", body = IssuedToken,
            headers(("set-cookie" = String, description = "`pulse_refresh=...; HttpOnly; SameSite=Strict; Path=/api/auth/`"))),
        (status = 400, response = BadRequest),
        (status = 401, response = LoginRefused),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Invalid),
        (status = 429, response = RateLimited),
        (status = 500, response = InternalError),
        (status = 503, response = AccountsUnavailable),
    ))]
/// `POST /api/auth/login` (mount it with a `DefaultBodyLimit` of [`LOGIN_BODY_LIMIT`]).
pub async fn login(
    State(auth): State<Arc<Auth>>,
    request_id: Option<Extension<RequestId>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Json<LoginBody>, JsonRejection>,
) -> Response {
    let client = auth.client(&headers, peer.map(|Extension(ConnectInfo(addr))| addr));
    let request_id = request_id.map(|Extension(id)| id.to_string());
    let result = auth.sign_in(client, request_id.clone(), body).await;
    match (result, request_id) {
        (Err(error), Some(id)) => error.with_request_id(id).into_response(),
        (result, _) => answer(result),
    }
}

/// `GET /api/auth/me` (behind the JWT layer).
#[utoipa::path(get, path = "/api/auth/me", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = MeAnswer),
        (status = 401, response = Unauthorized),
    ))]
pub async fn me(identity: Identity) -> Response {
    Json(MeAnswer {
        user_id: identity.subject,
        email: identity.email,
        roles: identity.roles,
        permissions: identity.permissions,
    })
    .into_response()
}

/// A JSON error answer with any code.
pub fn json_error(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: Option<String>,
) -> Response {
    (
        status,
        Json(json!({"error": message, "code": code, "request_id": request_id})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::mpsc;

    use pulse_core::internal_auth::KeyRing;
    use pulse_core::jwt::{SigningKey, VerificationKey};

    use super::super::super::accounts::seed::seed_demo;
    use super::super::super::accounts::test_support::{hashing, store};
    use super::throttle::{MemoryThrottleStore, ThrottleKeys, ThrottlePolicy};
    use super::*;

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    async fn auth(pool: HashingPool) -> Auth {
        let store = store().await;
        seed_demo(&store, &hashing()).await.unwrap();
        Auth::new(AuthParts {
            store,
            revocations: RevocationList::default(),
            issuer: TokenIssuer::new(SigningKey::hmac(SECRET).unwrap()),
            verifier: JwtVerifier::new(VerificationKey::hmac(SECRET).unwrap()),
            hashing: hashing(),
            pool,
            throttle: LoginThrottle::new(
                ThrottlePolicy::default(),
                ThrottleKeys::new(b"test"),
                MemoryThrottleStore::default(),
            ),
            clients: ClientAddrResolver::new(KeyRing::new()),
            secure_cookie: false,
            demo: true,
        })
        .unwrap()
    }

    fn body(email: &str, password: &str) -> Result<Json<LoginBody>, JsonRejection> {
        Ok(Json(LoginBody {
            email: email.to_owned(),
            password: password.to_owned(),
        }))
    }

    #[tokio::test]
    async fn a_full_hashing_pool_answers_503_at_once_for_known_and_unknown_users() {
        let auth = auth(HashingPool::new(1, 0).unwrap()).await;
        let (release, wait) = mpsc::channel::<()>();
        let busy = auth
            .pool
            .try_run(move || {
                let _ = wait.recv();
            })
            .unwrap();
        for email in ["admin@pulse.local", "ghost@pulse.local"] {
            // Refused without waiting: the blocked job is never released meanwhile.
            let error = auth
                .sign_in(CLIENT, None, body(email, "admin"))
                .await
                .unwrap_err();
            assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(error.code().as_str(), "overloaded");
            assert_eq!(error.headers()[header::RETRY_AFTER], "1");
        }
        release.send(()).unwrap();
        busy.await;
        // Refusals are not failures: the right password still works, and then a
        // wrong one is an ordinary 401.
        let token = auth
            .sign_in(CLIENT, None, body("admin@pulse.local", "admin"))
            .await;
        assert_eq!(token.unwrap().status(), StatusCode::OK);
        let error = auth
            .sign_in(CLIENT, None, body("ghost@pulse.local", "admin"))
            .await
            .unwrap_err();
        assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn fields_past_their_limits_are_refused_before_any_hashing() {
        // A pool with no room: anything that reached it would be a 503.
        let auth = auth(HashingPool::new(1, 0).unwrap()).await;
        let (_release, wait) = mpsc::channel::<()>();
        let _busy = auth.pool.try_run(move || {
            let _ = wait.recv();
        });
        let long_email = "e".repeat(MAX_EMAIL_BYTES + 1);
        let long_password = "p".repeat(MAX_PASSWORD_BYTES + 1);
        for (email, password) in [
            (long_email.as_str(), "x"),
            ("admin@pulse.local", long_password.as_str()),
            ("   ", "x"),
            ("admin@pulse.local", ""),
        ] {
            let error = auth
                .sign_in(CLIENT, None, body(email, password))
                .await
                .unwrap_err();
            assert_eq!(error.status(), StatusCode::UNPROCESSABLE_ENTITY, "{email}");
        }
    }
}
