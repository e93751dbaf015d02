//! The gateway's rule table: method + path pattern → requirement, first match wins,
//! deny by default.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use http::{Method, Request, Response};
use serde::Deserialize;
use tower_layer::Layer;
use tower_service::Service;

use super::{
    Denial, ResponseFuture, check_permissions, is_valid_grant,
    path::{PathPattern, is_safe_path},
};
use crate::{body::ResponseBody, identity::Identity};

/// A problem in a rule, found when the table is built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// The method is neither `ANY` nor an upper-case HTTP method token.
    #[error("invalid method {0:?} (use ANY or an upper-case method such as GET)")]
    InvalidMethod(String),
    /// The path pattern is malformed.
    #[error("invalid path pattern {pattern:?}: {reason}")]
    InvalidPattern {
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A required permission is not a plain dotted name.
    #[error("invalid permission {0:?}")]
    InvalidPermission(String),
    /// A rule is marked public and also lists permissions.
    #[error("rule for {0:?} is public but lists permissions")]
    PublicWithPermissions(String),
}

/// What a rule requires of the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Requirement {
    /// Anyone, authenticated or not (login, health).
    Public,
    /// Any authenticated caller.
    Authenticated,
    /// An authenticated caller holding every one of these permissions.
    AllOf(Vec<String>),
}

impl Requirement {
    /// Check an identity (or its absence) against this requirement.
    pub fn check(&self, identity: Option<&Identity>) -> Result<(), Denial> {
        match self {
            Self::Public => Ok(()),
            Self::Authenticated => check_permissions::<&str>(identity, &[]),
            Self::AllOf(permissions) => check_permissions(identity, permissions),
        }
    }
}

/// One rule: a method (or any), a path pattern and a requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    method: Option<Method>,
    pattern: PathPattern,
    requirement: Requirement,
}

impl Rule {
    /// A rule. `method` is `ANY` (or `*`) or an upper-case method; a `GET` rule also
    /// covers `HEAD`, which servers answer with their `GET` handler. Required
    /// permissions must be plain dotted names (no wildcards).
    pub fn new(method: &str, pattern: &str, requirement: Requirement) -> Result<Self, RuleError> {
        let method = match method {
            "ANY" | "*" => None,
            m if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) => Some(
                Method::from_bytes(m.as_bytes())
                    .map_err(|_| RuleError::InvalidMethod(m.to_owned()))?,
            ),
            m => return Err(RuleError::InvalidMethod(m.to_owned())),
        };
        let pattern = PathPattern::parse(pattern)?;
        if let Requirement::AllOf(permissions) = &requirement
            && let Some(bad) = permissions
                .iter()
                .find(|p| !is_valid_grant(p) || p.split('.').any(|s| s == "*"))
        {
            return Err(RuleError::InvalidPermission(bad.clone()));
        }
        Ok(Self {
            method,
            pattern,
            requirement,
        })
    }

    /// The method, `None` for any.
    pub const fn method(&self) -> Option<&Method> {
        self.method.as_ref()
    }

    /// The path pattern.
    pub const fn pattern(&self) -> &PathPattern {
        &self.pattern
    }

    /// The requirement.
    pub const fn requirement(&self) -> &Requirement {
        &self.requirement
    }

    /// Whether this rule applies to the request.
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        is_safe_path(path) && self.matches_safe(method, path)
    }

    fn matches_safe(&self, method: &Method, path: &str) -> bool {
        let method_ok = match &self.method {
            None => true,
            Some(m) if *m == Method::GET => method == Method::GET || method == Method::HEAD,
            Some(m) => m == method,
        };
        method_ok && self.pattern.matches_safe(path)
    }
}

/// An ordered list of [`Rule`]s: the first rule matching the request's method and
/// path decides; a request no rule matches is denied (403), and so is one whose path
/// is not [safe](is_safe_path).
///
/// Put specific rules before general ones:
///
/// ```
/// use http::Method;
/// use pulse_core::{Identity, rbac::{Denial, RuleTable}};
///
/// let table = RuleTable::builder()
///     .public("POST", "/api/auth/login")
///     .require("POST", "/api/etl/jobs/{name}/start", ["etl.jobs.run", "etl.access"])
///     .require("ANY", "/api/etl/*", ["etl.access"])
///     .build()
///     .unwrap();
///
/// let viewer = Identity::new("v").with_permissions(["etl.access"]);
/// assert!(table.authorize(&Method::GET, "/api/etl/jobs", Some(&viewer)).is_ok());
/// assert_eq!(
///     table.authorize(&Method::POST, "/api/etl/jobs/nightly/start", Some(&viewer)).unwrap_err(),
///     Denial::MissingPermission("etl.jobs.run".into()),
/// );
/// assert!(table.authorize(&Method::POST, "/api/auth/login", None).is_ok());
/// assert_eq!(table.authorize(&Method::GET, "/admin", Some(&viewer)).unwrap_err(), Denial::NoRule);
/// ```
///
/// With serde it loads from a list of `{method, path, permissions, public}` entries
/// (`permissions` empty and `public` false: any authenticated caller).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<RuleSpec>")]
pub struct RuleTable {
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    method: String,
    path: String,
    #[serde(default)]
    permissions: Vec<String>,
    #[serde(default)]
    public: bool,
}

impl TryFrom<Vec<RuleSpec>> for RuleTable {
    type Error = RuleError;

    fn try_from(specs: Vec<RuleSpec>) -> Result<Self, Self::Error> {
        let rules = specs
            .into_iter()
            .map(|spec| {
                let requirement = match (spec.public, spec.permissions.is_empty()) {
                    (true, true) => Requirement::Public,
                    (true, false) => return Err(RuleError::PublicWithPermissions(spec.path)),
                    (false, true) => Requirement::Authenticated,
                    (false, false) => Requirement::AllOf(spec.permissions),
                };
                Rule::new(&spec.method, &spec.path, requirement)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }
}

impl RuleTable {
    /// An empty table: denies everything.
    pub const fn new() -> Self {
        Self { rules: Vec::new() }
    }

    /// Build a table rule by rule.
    pub fn builder() -> RuleTableBuilder {
        RuleTableBuilder::default()
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The first rule matching the request; `None` when none does or the path is
    /// unsafe.
    pub fn find(&self, method: &Method, path: &str) -> Option<&Rule> {
        if !is_safe_path(path) {
            return None;
        }
        self.rules.iter().find(|r| r.matches_safe(method, path))
    }

    /// Decide a request: the matching rule when it allows the caller, else why not.
    pub fn authorize(
        &self,
        method: &Method,
        path: &str,
        identity: Option<&Identity>,
    ) -> Result<&Rule, Denial> {
        if !is_safe_path(path) {
            return Err(Denial::UnsafePath);
        }
        let rule = self
            .rules
            .iter()
            .find(|r| r.matches_safe(method, path))
            .ok_or(Denial::NoRule)?;
        rule.requirement.check(identity)?;
        Ok(rule)
    }
}

/// Builds a [`RuleTable`]; the first invalid rule is reported by
/// [`build`](RuleTableBuilder::build).
#[derive(Debug, Default)]
#[must_use]
pub struct RuleTableBuilder {
    rules: Vec<Rule>,
    error: Option<RuleError>,
}

impl RuleTableBuilder {
    /// Add a rule.
    pub fn rule(mut self, rule: Result<Rule, RuleError>) -> Self {
        match rule {
            Ok(rule) => self.rules.push(rule),
            Err(err) => {
                self.error.get_or_insert(err);
            }
        }
        self
    }

    /// Anyone may call `method pattern`.
    pub fn public(self, method: &str, pattern: &str) -> Self {
        self.rule(Rule::new(method, pattern, Requirement::Public))
    }

    /// Any authenticated caller may call `method pattern`.
    pub fn authenticated(self, method: &str, pattern: &str) -> Self {
        self.rule(Rule::new(method, pattern, Requirement::Authenticated))
    }

    /// `method pattern` needs every one of `permissions` (none: authenticated).
    pub fn require<I, S>(self, method: &str, pattern: &str, permissions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let permissions: Vec<String> = permissions.into_iter().map(Into::into).collect();
        let requirement = if permissions.is_empty() {
            Requirement::Authenticated
        } else {
            Requirement::AllOf(permissions)
        };
        self.rule(Rule::new(method, pattern, requirement))
    }

    /// The table, or the first invalid rule's error.
    pub fn build(self) -> Result<RuleTable, RuleError> {
        match self.error {
            Some(err) => Err(err),
            None => Ok(RuleTable { rules: self.rules }),
        }
    }
}

/// Enforces a [`RuleTable`] on every request. Builds [`Authorize`].
///
/// Runs after the authentication layer (which puts the [`Identity`] in extensions)
/// and before anything that acts on the request. Unsafe path, no matching rule or a
/// missing permission → 403 `forbidden`; a non-public rule without identity → 401.
///
/// [`Requirement::Public`] rules let anonymous requests through only if the
/// authentication layer in front does too; routes such as login are usually mounted
/// beside the authenticated stack instead, and then need no rule here.
#[derive(Clone, Debug)]
pub struct AuthorizeLayer {
    table: Arc<RuleTable>,
}

impl AuthorizeLayer {
    /// Enforce this table.
    pub fn new(table: RuleTable) -> Self {
        Self::from_arc(Arc::new(table))
    }

    /// Enforce a shared table.
    pub const fn from_arc(table: Arc<RuleTable>) -> Self {
        Self { table }
    }

    /// The table.
    pub fn table(&self) -> &RuleTable {
        &self.table
    }
}

impl<S> Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            table: Arc::clone(&self.table),
        }
    }
}

/// Middleware enforcing a rule table; see [`AuthorizeLayer`].
#[derive(Clone, Debug)]
pub struct Authorize<S> {
    inner: S,
    table: Arc<RuleTable>,
}

impl<S> Authorize<S> {
    /// Enforce `table` in front of `inner`.
    pub fn new(inner: S, table: RuleTable) -> Self {
        AuthorizeLayer::new(table).layer(inner)
    }

    /// A layer enforcing `table`.
    pub fn layer(table: RuleTable) -> AuthorizeLayer {
        AuthorizeLayer::new(table)
    }

    /// The inner service.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consume this middleware, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Authorize<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let decision = self.table.authorize(
            req.method(),
            req.uri().path(),
            req.extensions().get::<Identity>(),
        );
        match decision {
            Ok(_) => ResponseFuture::allowed(self.inner.call(req)),
            Err(denial) => {
                tracing::debug!(%denial, method = %req.method(), "request denied");
                ResponseFuture::denied(
                    denial
                        .into_api_error()
                        .with_request_id_of(&req)
                        .into_response_body(),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests;
