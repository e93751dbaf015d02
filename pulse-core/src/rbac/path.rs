//! Path patterns and the safety check of raw request paths.

use std::fmt;

use super::RuleError;

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
    pub(super) fn matches_safe(&self, path: &str) -> bool {
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
/// never encodes those), a separator (`%2f`, `%5c`), `%` itself (double encoding), a
/// control character, or the lead byte of an overlong UTF-8 form (`%c0`, `%c1`).
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
                // 0xC0/0xC1 only start overlong UTF-8 forms (`%c0%ae` for `.`), which
                // lenient decoders still turn into ASCII.
                if decoded.is_ascii_alphanumeric()
                    || decoded.is_ascii_control()
                    || matches!(
                        decoded,
                        b'-' | b'.' | b'_' | b'~' | b'/' | b'\\' | b'%' | 0xC0 | 0xC1
                    )
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
