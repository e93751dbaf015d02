//! The gateway's rule table: method + path pattern → requirement, first match wins,
//! deny by default.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Method, Request, Response};
use serde::Deserialize;
use tower_layer::Layer;
use tower_service::Service;

use super::{Denial, ResponseFuture, check_permissions, is_valid_grant};
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

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    Param,
    Rest,
}

/// A path pattern: `/`-separated segments, each a literal, a `{param}` (exactly one
/// segment) or, as the last segment only, `*` or `{*rest}` (one or more segments).
///
/// Patterns match the raw request path, case-sensitively, without percent-decoding; a
/// single trailing slash of the path is ignored. Paths that could be read two ways
/// (see [`is_safe_path`]) match nothing.
///
/// ```
/// use pulse_core::rbac::PathPattern;
///
/// let p = PathPattern::parse("/api/etl/jobs/{name}/start").unwrap();
/// assert!(p.matches("/api/etl/jobs/nightly/start"));
/// assert!(p.matches("/api/etl/jobs/nightly/start/"));
/// assert!(!p.matches("/api/etl/jobs/nightly/%73tart"));
/// let rest = PathPattern::parse("/api/etl/*").unwrap();
/// assert!(rest.matches("/api/etl/runs/7/logs"));
/// assert!(!rest.matches("/api/etl"));
/// assert!(!rest.matches("/api/etl/a/../../admin"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PathPattern {
    source: Box<str>,
    segments: Box<[Segment]>,
}

impl PathPattern {
    /// Parse a pattern.
    pub fn parse(pattern: &str) -> Result<Self, RuleError> {
        let invalid = |reason| RuleError::InvalidPattern {
            pattern: pattern.to_owned(),
            reason,
        };
        let body = pattern
            .strip_prefix('/')
            .ok_or_else(|| invalid("must start with /"))?;
        let mut segments = Vec::new();
        if !body.is_empty() {
            let parts: Vec<&str> = body.split('/').collect();
            for (i, part) in parts.iter().enumerate() {
                let is_last = i + 1 == parts.len();
                let segment = if *part == "*" || (part.starts_with("{*") && part.ends_with('}')) {
                    if !is_last {
                        return Err(invalid("a wildcard must be the last segment"));
                    }
                    if *part != "*" && !is_param_name(&part[2..part.len() - 1]) {
                        return Err(invalid("bad wildcard name"));
                    }
                    Segment::Rest
                } else if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}'))
                {
                    if !is_param_name(name) {
                        return Err(invalid("bad parameter name"));
                    }
                    Segment::Param
                } else if part.is_empty() {
                    return Err(invalid("empty segment or trailing slash"));
                } else if !is_safe_segment(part) || part.contains(['{', '}', '*', '%']) {
                    return Err(invalid("literal segments must be plain, unencoded text"));
                } else {
                    Segment::Literal((*part).into())
                };
                segments.push(segment);
            }
        }
        Ok(Self {
            source: pattern.into(),
            segments: segments.into(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the raw request path matches. Unsafe paths never match.
    pub fn matches(&self, path: &str) -> bool {
        is_safe_path(path) && self.matches_safe(path)
    }

    /// Match a path already checked with [`is_safe_path`].
    fn matches_safe(&self, path: &str) -> bool {
        let mut parts = path_segments(path);
        for segment in &self.segments {
            match segment {
                Segment::Literal(literal) => {
                    if parts.next() != Some(&**literal) {
                        return false;
                    }
                }
                Segment::Param => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Segment::Rest => return parts.next().is_some(),
            }
        }
        parts.next().is_none()
    }
}

impl fmt::Debug for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.source, f)
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn is_param_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The segments of a safe path, ignoring one trailing slash.
fn path_segments(path: &str) -> impl Iterator<Item = &str> {
    let body = path.strip_prefix('/').unwrap_or(path);
    let body = body.strip_suffix('/').unwrap_or(body);
    body.split('/').filter(move |_| !body.is_empty())
}

/// Whether a raw request path has exactly one reading, so that matching it against
/// patterns cannot disagree with how the service behind will route it.
///
/// Refused: a path not starting with `/`; empty segments (`//`; one trailing slash is
/// allowed); `.` and `..` segments; `\` and `;` anywhere; percent-encodings that are
/// malformed or encode an unreserved character (`%2e`, `%73`, …: a normalised path
/// never encodes those), a separator (`%2f`, `%5c`), `%` itself (double encoding) or
/// a control character.
pub fn is_safe_path(path: &str) -> bool {
    let Some(body) = path.strip_prefix('/') else {
        return false;
    };
    if body.is_empty() {
        return true;
    }
    let body = body.strip_suffix('/').unwrap_or(body);
    body.split('/').all(is_safe_segment)
}

fn is_safe_segment(segment: &str) -> bool {
    if segment.is_empty() || segment == "." || segment == ".." {
        return false;
    }
    let bytes = segment.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' | b';' => return false,
            b'%' => {
                let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
                let (Some(high), Some(low)) = (hex(i + 1), hex(i + 2)) else {
                    return false;
                };
                // Both digits are < 16, so this fits a byte.
                let decoded = (high * 16 + low) as u8;
                if decoded.is_ascii_alphanumeric()
                    || decoded.is_ascii_control()
                    || matches!(decoded, b'-' | b'.' | b'_' | b'~' | b'/' | b'\\' | b'%')
                {
                    return false;
                }
                i += 3;
            }
            _ => i += 1,
        }
    }
    true
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
