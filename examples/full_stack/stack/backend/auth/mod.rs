//! Users, Argon2id password checks on a bounded pool, login throttling, token issuing:
//! `POST /api/auth/login` and `GET /api/auth/me`.
//!
//! A login is bounded everywhere an anonymous client could make it grow: the body (4 KiB),
//! the e-mail (254 bytes), the password (1 KiB), the throttle's memory (fixed-size
//! keys, capped entries, [`throttle`]) and the memory and threads of concurrent hashes
//! ([`hasher`]). Failures are throttled per (account, client address) and per client
//! address, never per account alone, so a stranger cannot lock a real user out.

pub mod client_addr;
pub mod hasher;
pub mod throttle;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use pulse_core::error::{ApiError, ErrorCode};
use pulse_core::jwt::TokenIssuer;
use pulse_core::request_id::RequestId;
use pulse_core::{Identity, RoleMap};
use serde::Deserialize;
use serde_json::json;

use self::client_addr::ClientAddrResolver;
use self::hasher::{HashingPool, Overloaded};
use self::throttle::{Admission, LoginThrottle};

/// The largest login body read; larger ones are answered 413.
pub const LOGIN_BODY_LIMIT: usize = 4 * 1024;
/// The longest e-mail accepted (RFC 5321's path limit), after trimming.
pub const MAX_EMAIL_BYTES: usize = 254;
/// The longest password accepted.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// What a login refused by a full hashing pool is told to wait.
pub const OVERLOADED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A user of the demo directory.
#[derive(Debug, Clone)]
pub struct User {
    /// Stable user id (the token's `sub`, a run's `requested_by`).
    pub id: String,
    /// Login e-mail.
    pub email: String,
    /// Role names.
    pub roles: Vec<String>,
    /// The Argon2id PHC string.
    pub password_hash: String,
}

/// The user directory and everything a login needs.
pub struct Auth {
    users: HashMap<String, User>,
    dummy_hash: String,
    argon2: Argon2<'static>,
    roles: RoleMap,
    issuer: TokenIssuer,
    pool: HashingPool,
    throttle: LoginThrottle,
    clients: ClientAddrResolver,
}

impl Auth {
    /// An empty directory hashing with these Argon2id costs on `pool`, throttling
    /// failures with `throttle` by the client `clients` resolves.
    pub fn new(
        issuer: TokenIssuer,
        roles: RoleMap,
        (memory_kib, iterations): (u32, u32),
        pool: HashingPool,
        throttle: LoginThrottle,
        clients: ClientAddrResolver,
    ) -> anyhow::Result<Self> {
        let params = Params::new(memory_kib, iterations, 1, None)
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut auth = Self {
            users: HashMap::new(),
            dummy_hash: String::new(),
            argon2,
            roles,
            issuer,
            pool,
            throttle,
            clients,
        };
        // Unknown users are checked against this, so they cost the same time.
        auth.dummy_hash = auth.hash(&super::super::config::random_hex(16))?;
        Ok(auth)
    }

    /// Hash a password (Argon2id, random salt) as a PHC string.
    pub fn hash(&self, password: &str) -> anyhow::Result<String> {
        let salt = SaltString::encode_b64(super::super::config::random_hex(16).as_bytes())
            .map_err(|e| anyhow::anyhow!("salt: {e}"))?;
        Ok(self
            .argon2
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| anyhow::anyhow!("hashing: {e}"))?
            .to_string())
    }

    /// Add a user with a plain password (hashed here).
    pub fn add_user(
        &mut self,
        id: &str,
        email: &str,
        password: &str,
        roles: &[&str],
    ) -> anyhow::Result<()> {
        let password_hash = self.hash(password).context("hashing a demo password")?;
        self.users.insert(
            email.to_ascii_lowercase(),
            User {
                id: id.to_owned(),
                email: email.to_owned(),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                password_hash,
            },
        );
        Ok(())
    }

    /// The identity (with permissions expanded from roles) of `user`.
    pub fn identity_of(&self, user: &User) -> Identity {
        let mut identity = Identity::new(user.id.clone())
            .with_email(user.email.clone())
            .with_roles(user.roles.iter().cloned());
        self.roles.expand(&mut identity);
        identity
    }

    /// Check the credentials of `body` from `client`: a token answer, or the error.
    async fn sign_in(
        &self,
        client: IpAddr,
        body: Result<Json<LoginBody>, JsonRejection>,
    ) -> Result<Response, ApiError> {
        let Json(body) = body.map_err(rejected)?;
        if let Some(error) = body.invalid() {
            return Err(error);
        }
        let account = body.account();
        let keys = self.throttle.keys(&account, client);
        match self.throttle.admit(&keys).await {
            Admission::Proceed => {}
            Admission::Delay(wait) => {
                tracing::info!(%client, "login slowed: many recent failures on this account");
                tokio::time::sleep(wait).await;
            }
            Admission::Refuse(wait) => {
                tracing::warn!(%client, "login throttled");
                return Err(ApiError::too_many_requests(wait)
                    .with_message("Too many failed logins; try again later"));
            }
        }
        // Same work for unknown users: verify against a dummy hash, on the same pool.
        let user = self.users.get(&account);
        let hash = user.map_or(&self.dummy_hash, |u| &u.password_hash);
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
        let Some(user) = user.filter(|_| matches) else {
            self.throttle.record_failure(&keys).await;
            tracing::info!(%client, "login refused");
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::new("invalid_credentials"),
                "Invalid email or password",
            ));
        };
        self.throttle.record_success(&keys).await;
        let identity = self.identity_of(user);
        pulse_core::request_id::record_user_id(&identity.subject);
        let token = self.issuer.issue(&identity).map_err(|err| {
            tracing::error!(error = %err, "issuing a token failed");
            ApiError::internal().with_message("Could not issue a token")
        })?;
        tracing::info!("login succeeded");
        let mut response = Json(token).into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(response)
    }
}

/// The login body.
#[derive(Debug, Deserialize)]
pub struct LoginBody {
    email: String,
    password: String,
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
        self.email.trim().to_ascii_lowercase()
    }
}

/// axum answers its own rejections in plain text; these are the JSON ones.
fn rejected(rejection: JsonRejection) -> ApiError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::payload_too_large().with_message(format!(
            "The login body may be at most {LOGIN_BODY_LIMIT} bytes"
        )),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::new("unsupported_media_type"),
            "Expected Content-Type: application/json",
        ),
        StatusCode::UNPROCESSABLE_ENTITY => {
            ApiError::unprocessable("Expected JSON {\"email\": string, \"password\": string}")
        }
        _ => ApiError::bad_request("Expected JSON {\"email\", \"password\"}"),
    }
}

/// `POST /api/auth/login` (mount it with a `DefaultBodyLimit` of [`LOGIN_BODY_LIMIT`]).
pub async fn login(
    State(auth): State<Arc<Auth>>,
    request_id: Option<Extension<RequestId>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Json<LoginBody>, JsonRejection>,
) -> Response {
    let client = auth
        .clients
        .resolve(&headers, peer.map(|Extension(ConnectInfo(addr))| addr));
    match auth.sign_in(client, body).await {
        Ok(response) => response,
        Err(error) => match request_id {
            Some(Extension(id)) => error.with_request_id(id.to_string()),
            None => error,
        }
        .into_response(),
    }
}

/// `GET /api/auth/me` (behind the JWT layer).
pub async fn me(identity: Identity) -> Response {
    Json(json!({
        "user_id": identity.subject,
        "email": identity.email,
        "roles": identity.roles,
        "permissions": identity.permissions,
    }))
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
    use pulse_core::jwt::SigningKey;

    use super::throttle::{MemoryThrottleStore, ThrottleKeys, ThrottlePolicy};
    use super::*;

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

    fn auth(pool: HashingPool) -> Auth {
        let issuer =
            TokenIssuer::new(SigningKey::hmac("0123456789abcdef0123456789abcdef").unwrap());
        let throttle = LoginThrottle::new(
            ThrottlePolicy::default(),
            ThrottleKeys::new(b"test"),
            MemoryThrottleStore::default(),
        );
        let mut auth = Auth::new(
            issuer,
            RoleMap::new(),
            (1024, 1),
            pool,
            throttle,
            ClientAddrResolver::new(KeyRing::new()),
        )
        .unwrap();
        auth.add_user("admin", "admin@pulse.local", "admin", &[])
            .unwrap();
        auth
    }

    fn body(email: &str, password: &str) -> Result<Json<LoginBody>, JsonRejection> {
        Ok(Json(LoginBody {
            email: email.to_owned(),
            password: password.to_owned(),
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_hashing_pool_answers_503_at_once_for_known_and_unknown_users() {
        let auth = auth(HashingPool::new(1, 0).unwrap());
        let (release, wait) = mpsc::channel::<()>();
        let busy = auth
            .pool
            .try_run(move || {
                let _ = wait.recv();
            })
            .unwrap();
        let started = tokio::time::Instant::now();
        for email in ["admin@pulse.local", "ghost@pulse.local"] {
            let error = auth
                .sign_in(CLIENT, body(email, "admin"))
                .await
                .unwrap_err();
            assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(error.code().as_str(), "overloaded");
            assert_eq!(error.headers()[header::RETRY_AFTER], "1");
        }
        // At once: no timer ran, not even under paused time's auto-advance.
        assert_eq!(started.elapsed(), Duration::ZERO);
        release.send(()).unwrap();
        busy.await;
        // Refusals are not failures: the right password still works, and then a
        // wrong one is an ordinary 401.
        let token = auth
            .sign_in(CLIENT, body("admin@pulse.local", "admin"))
            .await;
        assert_eq!(token.unwrap().status(), StatusCode::OK);
        let error = auth
            .sign_in(CLIENT, body("ghost@pulse.local", "admin"))
            .await
            .unwrap_err();
        assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test(start_paused = true)]
    async fn fields_past_their_limits_are_refused_before_any_hashing() {
        // A pool with no room: anything that reached it would be a 503.
        let auth = auth(HashingPool::new(1, 0).unwrap());
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
                .sign_in(CLIENT, body(email, password))
                .await
                .unwrap_err();
            assert_eq!(error.status(), StatusCode::UNPROCESSABLE_ENTITY, "{email}");
        }
    }
}
