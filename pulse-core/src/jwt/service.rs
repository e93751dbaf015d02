//! [`JwtAuth`].

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::{JwtAuthLayer, JwtVerifier, ResponseFuture};
use crate::body::ResponseBody;

/// Verifies the request's single `Authorization: Bearer` token; on success inserts the
/// [`Identity`](crate::Identity) into request extensions and records `user_id` on the
/// current tracing span, otherwise answers 401 with `WWW-Authenticate` and the JSON
/// error, without calling the inner service.
#[derive(Clone, Debug)]
pub struct JwtAuth<S> {
    inner: S,
    verifier: JwtVerifier,
}

impl<S> JwtAuth<S> {
    /// Wrap `inner`.
    pub const fn new(inner: S, verifier: JwtVerifier) -> Self {
        Self { inner, verifier }
    }

    /// A [`JwtAuthLayer`] with this verifier.
    pub const fn layer(verifier: JwtVerifier) -> JwtAuthLayer {
        JwtAuthLayer::new(verifier)
    }

    /// The inner service.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub const fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the middleware.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for JwtAuth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        match self.verifier.authenticate(req.headers()) {
            Ok(identity) => {
                tracing::Span::current().record("user_id", identity.subject.as_str());
                req.extensions_mut().insert(identity);
                ResponseFuture::inner(self.inner.call(req))
            }
            Err(err) => {
                tracing::debug!(reason = err.as_str(), "bearer token refused");
                let response = err
                    .to_api_error()
                    .with_request_id_of(&req)
                    .into_response_body();
                ResponseFuture::refused(response)
            }
        }
    }
}
