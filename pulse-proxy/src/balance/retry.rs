//! Sending a failed request once more, to another instance.

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body::Body;
use http_body_util::BodyExt;

use crate::{ProxyError, ProxyRequestBody, TimeoutPhase, error::BoxError};

/// The default largest request body buffered so that the request can be sent again.
pub const DEFAULT_RETRY_BODY_LIMIT: u64 = 64 * 1024;

/// The header that makes a non-idempotent request safe to send twice
/// (draft-ietf-httpapi-idempotency-key-header): the upstream answers a repeat with the
/// first answer.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Whether sending the request twice does no more than sending it once: an idempotent
/// method (RFC 9110 §9.2.2), or a request carrying an [`IDEMPOTENCY_KEY`].
pub fn is_idempotent(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) || headers.contains_key(IDEMPOTENCY_KEY)
}

/// Whether a request that failed with `error` may be sent to another instance: one
/// that **never reached** its instance (refused, connect timeout, no capacity, open
/// circuit), whatever it is; or an [idempotent](is_idempotent) one whose connection
/// broke or whose answer did not come in time (a frozen instance). An upstream's
/// answer is a response, not an error, so it never comes here; the client's own
/// faults (a bad or too large body) are never retried.
pub fn is_retryable(error: &ProxyError, method: &Method, headers: &HeaderMap) -> bool {
    may_retry(error, is_idempotent(method, headers))
}

/// [`is_retryable`] for a request already known to be idempotent or not.
pub(crate) fn may_retry(error: &ProxyError, idempotent: bool) -> bool {
    let never_sent = matches!(
        error,
        ProxyError::ConnectRefused
            | ProxyError::Unavailable
            | ProxyError::PoolExhausted
            | ProxyError::Overloaded
            | ProxyError::CircuitOpen { .. }
            | ProxyError::Timeout {
                phase: TimeoutPhase::Connect
            }
    );
    never_sent
        || (idempotent
            && matches!(
                error,
                ProxyError::Protocol
                    | ProxyError::ConnectionLost
                    | ProxyError::Timeout {
                        phase: TimeoutPhase::ResponseHeaders
                    }
            ))
}

/// Reads a body of at most `limit` bytes (by its size hint) into memory, so that the
/// request can be copied; a larger or unsized one is left streaming (and is never sent
/// twice). The proxy's body limit still applies while reading.
pub(crate) async fn buffer_small<B>(
    request: Request<ProxyRequestBody<B>>,
    limit: u64,
) -> Result<Request<ProxyRequestBody<B>>, ProxyError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let small = request
        .body()
        .size_hint()
        .upper()
        .is_some_and(|n| n <= limit);
    if !small || request.body().try_clone().is_some() {
        return Ok(request);
    }
    let (parts, body) = request.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|error| ProxyError::classify(&*error))?
        .to_bytes();
    Ok(Request::from_parts(
        parts,
        ProxyRequestBody::buffered(bytes),
    ))
}

/// A copy of `request` for another instance, when its body can be sent again.
pub(crate) fn copy<B>(
    request: &Request<ProxyRequestBody<B>>,
) -> Option<Request<ProxyRequestBody<B>>> {
    let body = request.body().try_clone()?;
    let mut clone = Request::new(body);
    *clone.method_mut() = request.method().clone();
    *clone.uri_mut() = request.uri().clone();
    *clone.version_mut() = request.version();
    *clone.headers_mut() = request.headers().clone();
    *clone.extensions_mut() = request.extensions().clone();
    Some(clone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_sent_requests_are_retryable_whatever_their_method() {
        let none = HeaderMap::new();
        for error in [
            ProxyError::ConnectRefused,
            ProxyError::Unavailable,
            ProxyError::CircuitOpen { retry_after: None },
            ProxyError::Timeout {
                phase: TimeoutPhase::Connect,
            },
        ] {
            assert!(is_retryable(&error, &Method::POST, &none), "{error}");
        }
    }

    #[test]
    fn a_sent_request_is_retryable_only_when_idempotent() {
        let none = HeaderMap::new();
        let mut keyed = HeaderMap::new();
        keyed.insert(IDEMPOTENCY_KEY, http::HeaderValue::from_static("start-1"));
        for error in [
            ProxyError::ConnectionLost,
            ProxyError::Protocol,
            ProxyError::Timeout {
                phase: TimeoutPhase::ResponseHeaders,
            },
        ] {
            assert!(is_retryable(&error, &Method::GET, &none), "{error}");
            assert!(is_retryable(&error, &Method::PUT, &none), "{error}");
            assert!(!is_retryable(&error, &Method::POST, &none), "{error}");
            assert!(!is_retryable(&error, &Method::PATCH, &none), "{error}");
            assert!(is_retryable(&error, &Method::POST, &keyed), "{error}");
        }
    }

    #[test]
    fn the_clients_faults_are_never_retried() {
        let none = HeaderMap::new();
        assert!(!is_retryable(&ProxyError::InvalidBody, &Method::GET, &none));
        assert!(!is_retryable(
            &ProxyError::Timeout {
                phase: TimeoutPhase::Total
            },
            &Method::POST,
            &none
        ));
    }
}
