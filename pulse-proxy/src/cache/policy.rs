//! What may be served from the cache and what may be stored: `Cache-Control` on both
//! sides, methods, statuses, `Set-Cookie`, `Vary`.

use std::time::Duration;

use http::{HeaderMap, Method, StatusCode, header, response};

use super::key::KeyPart;

/// The `Cache-Control` directives the cache acts on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CacheControl {
    pub(crate) no_store: bool,
    pub(crate) no_cache: bool,
    pub(crate) private: bool,
    pub(crate) max_age: Option<u64>,
    pub(crate) s_maxage: Option<u64>,
}

impl CacheControl {
    /// Parses every `Cache-Control` line. Unknown directives are ignored; an unparsable
    /// `max-age` counts as `0` (the conservative reading).
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        let mut cc = Self::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else {
                // Unreadable directives: assume the most restrictive one.
                cc.no_store = true;
                continue;
            };
            for directive in value.split(',') {
                let (name, arg) = match directive.split_once('=') {
                    Some((name, arg)) => (name.trim(), Some(arg.trim().trim_matches('"'))),
                    None => (directive.trim(), None),
                };
                let seconds = || arg.and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
                if name.eq_ignore_ascii_case("no-store") {
                    cc.no_store = true;
                } else if name.eq_ignore_ascii_case("no-cache") {
                    cc.no_cache = true;
                } else if name.eq_ignore_ascii_case("private") {
                    cc.private = true;
                } else if name.eq_ignore_ascii_case("max-age") {
                    cc.max_age = Some(cc.max_age.map_or(seconds(), |m| m.min(seconds())));
                } else if name.eq_ignore_ascii_case("s-maxage") {
                    cc.s_maxage = Some(cc.s_maxage.map_or(seconds(), |m| m.min(seconds())));
                }
            }
        }
        cc
    }
}

/// What the cache does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestPlan {
    /// Forward untouched, never stored.
    Bypass,
    /// A `GET` or `HEAD` that may be answered from the cache. `revalidate` means the
    /// client asked for a fresh answer (`no-cache`, `max-age=0`): skip the lookup but
    /// store the answer.
    Lookup { head: bool, revalidate: bool },
    /// `POST`, `PUT`, `PATCH`, `DELETE`: forward, then invalidate the resource's scopes.
    Mutation,
}

/// Classifies a request by method and headers.
pub(crate) fn plan_request(method: &Method, headers: &HeaderMap) -> RequestPlan {
    if matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        return RequestPlan::Mutation;
    }
    let head = *method == Method::HEAD;
    if !head && *method != Method::GET {
        return RequestPlan::Bypass;
    }
    // Upgrades (WebSocket) and partial requests are never cacheable.
    if headers.contains_key(header::UPGRADE) || headers.contains_key(header::RANGE) {
        return RequestPlan::Bypass;
    }
    let cc = CacheControl::parse(headers);
    if cc.no_store || cc.private {
        return RequestPlan::Bypass;
    }
    let pragma_no_cache = !headers.contains_key(header::CACHE_CONTROL)
        && headers
            .get_all(header::PRAGMA)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"));
    let revalidate = cc.no_cache || cc.max_age == Some(0) || pragma_no_cache;
    if head && revalidate {
        return RequestPlan::Bypass;
    }
    RequestPlan::Lookup { head, revalidate }
}

/// The storage rules of a layer.
#[derive(Clone, Debug)]
pub(crate) struct StoragePolicy {
    pub(crate) ttl: Duration,
    pub(crate) statuses: Vec<StatusCode>,
    pub(crate) max_body_bytes: usize,
}

impl StoragePolicy {
    /// The time-to-live of a response that may be stored, or `None` when it may not:
    /// a status outside the configured set, `Set-Cookie`, `no-store`/`private`/`no-cache`,
    /// `max-age=0`, `Vary: *` or a `Vary` on a header that is not part of the key, an
    /// event stream, or a `Content-Length` above the body limit.
    pub(crate) fn storable_ttl(
        &self,
        res: &response::Parts,
        key_parts: &[KeyPart],
    ) -> Option<Duration> {
        if !self.statuses.contains(&res.status) {
            return None;
        }
        let headers = &res.headers;
        if headers.contains_key(header::SET_COOKIE) {
            return None;
        }
        let cc = CacheControl::parse(headers);
        if cc.no_store || cc.private || cc.no_cache {
            return None;
        }
        if !vary_is_covered(headers, key_parts) {
            return None;
        }
        if headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|ct| ct.as_bytes().starts_with(b"text/event-stream"))
        {
            return None;
        }
        if content_length(headers).is_some_and(|len| len > self.max_body_bytes as u64) {
            return None;
        }
        let ttl = match cc.s_maxage.or(cc.max_age) {
            Some(secs) => self.ttl.min(Duration::from_secs(secs)),
            None => self.ttl,
        };
        (!ttl.is_zero()).then_some(ttl)
    }
}

/// Whether every header named by `Vary` is part of the key.
fn vary_is_covered(headers: &HeaderMap, key_parts: &[KeyPart]) -> bool {
    for value in headers.get_all(header::VARY) {
        let Ok(value) = value.to_str() else {
            return false;
        };
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return false;
            }
            let covered = key_parts.iter().any(|part| {
                part.header_name()
                    .is_some_and(|h| h.as_str().eq_ignore_ascii_case(name))
            });
            if !covered {
                return false;
            }
        }
    }
    true
}

/// The single, valid `Content-Length`, if any.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().ok()?.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue, Response};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    fn policy() -> StoragePolicy {
        StoragePolicy {
            ttl: Duration::from_secs(60),
            statuses: vec![StatusCode::OK],
            max_body_bytes: 100,
        }
    }

    fn ttl(status: u16, pairs: &[(&'static str, &'static str)]) -> Option<Duration> {
        let mut res = Response::new(());
        *res.status_mut() = StatusCode::from_u16(status).unwrap();
        *res.headers_mut() = headers(pairs);
        let (parts, ()) = res.into_parts();
        policy().storable_ttl(&parts, &[KeyPart::Identity])
    }

    #[test]
    fn parses_directives_case_insensitively() {
        let cc = CacheControl::parse(&headers(&[
            ("cache-control", "No-Store, max-age=30"),
            ("cache-control", "s-maxage=\"5\", private"),
        ]));
        assert!(cc.no_store && cc.private && !cc.no_cache);
        assert_eq!(cc.max_age, Some(30));
        assert_eq!(cc.s_maxage, Some(5));
        assert_eq!(
            CacheControl::parse(&headers(&[("cache-control", "max-age=abc")])).max_age,
            Some(0)
        );
    }

    #[test]
    fn request_plans() {
        let none = HeaderMap::new();
        assert_eq!(
            plan_request(&Method::GET, &none),
            RequestPlan::Lookup {
                head: false,
                revalidate: false
            }
        );
        assert_eq!(plan_request(&Method::DELETE, &none), RequestPlan::Mutation);
        assert_eq!(plan_request(&Method::OPTIONS, &none), RequestPlan::Bypass);
        assert_eq!(
            plan_request(&Method::GET, &headers(&[("cache-control", "no-store")])),
            RequestPlan::Bypass
        );
        assert_eq!(
            plan_request(&Method::GET, &headers(&[("upgrade", "websocket")])),
            RequestPlan::Bypass
        );
        assert_eq!(
            plan_request(&Method::GET, &headers(&[("pragma", "no-cache")])),
            RequestPlan::Lookup {
                head: false,
                revalidate: true
            }
        );
        assert_eq!(
            plan_request(&Method::HEAD, &headers(&[("cache-control", "no-cache")])),
            RequestPlan::Bypass
        );
    }

    #[test]
    fn storable_responses() {
        assert_eq!(ttl(200, &[]), Some(Duration::from_secs(60)));
        assert_eq!(
            ttl(200, &[("cache-control", "max-age=10")]),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            ttl(200, &[("cache-control", "max-age=10, s-maxage=20")]),
            Some(Duration::from_secs(20))
        );
        assert_eq!(ttl(200, &[("cache-control", "max-age=0")]), None);
        assert_eq!(ttl(500, &[]), None);
        assert_eq!(ttl(503, &[]), None);
        assert_eq!(ttl(200, &[("set-cookie", "a=b")]), None);
        assert_eq!(ttl(200, &[("cache-control", "no-store")]), None);
        assert_eq!(ttl(200, &[("cache-control", "private")]), None);
        assert_eq!(ttl(200, &[("cache-control", "no-cache")]), None);
        assert_eq!(ttl(200, &[("vary", "*")]), None);
        assert_eq!(ttl(200, &[("vary", "accept")]), None);
        assert_eq!(ttl(200, &[("content-type", "text/event-stream")]), None);
        assert_eq!(ttl(200, &[("content-length", "101")]), None);
        assert!(ttl(200, &[("content-length", "100")]).is_some());
    }
}
