//! Users, Argon2id password checks, per-account throttling, token issuing:
//! `POST /api/auth/login` and `GET /api/auth/me`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pulse_core::jwt::TokenIssuer;
use pulse_core::request_id::RequestId;
use pulse_core::{Identity, RoleMap};
use serde::Deserialize;
use serde_json::json;

/// Failures of one account allowed within [`FAILURE_WINDOW`] before it is throttled.
pub const MAX_FAILURES: u32 = 5;
/// The window failures are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The first lock-out; each further failure while throttled doubles it, up to 15 min.
pub const FIRST_LOCKOUT: Duration = Duration::from_secs(30);
/// Accounts tracked at most (older entries are dropped first).
const MAX_TRACKED: usize = 10_000;

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
    throttle: Mutex<HashMap<String, Attempts>>,
}

#[derive(Debug, Clone, Copy)]
struct Attempts {
    failures: u32,
    first: Instant,
    locked_until: Option<Instant>,
    lockout: Duration,
}

impl Auth {
    /// An empty directory hashing with these Argon2id costs.
    pub fn new(
        issuer: TokenIssuer,
        roles: RoleMap,
        memory_kib: u32,
        iterations: u32,
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
            throttle: Mutex::new(HashMap::new()),
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

    fn verify(&self, hash: &str, password: &str) -> bool {
        PasswordHash::new(hash)
            .map(|parsed| {
                self.argon2
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    }

    /// `Some(retry_after)` when `account` is throttled now.
    fn throttled(&self, account: &str, now: Instant) -> Option<Duration> {
        let map = self.throttle.lock().unwrap_or_else(|p| p.into_inner());
        let locked_until = map.get(account)?.locked_until?;
        (locked_until > now).then(|| locked_until - now)
    }

    fn record_failure(&self, account: &str, now: Instant) {
        let mut map = self.throttle.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(account) {
            map.retain(|_, a| now.duration_since(a.first) < FAILURE_WINDOW);
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let entry = map.entry(account.to_owned()).or_insert(Attempts {
            failures: 0,
            first: now,
            locked_until: None,
            lockout: FIRST_LOCKOUT,
        });
        if now.duration_since(entry.first) > FAILURE_WINDOW {
            *entry = Attempts {
                failures: 0,
                first: now,
                locked_until: None,
                lockout: FIRST_LOCKOUT,
            };
        }
        entry.failures += 1;
        if entry.failures >= MAX_FAILURES {
            entry.locked_until = Some(now + entry.lockout);
            entry.lockout = (entry.lockout * 2).min(Duration::from_secs(15 * 60));
        }
    }

    fn record_success(&self, account: &str) {
        let mut map = self.throttle.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(account);
    }
}

/// The login body.
#[derive(Debug, Deserialize)]
pub struct LoginBody {
    email: String,
    password: String,
}

/// `POST /api/auth/login`.
pub async fn login(
    State(auth): State<Arc<Auth>>,
    request_id: Option<axum::Extension<RequestId>>,
    body: Result<Json<LoginBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let request_id = request_id.map(|axum::Extension(id)| id.to_string());
    let Ok(Json(body)) = body else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Expected JSON {\"email\", \"password\"}",
            request_id,
        );
    };
    let account = body.email.trim().to_ascii_lowercase();
    let now = Instant::now();
    if let Some(wait) = auth.throttled(&account, now) {
        tracing::warn!("login throttled");
        let mut response = json_error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Too many failed logins; try again later",
            request_id,
        );
        let secs = wait.as_secs().max(1);
        if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    // Same work for unknown users: verify against a dummy hash.
    let user = auth.users.get(&account).cloned();
    let hash = user
        .as_ref()
        .map_or_else(|| auth.dummy_hash.clone(), |u| u.password_hash.clone());
    let checker = Arc::clone(&auth);
    let password = body.password;
    let matches = tokio::task::spawn_blocking(move || checker.verify(&hash, &password))
        .await
        .unwrap_or(false);
    let Some(user) = user.filter(|_| matches) else {
        auth.record_failure(&account, now);
        tracing::info!("login refused");
        return json_error(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "Invalid email or password",
            request_id,
        );
    };
    auth.record_success(&account);
    let identity = auth.identity_of(&user);
    pulse_core::request_id::record_user_id(&identity.subject);
    match auth.issuer.issue(&identity) {
        Ok(token) => {
            tracing::info!("login succeeded");
            let mut response = Json(token).into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(err) => {
            tracing::error!(error = %err, "issuing a token failed");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Could not issue a token",
                request_id,
            )
        }
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
