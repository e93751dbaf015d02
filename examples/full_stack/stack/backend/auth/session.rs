//! The session endpoints: `POST /api/auth/refresh` (rotate the refresh cookie, get a new
//! access token), `POST /api/auth/logout`, `GET /api/auth/setup`, and the refresh cookie.
//!
//! The cookie `pulse_refresh` is `HttpOnly` (no script reads it), `SameSite=Strict` (no
//! other site's page sends it), scoped to `Path=/api/auth/` (no other request carries
//! it) and `Secure` when the gateway serves TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use pulse_core::error::{ApiError, ErrorCode};
use pulse_core::jwt::bearer_token;
use pulse_core::request_id::RequestId;

use super::super::super::accounts::seed::SETUP_HINT;
use super::super::super::accounts::sessions::{Logout, REFRESH_TOKEN_CHARS, Rotation};
use super::super::super::accounts::{Origin, REVOCATION_MARGIN};
use super::{Auth, answer, unavailable};
#[allow(unused_imports)] // named by the `#[utoipa::path]` annotations
use crate::stack::backend::openapi::{
    AccountsUnavailable, InternalError, SessionExpired, Unauthorized,
};
use pulse_core::jwt::IssuedToken;

/// The refresh cookie's name.
pub const REFRESH_COOKIE: &str = "pulse_refresh";
/// The refresh cookie's path: only the session endpoints ever see it.
pub const REFRESH_COOKIE_PATH: &str = "/api/auth/";

/// Writes and clears the refresh cookie.
#[derive(Debug, Clone, Copy)]
pub struct RefreshCookie {
    max_age: Duration,
    secure: bool,
}

impl RefreshCookie {
    /// A cookie living `max_age`, `Secure` when `secure`.
    pub const fn new(max_age: Duration, secure: bool) -> Self {
        Self { max_age, secure }
    }

    fn header(&self, value: &str, max_age: u64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let cookie = format!(
            "{REFRESH_COOKIE}={value}; HttpOnly; SameSite=Strict; Path={REFRESH_COOKIE_PATH}; \
             Max-Age={max_age}{secure}"
        );
        // The token is base64url: always a valid header value.
        HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Hand `token` to the client.
    pub fn set(&self, response: &mut Response, token: &str) {
        let value = self.header(token, self.max_age.as_secs());
        response.headers_mut().append(header::SET_COOKIE, value);
    }

    /// Make the client forget the cookie.
    pub fn clear(&self, response: &mut Response) {
        let value = self.header("", 0);
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// The refresh token of the request's cookies, if it has the shape of one.
pub fn refresh_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|line| line.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == REFRESH_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| {
            value.len() == REFRESH_TOKEN_CHARS
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// 401 `session_expired`, with the cookie cleared: sign in again.
fn session_expired(cookie: RefreshCookie) -> Response {
    let mut response = answer(Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::new("session_expired"),
        "Your session has ended; sign in again",
    )));
    cookie.clear(&mut response);
    response
}

#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth",
    params(("cookie" = Option<String>, Header, description = "`pulse_refresh=<token>`, set by the login")),
    responses(
        (status = 200, description = "A new access token; the refresh cookie rotated", body = IssuedToken),
        (status = 401, response = SessionExpired),
        (status = 500, response = InternalError),
        (status = 503, response = AccountsUnavailable),
    ))]
/// `POST /api/auth/refresh`: the cookie's token rotated, a new access token.
pub async fn refresh(
    State(auth): State<Arc<Auth>>,
    request_id: Option<Extension<RequestId>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Response {
    let Some(token) = refresh_token(&headers) else {
        return session_expired(auth.cookie);
    };
    let client = auth.client(&headers, peer.map(|Extension(ConnectInfo(addr))| addr));
    let origin = Origin {
        actor: None,
        request_id: request_id.map(|Extension(id)| id.to_string()),
        client_addr: Some(client.to_string()),
    };
    match auth.store.rotate_session(token, &origin).await {
        Ok(Rotation::Rotated(session)) => {
            pulse_core::request_id::record_user_id(&session.user.id);
            let mut response = auth.issue(&session.user, &session.family);
            if response.status().is_success() {
                auth.cookie.set(&mut response, &session.refresh_token);
            }
            response
        }
        Ok(Rotation::Reused { family, user_id }) => {
            // Its access tokens die here at once; other gateways read it from the database.
            auth.revocations
                .revoke_session(&family, session_revoked_until(&auth));
            tracing::warn!(
                user_id,
                session = family,
                %client,
                "a rotated refresh token was presented again: the session is revoked"
            );
            session_expired(auth.cookie)
        }
        Ok(Rotation::Refused) => session_expired(auth.cookie),
        Err(error) => {
            tracing::error!(%error, "refreshing a session failed");
            answer(Err(unavailable()))
        }
    }
}

/// Until when a session revoked now must stay refused (ms): its last access token's life.
fn session_revoked_until(auth: &Auth) -> i64 {
    let policy = auth.store.policy();
    auth.store.now()
        + i64::try_from((policy.access_ttl + REVOCATION_MARGIN).as_millis()).unwrap_or(i64::MAX)
}

#[utoipa::path(post, path = "/api/auth/logout", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 204, description = "Signed out: the token and its session revoked, the cookie cleared"),
        (status = 401, response = Unauthorized),
        (status = 503, response = AccountsUnavailable),
    ))]
/// `POST /api/auth/logout` (Bearer): the token revoked until it expires, its session
/// (and the cookie's) ended, the cookie cleared.
pub async fn logout(
    State(auth): State<Arc<Auth>>,
    request_id: Option<Extension<RequestId>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Response {
    let claims = match bearer_token(&headers).and_then(|token| auth.verifier.verify_claims(token)) {
        Ok(claims) => claims,
        Err(error) => {
            tracing::debug!(reason = error.as_str(), "logout refused");
            return answer(Err(error.to_api_error()));
        }
    };
    let (Some(user_id), Some(jti), Some(exp)) = (&claims.sub, &claims.jti, claims.exp) else {
        // Our tokens always carry them; a token without them cannot be revoked by id.
        return answer(Err(ApiError::invalid_token()));
    };
    let client = auth.client(&headers, peer.map(|Extension(ConnectInfo(addr))| addr));
    let origin = Origin {
        actor: Some(user_id.clone()),
        request_id: request_id.map(|Extension(id)| id.to_string()),
        client_addr: Some(client.to_string()),
    };
    let expires_at = i64::try_from(exp.saturating_mul(1000)).unwrap_or(i64::MAX);
    let logout = Logout {
        jti,
        expires_at,
        session: claims.sid.as_deref(),
        refresh_token: refresh_token(&headers),
    };
    match auth.store.end_session(&logout, &origin).await {
        Ok(sessions) => {
            let margin = i64::try_from(REVOCATION_MARGIN.as_millis()).unwrap_or(0);
            auth.revocations.revoke_token(jti, expires_at + margin);
            let until = session_revoked_until(&auth);
            for session in &sessions {
                auth.revocations.revoke_session(session, until);
            }
            tracing::info!(user_id, "logout");
            let mut response = StatusCode::NO_CONTENT.into_response();
            auth.cookie.clear(&mut response);
            response
        }
        Err(error) => {
            tracing::error!(%error, "recording a logout failed");
            answer(Err(unavailable()))
        }
    }
}

/// `GET /api/auth/setup`: the sign-in page's hints.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SetupAnswer {
    /// Whether nobody can administer the gateway yet.
    pub bootstrap_required: bool,
    /// How to create the first administrator.
    pub hint: &'static str,
    /// Whether the demo users are seeded.
    pub demo: bool,
}

/// `GET /api/auth/setup` (public): whether the first administrator must still be
/// created, and how; whether the demo users are seeded (their passwords are public).
#[utoipa::path(get, path = "/api/auth/setup", tag = "auth",
    responses(
        (status = 200, description = "Whether the first administrator must still be created", body = SetupAnswer),
        (status = 503, response = AccountsUnavailable),
    ))]
pub async fn setup(State(auth): State<Arc<Auth>>) -> Response {
    match auth.store.bootstrap_required().await {
        Ok(required) => Json(SetupAnswer {
            bootstrap_required: required,
            hint: SETUP_HINT,
            demo: auth.demo,
        })
        .into_response(),
        Err(error) => {
            tracing::error!(%error, "reading the accounts failed");
            answer(Err(unavailable()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_http_only_strict_scoped_and_secure_over_tls() {
        let mut response = Response::new(axum::body::Body::empty());
        RefreshCookie::new(Duration::from_secs(604_800), true).set(&mut response, "tok");
        RefreshCookie::new(Duration::from_secs(604_800), false).clear(&mut response);
        let cookies: Vec<_> = response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .collect();
        assert_eq!(
            cookies[0],
            "pulse_refresh=tok; HttpOnly; SameSite=Strict; Path=/api/auth/; Max-Age=604800; Secure"
        );
        assert_eq!(
            cookies[1],
            "pulse_refresh=; HttpOnly; SameSite=Strict; Path=/api/auth/; Max-Age=0"
        );
    }

    #[test]
    fn only_a_well_formed_refresh_cookie_is_read() {
        let token = "a".repeat(REFRESH_TOKEN_CHARS);
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("theme=dark"));
        headers.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; pulse_refresh={token}")).unwrap(),
        );
        assert_eq!(refresh_token(&headers), Some(token.as_str()));
        for bad in [
            "pulse_refresh=short".to_owned(),
            format!("pulse_refresh={}!", "a".repeat(REFRESH_TOKEN_CHARS - 1)),
            format!("other={token}"),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::COOKIE, HeaderValue::from_str(&bad).unwrap());
            assert_eq!(refresh_token(&headers), None, "{bad}");
        }
    }
}
