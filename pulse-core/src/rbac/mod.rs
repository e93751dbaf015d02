//! Role-based access control: dotted permission names with whole-segment wildcards,
//! roles that map to permissions, and two layers that enforce them.
//!
//! - [`grants`] decides whether a grant (`etl.*`) covers a permission (`etl.jobs.run`).
//! - [`RoleMap`] maps role names to grants; it loads with serde from TOML or JSON.
//! - [`RequirePermissionLayer`] guards a service (or an axum route) with one or more
//!   permissions: 401 when no authentication layer put an [`Identity`] in the
//!   request's extensions, 403 `forbidden` when a permission is missing.
//! - [`RuleTable`] with [`AuthorizeLayer`] is the gateway's policy: method + path
//!   pattern → required permissions, first match wins, **deny by default**.
//!
//! ```
//! use std::convert::Infallible;
//!
//! use http::{Request, Response, StatusCode};
//! use pulse_core::{Identity, ResponseBody, rbac::RequirePermissionLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let service = ServiceBuilder::new()
//!     .layer(RequirePermissionLayer::new("etl.jobs.run"))
//!     .service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(String::new())) });
//!
//! let as_user = |grants: &[&str]| {
//!     let mut req = Request::new(());
//!     req.extensions_mut().insert(Identity::new("u1").with_permissions(grants.iter().copied()));
//!     req
//! };
//! let res = service.clone().oneshot(as_user(&["etl.*"])).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! let res = service.clone().oneshot(as_user(&["etl.access"])).await.unwrap();
//! assert_eq!(res.status(), StatusCode::FORBIDDEN);
//! let res = service.oneshot(Request::new(())).await.unwrap(); // no identity
//! assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
//! # }
//! ```

mod future;
mod path;
mod require;
mod roles;
mod rules;

pub use future::ResponseFuture;
pub use path::{PathPattern, is_safe_path};
pub use require::{RequirePermission, RequirePermissionLayer};
pub use roles::{Role, RoleMap};
pub use rules::{
    Authorize, AuthorizeLayer, Requirement, Rule, RuleError, RuleTable, RuleTableBuilder,
};

use crate::{error::ApiError, identity::Identity};

/// Whether `grant` covers `permission`.
///
/// Both are dotted names. A grant segment `*` matches exactly one or more whole
/// trailing segments when it is the grant's last segment, so `etl.*` grants
/// `etl.jobs.run` and `etl.read`, but not `etl` itself nor `etlx.read`; `*` alone
/// grants everything. A `*` anywhere else matches exactly one segment. Empty names
/// and empty segments never match.
///
/// ```
/// use pulse_core::rbac::grants;
/// assert!(grants("etl.*", "etl.jobs.run"));
/// assert!(!grants("etl.*", "etl"));
/// assert!(!grants("etl.*", "etlx.read"));
/// assert!(grants("*", "anything.at.all"));
/// ```
pub fn grants(grant: &str, permission: &str) -> bool {
    if permission.is_empty() || permission.split('.').any(str::is_empty) {
        return false;
    }
    let mut wanted = permission.split('.');
    let mut segments = grant.split('.').peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() {
            return false;
        }
        let is_last = segments.peek().is_none();
        match wanted.next() {
            None => return false,
            Some(_) if segment == "*" && is_last => return true,
            Some(_) if segment == "*" => {}
            Some(w) if w == segment => {}
            Some(_) => return false,
        }
    }
    wanted.next().is_none()
}

/// Whether `grant` is well formed: non-empty dotted segments, each either `*` or made
/// of ASCII letters, digits, `_`, `-` and `:`. Malformed grants never grant anything;
/// [`RoleMap`] refuses them when loading.
pub fn is_valid_grant(grant: &str) -> bool {
    !grant.is_empty()
        && grant.split('.').all(|segment| {
            segment == "*"
                || (!segment.is_empty()
                    && segment
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':')))
        })
}

/// Why a request was refused by [`RequirePermission`] or [`Authorize`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denial {
    /// No authentication layer put an [`Identity`] in the request (401).
    #[error("authentication required")]
    Unauthenticated,
    /// The identity lacks this permission (403).
    #[error("permission {0} required")]
    MissingPermission(String),
    /// No rule of the table matches the request (403, deny by default).
    #[error("no rule matches the request")]
    NoRule,
    /// The path has dot segments, encoded separators, empty segments or other
    /// ambiguous spellings (403).
    #[error("unsafe request path")]
    UnsafePath,
}

impl Denial {
    /// The error answer: 401 for [`Denial::Unauthenticated`], 403 `forbidden` otherwise.
    pub fn into_api_error(self) -> ApiError {
        match self {
            Self::Unauthenticated => ApiError::unauthorized(),
            Self::MissingPermission(permission) => {
                ApiError::forbidden(format!("Permission {permission} required"))
            }
            Self::NoRule => ApiError::forbidden("Access denied"),
            Self::UnsafePath => ApiError::forbidden("Request path not allowed"),
        }
    }
}

impl From<Denial> for ApiError {
    fn from(denial: Denial) -> Self {
        denial.into_api_error()
    }
}

/// Check that `identity` holds every one of `required` (see [`grants`]).
pub fn check_permissions<S: AsRef<str>>(
    identity: Option<&Identity>,
    required: &[S],
) -> Result<(), Denial> {
    let identity = identity.ok_or(Denial::Unauthenticated)?;
    match required
        .iter()
        .find(|permission| !identity.has_permission(permission.as_ref()))
    {
        Some(missing) => Err(Denial::MissingPermission(missing.as_ref().to_owned())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Reference model of [`grants`]: recursive over segment lists.
    fn model(grant: &[&str], wanted: &[&str]) -> bool {
        match (grant, wanted) {
            ([], []) => true,
            (["*"], [_, ..]) => true,
            ([g, g_rest @ ..], [w, w_rest @ ..]) => (*g == "*" || g == w) && model(g_rest, w_rest),
            _ => false,
        }
    }

    fn model_grants(grant: &str, permission: &str) -> bool {
        let g: Vec<&str> = grant.split('.').collect();
        let w: Vec<&str> = permission.split('.').collect();
        !g.iter().chain(&w).any(|s| s.is_empty()) && model(&g, &w)
    }

    /// Dotted names over a tiny alphabet, so that grants and permissions collide often.
    fn dotted(star: bool) -> impl Strategy<Value = String> {
        let segment = if star {
            prop_oneof![Just("*".to_owned()), "(etl|jobs|run|x|etlx|)"].boxed()
        } else {
            "(etl|jobs|run|x|etlx|)".boxed()
        };
        prop::collection::vec(segment, 1..5).prop_map(|s| s.join("."))
    }

    proptest! {
        #[test]
        fn grants_matches_reference_model(grant in dotted(true), permission in dotted(false)) {
            prop_assert_eq!(grants(&grant, &permission), model_grants(&grant, &permission),
                "grant {:?} permission {:?}", grant, permission);
        }

        #[test]
        fn grants_never_panics(grant in ".{0,20}", permission in ".{0,20}") {
            let _ = grants(&grant, &permission);
        }

        /// A grant always covers itself when it has no wildcard, and `*` covers every
        /// well-formed permission.
        #[test]
        fn reflexive_and_star(permission in dotted(false)) {
            let well_formed = !permission.split('.').any(str::is_empty);
            prop_assert_eq!(grants(&permission, &permission), well_formed);
            prop_assert_eq!(grants("*", &permission), well_formed);
        }
    }

    #[test]
    fn wildcard_examples() {
        assert!(grants("etl.*", "etl.jobs.run"));
        assert!(grants("etl.*", "etl.read"));
        assert!(!grants("etl.*", "etl"));
        assert!(!grants("etl.*", "etlx.read"));
        assert!(grants("etl.*.run", "etl.jobs.run"));
        assert!(!grants("etl.*.run", "etl.jobs.cancel"));
        assert!(!grants("etl.", "etl.x"));
        assert!(!grants("", ""));
    }

    #[test]
    fn grant_validation() {
        for ok in ["*", "etl.*", "etl.jobs.run", "a-b.c_d.e:f", "etl.*.run"] {
            assert!(is_valid_grant(ok), "{ok}");
        }
        for bad in ["", "etl.", ".etl", "etl..run", "etl.jo*", "etl run", "ü"] {
            assert!(!is_valid_grant(bad), "{bad}");
        }
    }

    #[test]
    fn check_permissions_requires_all() {
        let id = Identity::new("u").with_permissions(["etl.access"]);
        assert_eq!(
            check_permissions::<&str>(None, &[]),
            Err(Denial::Unauthenticated)
        );
        assert_eq!(check_permissions::<&str>(Some(&id), &[]), Ok(()));
        assert_eq!(
            check_permissions(Some(&id), &["etl.access", "etl.jobs.run"]),
            Err(Denial::MissingPermission("etl.jobs.run".into()))
        );
    }
}
