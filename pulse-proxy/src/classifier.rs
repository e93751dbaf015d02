//! [`UpstreamClassifier`]: what a circuit breaker around the transport may count.

use std::error::Error as StdError;

use http::{Response, StatusCode};
use pulse_breaker::{Classifier, HttpClassifier, Outcome};

use crate::error::ProxyError;

/// The outcome classifier for a pulse-breaker circuit breaker between a
/// [`Proxy`](crate::Proxy) and its transport: only the upstream's faults count.
///
/// | result | outcome |
/// | --- | --- |
/// | an upstream response | as [`HttpClassifier`]: 500, 502, 503, 504 fail; 4xx and other 5xx are ignored; the rest succeed |
/// | refused, unreachable, timeout, upstream protocol error ([`ProxyError::is_upstream_fault`]) | `Failure` |
/// | the client's body broke off or was malformed ([`ProxyError::InvalidBody`]), or grew past the limit ([`ProxyError::BodyTooLarge`]) | `Ignore` |
/// | the proxy's own shedding ([`ProxyError::PoolExhausted`], [`ProxyError::Overloaded`]), an inner open circuit | `Ignore` |
/// | any other error | `Failure` (read as an upstream protocol error) |
///
/// pulse-breaker's own `HttpClassifier` counts *every* `Err` as a failure, so behind a
/// proxy a client that sends a malformed chunked body, resets its connection mid-body
/// or exceeds the body limit would count against the upstream, and a handful of such
/// requests from any client would open the circuit for everyone. This classifier reads
/// the error (walking its source chain with [`ProxyError::classify`]) and leaves the
/// client's faults out.
///
/// It applies to transports whose error type implements [`std::error::Error`] (the
/// pooled transports' [`ProxyError`], hyper's and hyper-util's errors, `Infallible`);
/// for a transport stack that returns a `BoxError`, call
/// [`classify_result`](Self::classify_result) from a closure.
///
/// ```
/// use std::time::Duration;
/// use pulse_breaker::{Breaker, BreakerConfig, CircuitBreakerLayer, Classifier, Outcome};
/// use pulse_proxy::{ProxyError, UpstreamClassifier};
///
/// let classifier = UpstreamClassifier::new();
/// let client_fault: Result<&http::Response<()>, &ProxyError> = Err(&ProxyError::InvalidBody);
/// assert_eq!(classifier.classify(client_fault), Outcome::Ignore);
/// let refused: Result<&http::Response<()>, &ProxyError> = Err(&ProxyError::ConnectRefused);
/// assert_eq!(classifier.classify(refused), Outcome::Failure);
///
/// // Around the transport, under the proxy:
/// let breaker = Breaker::new(BreakerConfig::default()).expect("valid configuration");
/// let layer = CircuitBreakerLayer::new(breaker).with_classifier(UpstreamClassifier::new());
/// # let _ = layer;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct UpstreamClassifier {
    http: HttpClassifier,
}

impl UpstreamClassifier {
    /// Upstream responses classified by [`HttpClassifier::new`], errors by
    /// [`ProxyError::is_upstream_fault`].
    #[must_use]
    pub const fn new() -> Self {
        Self {
            http: HttpClassifier::new(),
        }
    }

    /// The same classifier with another status table for upstream responses (e.g.
    /// `HttpClassifier::new().with_too_many_requests_as_failure(true)`).
    #[must_use]
    pub const fn with_http_classifier(mut self, http: HttpClassifier) -> Self {
        self.http = http;
        self
    }

    /// The outcome of an upstream response with this status.
    #[must_use]
    pub fn classify_status(&self, status: StatusCode) -> Outcome {
        self.http.classify_status(status)
    }

    /// The outcome of a transport error: `Failure` for an upstream fault, `Ignore`
    /// for the client's faults and the proxy's own shedding.
    #[must_use]
    pub fn classify_error(&self, err: &(dyn StdError + 'static)) -> Outcome {
        if ProxyError::classify(err).is_upstream_fault() {
            Outcome::Failure
        } else {
            Outcome::Ignore
        }
    }

    /// [`classify`](Classifier::classify) for any error viewable as
    /// `dyn Error`, e.g. in a closure over a `BoxError` transport:
    /// `move |r: Result<&Response<B>, &BoxError>| c.classify_result(r.map_err(|e| &**e as _))`.
    #[must_use]
    pub fn classify_result<B>(
        &self,
        result: Result<&Response<B>, &(dyn StdError + 'static)>,
    ) -> Outcome {
        match result {
            Ok(response) => self.classify_status(response.status()),
            Err(err) => self.classify_error(err),
        }
    }
}

impl<B, E> Classifier<Response<B>, E> for UpstreamClassifier
where
    E: StdError + 'static,
{
    #[inline]
    fn classify(&self, result: Result<&Response<B>, &E>) -> Outcome {
        match result {
            Ok(response) => self.classify_status(response.status()),
            Err(err) => self.classify_error(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::{TimeoutPhase, body::ClientBodyError, error::BoxError};

    fn err(e: &ProxyError) -> Outcome {
        Classifier::<Response<()>, ProxyError>::classify(&UpstreamClassifier::new(), Err(e))
    }

    #[test]
    fn only_upstream_faults_fail() {
        for e in [
            ProxyError::ConnectRefused,
            ProxyError::Unavailable,
            ProxyError::Protocol,
            ProxyError::UpgradeFailed,
            ProxyError::Timeout {
                phase: TimeoutPhase::Connect,
            },
            ProxyError::Timeout {
                phase: TimeoutPhase::ResponseHeaders,
            },
        ] {
            assert_eq!(err(&e), Outcome::Failure, "{e:?}");
        }
        for e in [
            ProxyError::InvalidBody,
            ProxyError::BodyTooLarge { limit: 10 },
            ProxyError::PoolExhausted,
            ProxyError::Overloaded,
            ProxyError::CircuitOpen { retry_after: None },
            ProxyError::BadFraming { reason: "x" },
            ProxyError::UnsafePath { reason: "x" },
            ProxyError::NotRouted,
        ] {
            assert_eq!(err(&e), Outcome::Ignore, "{e:?}");
        }
    }

    #[test]
    fn statuses_as_the_http_classifier() {
        let c = UpstreamClassifier::new();
        for (code, outcome) in [
            (200, Outcome::Success),
            (404, Outcome::Ignore),
            (429, Outcome::Ignore),
            (500, Outcome::Failure),
            (503, Outcome::Failure),
            (501, Outcome::Ignore),
        ] {
            let res = Response::builder().status(code).body(()).unwrap();
            let result: Result<&Response<()>, &ProxyError> = Ok(&res);
            assert_eq!(c.classify(result), outcome, "{code}");
        }
        let strict =
            c.with_http_classifier(HttpClassifier::new().with_too_many_requests_as_failure(true));
        assert_eq!(
            strict.classify_status(StatusCode::TOO_MANY_REQUESTS),
            Outcome::Failure
        );
    }

    /// A client's reset mid-body arrives wrapped like an upstream reset would; the
    /// marker in the chain decides.
    #[test]
    fn the_client_body_marker_is_found_in_a_chain() {
        #[derive(Debug)]
        struct Wrapper(BoxError);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("user body failed")
            }
        }
        impl StdError for Wrapper {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&*self.0)
            }
        }
        let reset = || io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        let client = Wrapper(Box::new(ClientBodyError::new(reset())));
        let upstream = Wrapper(Box::new(reset()));
        let c = UpstreamClassifier::new();
        let classify = |e: &Wrapper| Classifier::<Response<()>, Wrapper>::classify(&c, Err(e));
        assert_eq!(classify(&client), Outcome::Ignore);
        assert_eq!(classify(&upstream), Outcome::Failure);
        let boxed: BoxError = Box::new(client);
        assert_eq!(
            c.classify_result::<()>(Err(&*boxed as &(dyn StdError + 'static))),
            Outcome::Ignore
        );
    }
}
