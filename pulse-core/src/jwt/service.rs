//! [`JwtAuth`].

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::{JwtAuthLayer, JwtResponseFuture, JwtVerifier, ResponseFuture, TokenError};
use crate::{Identity, body::ResponseBody};

/// Verifies the request's single `Authorization: Bearer` token; on success inserts the
/// [`Identity`](crate::Identity) into request extensions and records `user_id` on the
/// current tracing span, otherwise answers 401 with `WWW-Authenticate` and the JSON
/// error, without calling the inner service.
///
/// A token naming a `kid` the key source does not know waits for the source's
/// refetch when it offers one (a JWKS source: one bounded, rate-limited fetch shared
/// by every waiting request), then is verified once more; see
/// [`JwtVerifier::verify_async`].
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
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = JwtResponseFuture<S, ReqBody, S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let verified = match self.verifier.authenticate_or_refresh(req.headers()) {
            Ok(identity) => Ok(identity),
            Err((_, Some(refresh))) => {
                // The token names a key the source is fetching: wait for it with the
                // service that is ready, and leave a fresh clone for the next request.
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                return JwtResponseFuture::waiting(refresh, ready, req, self.verifier.clone());
            }
            Err((err, None)) => Err(err),
        };
        JwtResponseFuture::decided(match refusal(verified, &mut req) {
            None => ResponseFuture::inner(self.inner.call(req)),
            Some(refusal) => ResponseFuture::refused(refusal),
        })
    }
}

/// The 401 to answer for a refused token; `None` once a verified identity is in the
/// request's extensions (and the span's `user_id`).
pub(super) fn refusal<ReqBody, B>(
    verified: Result<Identity, TokenError>,
    req: &mut Request<ReqBody>,
) -> Option<Response<ResponseBody<B>>> {
    match verified {
        Ok(identity) => {
            tracing::Span::current().record("user_id", identity.subject.as_str());
            req.extensions_mut().insert(identity);
            None
        }
        Err(err) => {
            tracing::debug!(reason = err.as_str(), "bearer token refused");
            Some(
                err.to_api_error()
                    .with_request_id_of(req)
                    .into_response_body(),
            )
        }
    }
}
