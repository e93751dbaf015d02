//! Exempt paths: exact, canonical paths only.

/// An exempt path that is not canonical, so could never be matched safely.
#[derive(Debug, thiserror::Error)]
#[error(
    "exempt path {0:?} is not a canonical path (leading '/', no '//', dot segments, '%', trailing '/' or other characters than [A-Za-z0-9._~-])"
)]
pub struct InvalidExemptPath(pub String);

/// Whether `path` is canonical: starts with `/`, has non-empty segments of
/// `[A-Za-z0-9._~-]` that are not `.` or `..`, and no trailing `/` (`/` itself is
/// canonical). A request path is exempt only when it equals a canonical exempt path
/// byte for byte, so every non-canonical spelling (`/health/`, `//health`,
/// `/health/../api`, `/%68ealth`) needs a credential.
pub(crate) fn is_canonical(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    rest.split('/').all(|segment| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths() {
        for ok in ["/", "/health", "/metrics", "/a/b.c/d-e_f~"] {
            assert!(is_canonical(ok), "{ok}");
        }
        for bad in [
            "",
            "health",
            "/health/",
            "//health",
            "/health/../api",
            "/./health",
            "/%68ealth",
            "/health?x",
            "/a//b",
            "/a/..",
            "/héalth",
        ] {
            assert!(!is_canonical(bad), "{bad}");
        }
    }
}
