//! Extraction over HTTP, shared by the seed jobs: a GET client for JSON REST sources
//! with bearer authentication, bounded retries of rate limits (`429`, `Retry-After`) and
//! server errors with backoff, and cooperative cancellation.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use time::OffsetDateTime;

use super::SourceConfigError;
use super::connector::{Connector, connector};
use super::url::BaseUrl;
use crate::engine::Backoff;
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
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FetchPolicy {
    /// Retries of one request after a `429`, a `5xx`, a timeout or a connection error.
    pub max_retries: u32,
    /// The wait between tries when the source gave no `Retry-After` (500 ms doubling
    /// up to 30 s, 20 % jitter): the same [`Backoff`] as the engine's retries.
    pub backoff: Backoff,
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
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
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
        self.backoff = self.backoff.with_initial(backoff);
        self
    }

    /// Sets the longest backoff.
    #[must_use]
    pub const fn with_max_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = self.backoff.with_max(backoff);
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
                outcome = tokio::time::timeout(self.policy.request_timeout, self.try_get(path, ctx.now())) => outcome,
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
                .unwrap_or_else(|| self.policy.backoff.delay_jittered(retry + 1));
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

    async fn try_get(&self, path: &str, now: OffsetDateTime) -> Result<Fetched, TryError> {
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
        if let Some(retry_after) = rate_limited(status, response.headers(), now) {
            return Err(TryError::Transient(Transient {
                reason: format!("rate limited ({status})"),
                retry_after,
            }));
        }
        if status.is_server_error() {
            return Err(TryError::Transient(Transient {
                reason: format!("server error ({status})"),
                retry_after: parse_retry_after(response.headers(), now),
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
fn rate_limited(
    status: StatusCode,
    headers: &HeaderMap,
    now: OffsetDateTime,
) -> Option<Option<Duration>> {
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
        let now = time::macros::datetime!(2026-01-01 10:00 UTC);
        let quota = headers(&[("x-ratelimit-remaining", "0")]);
        assert!(rate_limited(StatusCode::FORBIDDEN, &quota, now).is_some());
        assert!(rate_limited(StatusCode::FORBIDDEN, &HeaderMap::new(), now).is_none());
        assert_eq!(
            rate_limited(
                StatusCode::TOO_MANY_REQUESTS,
                &headers(&[("retry-after", "2")]),
                now
            ),
            Some(Some(Duration::from_secs(2)))
        );
        // The reset time is read against the engine's clock, not the system's.
        let reset = (now.unix_timestamp() + 90).to_string();
        let mut exhausted = headers(&[("x-ratelimit-remaining", "0")]);
        exhausted.insert("x-ratelimit-reset", reset.parse().unwrap());
        assert_eq!(
            rate_limited(StatusCode::FORBIDDEN, &exhausted, now),
            Some(Some(Duration::from_secs(90)))
        );
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let policy = FetchPolicy::default()
            .with_initial_backoff(Duration::from_millis(100))
            .with_max_backoff(Duration::from_millis(350));
        assert_eq!(policy.backoff.delay(1, 0.0), Duration::from_millis(100));
        assert_eq!(policy.backoff.delay(2, 0.0), Duration::from_millis(200));
        assert_eq!(policy.backoff.delay(3, 0.0), Duration::from_millis(350));
        assert_eq!(policy.backoff.delay(40, 0.0), Duration::from_millis(350));
    }

    #[test]
    fn tokens_do_not_print() {
        let token = SourceToken::new("s3cret");
        assert_eq!(format!("{token:?}"), "SourceToken(***)");
    }
}
