//! Correlation ids: one id follows a request through every service, into every log
//! line, and back to the client.
//!
//! An inbound `X-Request-ID` (or `X-Correlation-ID`) is accepted when it is at most
//! [`MAX_LEN`] characters of `[A-Za-z0-9._:-]`; otherwise, or when absent, a fresh
//! UUIDv7 (unique and time-sortable) is generated.
//!
//! - [`RequestIdLayer`] (servers) chooses the id, puts it in request extensions and in
//!   a `request` tracing span that every log line of the request carries, and echoes it
//!   on the response. [`RequestIdLayer::edge`] is for the internet-facing service: it
//!   always generates the id and logs a client's value only as `client_request_id`.
//! - [`SetRequestIdLayer`] (clients) sets the id on outbound requests under both
//!   header names.
//!
//! ```
//! use std::convert::Infallible;
//!
//! use http::{Request, Response};
//! use pulse_core::request_id::{RequestId, RequestIdLayer, X_REQUEST_ID};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let service = ServiceBuilder::new()
//!     .layer(RequestIdLayer::new())
//!     .service_fn(|req: Request<()>| async move {
//!         // Handlers (and log lines, through the span) see the chosen id.
//!         let id = req.extensions().get::<RequestId>().map(RequestId::to_string);
//!         Ok::<_, Infallible>(Response::new(id.unwrap_or_default()))
//!     });
//!
//! // A valid inbound id is kept and echoed.
//! let req = Request::builder().header("x-request-id", "abc-123").body(()).unwrap();
//! let res = service.clone().oneshot(req).await.unwrap();
//! assert_eq!(res.headers()[X_REQUEST_ID], "abc-123");
//! assert_eq!(res.body(), "abc-123");
//!
//! // An invalid one is replaced by a fresh UUIDv7.
//! let req = Request::builder().header("x-request-id", "no spaces allowed").body(()).unwrap();
//! let res = service.oneshot(req).await.unwrap();
//! assert_eq!(res.body().len(), 36);
//! assert_eq!(res.headers()[X_REQUEST_ID], res.body().as_str());
//! # }
//! ```

mod future;
mod layer;
#[cfg(test)]
mod layer_tests;
mod service;

pub use future::ResponseFuture;
pub use layer::{RequestIdLayer, SetRequestIdLayer};
pub use service::{RequestIdService, SetRequestId};

use std::fmt;

use http::{Extensions, HeaderMap, HeaderName, HeaderValue};

/// `x-request-id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-correlation-id`.
pub const X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
/// The longest accepted inbound id.
pub const MAX_LEN: usize = 128;

tokio::task_local! {
    /// The id of the request whose service future is being polled on this task.
    static CURRENT: RequestId;
}

/// Record the authenticated user's id in the current request span (the `user_id`
/// field that [`RequestIdService`] declares), so every later log line carries it.
///
/// Authentication layers call this once they have verified the caller. Outside a
/// request span it does nothing.
pub fn record_user_id(user_id: &str) {
    tracing::Span::current().record("user_id", tracing::field::display(user_id));
}

/// A validated correlation id. Cheap to clone.
///
/// Kept as the header value it is sent as: setting it on a request or a response clones
/// a reference-counted buffer instead of copying the id each time.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// A fresh id: a UUIDv7, unique and sortable by creation time.
    pub fn generate() -> Self {
        let mut buffer = [0_u8; uuid::fmt::Hyphenated::LENGTH];
        let id = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buffer);
        // A hyphenated UUID is always a valid header value.
        Self(HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("invalid")))
    }

    /// Parse an id, accepting it only when it is 1..=[`MAX_LEN`] characters of
    /// `[A-Za-z0-9._:-]`.
    pub fn parse(value: &str) -> Option<Self> {
        if !Self::is_valid(value.as_bytes()) {
            return None;
        }
        HeaderValue::from_str(value).ok().map(Self)
    }

    /// Parse an id from a header value (see [`RequestId::parse`]); a valid one shares
    /// the value's buffer.
    pub fn from_header_value(value: &HeaderValue) -> Option<Self> {
        Self::is_valid(value.as_bytes()).then(|| Self(value.clone()))
    }

    /// Whether `bytes` is an acceptable correlation id.
    pub fn is_valid(bytes: &[u8]) -> bool {
        !bytes.is_empty()
            && bytes.len() <= MAX_LEN
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    }

    /// The first valid id among `X-Request-ID` then `X-Correlation-ID` headers.
    /// A request with several values of one header is treated as having none of it.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        [X_REQUEST_ID, X_CORRELATION_ID].iter().find_map(|name| {
            let mut values = headers.get_all(name).iter();
            match (values.next(), values.next()) {
                (Some(v), None) => Self::from_header_value(v),
                _ => None,
            }
        })
    }

    /// The id of a request: the [`RequestId`] extension if a request-id layer put one
    /// there, else a valid id from its headers.
    pub fn from_parts(extensions: &Extensions, headers: &HeaderMap) -> Option<Self> {
        extensions
            .get::<Self>()
            .cloned()
            .or_else(|| Self::from_headers(headers))
    }

    /// The id of the request being served on this task: set by [`RequestIdService`]
    /// while it runs the inner service's call and future. `None` outside one, and in
    /// tasks spawned from it (pass the id along explicitly there).
    pub fn current() -> Option<Self> {
        CURRENT.try_with(Self::clone).ok()
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        // Valid ids are ASCII: the conversion cannot fail.
        self.0.to_str().unwrap_or_default()
    }

    /// The id as a header value (shares the id's buffer).
    pub fn to_header_value(&self) -> HeaderValue {
        self.0.clone()
    }

    /// Set this id on an outbound request's headers, under both `X-Request-ID` and
    /// `X-Correlation-ID`, replacing any value already there.
    pub fn set_on(&self, headers: &mut HeaderMap) {
        headers.insert(X_CORRELATION_ID, self.0.clone());
        headers.insert(X_REQUEST_ID, self.0.clone());
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl AsRef<str> for RequestId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(feature = "axum")]
mod extract {
    use std::convert::Infallible;

    use axum::extract::FromRequestParts;
    use http::request::Parts;

    use super::RequestId;

    /// The request's correlation id: the extension [`RequestIdService`](super::RequestIdService)
    /// set, else a valid id from the headers, else a fresh one. Never fails.
    impl<S: Send + Sync> FromRequestParts<S> for RequestId {
        type Rejection = Infallible;

        async fn from_request_parts(
            parts: &mut Parts,
            _state: &S,
        ) -> Result<Self, Self::Rejection> {
            Ok(Self::from_parts(&parts.extensions, &parts.headers).unwrap_or_else(Self::generate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(RequestId::parse("abc-123_x.y:z").is_some());
        assert!(RequestId::parse("").is_none());
        assert!(RequestId::parse("has space").is_none());
        assert!(RequestId::parse("ünï").is_none());
        assert!(RequestId::parse(&"a".repeat(128)).is_some());
        assert!(RequestId::parse(&"a".repeat(129)).is_none());
    }

    #[test]
    fn generated_ids_are_valid_unique_and_sortable() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert!(RequestId::is_valid(a.as_str().as_bytes()));
        assert_ne!(a, b);
        assert!(a.as_str() < b.as_str());
    }

    #[test]
    fn set_on_writes_both_headers() {
        let mut headers = HeaderMap::new();
        headers.append(X_REQUEST_ID, HeaderValue::from_static("old"));
        headers.append(X_REQUEST_ID, HeaderValue::from_static("older"));
        RequestId::parse("new").unwrap().set_on(&mut headers);
        assert_eq!(headers.get_all(X_REQUEST_ID).iter().count(), 1);
        assert_eq!(headers[X_REQUEST_ID], "new");
        assert_eq!(headers[X_CORRELATION_ID], "new");
    }

    #[test]
    fn duplicate_headers_are_not_trusted() {
        let mut headers = HeaderMap::new();
        headers.append(X_REQUEST_ID, HeaderValue::from_static("a"));
        headers.append(X_REQUEST_ID, HeaderValue::from_static("b"));
        assert_eq!(RequestId::from_headers(&headers), None);
        headers.insert(X_CORRELATION_ID, HeaderValue::from_static("c"));
        assert_eq!(RequestId::from_headers(&headers).unwrap().as_str(), "c");
    }
}
