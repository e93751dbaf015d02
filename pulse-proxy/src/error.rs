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

/// The `Retry-After` of the proxy's 503 answers that have no better figure (refused,
/// unreachable, pool exhausted, overloaded): 1 s. An open circuit answers with the
/// breaker's own remaining open time instead.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

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
/// | kind | status | code | an upstream fault? |
/// | --- | --- | --- | --- |
/// | [`BadFraming`](Self::BadFraming), [`UnsafePath`](Self::UnsafePath) | 400 | `bad_request` | no |
/// | [`InvalidBody`](Self::InvalidBody) | 400 | `invalid_body` | no |
/// | [`NotRouted`](Self::NotRouted) | 404 | `not_found` | no |
/// | [`BodyTooLarge`](Self::BodyTooLarge) | 413 | `payload_too_large` | no |
/// | [`ConnectRefused`](Self::ConnectRefused), [`Unavailable`](Self::Unavailable), [`ConnectionLost`](Self::ConnectionLost) | 503 + `Retry-After: 1` | `service_unavailable` | yes |
/// | [`PoolExhausted`](Self::PoolExhausted) | 503 + `Retry-After: 1` | `service_unavailable` | no |
/// | [`Overloaded`](Self::Overloaded) | 503 + `Retry-After: 1` | `overloaded` | no |
/// | [`CircuitOpen`](Self::CircuitOpen) | 503 + `Retry-After` (the breaker's remaining open time) | `circuit_open` | no |
/// | [`Timeout`](Self::Timeout) | 504 | `gateway_timeout` | yes |
/// | [`Protocol`](Self::Protocol), [`UpgradeFailed`](Self::UpgradeFailed) | 502 | `bad_gateway` | yes |
///
/// The last column is [`is_upstream_fault`](Self::is_upstream_fault): only those kinds
/// say anything about the upstream's health, and only they may count against its
/// circuit breaker.
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
    /// The client's request body failed while it was streamed upstream: a malformed
    /// chunk, a connection closed or reset mid-body, a body shorter than its
    /// `Content-Length`. The client's fault, never the upstream's (see
    /// [`ClientBodyError`](crate::body::ClientBodyError)).
    #[error("client request body failed")]
    InvalidBody,
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
    /// The transport was not ready when the request came (a full buffer or
    /// concurrency limit around it): the proxy sheds the request, like tower's
    /// `LoadShed`, instead of queueing it or calling a transport that is not ready.
    #[error("transport not ready: request shed")]
    Overloaded,
    /// A timeout fired.
    #[error("upstream timeout ({phase})")]
    Timeout {
        /// Which one.
        phase: TimeoutPhase,
    },
    /// The upstream closed or reset the connection before its answer's headers
    /// arrived: it crashed, restarted or dropped the connection. The request may or may
    /// not have been processed, so only idempotent requests are sent again.
    #[error("upstream connection lost")]
    ConnectionLost,
    /// The upstream broke the HTTP protocol (an invalid response, a 101 nobody asked
    /// for, a body error).
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
            Self::BadFraming { .. } | Self::UnsafePath { .. } | Self::InvalidBody => {
                StatusCode::BAD_REQUEST
            }
            Self::NotRouted => StatusCode::NOT_FOUND,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ConnectRefused
            | Self::Unavailable
            | Self::PoolExhausted
            | Self::Overloaded
            | Self::ConnectionLost
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
                | Self::Overloaded
                | Self::CircuitOpen { .. }
                | Self::Timeout {
                    phase: TimeoutPhase::Connect
                }
        )
    }

    /// A stable `snake_case` name of the kind, for metric labels and logs (a bounded
    /// set: one per variant).
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::BadFraming { .. } => "bad_framing",
            Self::UnsafePath { .. } => "unsafe_path",
            Self::NotRouted => "not_routed",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::InvalidBody => "invalid_body",
            Self::ConnectRefused => "connect_refused",
            Self::Unavailable => "unavailable",
            Self::PoolExhausted => "pool_exhausted",
            Self::Overloaded => "overloaded",
            Self::Timeout { .. } => "timeout",
            Self::ConnectionLost => "connection_lost",
            Self::Protocol => "protocol",
            Self::CircuitOpen { .. } => "circuit_open",
            Self::UpgradeFailed => "upgrade_failed",
        }
    }

    /// Whether the error says the upstream is unhealthy: refused or unreachable, a
    /// timeout, an upstream protocol error. The client's faults (framing, path, body
    /// too large or broken off), the proxy's own shedding (pool exhausted, transport
    /// not ready) and an already open circuit are not: counting them would let any
    /// client open the circuit for everyone.
    pub const fn is_upstream_fault(&self) -> bool {
        matches!(
            self,
            Self::ConnectRefused
                | Self::Unavailable
                | Self::Timeout { .. }
                | Self::ConnectionLost
                | Self::Protocol
                | Self::UpgradeFailed
        )
    }

    /// The JSON error answer, with fixed messages and no upstream detail.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            Self::BadFraming { .. } => ApiError::bad_request("Malformed request framing"),
            Self::UnsafePath { .. } => ApiError::bad_request("Invalid request path"),
            Self::InvalidBody => ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::INVALID_BODY,
                "Malformed or incomplete request body",
            ),
            Self::NotRouted => ApiError::not_found("Not found"),
            Self::BodyTooLarge { .. } => ApiError::payload_too_large(),
            Self::ConnectRefused | Self::Unavailable | Self::ConnectionLost => {
                ApiError::service_unavailable("Upstream service unavailable")
                    .with_retry_after(DEFAULT_RETRY_AFTER)
            }
            Self::PoolExhausted => ApiError::service_unavailable("Upstream service busy")
                .with_retry_after(DEFAULT_RETRY_AFTER),
            Self::Overloaded => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::OVERLOADED,
                "Service overloaded, try again shortly",
            )
            .with_retry_after(DEFAULT_RETRY_AFTER),
            Self::CircuitOpen { retry_after } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::CIRCUIT_OPEN,
                "Upstream service temporarily unavailable",
            )
            .with_retry_after(retry_after.unwrap_or(DEFAULT_RETRY_AFTER)),
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
    /// Walks the error's source chain: a [`ProxyError`] anywhere wins, and so does a
    /// failure of the client's own body ([`ClientBodyError`](crate::body::ClientBodyError)
    /// → [`InvalidBody`](Self::InvalidBody), [`BodyLimitExceeded`](crate::body::BodyLimitExceeded)
    /// → [`BodyTooLarge`](Self::BodyTooLarge)), found through hyper's "user body"
    /// error; then the well-known errors of hyper, hyper-util, tower and the standard
    /// library are recognised; anything else is a [`ProxyError::Protocol`] error.
    pub fn classify(err: &(dyn StdError + 'static)) -> Self {
        Self::classify_in(err, false)
    }

    /// [`classify`](Self::classify) for an error of opening the connection.
    #[cfg(feature = "http")]
    pub(crate) fn classify_connect(err: &(dyn StdError + 'static)) -> Self {
        Self::classify_in(err, true)
    }

    /// `connect`: the error is known to come from opening the connection; otherwise
    /// hyper-util's client error tells it.
    fn classify_in(err: &(dyn StdError + 'static), connect: bool) -> Self {
        #[cfg_attr(not(feature = "http"), allow(unused_mut))]
        let mut connect = connect;
        let mut current: Option<&(dyn StdError + 'static)> = Some(err);
        while let Some(e) = current {
            if let Some(own) = e.downcast_ref::<Self>() {
                return own.clone();
            }
            if let Some(kind) = crate::body::BodyLimitExceeded::limit_of(e) {
                return Self::BodyTooLarge { limit: kind };
            }
            // Before the io errors below: a client's reset mid-body is the client's,
            // however it is worded further down the chain.
            if e.is::<crate::body::ClientBodyError>() {
                return Self::InvalidBody;
            }
            // tokio's, or tower's `Timeout` layer placed inside the transport stack (for
            // instance inside a circuit breaker, so that it counts the timeout).
            if e.is::<tokio::time::error::Elapsed>() || e.is::<tower::timeout::error::Elapsed>() {
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
            #[cfg(feature = "http")]
            if let Some(client) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
                connect |= client.is_connect();
            }
            // The connection went away under the request: the upstream died or dropped
            // it. A 503 (try again) rather than a 502 (it answered nonsense).
            if let Some(hyper) = e.downcast_ref::<hyper::Error>()
                && !connect
                && (hyper.is_incomplete_message() || hyper.is_canceled())
            {
                return Self::ConnectionLost;
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
                    io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
                        if !connect =>
                    {
                        return Self::ConnectionLost;
                    }
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
    fn client_body_faults_and_shedding_have_their_own_codes() {
        let res = ProxyError::InvalidBody.into_response(None, |b| b);
        assert_eq!(res.status(), 400);
        let body = String::from_utf8(res.into_body().to_vec()).unwrap();
        assert!(body.contains(r#""code":"invalid_body""#), "{body}");

        let res = ProxyError::Overloaded.into_response(None, |b| b);
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()[http::header::RETRY_AFTER], "1");
        let body = String::from_utf8(res.into_body().to_vec()).unwrap();
        assert!(body.contains(r#""code":"overloaded""#), "{body}");
    }

    #[test]
    fn every_503_has_a_retry_after() {
        for err in [
            ProxyError::ConnectRefused,
            ProxyError::Unavailable,
            ProxyError::PoolExhausted,
            ProxyError::Overloaded,
            ProxyError::ConnectionLost,
            ProxyError::CircuitOpen { retry_after: None },
        ] {
            let res = err.into_response(None, |b| b);
            assert_eq!(res.status(), 503);
            assert_eq!(res.headers()[http::header::RETRY_AFTER], "1");
        }
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
    fn a_tower_timeout_inside_the_transport_is_a_504() {
        let boxed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        let err = ProxyError::classify(&*boxed);
        assert_eq!(
            err,
            ProxyError::Timeout {
                phase: TimeoutPhase::ResponseHeaders
            }
        );
        assert!(err.is_upstream_fault());
    }

    #[test]
    fn a_lost_connection_is_503_and_an_upstream_fault() {
        for kind in [
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::UnexpectedEof,
        ] {
            let err = ProxyError::classify(&io::Error::new(kind, "peer went away"));
            assert_eq!(err, ProxyError::ConnectionLost, "{kind:?}");
            assert_eq!(err.status(), 503);
            assert!(err.is_upstream_fault());
            assert!(!err.is_never_sent());
        }
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
