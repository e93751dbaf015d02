//! Addresses of a source: its validated base URL, `Link` header pagination
//! (RFC 8288) and query-string helpers.

use http::Uri;
use http::header::HeaderMap;

use super::SourceConfigError;

/// A validated base URL: scheme, authority and an optional path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BaseUrl {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    prefix: String,
}

impl BaseUrl {
    /// Parses `http://host[:port][/prefix]`.
    pub(crate) fn parse(api: &'static str, url: &str) -> Result<Self, SourceConfigError> {
        let invalid = |reason: &str| SourceConfigError::InvalidUrl {
            api,
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| invalid("no scheme"))?;
        if scheme == http::uri::Scheme::HTTPS && !cfg!(feature = "tls") {
            return Err(SourceConfigError::TlsUnsupported {
                api,
                url: url.to_owned(),
            });
        }
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(invalid("the scheme must be http or https"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| invalid("no host"))?;
        if uri.query().is_some() {
            return Err(invalid("a base URL takes no query"));
        }
        Ok(Self {
            scheme,
            authority,
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The path (with query) on this origin of `path`, relative to the prefix.
    pub(crate) fn path(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    /// The path (with query) of `link` when it points at this origin, else `None`: a
    /// `Link` to another host must not receive the token.
    pub(crate) fn same_origin_path(&self, link: &str) -> Option<String> {
        let uri: Uri = link.parse().ok()?;
        match (uri.scheme(), uri.authority()) {
            (Some(scheme), Some(authority))
                if *scheme == self.scheme && *authority == self.authority => {}
            (None, None) if link.starts_with('/') => {}
            _ => return None,
        }
        uri.path_and_query().map(|pq| pq.as_str().to_owned())
    }

    /// The full URL of a path on this origin.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.authority)
    }

    #[cfg(feature = "tls")]
    pub(crate) fn is_https(&self) -> bool {
        self.scheme == http::uri::Scheme::HTTPS
    }
}

/// The target of the `Link` entry with `rel="<rel>"` (RFC 8288), e.g. GitHub's
/// `<https://api.github.com/…&page=2>; rel="next", <…&page=5>; rel="last"`.
pub(crate) fn link_target<'a>(headers: &'a HeaderMap, rel: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::LINK)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| find_link(value, rel))
}

fn find_link<'a>(mut value: &'a str, rel: &str) -> Option<&'a str> {
    loop {
        let open = value.find('<')?;
        let close = open + value[open..].find('>')?;
        let target = &value[open + 1..close];
        let rest = &value[close + 1..];
        // Parameters run to the next `<` (targets never contain one unescaped).
        let end = rest.find('<').unwrap_or(rest.len());
        let params = rest[..end].trim_end().trim_end_matches(',');
        let matches = params.split(';').any(|param| {
            let Some((name, val)) = param.split_once('=') else {
                return false;
            };
            name.trim().eq_ignore_ascii_case("rel")
                && val
                    .trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case(rel))
        });
        if matches {
            return Some(target);
        }
        value = rest;
    }
}

/// The value of query parameter `name` in a path with query (not percent-decoded).
pub(crate) fn query_param<'a>(path: &'a str, name: &str) -> Option<&'a str> {
    let (_, query) = path.split_once('?')?;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find_map(|(key, value)| (key == name).then_some(value))
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved characters).
pub(crate) fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use http::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn links_are_found_by_rel() {
        let map = headers(&[(
            "link",
            r#"<http://h/r?page=2&per_page=5>; rel="next", <http://h/r?page=9>; rel="last""#,
        )]);
        assert_eq!(
            link_target(&map, "next"),
            Some("http://h/r?page=2&per_page=5")
        );
        assert_eq!(link_target(&map, "last"), Some("http://h/r?page=9"));
        assert_eq!(link_target(&map, "prev"), None);
        let split = headers(&[("link", "<a>; rel=prev"), ("link", "<b>; rel=\"next\"")]);
        assert_eq!(link_target(&split, "next"), Some("b"));
        assert_eq!(link_target(&headers(&[("link", "garbage")]), "next"), None);
    }

    #[test]
    fn base_urls_are_checked() {
        let base = BaseUrl::parse("jira", "http://127.0.0.1:9000/jira/").unwrap();
        assert_eq!(base.path("/rest/api/2/search"), "/jira/rest/api/2/search");
        assert_eq!(
            base.same_origin_path("http://127.0.0.1:9000/x?page=2")
                .as_deref(),
            Some("/x?page=2")
        );
        assert_eq!(base.same_origin_path("http://evil.example/x"), None);
        let https = BaseUrl::parse("jira", "https://example.atlassian.net");
        if cfg!(feature = "tls") {
            assert_eq!(https.unwrap().url("/x"), "https://example.atlassian.net/x");
        } else {
            assert!(matches!(
                https,
                Err(SourceConfigError::TlsUnsupported { .. })
            ));
        }
        assert!(BaseUrl::parse("jira", "ftp://x").is_err());
        assert!(BaseUrl::parse("jira", "not a url").is_err());
    }

    #[test]
    fn query_helpers() {
        assert_eq!(query_param("/r?a=1&page=3", "page"), Some("3"));
        assert_eq!(query_param("/r", "page"), None);
        assert_eq!(
            encode_query_value("project = P order by"),
            "project%20%3D%20P%20order%20by"
        );
    }
}
