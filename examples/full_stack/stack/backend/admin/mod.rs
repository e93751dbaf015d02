//! The admin API, `/api/admin/*`: users, roles and the audit trail, for holders of
//! `users.manage`. The router is mounted behind the JWT layer and the gateway's rule
//! table (deny by default), so a handler here only runs for an administrator.
//!
//! Every change is audited with the acting user, the request id and the client address,
//! and is applied to this gateway's revocation list at once (other gateways read it
//! from the database within a second).

pub(crate) mod audit;
pub(crate) mod roles;
pub(crate) mod users;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{any, delete, get, post};
use pulse_core::Identity;
use pulse_core::error::{ApiError, ErrorCode};
use pulse_core::request_id::RequestId;

use super::auth::{Auth, unavailable};
use crate::stack::accounts::{AccountError, Origin};

/// The largest admin request body.
pub const ADMIN_BODY_LIMIT: usize = 16 * 1024;
/// The most roles one request may name, and permissions one role may grant.
pub const MAX_LIST: usize = 64;

/// The admin API's routes (mount them behind authentication and the rule table).
pub fn router(auth: Arc<Auth>) -> Router {
    Router::new()
        .route("/api/admin/users", get(users::list).post(users::add))
        .route(
            "/api/admin/users/{id}",
            axum::routing::patch(users::update).delete(users::remove),
        )
        .route("/api/admin/users/{id}/password", post(users::password))
        .route("/api/admin/roles", get(roles::list).post(roles::add))
        .route("/api/admin/roles/{name}", delete(roles::remove))
        .route("/api/admin/audit", get(audit::list))
        // Unknown admin paths too are behind authentication and the rule table: a
        // stranger learns nothing about which exist.
        .route("/api/admin/{*rest}", any(super::not_found))
        .layer(DefaultBodyLimit::max(ADMIN_BODY_LIMIT))
        .with_state(auth)
}

/// The administrator making a request: their id and the audit origin.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The acting user's id.
    pub id: String,
    /// Who, where from, which request.
    pub origin: Origin,
}

impl FromRequestParts<Arc<Auth>> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, auth: &Arc<Auth>) -> Result<Self, ApiError> {
        // Fails closed: without the JWT layer in front there is no identity.
        let identity = parts
            .extensions
            .get::<Identity>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized().with_request_id_from(parts))?;
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| *addr);
        let client = auth.client(&parts.headers, peer);
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .map(|id| id.as_str().to_owned());
        Ok(Self {
            origin: Origin {
                actor: Some(identity.subject.clone()),
                request_id,
                client_addr: Some(client.to_string()),
            },
            id: identity.subject,
        })
    }
}

/// The answer to a failed account operation, with a stable code per cause: 404 unknown
/// user, 409 conflicts, 422 invalid input (the message says what), 503 when the
/// database is unavailable.
pub fn account_error(error: AccountError) -> ApiError {
    let (status, code) = match &error {
        AccountError::UnknownUser(_) => {
            return ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::new("user_not_found"),
                "No such user",
            );
        }
        AccountError::DuplicateEmail(_) => (StatusCode::CONFLICT, "user_exists"),
        AccountError::DuplicateRole(_) => (StatusCode::CONFLICT, "role_exists"),
        AccountError::RoleInUse { .. } => (StatusCode::CONFLICT, "role_in_use"),
        AccountError::LastAdministrator => (StatusCode::CONFLICT, "last_administrator"),
        AccountError::UnknownRole { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_role"),
        AccountError::InvalidEmail(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_email"),
        AccountError::InvalidRoleName(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_role_name"),
        AccountError::InvalidPermission(_) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_permission")
        }
        AccountError::WeakPassword(_) => (StatusCode::UNPROCESSABLE_ENTITY, "weak_password"),
        AccountError::Unreachable(_) | AccountError::Database(_) => {
            tracing::error!(%error, "an account operation failed");
            return unavailable();
        }
        AccountError::Schema(_) | AccountError::Hashing(_) => {
            tracing::error!(%error, "an account operation failed");
            return ApiError::internal();
        }
    };
    let message = error.to_string();
    ApiError::new(status, ErrorCode::new(code), upper_first(&message))
}

/// 409 `self_lockout`: an administrator taking their own access away.
pub fn self_lockout(what: &'static str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::new("self_lockout"),
        format!("You cannot {what} yourself; another administrator can"),
    )
}

fn upper_first(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// After a change: this gateway's revocation list follows at once.
async fn apply_revocations(auth: &Auth) {
    if let Err(error) = auth.revocations().reload(auth.store()).await {
        // The poll picks it up within a second.
        tracing::warn!(%error, "reloading revocations after a change failed");
    }
}
