//! The response future of the breaker services.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use crate::error::BoxError;
use crate::handle::CallPermit;
use crate::policy::Classifier;

pin_project! {
    /// Resolves to the inner service's result (admitted calls, whose outcome it
    /// records) or to the rejection. Dropping it before it resolves records a
    /// cancellation, which is ignored and frees a half-open probe slot.
    pub struct ResponseFuture<F, C, T> {
        #[pin]
        kind: Kind<F, C, T>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C, T> {
        Admitted {
            #[pin]
            future: F,
            permit: Option<CallPermit>,
            classifier: C,
        },
        Rejected {
            result: Option<Result<T, BoxError>>,
        },
    }
}

impl<F, C, T> ResponseFuture<F, C, T> {
    #[inline]
    pub(crate) fn admitted(future: F, permit: CallPermit, classifier: C) -> Self {
        Self {
            kind: Kind::Admitted {
                future,
                permit: Some(permit),
                classifier,
            },
        }
    }

    #[inline]
    pub(crate) fn rejected(result: Result<T, BoxError>) -> Self {
        Self {
            kind: Kind::Rejected {
                result: Some(result),
            },
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classifier<T, E>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Admitted {
                future,
                permit,
                classifier,
            } => {
                let result = ready!(future.poll(cx));
                if let Some(permit) = permit.take() {
                    permit.record(classifier.classify(result.as_ref()));
                }
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Rejected { result } => Poll::Ready(
                result
                    .take()
                    .unwrap_or_else(|| Err("ResponseFuture polled after completion".into())),
            ),
        }
    }
}

impl<F, C, T> std::fmt::Debug for ResponseFuture<F, C, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let admitted = matches!(self.kind, Kind::Admitted { .. });
        f.debug_struct("ResponseFuture")
            .field("admitted", &admitted)
            .finish_non_exhaustive()
    }
}
