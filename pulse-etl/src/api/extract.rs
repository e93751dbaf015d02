//! Extractors whose rejections answer in the shared JSON error shape (axum's own answer
//! in plain text).

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, StatusCode, header};
use pulse_core::error::ApiError;
use serde::de::DeserializeOwned;

use super::error::{ErrorResponse, UNSUPPORTED_MEDIA_TYPE};

/// The `Idempotency-Key` request header.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The longest accepted `Idempotency-Key`.
pub(crate) const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// A JSON body; an empty (or blank) body reads as `{}`, so bodies whose fields are all
/// optional may be left out.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ErrorResponse;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        check_content_type(req.headers())?;
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ErrorResponse::from(ApiError::payload_too_large())
            } else {
                ErrorResponse::bad_request("Could not read the request body")
            }
        })?;
        let json: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(json)
            .map(JsonBody)
            .map_err(|err| ErrorResponse::bad_request(format!("Invalid JSON body: {err}")))
    }
}

/// Accepts no `Content-Type` (tools posting an empty body) or a JSON one.
fn check_content_type(headers: &HeaderMap) -> Result<(), ErrorResponse> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match essence.as_deref() {
        Some(mime) if mime == "application/json" || mime.ends_with("+json") => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        )
        .into()),
    }
}

/// Path parameters; a parameter that does not parse is a 400.
#[derive(Debug)]
pub(crate) struct PathParams<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for PathParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ErrorResponse;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| PathParams(value))
            .map_err(|_| ErrorResponse::bad_request("Invalid path parameter"))
    }
}

/// Query parameters; a query string that does not parse is a 400.
#[derive(Debug)]
pub(crate) struct QueryParams<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ErrorResponse;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| QueryParams(value))
            .map_err(|rejection| {
                ErrorResponse::bad_request(format!("Invalid query: {}", rejection.body_text()))
            })
    }
}

/// The optional `Idempotency-Key` header: 1 to 255 visible ASCII characters, once.
#[derive(Debug)]
pub(crate) struct IdempotencyKey(pub(crate) Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ErrorResponse;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(IDEMPOTENCY_KEY).iter();
        let (first, second) = (values.next(), values.next());
        let Some(value) = first else {
            return Ok(Self(None));
        };
        let valid = second.is_none()
            && !value.is_empty()
            && value.len() <= MAX_IDEMPOTENCY_KEY_LEN
            && value.as_bytes().iter().all(|b| b.is_ascii_graphic());
        match value.to_str() {
            Ok(key) if valid => Ok(Self(Some(key.to_owned()))),
            _ => Err(ErrorResponse::bad_request(
                "Idempotency-Key must be one header of 1 to 255 visible ASCII characters",
            )),
        }
    }
}
