//! The rejection error and what a service answers with it.

use std::fmt::Write as _;
use std::time::Duration;

use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};

use crate::state::State;

/// The boxed error type every breaker service returns (as tower's `BoxError`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The header a request's correlation id is read from for the JSON error body.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The stable error code of a rejection in JSON error bodies.
pub const CIRCUIT_OPEN_CODE: &str = "circuit_open";

/// A call rejected because the circuit is open (or half-open with every probe taken,
/// or forced open).
///
/// Services return it boxed; callers downcast: `err.is::<BreakerOpen>()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker is {state}: upstream temporarily unavailable")]
#[non_exhaustive]
pub struct BreakerOpen {
    state: State,
    retry_after: Option<Duration>,
}

impl BreakerOpen {
    pub(crate) const fn new(state: State, retry_after: Option<Duration>) -> Self {
        Self { state, retry_after }
    }

    /// The state that rejected the call (`Open`, `HalfOpen` or `ForcedOpen`).
    #[must_use]
    pub const fn state(&self) -> State {
        self.state
    }

    /// When trying again makes sense: the rest of the open period (open), the time
    /// left until the running probes time out (half-open), or the configured hint
    /// ([`BreakerConfig::with_forced_open_retry_after`](crate::BreakerConfig::with_forced_open_retry_after),
    /// default 30 s) when forced open. Every rejection by a [`Breaker`](crate::Breaker)
    /// carries one.
    #[must_use]
    pub const fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The `Retry-After` value in whole seconds, rounded up, at least 1.
    #[must_use]
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(|d| {
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            secs.max(1)
        })
    }

    /// The HTTP answer to a rejected request: `503 Service Unavailable`, a
    /// `Retry-After` header (when known) and the shared JSON error body
    /// `{"error": "...", "code": "circuit_open", "request_id": <id or null>}`.
    ///
    /// ```
    /// use pulse_breaker::{Breaker, BreakerOpen};
    ///
    /// let breaker = Breaker::default();
    /// breaker.force_open();
    /// let open: BreakerOpen = breaker.try_acquire().err().expect("forced open");
    /// let response: http::Response<String> = open.to_http_response(Some("req-1"));
    /// assert_eq!(response.status(), 503);
    /// assert!(response.body().contains(r#""code":"circuit_open""#));
    /// assert!(response.body().contains(r#""request_id":"req-1""#));
    /// ```
    #[must_use]
    pub fn to_http_response<B: From<String>>(&self, request_id: Option<&str>) -> Response<B> {
        let mut body = String::with_capacity(128);
        body.push_str(
            r#"{"error":"Upstream service temporarily unavailable (circuit open)","code":""#,
        );
        body.push_str(CIRCUIT_OPEN_CODE);
        body.push_str(r#"","request_id":"#);
        match request_id {
            Some(id) => push_json_string(&mut body, id),
            None => body.push_str("null"),
        }
        body.push('}');
        let mut response = Response::new(B::from(body));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(secs) = self.retry_after_secs() {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }

    /// [`to_http_response`](Self::to_http_response) with the request id read from the
    /// request's `X-Request-ID` header.
    #[must_use]
    pub fn to_http_response_for<B: From<String>, ReqBody>(
        &self,
        request: &Request<ReqBody>,
    ) -> Response<B> {
        let request_id = request
            .headers()
            .get(X_REQUEST_ID)
            .and_then(|v| v.to_str().ok());
        self.to_http_response(request_id)
    }
}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// What a breaker service answers when it rejects a call.
///
/// Implemented by [`RejectWithError`], [`RejectWith503`] and any
/// `Fn(&Req, BreakerOpen) -> Result<Res, BoxError> + Clone`, e.g. to build the 503 with
/// a body type that is not `From<String>`:
///
/// ```
/// use pulse_breaker::{BoxError, BreakerOpen, Rejection};
///
/// let as_bytes = |request: &http::Request<()>, open: BreakerOpen| {
///     let response: http::Response<String> = open.to_http_response_for(request);
///     Ok::<_, BoxError>(response.map(String::into_bytes))
/// };
/// let open = pulse_breaker::Breaker::default();
/// open.force_open();
/// let rejected = open.try_acquire().expect_err("forced open");
/// let response = as_bytes.reject(&http::Request::new(()), rejected).expect("a response");
/// assert_eq!(response.status(), 503);
/// ```
pub trait Rejection<Req, Res> {
    /// The result of the rejected `request`.
    fn reject(&self, request: &Req, open: BreakerOpen) -> Result<Res, BoxError>;
}

impl<Req, Res, F> Rejection<Req, Res> for F
where
    F: Fn(&Req, BreakerOpen) -> Result<Res, BoxError>,
{
    fn reject(&self, request: &Req, open: BreakerOpen) -> Result<Res, BoxError> {
        self(request, open)
    }
}

/// Rejects with `Err(BreakerOpen)` (boxed): for any service; the caller downcasts.
#[derive(Debug, Clone, Copy, Default)]
pub struct RejectWithError;

impl<Req, Res> Rejection<Req, Res> for RejectWithError {
    #[inline]
    fn reject(&self, _request: &Req, open: BreakerOpen) -> Result<Res, BoxError> {
        Err(Box::new(open))
    }
}

/// Rejects HTTP requests with `Ok(503)` from [`BreakerOpen::to_http_response`], the
/// request id taken from the request's `X-Request-ID` header.
#[derive(Debug, Clone, Copy, Default)]
pub struct RejectWith503;

impl<ReqBody, ResBody: From<String>> Rejection<Request<ReqBody>, Response<ResBody>>
    for RejectWith503
{
    fn reject(
        &self,
        request: &Request<ReqBody>,
        open: BreakerOpen,
    ) -> Result<Response<ResBody>, BoxError> {
        Ok(open.to_http_response_for(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_response_shape() {
        let open = BreakerOpen::new(State::Open, Some(Duration::from_millis(2_100)));
        let response: Response<String> = open.to_http_response(Some("a\"b"));
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(RETRY_AFTER),
            Some(&HeaderValue::from_static("3"))
        );
        assert_eq!(
            response.headers().get(CONTENT_TYPE),
            Some(&HeaderValue::from_static("application/json"))
        );
        assert_eq!(
            response.body(),
            r#"{"error":"Upstream service temporarily unavailable (circuit open)","code":"circuit_open","request_id":"a\"b"}"#
        );
    }

    #[test]
    fn null_request_id_and_no_retry_after_without_a_hint() {
        let open = BreakerOpen::new(State::ForcedOpen, None);
        let response: Response<String> = open.to_http_response(None);
        assert!(response.headers().get(RETRY_AFTER).is_none());
        assert!(response.body().ends_with(r#""request_id":null}"#));
    }

    #[test]
    fn reject_with_503_reads_the_request_id() {
        let request = Request::builder()
            .header("x-request-id", "rid-42")
            .body(())
            .unwrap_or_default();
        let open = BreakerOpen::new(State::Open, Some(Duration::from_millis(10)));
        let response: Response<String> = match RejectWith503.reject(&request, open) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert!(response.body().contains(r#""request_id":"rid-42""#));
        assert_eq!(
            response.headers().get(RETRY_AFTER),
            Some(&HeaderValue::from_static("1"))
        );
    }
}
