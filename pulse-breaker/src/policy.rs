//! Outcome classification: which results count against the upstream.

use http::StatusCode;

/// What one completed call says about the health of the service behind the breaker.
///
/// Slowness is orthogonal: the breaker marks a `Success` or `Failure` as *slow* when
/// its latency reaches the configured slow-call threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The service worked.
    Success,
    /// The service is unhealthy (counts towards tripping).
    Failure,
    /// Says nothing about the service's health (client errors, cancellations): the
    /// call is not recorded at all.
    Ignore,
}

/// Decides the [`Outcome`] of a call from its result.
///
/// Implemented for the built-ins [`ErrorClassifier`] and [`HttpClassifier`], and for any
/// `Fn(Result<&T, &E>) -> Outcome + Clone`.
///
/// ```
/// use pulse_breaker::{Classifier, Outcome};
///
/// // Timeouts are failures, "not found" errors say nothing about the upstream.
/// let classify = |result: Result<&u32, &&str>| match result {
///     Ok(_) => Outcome::Success,
///     Err(&"not found") => Outcome::Ignore,
///     Err(_) => Outcome::Failure,
/// };
/// assert_eq!(classify.classify(Err(&"not found")), Outcome::Ignore);
/// assert_eq!(classify.classify(Err(&"timeout")), Outcome::Failure);
/// ```
pub trait Classifier<T, E> {
    /// Classifies one result.
    fn classify(&self, result: Result<&T, &E>) -> Outcome;
}

impl<T, E, F> Classifier<T, E> for F
where
    F: Fn(Result<&T, &E>) -> Outcome,
{
    #[inline]
    fn classify(&self, result: Result<&T, &E>) -> Outcome {
        self(result)
    }
}

/// For any service: every `Err` is a failure, every `Ok` a success.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorClassifier;

impl<T, E> Classifier<T, E> for ErrorClassifier {
    #[inline]
    fn classify(&self, result: Result<&T, &E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

/// For HTTP services returning `http::Response<B>`.
///
/// | result | outcome |
/// |---|---|
/// | `Err(_)` (transport error: refused, reset, timeout) | `Failure` |
/// | 500, 502, 503, 504 (and any status added with [`with_failure_status`](Self::with_failure_status)) | `Failure` |
/// | 429 | `Ignore` by default, `Failure` with [`with_too_many_requests_as_failure`](Self::with_too_many_requests_as_failure) |
/// | other 4xx (401, 403, 404, 422, …): the client's fault | `Ignore` |
/// | other 5xx (501, 505, …): deterministic answers, not a health signal | `Ignore` |
/// | 1xx, 2xx, 3xx | `Success` |
#[derive(Debug, Clone, Copy)]
pub struct HttpClassifier {
    /// Bit `n` set: status `500 + n` is a failure.
    failure_5xx: u128,
    too_many_requests: Outcome,
}

impl HttpClassifier {
    /// 500/502/503/504 and transport errors are failures; 4xx (429 included) ignored.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            failure_5xx: (1 << 0) | (1 << 2) | (1 << 3) | (1 << 4),
            too_many_requests: Outcome::Ignore,
        }
    }

    /// Whether `429 Too Many Requests` counts as a failure (default: ignored, since an
    /// upstream shedding load is alive and a tripped breaker would shed even more).
    #[must_use]
    pub const fn with_too_many_requests_as_failure(mut self, failure: bool) -> Self {
        self.too_many_requests = if failure {
            Outcome::Failure
        } else {
            Outcome::Ignore
        };
        self
    }

    /// Also counts this 5xx status as a failure (statuses outside 500..=599 are
    /// left as they are).
    #[must_use]
    pub fn with_failure_status(mut self, status: StatusCode) -> Self {
        if let Some(bit) = status.as_u16().checked_sub(500).filter(|b| *b < 100) {
            self.failure_5xx |= 1 << bit;
        }
        self
    }

    /// The outcome of a response with this status.
    #[must_use]
    pub fn classify_status(&self, status: StatusCode) -> Outcome {
        let code = status.as_u16();
        match code {
            429 => self.too_many_requests,
            400..=499 => Outcome::Ignore,
            500..=599 => {
                if self.failure_5xx & (1 << (code - 500)) != 0 {
                    Outcome::Failure
                } else {
                    Outcome::Ignore
                }
            }
            _ => Outcome::Success,
        }
    }
}

impl Default for HttpClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl<B, E> Classifier<http::Response<B>, E> for HttpClassifier {
    #[inline]
    fn classify(&self, result: Result<&http::Response<B>, &E>) -> Outcome {
        match result {
            Ok(response) => self.classify_status(response.status()),
            Err(_) => Outcome::Failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Outcome {
        let c = HttpClassifier::new();
        let response = http::Response::builder()
            .status(code)
            .body(())
            .unwrap_or_default();
        Classifier::<_, ()>::classify(&c, Ok(&response))
    }

    #[test]
    fn http_defaults() {
        for code in [500, 502, 503, 504] {
            assert_eq!(status(code), Outcome::Failure, "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422, 429, 501, 505] {
            assert_eq!(status(code), Outcome::Ignore, "{code}");
        }
        for code in [200, 201, 204, 301, 304] {
            assert_eq!(status(code), Outcome::Success, "{code}");
        }
        let c = HttpClassifier::new();
        assert_eq!(
            Classifier::<http::Response<()>, &str>::classify(&c, Err(&"refused")),
            Outcome::Failure
        );
    }

    #[test]
    fn http_configurable() {
        let c = HttpClassifier::new()
            .with_too_many_requests_as_failure(true)
            .with_failure_status(StatusCode::HTTP_VERSION_NOT_SUPPORTED);
        assert_eq!(
            c.classify_status(StatusCode::TOO_MANY_REQUESTS),
            Outcome::Failure
        );
        assert_eq!(
            c.classify_status(StatusCode::HTTP_VERSION_NOT_SUPPORTED),
            Outcome::Failure
        );
        assert_eq!(c.classify_status(StatusCode::NOT_FOUND), Outcome::Ignore);
    }

    #[test]
    fn plain_errors_fail() {
        assert_eq!(
            Classifier::<u8, ()>::classify(&ErrorClassifier, Err(&())),
            Outcome::Failure
        );
        assert_eq!(
            Classifier::<u8, ()>::classify(&ErrorClassifier, Ok(&1)),
            Outcome::Success
        );
    }
}
