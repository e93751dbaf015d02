//! `/api/admin/roles…`: list, add, remove (not while users hold it).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pulse_core::error::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ADMIN_BODY_LIMIT, Actor, MAX_LIST, account_error, apply_revocations};
use crate::stack::accounts::AccountError;
use crate::stack::accounts::roles::{MAX_DESCRIPTION, RoleRecord};
use crate::stack::backend::auth::{Auth, answer, json_rejection};
#[allow(unused_imports)] // named by the `#[utoipa::path]` annotations
use crate::stack::backend::openapi::{
    AccountInvalid, AccountsUnavailable, BadRequest, Forbidden, InternalError, PayloadTooLarge,
    RoleConflict, RoleNotFound, Unauthorized, UnsupportedMediaType,
};

/// `POST /api/admin/roles`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRole {
    /// 1 to 64 of `a-z`, `0-9`, `_`, `-`, `.`.
    #[schema(pattern = r"^[a-z0-9_.-]{1,64}$")]
    name: String,
    /// Dotted permission grants, possibly with whole-segment wildcards (at most 64).
    #[schema(max_items = 64)]
    permissions: Vec<String>,
    /// What it is for (at most 500 characters).
    #[serde(default)]
    #[schema(max_length = 500)]
    description: Option<String>,
}

/// `GET /api/admin/roles`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RolesAnswer {
    /// Every role.
    pub roles: Vec<RoleRecord>,
}

/// `POST /api/admin/roles`: the role added.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoleAnswer {
    /// The role.
    pub role: RoleRecord,
}

/// `GET /api/admin/roles`.
#[utoipa::path(get, path = "/api/admin/roles", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "Every role", body = RolesAnswer),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = InternalError),
        (status = 503, response = AccountsUnavailable),))]
pub async fn list(State(auth): State<Arc<Auth>>, _actor: Actor) -> Response {
    answer(
        auth.store()
            .list_roles()
            .await
            .map(|roles| Json(RolesAnswer { roles }).into_response())
            .map_err(account_error),
    )
}

/// `POST /api/admin/roles` → 201 `{role}`.
#[utoipa::path(post, path = "/api/admin/roles", tag = "admin", security(("bearer" = [])),
    request_body(content = NewRole, content_type = "application/json"),
    responses((status = 201, description = "Added", body = RoleAnswer),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 409, response = RoleConflict),
        (status = 422, response = AccountInvalid),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = InternalError),
        (status = 503, response = AccountsUnavailable),))]
pub async fn add(
    State(auth): State<Arc<Auth>>,
    actor: Actor,
    request: Result<Json<NewRole>, JsonRejection>,
) -> Response {
    answer(
        async {
            let Json(role) = request.map_err(|rejection| {
                json_rejection(
                    rejection,
                    ADMIN_BODY_LIMIT,
                    "Expected JSON {\"name\", \"permissions\": [..], \"description\"?}",
                )
            })?;
            if role.permissions.len() > MAX_LIST {
                return Err(ApiError::unprocessable(format!(
                    "At most {MAX_LIST} permissions"
                )));
            }
            if role
                .description
                .as_ref()
                .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
            {
                return Err(ApiError::unprocessable(format!(
                    "The description may have at most {MAX_DESCRIPTION} characters"
                )));
            }
            let role = auth
                .store()
                .add_role(
                    &role.name,
                    &role.permissions,
                    role.description.as_deref(),
                    &actor.origin,
                )
                .await
                .map_err(account_error)?;
            Ok((StatusCode::CREATED, Json(RoleAnswer { role })).into_response())
        }
        .await,
    )
}

/// `DELETE /api/admin/roles/{name}` → 204; 404 unknown; 409 while users hold it.
#[utoipa::path(delete, path = "/api/admin/roles/{name}", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "The role's name")),
    responses((status = 204, description = "Removed"),
        (status = 404, response = RoleNotFound),
        (status = 409, response = RoleConflict),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = InternalError),
        (status = 503, response = AccountsUnavailable),))]
pub async fn remove(
    State(auth): State<Arc<Auth>>,
    actor: Actor,
    Path(name): Path<String>,
) -> Response {
    answer(
        async {
            match auth.store().remove_role(&name, &actor.origin).await {
                Ok(_) => {}
                Err(AccountError::UnknownRole { .. }) => {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        ErrorCode::new("role_not_found"),
                        "No such role",
                    ));
                }
                Err(error) => return Err(account_error(error)),
            }
            apply_revocations(&auth).await;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}
