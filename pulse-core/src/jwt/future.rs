//! The response future of the authentication middleware.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use pin_project_lite::pin_project;

use super::{JwtVerifier, KeyRefresh, service::refusal};
use crate::body::ResponseBody;

pin_project! {
    /// Response future of [`InternalAuth`](crate::internal_auth::InternalAuth) (and a
    /// step of [`JwtResponseFuture`]): the inner service's response, or the
    /// middleware's own refusal.
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Inner { #[pin] future: F },
        Refused { response: Option<http::Response<ResponseBody<B>>> },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) const fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    pub(crate) const fn refused(response: http::Response<ResponseBody<B>>) -> Self {
        Self {
            kind: Kind::Refused {
                response: Some(response),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => {
                let res = ready!(future.poll(cx))?;
                Poll::Ready(Ok(res.map(ResponseBody::inner)))
            }
            KindProj::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => panic!("ResponseFuture polled after completion"),
            },
        }
    }
}

impl<F, B> std::fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.kind {
            Kind::Inner { .. } => "inner",
            Kind::Refused { .. } => "refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

pin_project! {
    /// Response future of [`JwtAuth`](super::JwtAuth): the inner service's response or
    /// the middleware's refusal, after (for a token naming a `kid` the key source does
    /// not know yet) a bounded wait for the source's refetch.
    pub struct JwtResponseFuture<S, ReqBody, F, B> {
        #[pin]
        kind: JwtKind<S, ReqBody, F, B>,
    }
}

pin_project! {
    #[project = JwtKindProj]
    enum JwtKind<S, ReqBody, F, B> {
        Decided { #[pin] future: ResponseFuture<F, B> },
        Waiting { refresh: KeyRefresh, pending: Option<Pending<S, ReqBody>> },
    }
}

/// What a request waiting for a key refresh needs afterwards.
struct Pending<S, ReqBody> {
    /// The inner service, already ready (`poll_ready` succeeded on it).
    inner: S,
    request: http::Request<ReqBody>,
    verifier: JwtVerifier,
}

impl<S, ReqBody, F, B> JwtResponseFuture<S, ReqBody, F, B> {
    pub(crate) const fn decided(future: ResponseFuture<F, B>) -> Self {
        Self {
            kind: JwtKind::Decided { future },
        }
    }

    pub(crate) const fn waiting(
        refresh: KeyRefresh,
        inner: S,
        request: http::Request<ReqBody>,
        verifier: JwtVerifier,
    ) -> Self {
        Self {
            kind: JwtKind::Waiting {
                refresh,
                pending: Some(Pending {
                    inner,
                    request,
                    verifier,
                }),
            },
        }
    }
}

impl<S, ReqBody, F, B, E> Future for JwtResponseFuture<S, ReqBody, F, B>
where
    S: tower_service::Service<http::Request<ReqBody>, Future = F>,
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<ResponseBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().kind.project() {
                JwtKindProj::Decided { future } => return future.poll(cx),
                JwtKindProj::Waiting { refresh, pending } => {
                    ready!(Pin::new(refresh).poll(cx));
                    let Some(Pending {
                        mut inner,
                        mut request,
                        verifier,
                    }) = pending.take()
                    else {
                        panic!("JwtResponseFuture polled after completion")
                    };
                    // An unknown `kid` is final now: no second refresh.
                    let verified = super::bearer_token(request.headers())
                        .and_then(|token| verifier.verify_after_refresh(token));
                    match refusal(verified, &mut request) {
                        None => ResponseFuture::inner(inner.call(request)),
                        Some(response) => ResponseFuture::refused(response),
                    }
                }
            };
            self.as_mut()
                .project()
                .kind
                .set(JwtKind::Decided { future: next });
        }
    }
}

impl<S, ReqBody, F, B> std::fmt::Debug for JwtResponseFuture<S, ReqBody, F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.kind {
            JwtKind::Decided { future } => return future.fmt(f),
            JwtKind::Waiting { .. } => "waiting for a key refresh",
        };
        f.debug_struct("JwtResponseFuture")
            .field("state", &state)
            .finish()
    }
}
