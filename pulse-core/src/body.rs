//! The response body of Pulse's policy middleware.
//!
//! A middleware that can answer on its own (a 401 from JWT verification, a 403 from
//! RBAC, …) returns either the inner service's body or a small JSON body of its own.
//! [`ResponseBody`] is that "either", without boxing and without changing the inner
//! body's error type.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

pin_project! {
    /// The body of a response that either came from the inner service or was
    /// answered by a Pulse middleware (a JSON error).
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { body: Full<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    /// Wrap the inner service's body.
    pub const fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// A complete body of bytes answered by the middleware itself.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self {
            kind: Kind::Full {
                body: Full::new(bytes.into()),
            },
        }
    }

    /// Whether this body was produced by the middleware rather than the inner service.
    pub const fn is_middleware_answer(&self) -> bool {
        matches!(self.kind, Kind::Full { .. })
    }
}

impl<B> Default for ResponseBody<B> {
    fn default() -> Self {
        Self::full(Bytes::new())
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Full { body } => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|res| res.map_err(|never: Infallible| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { body } => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn both_variants_yield_their_bytes() {
        let inner: ResponseBody<Full<Bytes>> = ResponseBody::inner(Full::new(Bytes::from("a")));
        assert!(!inner.is_middleware_answer());
        assert_eq!(inner.collect().await.unwrap().to_bytes(), "a");

        let own: ResponseBody<Full<Bytes>> = ResponseBody::full("{}");
        assert!(own.is_middleware_answer());
        assert_eq!(own.size_hint().exact(), Some(2));
        assert_eq!(own.collect().await.unwrap().to_bytes(), "{}");
    }
}
