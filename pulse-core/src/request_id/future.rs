//! The response future of [`RequestIdService`](super::RequestIdService).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::Response;
use pin_project_lite::pin_project;
use tracing::instrument::Instrumented;

use super::{CURRENT, RequestId, X_REQUEST_ID};

pin_project! {
    /// Polls the inner future inside the request's span and with the id as
    /// [`RequestId::current`], then inserts `X-Request-ID` on the response.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        request_id: RequestId,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) const fn new(inner: Instrumented<F>, request_id: RequestId) -> Self {
        Self { inner, request_id }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        let result = ready!(CURRENT.sync_scope(this.request_id.clone(), || inner.poll(cx)));
        Poll::Ready(result.map(|mut res| {
            res.headers_mut()
                .insert(X_REQUEST_ID, this.request_id.to_header_value());
            res
        }))
    }
}
