//! The circuit-breaker layer.

use crate::error::{RejectWith503, RejectWithError};
use crate::handle::Breaker;
use crate::policy::{ErrorClassifier, HttpClassifier};

/// Applies a [`CircuitBreaker`](crate::CircuitBreaker) to services.
///
/// Every service the layer builds shares the layer's one [`Breaker`], so clones of a
/// service and services built twice from the same layer all feed and obey one circuit;
/// build separate layers (or use [`KeyedCircuitBreakerLayer`](crate::KeyedCircuitBreakerLayer))
/// for separate circuits.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C = ErrorClassifier, R = RejectWithError> {
    pub(crate) breaker: Breaker,
    pub(crate) classifier: C,
    pub(crate) rejection: R,
}

impl CircuitBreakerLayer {
    /// Every `Err` is a failure; rejections are `Err(BreakerOpen)`.
    #[must_use]
    pub const fn new(breaker: Breaker) -> Self {
        Self {
            breaker,
            classifier: ErrorClassifier,
            rejection: RejectWithError,
        }
    }
}

impl CircuitBreakerLayer<HttpClassifier, RejectWith503> {
    /// For HTTP services: [`HttpClassifier`] outcomes (5xx and transport errors fail,
    /// 4xx ignored) and rejections answered with `503` + `Retry-After` + the JSON error
    /// body carrying the request's `X-Request-ID`.
    #[must_use]
    pub const fn http(breaker: Breaker) -> Self {
        Self {
            breaker,
            classifier: HttpClassifier::new(),
            rejection: RejectWith503,
        }
    }
}

impl<C, R> CircuitBreakerLayer<C, R> {
    /// The same layer with another classifier.
    #[must_use]
    pub fn with_classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2, R> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classifier,
            rejection: self.rejection,
        }
    }

    /// The same layer with another rejection answer.
    #[must_use]
    pub fn with_rejection<R2>(self, rejection: R2) -> CircuitBreakerLayer<C, R2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classifier: self.classifier,
            rejection,
        }
    }

    /// The shared breaker (clone it to keep a handle).
    #[must_use]
    pub const fn breaker(&self) -> &Breaker {
        &self.breaker
    }
}
