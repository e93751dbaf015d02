//! The circuit-breaker service.

use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use crate::error::{BoxError, RejectWith503, RejectWithError, Rejection};
use crate::future::ResponseFuture;
use crate::handle::Breaker;
use crate::layer::CircuitBreakerLayer;
use crate::policy::{Classifier, ErrorClassifier, HttpClassifier};

/// Guards a service with a [`Breaker`].
///
/// `poll_ready` only forwards the inner service's readiness: like tower's `LoadShed`,
/// the breaker never makes a caller wait, it rejects in `call` (with `R`, by default
/// `Err(BreakerOpen)`). So it works under axum and behind `Buffer`. Clones share the
/// breaker.
#[derive(Debug, Clone)]
pub struct CircuitBreaker<S, C = ErrorClassifier, R = RejectWithError> {
    inner: S,
    breaker: Breaker,
    classifier: C,
    rejection: R,
}

impl<S> CircuitBreaker<S> {
    /// Guards `inner` with `breaker`: every `Err` is a failure and rejections are
    /// `Err(BreakerOpen)`.
    pub const fn new(inner: S, breaker: Breaker) -> Self {
        Self {
            inner,
            breaker,
            classifier: ErrorClassifier,
            rejection: RejectWithError,
        }
    }

    /// A layer building `CircuitBreaker`s that share `breaker`.
    #[must_use]
    pub fn layer(breaker: Breaker) -> CircuitBreakerLayer {
        CircuitBreakerLayer::new(breaker)
    }
}

impl<S> CircuitBreaker<S, HttpClassifier, RejectWith503> {
    /// Guards an HTTP service: [`HttpClassifier`] outcomes, rejections answered with
    /// `503` + `Retry-After` + the JSON error body.
    pub const fn http(inner: S, breaker: Breaker) -> Self {
        Self {
            inner,
            breaker,
            classifier: HttpClassifier::new(),
            rejection: RejectWith503,
        }
    }
}

impl<S, C, R> CircuitBreaker<S, C, R> {
    pub(crate) const fn from_parts(
        inner: S,
        breaker: Breaker,
        classifier: C,
        rejection: R,
    ) -> Self {
        Self {
            inner,
            breaker,
            classifier,
            rejection,
        }
    }

    /// The same service with another classifier.
    #[must_use]
    pub fn with_classifier<C2>(self, classifier: C2) -> CircuitBreaker<S, C2, R> {
        CircuitBreaker::from_parts(self.inner, self.breaker, classifier, self.rejection)
    }

    /// The same service with another rejection answer.
    #[must_use]
    pub fn with_rejection<R2>(self, rejection: R2) -> CircuitBreaker<S, C, R2> {
        CircuitBreaker::from_parts(self.inner, self.breaker, self.classifier, rejection)
    }

    /// The breaker guarding this service.
    pub const fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// The inner service.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub const fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the breaker service, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, R, Req> Service<Req> for CircuitBreaker<S, C, R>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classifier<S::Response, S::Error> + Clone,
    R: Rejection<Req, S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C, S::Response>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        match self.breaker.try_acquire() {
            Ok(permit) => {
                ResponseFuture::admitted(self.inner.call(request), permit, self.classifier.clone())
            }
            Err(open) => ResponseFuture::rejected(self.rejection.reject(&request, open)),
        }
    }
}

impl<S, C: Clone, R: Clone> Layer<S> for CircuitBreakerLayer<C, R> {
    type Service = CircuitBreaker<S, C, R>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::from_parts(
            inner,
            self.breaker.clone(),
            self.classifier.clone(),
            self.rejection.clone(),
        )
    }
}
