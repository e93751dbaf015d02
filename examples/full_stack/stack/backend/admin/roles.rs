//! `/api/admin/roles…`: list, add, remove (not while users hold it).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pulse_core::error::{ApiError, ErrorCode};
use serde::Deserialize;
use serde_json::json;

use super::{ADMIN_BODY_LIMIT, Actor, MAX_LIST, account_error, apply_revocations};
use crate::stack::accounts::AccountError;
use crate::stack::accounts::roles::MAX_DESCRIPTION;
use crate::stack::backend::auth::{Auth, answer, json_rejection};

/// `POST /api/admin/roles`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRole {
    name: String,
    permissions: Vec<String>,
    #[serde(default)]
    description: Option<String>,
}

/// `GET /api/admin/roles`.
pub async fn list(State(auth): State<Arc<Auth>>, _actor: Actor) -> Response {
    answer(
        auth.store()
            .list_roles()
            .await
            .map(|roles| Json(json!({ "roles": roles })).into_response())
            .map_err(account_error),
    )
}

/// `POST /api/admin/roles` → 201 `{role}`.
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
            Ok((StatusCode::CREATED, Json(json!({ "role": role }))).into_response())
        }
        .await,
    )
}

/// `DELETE /api/admin/roles/{name}` → 204; 404 unknown; 409 while users hold it.
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
