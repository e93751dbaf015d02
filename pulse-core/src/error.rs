//! One JSON error shape for every Pulse service.
//!
//! Every error a Pulse service answers has the body
//! `{"error": "<human message>", "code": "<stable_snake_case>", "request_id": "<id>"}`
//! with `Content-Type: application/json`. The message is written for people and may
//! change; the [`ErrorCode`] is a promise and never changes. Neither ever carries
//! internal detail: no upstream text, no stack trace, no SQL.
//!
//! ```
//! use pulse_core::error::{ApiError, ErrorCode};
//! use http::StatusCode;
//!
//! let err = ApiError::forbidden("Permission etl.jobs.run required")
//!     .with_request_id("req-1");
//! let res = err.into_http_response();
//! assert_eq!(res.status(), StatusCode::FORBIDDEN);
//! assert_eq!(res.headers()["content-type"], "application/json");
//! ```

use std::{borrow::Cow, fmt};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use http_body_util::Full;
use serde::{Deserialize, Serialize};

use crate::{body::ResponseBody, request_id::RequestId};

/// A stable, machine-readable error code in `snake_case`.
///
/// The constants are the codes Pulse itself answers with; a service may define its own
/// with [`ErrorCode::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ErrorCode(&'static str);

impl ErrorCode {
    /// The request was malformed (400).
    pub const BAD_REQUEST: Self = Self("bad_request");
    /// The client's request body broke off or was malformed while it was read (400):
    /// the client's fault, never the upstream's.
    pub const INVALID_BODY: Self = Self("invalid_body");
    /// No credential, or one that could not be verified (401).
    pub const UNAUTHORIZED: Self = Self("unauthorized");
    /// A bearer token that failed verification (401).
    pub const INVALID_TOKEN: Self = Self("invalid_token");
    /// Authenticated, but missing a permission (403).
    pub const FORBIDDEN: Self = Self("forbidden");
    /// A call to an internal service without a valid internal credential (403).
    pub const INTERNAL_AUTH_REQUIRED: Self = Self("internal_auth_required");
    /// No such resource (404).
    pub const NOT_FOUND: Self = Self("not_found");
    /// The method is not allowed on this resource (405).
    pub const METHOD_NOT_ALLOWED: Self = Self("method_not_allowed");
    /// The request conflicts with the resource's state (409).
    pub const CONFLICT: Self = Self("conflict");
    /// The request body is larger than allowed (413).
    pub const PAYLOAD_TOO_LARGE: Self = Self("payload_too_large");
    /// The request was well-formed but invalid (422).
    pub const VALIDATION_FAILED: Self = Self("validation_failed");
    /// Too many requests (429).
    pub const RATE_LIMITED: Self = Self("rate_limited");
    /// An unexpected failure inside the service (500).
    pub const INTERNAL: Self = Self("internal_error");
    /// The upstream answered with something that is not valid HTTP (502).
    pub const BAD_GATEWAY: Self = Self("bad_gateway");
    /// The upstream is unavailable (503).
    pub const SERVICE_UNAVAILABLE: Self = Self("service_unavailable");
    /// The circuit breaker in front of the upstream is open (503).
    pub const CIRCUIT_OPEN: Self = Self("circuit_open");
    /// The service sheds load: it cannot take this request now (503, `Retry-After`).
    pub const OVERLOADED: Self = Self("overloaded");
    /// The upstream did not answer in time (504).
    pub const GATEWAY_TIMEOUT: Self = Self("gateway_timeout");

    /// A service-specific code. Use `snake_case`; the code is part of the public API.
    pub const fn new(code: &'static str) -> Self {
        Self(code)
    }

    /// The code as a string.
    pub const fn as_str(&self) -> &'static str {
        self.0
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The JSON body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// A human-readable message.
    pub error: String,
    /// The stable error code.
    pub code: String,
    /// The request's correlation id, when known.
    pub request_id: Option<String>,
}

/// An error answer: status, stable code, human message, request id and any extra
/// headers (`WWW-Authenticate`, `Retry-After`, …).
///
/// Build one with a constructor per status, then turn it into a response with
/// [`ApiError::into_http_response`], [`ApiError::into_response_body`] or, with the `axum`
/// feature, `IntoResponse`.
#[derive(Clone, Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: Cow<'static, str>,
    request_id: Option<String>,
    headers: HeaderMap,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            request_id: None,
            headers: HeaderMap::new(),
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BAD_REQUEST, message)
    }

    /// 401 `unauthorized` with `WWW-Authenticate: Bearer`.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::UNAUTHORIZED,
            "Authentication required",
        )
        .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    }

    /// 401 `invalid_token` with `WWW-Authenticate: Bearer error="invalid_token"`.
    pub fn invalid_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::INVALID_TOKEN,
            "Invalid or expired token",
        )
        .with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        )
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::FORBIDDEN, message)
    }

    /// 403 `internal_auth_required`: `"Internal authentication required"`.
    pub fn internal_auth_required() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorCode::INTERNAL_AUTH_REQUIRED,
            "Internal authentication required",
        )
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NOT_FOUND, message)
    }

    /// 409 `conflict`.
    pub fn conflict(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CONFLICT, ErrorCode::CONFLICT, message)
    }

    /// 413 `payload_too_large`.
    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PAYLOAD_TOO_LARGE,
            "Request body too large",
        )
    }

    /// 422 `validation_failed`.
    pub fn unprocessable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::VALIDATION_FAILED,
            message,
        )
    }

    /// 429 `rate_limited`, with `Retry-After` in whole seconds (rounded up).
    pub fn too_many_requests(retry_after: std::time::Duration) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RATE_LIMITED,
            "Too many requests",
        )
        .with_retry_after(retry_after)
    }

    /// 500 `internal_error`. The message is fixed: internal detail never leaves.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::INTERNAL,
            "Internal server error",
        )
    }

    /// 502 `bad_gateway`.
    pub fn bad_gateway() -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::BAD_GATEWAY,
            "Upstream service answered with an invalid response",
        )
    }

    /// 503 `service_unavailable`.
    pub fn service_unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::SERVICE_UNAVAILABLE,
            message,
        )
    }

    /// 504 `gateway_timeout`.
    pub fn gateway_timeout() -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::GATEWAY_TIMEOUT,
            "Upstream service did not answer in time",
        )
    }

    /// Attach the request's correlation id.
    #[must_use]
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    /// Attach the correlation id of the request these parts belong to: the
    /// [`RequestId`] extension when the request-id layer ran, else a valid
    /// `X-Request-ID` header, else nothing.
    #[must_use]
    pub fn with_request_id_from(self, parts: &http::request::Parts) -> Self {
        match RequestId::from_parts(&parts.extensions, &parts.headers) {
            Some(id) => self.with_request_id(id.as_str()),
            None => self,
        }
    }

    /// Attach the correlation id of a request (see [`ApiError::with_request_id_from`]).
    #[must_use]
    pub fn with_request_id_of<B>(self, req: &http::Request<B>) -> Self {
        match RequestId::from_parts(req.extensions(), req.headers()) {
            Some(id) => self.with_request_id(id.as_str()),
            None => self,
        }
    }

    /// Add a response header (insert, replacing any previous value of that name).
    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Add `Retry-After` in whole seconds, rounded up, at least 1.
    #[must_use]
    pub fn with_retry_after(self, retry_after: std::time::Duration) -> Self {
        let secs = retry_after
            .as_secs()
            .saturating_add(u64::from(retry_after.subsec_nanos() > 0))
            .max(1);
        self.with_header(header::RETRY_AFTER, HeaderValue::from(secs))
    }

    /// Replace the human-readable message.
    #[must_use]
    pub fn with_message(mut self, message: impl Into<Cow<'static, str>>) -> Self {
        self.message = message.into();
        self
    }

    /// The HTTP status.
    pub const fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable error code.
    pub const fn code(&self) -> ErrorCode {
        self.code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The request id, if attached.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// The extra headers of the answer.
    pub const fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.message.to_string(),
            code: self.code.as_str().to_owned(),
            request_id: self.request_id.clone(),
        }
    }

    /// The serialised JSON body.
    pub fn body_bytes(&self) -> Bytes {
        // Serialising a struct of strings cannot fail; fall back to a fixed body anyway.
        serde_json::to_vec(&self.body()).map_or_else(
            |_| Bytes::from_static(br#"{"error":"Internal server error","code":"internal_error","request_id":null}"#),
            Bytes::from,
        )
    }

    /// The response with a body of any type that can be built from bytes.
    pub fn into_response_with<B>(self, make_body: impl FnOnce(Bytes) -> B) -> http::Response<B> {
        let body = self.body_bytes();
        let mut res = http::Response::new(make_body(body));
        *res.status_mut() = self.status;
        let headers = res.headers_mut();
        *headers = self.headers;
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(id) = self
            .request_id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok())
        {
            headers.insert(crate::request_id::X_REQUEST_ID, id);
        }
        res
    }

    /// The response with a [`Full`] body.
    pub fn into_http_response(self) -> http::Response<Full<Bytes>> {
        self.into_response_with(Full::new)
    }

    /// The response with a middleware [`ResponseBody`].
    pub fn into_response_body<B>(self) -> http::Response<ResponseBody<B>> {
        self.into_response_with(ResponseBody::full)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        self.into_response_with(axum::body::Body::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(res: http::Response<Full<Bytes>>) -> serde_json::Value {
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn shape_is_error_code_request_id() {
        let res = ApiError::conflict("Job already running")
            .with_request_id("abc")
            .into_http_response();
        assert_eq!(res.status(), StatusCode::CONFLICT);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(res.headers()["x-request-id"], "abc");
        assert_eq!(
            body_json(res).await,
            serde_json::json!({"error": "Job already running", "code": "conflict", "request_id": "abc"})
        );
    }

    #[tokio::test]
    async fn request_id_null_when_unknown() {
        let res = ApiError::internal().into_http_response();
        assert_eq!(
            body_json(res).await,
            serde_json::json!({"error": "Internal server error", "code": "internal_error", "request_id": null})
        );
    }

    #[test]
    fn invalid_token_sets_www_authenticate() {
        let res = ApiError::invalid_token().into_http_response();
        assert_eq!(
            res.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\""
        );
    }

    #[test]
    fn retry_after_rounds_up() {
        let err = ApiError::service_unavailable("down")
            .with_retry_after(std::time::Duration::from_millis(1500));
        assert_eq!(err.headers()[header::RETRY_AFTER], "2");
        let err = ApiError::service_unavailable("down").with_retry_after(std::time::Duration::ZERO);
        assert_eq!(err.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn request_id_from_invalid_header_is_dropped() {
        let req = http::Request::builder()
            .header("x-request-id", "bad id with spaces")
            .body(())
            .unwrap();
        assert_eq!(
            ApiError::internal().with_request_id_of(&req).request_id(),
            None
        );
        let req = http::Request::builder()
            .header("x-request-id", "good-id")
            .body(())
            .unwrap();
        assert_eq!(
            ApiError::internal().with_request_id_of(&req).request_id(),
            Some("good-id")
        );
    }
}
