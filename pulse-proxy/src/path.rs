//! Step 2: path safety checks and the prefix rewrite.
//!
//! The checks run on the raw path, before any rewrite, and reject whatever a server
//! behind the proxy could normalise into a different path than the one the gateway's
//! permission rules saw: dot segments (also with `;` parameters), `%2e`, encoded `/`
//! and `\`, a raw `\`, an encoded `%` (every double encoding starts with one), `%00` and control characters,
//! malformed escapes, and empty segments (`//`). A `;` starts a segment's parameters,
//! also encoded (`..%3B` is `..;`, which is `..`). A single trailing `/` is allowed.
//! The query string is never touched.

use http::uri::PathAndQuery;

use crate::error::ProxyError;

/// A prefix rewrite: a request path starting with `from` is forwarded with `from`
/// replaced by `to` (`/api/etl/jobs` → `/api/v1/jobs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixRewrite {
    from: String,
    to: String,
}

impl PrefixRewrite {
    /// Forward paths under `from` to the same path under `to`. Both should end with
    /// `/` so that `/api/etlx` does not match `/api/etl/`.
    pub fn new(from: impl Into<String>, to: impl Into<String>) -> Self {
        Self {
            from: from.into(),
            to: to.into(),
        }
    }

    /// The prefix matched on incoming paths.
    pub fn from(&self) -> &str {
        &self.from
    }

    /// The prefix the upstream sees.
    pub fn to(&self) -> &str {
        &self.to
    }

    fn apply<'a>(&'a self, path: &'a str) -> Option<(&'a str, &'a str)> {
        if let Some(rest) = path.strip_prefix(self.from.as_str()) {
            return Some((self.to.as_str(), rest));
        }
        // `/api/etl` for a prefix `/api/etl/`: the prefix itself, without its slash.
        let bare_from = self.from.strip_suffix('/')?;
        (path == bare_from).then(|| (self.to.strip_suffix('/').unwrap_or(&self.to), ""))
    }
}

/// Check a raw request path (see the module docs for what is rejected).
pub fn check_path(path: &str) -> Result<(), ProxyError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(unsafe_path("path must start with /"));
    }
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(unsafe_path("backslash")),
            b if b < 0x20 || b == 0x7f => return Err(unsafe_path("control character")),
            b'%' => {
                let decoded = decode_escape(bytes, i).ok_or(unsafe_path("malformed escape"))?;
                match decoded {
                    b'.' => return Err(unsafe_path("encoded dot")),
                    b'/' | b'\\' => return Err(unsafe_path("encoded separator")),
                    0 => return Err(unsafe_path("encoded NUL")),
                    // `%25` is how every double-encoded `.`, `/` and `\` starts; an API
                    // path has no use for a literal `%`.
                    b'%' => return Err(unsafe_path("encoded percent sign")),
                    _ => {}
                }
                i += 3;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let is_last = segments.peek().is_none();
        if segment.is_empty() && !is_last {
            return Err(unsafe_path("empty segment"));
        }
        let name = segment_name(segment);
        if name == "." || name == ".." {
            return Err(unsafe_path("dot segment"));
        }
    }
    Ok(())
}

/// A segment without its path parameters: servers strip everything from the first `;`
/// before they resolve dot segments (`..;x` is `..`), and a server that decodes first
/// sees `..%3B` as `..;`, so an encoded `;` starts the parameters too.
fn segment_name(segment: &str) -> &str {
    let raw = segment.find(';');
    let encoded = segment
        .as_bytes()
        .windows(3)
        .position(|w| w.eq_ignore_ascii_case(b"%3b"));
    let end = raw
        .into_iter()
        .chain(encoded)
        .min()
        .unwrap_or(segment.len());
    &segment[..end]
}

/// Check the path, apply the rewrite and keep the query verbatim.
pub(crate) fn rewrite(
    rewrite: Option<&PrefixRewrite>,
    pq: Option<&PathAndQuery>,
) -> Result<PathAndQuery, ProxyError> {
    let path = pq.map_or("/", PathAndQuery::path);
    check_path(path)?;
    let (head, rest) = match rewrite {
        Some(rw) => rw.apply(path).ok_or(ProxyError::NotRouted)?,
        None => ("", path),
    };
    let query = pq.and_then(PathAndQuery::query);
    let mut out = String::with_capacity(head.len() + rest.len() + query.map_or(0, |q| q.len() + 1));
    out.push_str(head);
    out.push_str(rest);
    if out.is_empty() {
        out.push('/');
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    PathAndQuery::try_from(out).map_err(|_| unsafe_path("invalid rewritten path"))
}

fn decode_escape(bytes: &[u8], at: usize) -> Option<u8> {
    if bytes.get(at) != Some(&b'%') {
        return None;
    }
    let hi = hex(*bytes.get(at + 1)?)?;
    let lo = hex(*bytes.get(at + 2)?)?;
    Some(hi << 4 | lo)
}

const fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const fn unsafe_path(reason: &'static str) -> ProxyError {
    ProxyError::UnsafePath { reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn etl() -> PrefixRewrite {
        PrefixRewrite::new("/api/etl/", "/api/v1/")
    }

    fn run(uri: &str) -> Result<String, ProxyError> {
        let uri: http::Uri = uri.parse().unwrap();
        let rw = etl();
        rewrite(Some(&rw), uri.path_and_query()).map(|pq| pq.to_string())
    }

    #[test]
    fn rewrites_prefix_and_keeps_query_verbatim() {
        assert_eq!(run("/api/etl/jobs").unwrap(), "/api/v1/jobs");
        assert_eq!(
            run("/api/etl/jobs/x/runs?limit=5&a=%2e%2e&b").unwrap(),
            "/api/v1/jobs/x/runs?limit=5&a=%2e%2e&b"
        );
        assert_eq!(run("/api/etl/").unwrap(), "/api/v1/");
        assert_eq!(run("/api/etl").unwrap(), "/api/v1");
        assert_eq!(run("/api/etl/jobs/").unwrap(), "/api/v1/jobs/");
    }

    #[test]
    fn outside_prefix_is_not_routed() {
        assert_eq!(run("/api/etlx/jobs"), Err(ProxyError::NotRouted));
        assert_eq!(run("/other"), Err(ProxyError::NotRouted));
    }

    #[test]
    fn rejects_traversal_and_encoded_separators() {
        for bad in [
            "/api/etl/%2e%2e/admin",
            "/api/etl/%2E%2E/admin",
            "/api/etl/..%2fadmin",
            "/api/etl/..%2Fadmin",
            "/api/etl/../admin",
            "/api/etl/./jobs",
            "/api/etl/..",
            "/api/etl/..;/admin",
            "/api/etl//x",
            "/api/etl/x//",
            "/api/etl/%5cadmin",
            "/api/etl/a%5Cb",
            "/api/etl/%252e%252e/admin",
            "/api/etl/%252F",
            "/api/etl/%25%32%65%25%32%65/admin",
            "/api/etl/a%00",
            "/api/etl/a%zz",
            "/api/etl/a%2",
            "/api/etl/.%2e/x",
        ] {
            assert!(
                matches!(run(bad), Err(ProxyError::UnsafePath { .. })),
                "{bad} was accepted"
            );
        }
        assert!(matches!(
            check_path("/api/etl/a\\b"),
            Err(ProxyError::UnsafePath { .. })
        ));
    }

    /// Found by the `path` fuzz target: `..%3B` is `..;` to a server that decodes
    /// before it strips path parameters, and `..;` is `..` to one that strips them.
    #[test]
    fn rejects_dot_segments_with_encoded_parameters() {
        for bad in [
            "/api/etl/..%3B/admin",
            "/api/etl/..%3b/admin",
            "/api/etl/..%3Bjsessionid=1/admin",
            "/api/etl/.%3B",
            "/api/etl/x/..%3b",
        ] {
            assert!(
                matches!(run(bad), Err(ProxyError::UnsafePath { .. })),
                "{bad} was accepted"
            );
        }
        assert_eq!(run("/api/etl/a%3Bb").unwrap(), "/api/v1/a%3Bb");
        assert_eq!(run("/api/etl/...%3B").unwrap(), "/api/v1/...%3B");
    }

    #[test]
    fn ordinary_escapes_and_dots_inside_names_pass() {
        assert_eq!(run("/api/etl/a%20b").unwrap(), "/api/v1/a%20b");
        assert_eq!(run("/api/etl/v1.2/x..y").unwrap(), "/api/v1/v1.2/x..y");
        assert_eq!(run("/api/etl/.well").unwrap(), "/api/v1/.well");
    }

    proptest! {
        /// Whatever passes the check has no segment that a server could resolve to
        /// `.` or `..`, even after decoding its escapes once or twice.
        #[test]
        fn accepted_paths_never_traverse(segments in proptest::collection::vec("[a-z.%25]{0,6}|%2e|%2E|%2f|\\.\\.", 1..5)) {
            let path = format!("/{}", segments.join("/"));
            if check_path(&path).is_ok() {
                let once = percent_decode(&path);
                let twice = percent_decode(&once);
                for p in [&path, &once, &twice] {
                    for seg in p.split('/') {
                        prop_assert!(seg != "." && seg != "..", "{path} -> {p}");
                    }
                }
            }
        }
    }

    fn percent_decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if let Some(v) = decode_escape(b, i) {
                out.push(v);
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
