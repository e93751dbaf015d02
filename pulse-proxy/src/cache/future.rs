//! [`ResponseFuture`]: the response future of [`Cache`](super::Cache).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::Response;
use pin_project_lite::pin_project;

use super::{
    CacheBody,
    layer::Shared,
    lookup::{XCache, tag},
    store::StoreFuture,
};

/// The boxed flow of a cacheable request (lookup, coalescing, upstream call).
pub(crate) type LookupFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<CacheBody<B>>, E>> + Send + 'static>>;

pin_project! {
    /// The response future of [`Cache`](super::Cache).
    ///
    /// Requests the cache does not touch, and mutations, run the inner future in
    /// place; a cacheable request runs a boxed flow, since it awaits the store and
    /// possibly another request before it calls the inner service.
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E> {
        Bypass { #[pin] fut: F, x_cache: bool },
        Mutation {
            #[pin]
            fut: F,
            shared: Arc<Shared>,
            scopes: Vec<Arc<str>>,
            result: Option<Result<Response<B>, E>>,
            invalidating: Option<StoreFuture<()>>,
        },
        Lookup { fut: LookupFuture<B, E> },
    }
}

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Bypass { .. } => "bypass",
            Kind::Mutation { .. } => "mutation",
            Kind::Lookup { .. } => "lookup",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    pub(crate) const fn bypass(fut: F, x_cache: bool) -> Self {
        Self {
            kind: Kind::Bypass { fut, x_cache },
        }
    }

    pub(crate) const fn mutation(fut: F, shared: Arc<Shared>, scopes: Vec<Arc<str>>) -> Self {
        Self {
            kind: Kind::Mutation {
                fut,
                shared,
                scopes,
                result: None,
                invalidating: None,
            },
        }
    }

    pub(crate) const fn lookup(fut: LookupFuture<B, E>) -> Self {
        Self {
            kind: Kind::Lookup { fut },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<CacheBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Bypass { fut, x_cache } => {
                let res = ready!(fut.poll(cx))?;
                Poll::Ready(Ok(tag(res.map(CacheBody::inner), *x_cache, XCache::Bypass)))
            }
            KindProj::Mutation {
                fut,
                shared,
                scopes,
                result,
                invalidating,
            } => {
                if result.is_none() {
                    // Invalidate once the mutation has happened (whatever its outcome),
                    // so no response fetched before it can be stored as fresh after it.
                    *result = Some(ready!(fut.poll(cx)));
                    if !scopes.is_empty() {
                        *invalidating = Some(shared.store.invalidate(scopes));
                    }
                }
                if let Some(invalidation) = invalidating.as_mut() {
                    let outcome = ready!(invalidation.as_mut().poll(cx));
                    *invalidating = None;
                    match outcome {
                        Ok(()) => shared.stats.invalidated(),
                        Err(err) => {
                            shared.stats.store_error();
                            tracing::warn!(error = %err, "cache invalidation failed");
                        }
                    }
                }
                match result.take() {
                    Some(Ok(res)) => Poll::Ready(Ok(tag(
                        res.map(CacheBody::inner),
                        shared.config.x_cache,
                        XCache::Bypass,
                    ))),
                    Some(Err(err)) => Poll::Ready(Err(err)),
                    None => panic!("ResponseFuture polled after completion"),
                }
            }
            KindProj::Lookup { fut } => fut.as_mut().poll(cx),
        }
    }
}
