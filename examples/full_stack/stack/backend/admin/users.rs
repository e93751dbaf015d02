//! `/api/admin/users…`: list, add, change (roles, disabled), reset a password, remove.
//!
//! An administrator cannot disable or remove themself, nor take `users.manage` from
//! themself (409 `self_lockout`), and no change may leave the gateway without an enabled
//! user holding `users.manage` (409 `last_administrator`, checked in the change's own
//! transaction): someone can always administer it from the browser.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pulse_core::error::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ADMIN_BODY_LIMIT, Actor, MAX_LIST, account_error, apply_revocations, self_lockout};
use crate::stack::accounts::password::{self, WeakPassword};
use crate::stack::accounts::users::{AdminGuard, UserKey, UserRecord, UserUpdate, UserView};
use crate::stack::accounts::{AccountError, MANAGE_USERS};
use crate::stack::backend::auth::hasher::Overloaded;
use crate::stack::backend::auth::{Auth, OVERLOADED_RETRY_AFTER, answer, json_rejection};
#[allow(unused_imports)] // named by the `#[utoipa::path]` annotations
use crate::stack::backend::openapi::{
    AccountInvalid, AccountsUnavailable, BadRequest, Forbidden, InternalError, PayloadTooLarge,
    Unauthorized, UnsupportedMediaType, UserConflict, UserNotFound,
};

/// `POST /api/admin/users`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// The login e-mail.
    #[schema(min_length = 3, max_length = 254)]
    email: String,
    /// Role names (at most 64).
    #[schema(max_items = 64)]
    roles: Vec<String>,
    /// The password; absent: one is generated and answered once.
    #[serde(default)]
    #[schema(min_length = 12, max_length = 1024)]
    password: Option<String>,
}

/// `PATCH /api/admin/users/{id}`: roles and/or state (at least one of them).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
// `minProperties: 1` is set by the document's modifier: utoipa 5.5's `min_properties`
// attribute writes `maxProperties`.
pub struct UserChange {
    /// The new role names (at most 64).
    #[serde(default)]
    #[schema(max_items = 64)]
    roles: Option<Vec<String>>,
    /// Whether sign-in is refused.
    #[serde(default)]
    disabled: Option<bool>,
}

/// `POST /api/admin/users/{id}/password`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordReset {
    /// The new password; absent: one is generated and answered once.
    #[serde(default)]
    #[schema(min_length = 12, max_length = 1024)]
    password: Option<String>,
}

/// `GET /api/admin/users`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsersAnswer {
    /// Every user.
    pub users: Vec<UserView>,
}

/// A user added or changed; `password` when one was generated (shown this once).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserAnswer {
    /// The user.
    pub user: UserView,
    /// The generated password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// `POST /api/admin/users/{id}/password`: the generated password, if one was.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasswordAnswer {
    /// The generated password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// The JSON error of a body that is not `shape`.
fn rejected(shape: &'static str) -> impl Fn(JsonRejection) -> ApiError {
    move |rejection| json_rejection(rejection, ADMIN_BODY_LIMIT, shape)
}

/// 422: a request naming more than [`MAX_LIST`] roles.
fn too_many_roles() -> ApiError {
    ApiError::unprocessable(format!("At most {MAX_LIST} roles"))
}

/// The password to set: the one given (checked against the rules) or a generated one
/// (returned to the administrator once), hashed on the login's bounded pool.
async fn new_password(
    auth: &Auth,
    given: Option<String>,
) -> Result<(String, Option<String>), ApiError> {
    let (password, generated) = match given {
        Some(password) => {
            password::check_strength(&password)
                .map_err(|weak: WeakPassword| account_error(AccountError::WeakPassword(weak)))?;
            (password, None)
        }
        None => {
            let password = password::generate();
            (password.clone(), Some(password))
        }
    };
    let hashing = auth.hashing().clone();
    let job = auth
        .pool()
        .try_run(move || hashing.hash(&password))
        .map_err(|Overloaded| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::new("overloaded"),
                "Too many password operations at once; try again in a moment",
            )
            .with_retry_after(OVERLOADED_RETRY_AFTER)
        })?;
    match job.await {
        Some(Ok(hash)) => Ok((hash, generated)),
        Some(Err(error)) => Err(account_error(error)),
        None => Err(ApiError::internal()),
    }
}

/// `GET /api/admin/users`.
#[utoipa::path(get, path = "/api/admin/users", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "Every user", body = UsersAnswer),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = InternalError),
        (status = 503, response = AccountsUnavailable),))]
pub async fn list(State(auth): State<Arc<Auth>>, _actor: Actor) -> Response {
    answer(
        auth.store()
            .list_users()
            .await
            .map(|users| {
                let users = users.iter().map(UserRecord::to_view).collect();
                Json(UsersAnswer { users }).into_response()
            })
            .map_err(account_error),
    )
}

/// `POST /api/admin/users` → 201 `{user, password?}`.
#[utoipa::path(post, path = "/api/admin/users", tag = "admin", security(("bearer" = [])),
    request_body(content = NewUser, content_type = "application/json"),
    responses((status = 201, description = "Added; `password` when generated", body = UserAnswer),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 409, response = UserConflict),
        (status = 422, response = AccountInvalid),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = InternalError),
        (status = 503, response = AccountsUnavailable),))]
pub async fn add(
    State(auth): State<Arc<Auth>>,
    actor: Actor,
    request: Result<Json<NewUser>, JsonRejection>,
) -> Response {
    answer(
        async {
            let Json(request) = request.map_err(rejected(
                "Expected JSON {\"email\", \"roles\": [..], \"password\"?}",
            ))?;
            if request.roles.len() > MAX_LIST {
                return Err(too_many_roles());
            }
            // Cheap checks first: no hashing for a request that fails anyway.
            crate::stack::accounts::users::normalise_email(&request.email)
                .map_err(account_error)?;
            let (hash, generated) = new_password(&auth, request.password).await?;
            let user = auth
                .store()
                .add_user(&request.email, &hash, &request.roles, &actor.origin)
                .await
                .map_err(account_error)?;
            let body = UserAnswer {
                user: user.to_view(),
                password: generated,
            };
            Ok((StatusCode::CREATED, Json(body)).into_response())
        }
        .await,
    )
}

/// `PATCH /api/admin/users/{id}` → 200 `{user}`: roles and/or state, in one change.
/// 409 `self_lockout` for the administrator's own access, 409 `last_administrator` when
/// nobody else could administer afterwards.
#[utoipa::path(patch, path = "/api/admin/users/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The user's id")),
    request_body(content = UserChange, content_type = "application/json"),
    responses((status = 200, description = "Changed", body = UserAnswer),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 404, response = UserNotFound),
        (status = 409, response = UserConflict),
        (status = 422, response = AccountInvalid),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = InternalError),
        (status = 503, response = AccountsUnavailable),))]
pub async fn update(
    State(auth): State<Arc<Auth>>,
    actor: Actor,
    Path(id): Path<String>,
    request: Result<Json<UserChange>, JsonRejection>,
) -> Response {
    answer(
        async {
            let Json(change) = request.map_err(rejected(
                "Expected JSON {\"roles\"?: [..], \"disabled\"?: bool}",
            ))?;
            if change.roles.is_none() && change.disabled.is_none() {
                return Err(ApiError::unprocessable(
                    "Nothing to change: give roles and/or disabled",
                ));
            }
            let store = auth.store();
            let myself = id == actor.id;
            if myself && change.disabled == Some(true) {
                return Err(self_lockout("disable"));
            }
            if let Some(roles) = &change.roles {
                if roles.len() > MAX_LIST {
                    return Err(too_many_roles());
                }
                let grants = store.permissions_of(roles).await.map_err(account_error)?;
                if myself
                    && !grants
                        .iter()
                        .any(|g| pulse_core::rbac::grants(g, MANAGE_USERS))
                {
                    return Err(self_lockout("take users.manage from"));
                }
            }
            let update = UserUpdate {
                roles: change.roles,
                disabled: change.disabled,
            };
            let (user, _) = store
                .update_user(
                    UserKey::Id(&id),
                    &update,
                    AdminGuard::KeepOne,
                    &actor.origin,
                )
                .await
                .map_err(account_error)?;
            apply_revocations(&auth).await;
            Ok(Json(UserAnswer {
                user: user.to_view(),
                password: None,
            })
            .into_response())
        }
        .await,
    )
}

/// `POST /api/admin/users/{id}/password` → 200 `{password?}`; the user's sessions end.
#[utoipa::path(post, path = "/api/admin/users/{id}/password", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The user's id")),
    request_body(content = Option<PasswordReset>, description = "Optional: without a body a password is generated", content_type = "application/json"),
    responses((status = 200, description = "Set; the user's sessions end", body = PasswordAnswer),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 404, response = UserNotFound),
        (status = 422, response = AccountInvalid),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = InternalError),
        (status = 503, response = AccountsUnavailable),))]
pub async fn password(
    State(auth): State<Arc<Auth>>,
    actor: Actor,
    Path(id): Path<String>,
    request: Result<Json<PasswordReset>, JsonRejection>,
) -> Response {
    answer(
        async {
            // No body at all: generate one.
            let reset = match request {
                Err(JsonRejection::MissingJsonContentType(_)) => PasswordReset::default(),
                other => other.map_err(rejected("Expected JSON {\"password\"?}"))?.0,
            };
            let store = auth.store();
            store.user(UserKey::Id(&id)).await.map_err(account_error)?;
            let (hash, generated) = new_password(&auth, reset.password).await?;
            store
                .set_password(UserKey::Id(&id), &hash, generated.is_some(), &actor.origin)
                .await
                .map_err(account_error)?;
            apply_revocations(&auth).await;
            Ok(Json(PasswordAnswer {
                password: generated,
            })
            .into_response())
        }
        .await,
    )
}

/// `DELETE /api/admin/users/{id}` → 204.
#[utoipa::path(delete, path = "/api/admin/users/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The user's id")),
    responses((status = 204, description = "Removed"),
        (status = 404, response = UserNotFound),
        (status = 409, response = UserConflict),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = InternalError),
        (status = 503, response = AccountsUnavailable),))]
pub async fn remove(
    State(auth): State<Arc<Auth>>,
    actor: Actor,
    Path(id): Path<String>,
) -> Response {
    answer(
        async {
            if id == actor.id {
                return Err(self_lockout("remove"));
            }
            auth.store()
                .remove_user(UserKey::Id(&id), AdminGuard::KeepOne, &actor.origin)
                .await
                .map_err(account_error)?;
            apply_revocations(&auth).await;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}
