//! Cache keys and the resource prefixes ("scopes") that mutations invalidate.

use std::{borrow::Cow, fmt, fmt::Write as _, sync::Arc};

use http::{Extensions, HeaderMap, HeaderName, Uri};
use pulse_core::Identity;

/// One ingredient of a cache key beyond method, path and query.
///
/// The default key of a [`CacheLayer`](super::CacheLayer) is `[KeyPart::Identity]`:
/// every user has their own entries, and a request without a verified identity is not
/// cached at all. A cache is shared across users only when its key parts contain no
/// user part ([`KeyPart::Identity`] or [`KeyPart::UserHeader`]), which takes an explicit
/// [`CacheLayer::with_key_parts`](super::CacheLayer::with_key_parts).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyPart {
    /// The verified [`Identity::subject`] from the request extensions. A request
    /// without an identity bypasses the cache.
    Identity,
    /// A request header that names the user (for example `x-user-id` set by a trusted
    /// layer in front). A request without exactly one value of it bypasses the cache.
    UserHeader(HeaderName),
    /// A request header the response varies on (for example `accept`). An absent
    /// header is a value of its own; a response whose `Vary` names only such headers
    /// can be stored.
    Header(HeaderName),
}

impl KeyPart {
    /// Whether this part separates users.
    pub const fn is_user_part(&self) -> bool {
        matches!(self, Self::Identity | Self::UserHeader(_))
    }

    /// The request header this part reads, if any.
    pub const fn header_name(&self) -> Option<&HeaderName> {
        match self {
            Self::Identity => None,
            Self::UserHeader(name) | Self::Header(name) => Some(name),
        }
    }
}

/// The key of one cached response, with the scopes whose invalidation makes it stale.
///
/// The key text is `GET <path>?<query>` followed by each [`KeyPart`]'s value,
/// length-prefixed so that no two different requests share a key. Stores may hash it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    key: Arc<str>,
    scopes: Arc<[Arc<str>]>,
}

impl CacheKey {
    /// A key from its text and scopes (stores and tests; the layer builds its own).
    pub fn new(key: impl Into<Arc<str>>, scopes: impl Into<Arc<[Arc<str>]>>) -> Self {
        Self {
            key: key.into(),
            scopes: scopes.into(),
        }
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// The shared key text.
    pub fn as_arc(&self) -> &Arc<str> {
        &self.key
    }

    /// The scopes this entry belongs to: always the root scope `""`, then every
    /// configured prefix that contains the request path. A store tags each entry with
    /// the sum of these scopes' generations when it is stored.
    pub fn scopes(&self) -> &[Arc<str>] {
        &self.scopes
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheKey")
            .field("key", &self.key)
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// The key text of a `GET` (or `HEAD`, which shares the `GET` entry) request, or `None`
/// when a user part is missing and the request must bypass the cache.
pub(crate) fn key_text(
    parts: &[KeyPart],
    uri: &Uri,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> Option<String> {
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut key = String::with_capacity(4 + target.len() + 16 * parts.len());
    key.push_str("GET ");
    key.push_str(target);
    for part in parts {
        match part {
            KeyPart::Identity => {
                let subject = &extensions.get::<Identity>()?.subject;
                push_field(&mut key, "id", subject.as_bytes());
            }
            KeyPart::UserHeader(name) => {
                let mut values = headers.get_all(name).iter();
                let (Some(value), None) = (values.next(), values.next()) else {
                    return None;
                };
                if value.is_empty() {
                    return None;
                }
                push_field(&mut key, name.as_str(), value.as_bytes());
            }
            KeyPart::Header(name) => {
                let mut count = 0usize;
                for value in headers.get_all(name) {
                    push_field(&mut key, name.as_str(), value.as_bytes());
                    count += 1;
                }
                if count == 0 {
                    key.push('\n');
                    key.push_str(name.as_str());
                    key.push_str(" absent");
                }
            }
        }
    }
    Some(key)
}

/// Appends `\n<label> <len>:<value>`; non-UTF-8 values are hex-encoded under a different
/// marker, so distinct byte strings never collide.
fn push_field(key: &mut String, label: &str, value: &[u8]) {
    key.push('\n');
    key.push_str(label);
    match std::str::from_utf8(value) {
        Ok(text) => {
            let _ = write!(key, " {}:", text.len());
            key.push_str(text);
        }
        Err(_) => {
            let _ = write!(key, " x{}:", value.len());
            for byte in value {
                let _ = write!(key, "{byte:02x}");
            }
        }
    }
}

/// Which cached resources a mutation makes stale.
///
/// A *scope* is a path prefix; every cached `GET` under it is tagged with the scope's
/// generation, and a mutation that bumps the generation makes all of them stale at once
/// (O(1), whatever the number of entries). The root scope `""` contains every entry.
#[derive(Clone, Debug)]
pub(crate) struct Invalidation {
    /// Configured scopes (without the root).
    scopes: Vec<Arc<str>>,
    /// Mutation prefix → scopes it invalidates.
    rules: Vec<(Arc<str>, Vec<Arc<str>>)>,
    /// Whether a mutation matching no rule flushes everything (bumps the root).
    flush_unmatched: bool,
    /// The root scope, allocated once.
    root: Arc<str>,
}

impl Default for Invalidation {
    fn default() -> Self {
        Self {
            scopes: Vec::new(),
            rules: Vec::new(),
            flush_unmatched: true,
            root: Arc::from(ROOT_SCOPE),
        }
    }
}

/// The root scope: every entry belongs to it.
pub(crate) const ROOT_SCOPE: &str = "";

impl Invalidation {
    pub(crate) fn add_rule(&mut self, mutation_prefix: &str, scopes: Vec<Arc<str>>) {
        for scope in &scopes {
            if !scope.is_empty() && !self.scopes.iter().any(|s| s == scope) {
                self.scopes.push(scope.clone());
            }
        }
        self.rules.push((Arc::from(mutation_prefix), scopes));
    }

    pub(crate) fn set_flush_unmatched(&mut self, flush: bool) {
        self.flush_unmatched = flush;
    }

    /// The scopes of a cached `GET` of `path`.
    pub(crate) fn scopes_for_read(&self, path: &str) -> Arc<[Arc<str>]> {
        let path = normalize(path);
        std::iter::once(self.root.clone())
            .chain(
                self.scopes
                    .iter()
                    .filter(|scope| under(&path, scope))
                    .cloned(),
            )
            .collect()
    }

    /// The scopes a mutation of `path` invalidates.
    pub(crate) fn scopes_for_mutation(&self, path: &str) -> Vec<Arc<str>> {
        let path = normalize(path);
        let mut out: Vec<Arc<str>> = Vec::new();
        for (prefix, scopes) in &self.rules {
            if under(&path, prefix) {
                for scope in scopes {
                    if !out.contains(scope) {
                        out.push(scope.clone());
                    }
                }
            }
        }
        if out.is_empty() && self.flush_unmatched {
            out.push(self.root.clone());
        }
        out
    }
}

/// Whether `path` is `prefix` or lies below it (at a segment boundary).
fn under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Decodes percent-encoded unreserved characters, so that `/api/%6Aobs` matches the
/// scope `/api/jobs` as the upstream will see it.
fn normalize(path: &str) -> Cow<'_, str> {
    if !path.contains('%') {
        return Cow::Borrowed(path);
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(decoded) = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
        {
            out.push(char::from(decoded));
            i += 3;
            continue;
        }
        out.push(char::from(bytes[i]));
        i += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Request};

    fn key(parts: &[KeyPart], req: &Request<()>) -> Option<String> {
        key_text(parts, req.uri(), req.headers(), req.extensions())
    }

    #[test]
    fn identity_part_requires_identity() {
        let mut req = Request::get("/a?b=1").body(()).unwrap();
        assert_eq!(key(&[KeyPart::Identity], &req), None);
        req.extensions_mut().insert(Identity::new("u1"));
        let k1 = key(&[KeyPart::Identity], &req).unwrap();
        req.extensions_mut().insert(Identity::new("u2"));
        let k2 = key(&[KeyPart::Identity], &req).unwrap();
        assert_ne!(k1, k2);
        assert!(k1.starts_with("GET /a?b=1\n"));
    }

    #[test]
    fn user_header_must_be_single() {
        let part = [KeyPart::UserHeader(HeaderName::from_static("x-user-id"))];
        let mut req = Request::get("/a").body(()).unwrap();
        assert_eq!(key(&part, &req), None);
        req.headers_mut()
            .append("x-user-id", HeaderValue::from_static("1"));
        assert!(key(&part, &req).is_some());
        req.headers_mut()
            .append("x-user-id", HeaderValue::from_static("2"));
        assert_eq!(key(&part, &req), None);
    }

    #[test]
    fn values_cannot_forge_other_fields() {
        let parts = [KeyPart::Identity];
        let mut a = Request::get("/a").body(()).unwrap();
        a.extensions_mut().insert(Identity::new("u 1:x"));
        let mut b = Request::get("/a").body(()).unwrap();
        b.extensions_mut().insert(Identity::new("u"));
        assert_ne!(key(&parts, &a), key(&parts, &b));
        let vary = [KeyPart::Header(http::header::ACCEPT)];
        let absent = Request::get("/a").body(()).unwrap();
        let empty = Request::get("/a").header("accept", "").body(()).unwrap();
        assert_ne!(key(&vary, &absent), key(&vary, &empty));
    }

    #[test]
    fn scopes_match_whole_segments() {
        let mut inv = Invalidation::default();
        inv.add_rule("/api/etl/jobs", vec![Arc::from("/api/etl/jobs")]);
        inv.add_rule(
            "/api/etl/runs",
            vec![Arc::from("/api/etl/runs"), Arc::from("/api/etl/jobs")],
        );
        let read = inv.scopes_for_read("/api/etl/jobs/status");
        assert_eq!(&*read, &[Arc::from(""), Arc::from("/api/etl/jobs")]);
        assert_eq!(inv.scopes_for_read("/api/etl/jobsx").len(), 1);
        assert_eq!(
            inv.scopes_for_mutation("/api/etl/jobs/x/start"),
            vec![Arc::<str>::from("/api/etl/jobs")]
        );
        assert_eq!(inv.scopes_for_mutation("/api/etl/runs/1/cancel").len(), 2);
        assert_eq!(
            inv.scopes_for_mutation("/api/auth/login"),
            vec![Arc::<str>::from("")]
        );
        inv.set_flush_unmatched(false);
        assert!(inv.scopes_for_mutation("/api/auth/login").is_empty());
    }

    proptest::proptest! {
        /// Two requests share a key only when path, query and user are all equal.
        #[test]
        fn keys_are_injective(
            path_a in "/[a-z0-9/?=&]{0,12}",
            path_b in "/[a-z0-9/?=&]{0,12}",
            user_a in "\\PC{0,8}",
            user_b in "\\PC{0,8}",
        ) {
            let key_of = |path: &str, user: &str| {
                let mut req = Request::get(path).body(()).unwrap();
                req.extensions_mut().insert(Identity::new(user));
                key(&[KeyPart::Identity], &req).unwrap()
            };
            let same = path_a == path_b && user_a == user_b;
            proptest::prop_assert_eq!(key_of(&path_a, &user_a) == key_of(&path_b, &user_b), same);
        }

        /// Scope matching never panics, whatever the path.
        #[test]
        fn scope_matching_is_total(path in "\\PC{0,24}") {
            let mut inv = Invalidation::default();
            inv.add_rule("/api/jobs", vec![Arc::from("/api/jobs")]);
            let _ = inv.scopes_for_read(&path);
            proptest::prop_assert!(!inv.scopes_for_mutation(&path).is_empty());
        }
    }

    #[test]
    fn encoded_unreserved_characters_match() {
        let mut inv = Invalidation::default();
        inv.add_rule("/api/jobs", vec![Arc::from("/api/jobs")]);
        assert_eq!(
            inv.scopes_for_mutation("/api/%6Aobs/1"),
            vec![Arc::<str>::from("/api/jobs")]
        );
        assert_eq!(normalize("/a%2fb"), "/a%2fb");
    }
}
