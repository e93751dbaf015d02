//! [`Cache`]: the caching service.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::{
    CacheBody, CacheLayer, CacheStats, ResponseFuture,
    key::{CacheKey, key_text},
    layer::Shared,
    lookup,
    policy::{RequestPlan, plan_request},
    store::CacheStore,
};

/// A service that answers `GET`/`HEAD` requests from a cache and invalidates it on
/// mutations (see the [module docs](super)). Built by [`CacheLayer`].
#[derive(Clone)]
pub struct Cache<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for Cache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("inner", &self.inner)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl<S> Cache<S> {
    /// Wraps `inner` with the cache configured by `layer`.
    pub fn new(inner: S, layer: &CacheLayer) -> Self {
        Self {
            inner,
            shared: layer.shared(),
        }
    }

    /// A [`CacheLayer`] over `store` with the default settings.
    pub fn layer(store: impl CacheStore) -> CacheLayer {
        CacheLayer::new(store)
    }

    /// The counters of this cache.
    pub fn stats(&self) -> CacheStats {
        self.shared.stats.clone()
    }

    /// The inner service.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub const fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the cache.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Cache<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<CacheBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let shared = &self.shared;
        let config = &shared.config;
        match plan_request(req.method(), req.headers()) {
            RequestPlan::Bypass => {
                shared.stats.bypass();
                ResponseFuture::bypass(self.inner.call(req), config.x_cache)
            }
            RequestPlan::Mutation => {
                shared.stats.bypass();
                let scopes = config.invalidation.scopes_for_mutation(req.uri().path());
                ResponseFuture::mutation(self.inner.call(req), shared.clone(), scopes)
            }
            RequestPlan::Lookup { head, revalidate } => {
                let Some(text) = key_text(
                    &config.key_parts,
                    req.uri(),
                    req.headers(),
                    req.extensions(),
                ) else {
                    // A user part is missing: never risk another user's entry.
                    shared.stats.bypass();
                    return ResponseFuture::bypass(self.inner.call(req), config.x_cache);
                };
                let key =
                    CacheKey::new(text, config.invalidation.scopes_for_read(req.uri().path()));
                // The ready service goes into the future, which may call it later (after
                // the lookup, or after waiting for another request's flight).
                let clone = self.inner.clone();
                let svc = std::mem::replace(&mut self.inner, clone);
                let plan = lookup::Plan {
                    key,
                    head,
                    revalidate,
                };
                ResponseFuture::lookup(Box::pin(lookup::run(svc, req, plan, shared.clone())))
            }
        }
    }
}
