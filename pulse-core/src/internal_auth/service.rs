//! [`InternalAuth`].

use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response};
use tower_service::Service;

use super::{Authenticated, Caller, CredentialOutcome, InternalAuthLayer, ResponseFuture};
use crate::{body::ResponseBody, error::ApiError, identity::Identity};

/// Requires a valid internal credential on every path but the exact exempt ones;
/// answers 403 `internal_auth_required` otherwise, without calling the inner service.
///
/// On success it puts the [`Caller`] and, for signed credentials, the user
/// [`Identity`] into request extensions, after removing any of those already there,
/// and removes the credential headers.
#[derive(Clone, Debug)]
pub struct InternalAuth<S> {
    inner: S,
    layer: InternalAuthLayer,
}

impl<S> InternalAuth<S> {
    /// Wrap `inner` with the configuration of `layer`.
    pub const fn new(inner: S, layer: InternalAuthLayer) -> Self {
        Self { inner, layer }
    }

    /// An [`InternalAuthLayer`] accepting credentials `verifier` finds valid.
    pub fn layer(verifier: impl super::CredentialVerifier) -> InternalAuthLayer {
        InternalAuthLayer::new(verifier)
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

    fn authenticate(&self, headers: &HeaderMap) -> Option<Authenticated> {
        let mut accepted: Option<Authenticated> = None;
        for verifier in &self.layer.config.verifiers {
            match verifier.verify(headers) {
                CredentialOutcome::Absent => {}
                // A wrong credential is never rescued by a right one of another kind.
                CredentialOutcome::Invalid => return None,
                CredentialOutcome::Valid(found) => match &mut accepted {
                    None => accepted = Some(found),
                    Some(first) => {
                        if first.identity.is_none() {
                            first.identity = found.identity;
                        }
                    }
                },
            }
        }
        accepted
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for InternalAuth<S>
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
        // Only this layer vouches for callers and identities past this point; an
        // in-process caller must not smuggle its own in through extensions.
        req.extensions_mut().remove::<Caller>();
        req.extensions_mut().remove::<Identity>();

        let exempt = self
            .layer
            .config
            .exempt
            .iter()
            .any(|p| p == req.uri().path());
        let authenticated = if exempt {
            None
        } else {
            match self.authenticate(req.headers()) {
                Some(found) => Some(found),
                None => {
                    tracing::debug!(path = req.uri().path(), "internal authentication refused");
                    let response = ApiError::internal_auth_required()
                        .with_request_id_of(&req)
                        .into_response_body();
                    return ResponseFuture::refused(response);
                }
            }
        };
        for verifier in &self.layer.config.verifiers {
            verifier.remove_credential(req.headers_mut());
        }
        if let Some(found) = authenticated {
            tracing::Span::current().record("caller", found.caller.id.as_str());
            if let Some(identity) = found.identity {
                tracing::Span::current().record("user_id", identity.subject.as_str());
                req.extensions_mut().insert(identity);
            }
            req.extensions_mut().insert(found.caller);
        }
        ResponseFuture::inner(self.inner.call(req))
    }
}
