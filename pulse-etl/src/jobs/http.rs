//! Extraction over HTTP, shared by the seed jobs: a GET client for JSON REST sources
//! with bearer authentication, bounded retries of rate limits (`429`, `Retry-After`) and
//! server errors with backoff, cooperative cancellation, and `Link` header pagination.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use time::OffsetDateTime;

use super::SourceConfigError;
use crate::job::{JobContext, JobError};

/// A source's API token: sent as `Authorization: Bearer <token>`, never printed.
///
/// Its `Debug` shows `SourceToken(***)`, and no error or log line of the seed jobs
/// contains it.
#[derive(Clone, PartialEq, Eq)]
pub struct SourceToken(String);

impl SourceToken {
    /// Wraps a token.
    #[must_use]
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, for the `Authorization` header.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SourceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SourceToken(***)")
    }
}

/// How one page request is retried before the attempt gives up with a retryable
/// [`JobError`] (the engine's [`RetryPolicy`](crate::RetryPolicy) then decides whether
/// the run gets another attempt, which resumes from the checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPolicy {
    /// Retries of one request after a `429`, a `5xx`, a timeout or a connection error.
    pub max_retries: u32,
    /// The first backoff when the source gave no `Retry-After`; doubles each retry.
    pub initial_backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
    /// The longest `Retry-After` waited in place; a longer one ends the attempt at once
    /// with a retryable error carrying that wait, so the engine schedules the retry.
    pub max_retry_after: Duration,
    /// How long one request (to the end of its body) may take.
    pub request_timeout: Duration,
    /// The largest response body accepted.
    pub max_body_bytes: usize,
}

impl Default for FetchPolicy {
    /// 4 retries, 500 ms backoff doubling to at most 30 s, `Retry-After` honoured up to
    /// 60 s, 30 s per request, bodies up to 16 MiB.
    fn default() -> Self {
        Self {
            max_retries: 4,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_body_bytes: 16 * 1024 * 1024,
        }
    }
}

impl FetchPolicy {
    /// Sets the retries of one request.
    #[must_use]
    pub const fn with_max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Sets the first backoff.
    #[must_use]
    pub const fn with_initial_backoff(mut self, backoff: Duration) -> Self {
        self.initial_backoff = backoff;
        self
    }

    /// Sets the longest backoff.
    #[must_use]
    pub const fn with_max_backoff(mut self, backoff: Duration) -> Self {
        self.max_backoff = backoff;
        self
    }

    /// Sets the longest `Retry-After` waited in place.
    #[must_use]
    pub const fn with_max_retry_after(mut self, wait: Duration) -> Self {
        self.max_retry_after = wait;
        self
    }

    /// Sets the timeout of one request.
    #[must_use]
    pub const fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The backoff before retry `retry` (0-based), without jitter.
    fn backoff(&self, retry: u32) -> Duration {
        let factor = 2_u32.saturating_pow(retry.min(16));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

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
    fn is_https(&self) -> bool {
        self.scheme == http::uri::Scheme::HTTPS
    }
}

#[cfg(not(feature = "tls"))]
type Connector = HttpConnector;

#[cfg(feature = "tls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

#[cfg(not(feature = "tls"))]
fn connector(_api: &'static str, _base: &BaseUrl) -> Result<Connector, SourceConfigError> {
    Ok(HttpConnector::new())
}

/// Where the system keeps its PEM bundle of trusted roots (Debian, Fedora, macOS/Alpine).
#[cfg(feature = "tls")]
const CA_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// An HTTP-or-HTTPS connector; for an `https` base the roots come from the PEM bundle
/// named by `SSL_CERT_FILE`, else the system's.
#[cfg(feature = "tls")]
fn connector(api: &'static str, base: &BaseUrl) -> Result<Connector, SourceConfigError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let roots_error = |reason: String| SourceConfigError::TlsRoots { api, reason };
    let mut roots = rustls::RootCertStore::empty();
    if base.is_https() {
        let bundle = std::env::var_os("SSL_CERT_FILE")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                CA_BUNDLES
                    .iter()
                    .map(std::path::PathBuf::from)
                    .find(|path| path.exists())
            })
            .ok_or_else(|| roots_error("no CA bundle found; set SSL_CERT_FILE".to_owned()))?;
        let certs = CertificateDer::pem_file_iter(&bundle)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|err| roots_error(format!("reading {}: {err}", bundle.display())))?;
        let (added, _unparsable) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(roots_error(format!(
                "no usable certificate in {}",
                bundle.display()
            )));
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| roots_error(err.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .build())
}

/// A fetched page: its headers and body.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// Why one try failed in a way worth retrying.
struct Transient {
    reason: String,
    retry_after: Option<Duration>,
}

/// The HTTP side of one source: base URL, token, default headers, fetch policy.
#[derive(Clone)]
pub(crate) struct SourceHttp {
    label: &'static str,
    client: Client<Connector, Empty<Bytes>>,
    base: BaseUrl,
    token: Option<SourceToken>,
    headers: HeaderMap,
    policy: FetchPolicy,
}

impl fmt::Debug for SourceHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceHttp")
            .field("label", &self.label)
            .field("base", &self.base)
            .field("token", &self.token)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl SourceHttp {
    pub(crate) fn new(
        label: &'static str,
        base: BaseUrl,
        token: Option<SourceToken>,
        extra_headers: &[(HeaderName, &'static str)],
        policy: FetchPolicy,
    ) -> Result<Self, SourceConfigError> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(concat!("pulse-etl/", env!("CARGO_PKG_VERSION"))),
        );
        for (name, value) in extra_headers {
            headers.insert(name.clone(), HeaderValue::from_static(value));
        }
        if let Some(token) = &token {
            let mut value = HeaderValue::try_from(format!("Bearer {}", token.expose()))
                .map_err(|_| SourceConfigError::InvalidToken { api: label })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let client = Client::builder(TokioExecutor::new()).build(connector(label, &base)?);
        Ok(Self {
            label,
            client,
            base,
            token,
            headers,
            policy,
        })
    }

    pub(crate) fn base(&self) -> &BaseUrl {
        &self.base
    }

    /// GETs `path` (a path with query on the base URL's origin), retrying transient
    /// failures per the [`FetchPolicy`], and stopping at once on cancellation.
    pub(crate) async fn get(&self, ctx: &JobContext, path: &str) -> Result<Fetched, JobError> {
        let what = format!("{} GET {path}", self.label);
        let mut retry = 0_u32;
        loop {
            ctx.check_cancelled()?;
            let outcome = tokio::select! {
                biased;
                () = ctx.cancelled() => return Err(JobError::Cancelled),
                outcome = tokio::time::timeout(self.policy.request_timeout, self.try_get(path)) => outcome,
            };
            let transient = match outcome {
                Ok(Ok(fetched)) => return Ok(fetched),
                Ok(Err(TryError::Fatal(reason))) => {
                    return Err(JobError::fatal(format!("{what}: {reason}")));
                }
                Ok(Err(TryError::Transient(transient))) => transient,
                Err(_elapsed) => Transient {
                    reason: format!("no answer within {:?}", self.policy.request_timeout),
                    retry_after: None,
                },
            };
            let too_long = transient
                .retry_after
                .filter(|wait| *wait > self.policy.max_retry_after);
            if retry >= self.policy.max_retries || too_long.is_some() {
                let message = format!(
                    "{what}: {} (gave up after {} tries)",
                    transient.reason,
                    retry + 1
                );
                return Err(match transient.retry_after {
                    Some(wait) => JobError::retry_after(message, wait),
                    None => JobError::retryable(message),
                });
            }
            let wait = transient
                .retry_after
                .unwrap_or_else(|| jittered(self.policy.backoff(retry)));
            retry += 1;
            ctx.warn(format!(
                "{what}: {}; retry {retry}/{} in {} ms",
                transient.reason,
                self.policy.max_retries,
                wait.as_millis()
            ))
            .await?;
            tokio::select! {
                biased;
                () = ctx.cancelled() => return Err(JobError::Cancelled),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn try_get(&self, path: &str) -> Result<Fetched, TryError> {
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(self.base.url(path))
            .body(Empty::<Bytes>::new())
            .map_err(|err| TryError::Fatal(format!("invalid request: {err}")))?;
        request.headers_mut().extend(self.headers.clone());
        let response = self.client.request(request).await.map_err(|err| {
            TryError::Transient(Transient {
                reason: format!("request failed: {err}"),
                retry_after: None,
            })
        })?;
        let status = response.status();
        if let Some(retry_after) = rate_limited(status, response.headers()) {
            return Err(TryError::Transient(Transient {
                reason: format!("rate limited ({status})"),
                retry_after,
            }));
        }
        if status.is_server_error() {
            return Err(TryError::Transient(Transient {
                reason: format!("server error ({status})"),
                retry_after: parse_retry_after(response.headers(), OffsetDateTime::now_utc()),
            }));
        }
        if !status.is_success() {
            let hint = match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => " (check the token)",
                StatusCode::NOT_FOUND => " (check the base URL and project)",
                _ => "",
            };
            return Err(TryError::Fatal(format!(
                "the source answered {status}{hint}"
            )));
        }
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, self.policy.max_body_bytes)
            .collect()
            .await
            .map_err(|err| {
                if err.is::<http_body_util::LengthLimitError>() {
                    TryError::Fatal(format!(
                        "the response is larger than {} bytes",
                        self.policy.max_body_bytes
                    ))
                } else {
                    TryError::Transient(Transient {
                        reason: format!("reading the body failed: {err}"),
                        retry_after: None,
                    })
                }
            })?
            .to_bytes();
        Ok(Fetched {
            headers: parts.headers,
            body,
        })
    }
}

enum TryError {
    Transient(Transient),
    Fatal(String),
}

/// `Some(wait)` when the answer is a rate limit: `429`, or GitHub's `403` with
/// `x-ratelimit-remaining: 0`. The wait comes from `Retry-After` or GitHub's
/// `x-ratelimit-reset` (Unix seconds).
fn rate_limited(status: StatusCode, headers: &HeaderMap) -> Option<Option<Duration>> {
    let now = OffsetDateTime::now_utc();
    let exhausted = headers
        .get("x-ratelimit-remaining")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "0");
    if status == StatusCode::TOO_MANY_REQUESTS || (status == StatusCode::FORBIDDEN && exhausted) {
        let reset = headers
            .get("x-ratelimit-reset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok())
            .map(|reset| {
                Duration::from_secs(u64::try_from(reset - now.unix_timestamp()).unwrap_or(0))
            });
        Some(parse_retry_after(headers, now).or(if exhausted { reset } else { None }))
    } else {
        None
    }
}

/// `Retry-After` as seconds or as an HTTP date (relative to `now`).
pub(crate) fn parse_retry_after(headers: &HeaderMap, now: OffsetDateTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(value, format)
        .ok()?
        .assume_utc();
    Some(Duration::try_from(at - now).unwrap_or(Duration::ZERO))
}

/// Takes up to a fifth off a backoff, so runs failing together do not retry together.
fn jittered(wait: Duration) -> Duration {
    wait.mul_f64(1.0 - rand::random::<f64>() * 0.2)
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
    fn retry_after_takes_seconds_and_dates() {
        let now = time::macros::datetime!(2026-11-28 12:00:00 UTC);
        let secs = headers(&[("retry-after", "7")]);
        assert_eq!(parse_retry_after(&secs, now), Some(Duration::from_secs(7)));
        let date = headers(&[("retry-after", "Sat, 28 Nov 2026 12:00:30 GMT")]);
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(30)));
        let past = headers(&[("retry-after", "Sat, 28 Nov 2026 11:00:00 GMT")]);
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", "soon")]), now),
            None
        );
    }

    #[test]
    fn github_exhausted_quota_is_a_rate_limit() {
        let quota = headers(&[("x-ratelimit-remaining", "0")]);
        assert!(rate_limited(StatusCode::FORBIDDEN, &quota).is_some());
        assert!(rate_limited(StatusCode::FORBIDDEN, &HeaderMap::new()).is_none());
        assert_eq!(
            rate_limited(
                StatusCode::TOO_MANY_REQUESTS,
                &headers(&[("retry-after", "2")])
            ),
            Some(Some(Duration::from_secs(2)))
        );
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
    fn backoff_doubles_to_the_cap() {
        let policy = FetchPolicy::default()
            .with_initial_backoff(Duration::from_millis(100))
            .with_max_backoff(Duration::from_millis(350));
        assert_eq!(policy.backoff(0), Duration::from_millis(100));
        assert_eq!(policy.backoff(1), Duration::from_millis(200));
        assert_eq!(policy.backoff(2), Duration::from_millis(350));
        assert_eq!(policy.backoff(40), Duration::from_millis(350));
    }

    #[test]
    fn query_helpers() {
        assert_eq!(query_param("/r?a=1&page=3", "page"), Some("3"));
        assert_eq!(query_param("/r", "page"), None);
        assert_eq!(
            encode_query_value("project = P order by"),
            "project%20%3D%20P%20order%20by"
        );
        let token = SourceToken::new("s3cret");
        assert_eq!(format!("{token:?}"), "SourceToken(***)");
    }
}
