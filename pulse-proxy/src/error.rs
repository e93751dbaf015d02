//! The proxy's typed errors and their JSON answers.
//!
//! Every failure of a proxied call is one [`ProxyError`]. The proxy answers it with the
//! shared JSON error shape of [`pulse_core::ApiError`] and puts the error itself into
//! the response extensions, so a metrics or logging layer above can read the kind
//! without parsing the body. No upstream error text ever reaches the client: the
//! messages are fixed per kind.

use std::{error::Error as StdError, fmt, io, time::Duration};

use http::StatusCode;
use pulse_core::{ApiError, ErrorCode, RequestId};

/// A boxed error, as tower uses.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Which timeout fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutPhase {
    /// Opening the connection to the upstream.
    Connect,
    /// Waiting for the upstream's response headers.
    ResponseHeaders,
    /// The whole exchange, body included.
    Total,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect",
            Self::ResponseHeaders => "response headers",
            Self::Total => "total deadline",
        })
    }
}

/// Why a proxied request failed.
///
/// | kind | status |
/// | --- | --- |
/// | [`BadFraming`](Self::BadFraming), [`UnsafePath`](Self::UnsafePath) | 400 |
/// | [`NotRouted`](Self::NotRouted) | 404 |
/// | [`BodyTooLarge`](Self::BodyTooLarge) | 413 |
/// | [`ConnectRefused`](Self::ConnectRefused), [`Unavailable`](Self::Unavailable), [`PoolExhausted`](Self::PoolExhausted), [`CircuitOpen`](Self::CircuitOpen) | 503 (+ `Retry-After` when known) |
/// | [`Timeout`](Self::Timeout) | 504 |
/// | [`Protocol`](Self::Protocol), [`UpgradeFailed`](Self::UpgradeFailed) | 502 |
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The request's framing is ambiguous (`Content-Length` with `Transfer-Encoding`,
    /// differing or invalid `Content-Length` values).
    #[error("bad request framing: {reason}")]
    BadFraming {
        /// What was wrong.
        reason: &'static str,
    },
    /// The path contains dot segments, encoded separators or empty segments.
    #[error("unsafe request path: {reason}")]
    UnsafePath {
        /// What was wrong.
        reason: &'static str,
    },
    /// The path is outside the proxy's configured prefix.
    #[error("path outside the proxied prefix")]
    NotRouted,
    /// The request body is larger than the configured limit.
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The upstream refused the connection.
    #[error("upstream refused the connection")]
    ConnectRefused,
    /// The upstream could not be reached for another reason (no route, socket missing,
    /// TLS handshake failed, …).
    #[error("upstream unavailable")]
    Unavailable,
    /// The transport's cap on concurrent requests was reached; the request was not sent.
    #[error("upstream connection pool exhausted")]
    PoolExhausted,
    /// A timeout fired.
    #[error("upstream timeout ({phase})")]
    Timeout {
        /// Which one.
        phase: TimeoutPhase,
    },
    /// The upstream broke the HTTP protocol (invalid response, connection closed
    /// mid-message, body error).
    #[error("upstream protocol error")]
    Protocol,
    /// The circuit breaker in front of the upstream is open.
    #[error("circuit open")]
    CircuitOpen {
        /// When a new attempt may succeed, if known.
        retry_after: Option<Duration>,
    },
    /// The upstream accepted an upgrade, but the upgraded connection could not be set up.
    #[error("upgrade failed")]
    UpgradeFailed,
}

impl ProxyError {
    /// The HTTP status this error answers with.
    pub const fn status(&self) -> StatusCode {
        match self {
            Self::BadFraming { .. } | Self::UnsafePath { .. } => StatusCode::BAD_REQUEST,
            Self::NotRouted => StatusCode::NOT_FOUND,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ConnectRefused
            | Self::Unavailable
            | Self::PoolExhausted
            | Self::CircuitOpen { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Protocol | Self::UpgradeFailed => StatusCode::BAD_GATEWAY,
        }
    }

    /// Whether the request certainly never reached the upstream, so that sending it
    /// again cannot repeat a side effect.
    pub const fn is_never_sent(&self) -> bool {
        matches!(
            self,
            Self::ConnectRefused
                | Self::PoolExhausted
                | Self::CircuitOpen { .. }
                | Self::Timeout {
                    phase: TimeoutPhase::Connect
                }
        )
    }

    /// The JSON error answer, with fixed messages and no upstream detail.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            Self::BadFraming { .. } => ApiError::bad_request("Malformed request framing"),
            Self::UnsafePath { .. } => ApiError::bad_request("Invalid request path"),
            Self::NotRouted => ApiError::not_found("Not found"),
            Self::BodyTooLarge { .. } => ApiError::payload_too_large(),
            Self::ConnectRefused | Self::Unavailable => {
                ApiError::service_unavailable("Upstream service unavailable")
            }
            Self::PoolExhausted => ApiError::service_unavailable("Upstream service busy")
                .with_retry_after(Duration::from_secs(1)),
            Self::CircuitOpen { retry_after } => {
                let err = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::CIRCUIT_OPEN,
                    "Upstream service temporarily unavailable",
                );
                match retry_after {
                    Some(after) => err.with_retry_after(*after),
                    None => err,
                }
            }
            Self::Timeout { .. } => ApiError::gateway_timeout(),
            Self::Protocol | Self::UpgradeFailed => ApiError::bad_gateway(),
        }
    }

    /// The JSON error response, with the request id and the error itself in the
    /// response extensions.
    pub fn into_response<B>(
        self,
        request_id: Option<&RequestId>,
        make_body: impl FnOnce(bytes::Bytes) -> B,
    ) -> http::Response<B> {
        let mut api = self.to_api_error();
        if let Some(id) = request_id {
            api = api.with_request_id(id.as_str());
        }
        let mut res = api.into_response_with(make_body);
        res.extensions_mut().insert(self);
        res
    }

    /// Classify an error returned by a transport or a layer around it.
    ///
    /// Walks the error's source chain: a [`ProxyError`] anywhere wins; then the
    /// well-known errors of hyper, hyper-util, tower and the standard library are
    /// recognised; anything else is a [`ProxyError::Protocol`] error.
    pub fn classify(err: &(dyn StdError + 'static)) -> Self {
        let mut connect = false;
        let mut current: Option<&(dyn StdError + 'static)> = Some(err);
        while let Some(e) = current {
            if let Some(own) = e.downcast_ref::<Self>() {
                return own.clone();
            }
            if let Some(kind) = crate::body::BodyLimitExceeded::limit_of(e) {
                return Self::BodyTooLarge { limit: kind };
            }
            if e.is::<tokio::time::error::Elapsed>() {
                return Self::Timeout {
                    phase: if connect {
                        TimeoutPhase::Connect
                    } else {
                        TimeoutPhase::ResponseHeaders
                    },
                };
            }
            #[cfg(feature = "breaker")]
            if let Some(open) = e.downcast_ref::<pulse_breaker::BreakerOpen>() {
                return Self::CircuitOpen {
                    retry_after: open.retry_after(),
                };
            }
            if let Some(client) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
                connect |= client.is_connect();
            }
            if let Some(io) = e.downcast_ref::<io::Error>() {
                match io.kind() {
                    io::ErrorKind::ConnectionRefused => return Self::ConnectRefused,
                    io::ErrorKind::TimedOut if connect => {
                        return Self::Timeout {
                            phase: TimeoutPhase::Connect,
                        };
                    }
                    io::ErrorKind::NotFound
                    | io::ErrorKind::PermissionDenied
                    | io::ErrorKind::AddrNotAvailable => return Self::Unavailable,
                    _ => {}
                }
            }
            current = e.source();
        }
        if connect {
            Self::Unavailable
        } else {
            Self::Protocol
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(ProxyError::ConnectRefused.status(), 503);
        assert_eq!(ProxyError::PoolExhausted.status(), 503);
        assert_eq!(
            ProxyError::Timeout {
                phase: TimeoutPhase::ResponseHeaders
            }
            .status(),
            504
        );
        assert_eq!(ProxyError::Protocol.status(), 502);
        assert_eq!(ProxyError::BodyTooLarge { limit: 1 }.status(), 413);
        assert_eq!(ProxyError::UnsafePath { reason: "x" }.status(), 400);
    }

    #[test]
    fn circuit_open_has_retry_after() {
        let res = ProxyError::CircuitOpen {
            retry_after: Some(Duration::from_millis(1500)),
        }
        .into_response(None, http_body_util::Full::new);
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()[http::header::RETRY_AFTER], "2");
        assert!(res.extensions().get::<ProxyError>().is_some());
    }

    #[test]
    fn classify_walks_the_chain() {
        let io = io::Error::new(io::ErrorKind::ConnectionRefused, "refused 127.0.0.1:1");
        assert_eq!(ProxyError::classify(&io), ProxyError::ConnectRefused);
        let boxed: BoxError = Box::new(ProxyError::PoolExhausted);
        assert_eq!(ProxyError::classify(&*boxed), ProxyError::PoolExhausted);
        let other = io::Error::other("upstream said: secret detail");
        assert_eq!(ProxyError::classify(&other), ProxyError::Protocol);
    }

    #[test]
    fn no_upstream_text_in_body() {
        let res = ProxyError::Protocol.into_response(None, |b| b);
        let body = String::from_utf8(res.into_body().to_vec()).unwrap();
        assert!(body.contains("bad_gateway"));
        assert!(!body.contains("secret"));
    }
}
