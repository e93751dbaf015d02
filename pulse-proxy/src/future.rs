//! The proxy's response future: time-to-headers timeout, error mapping and step 7.

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::Body;
use pin_project_lite::pin_project;
use pulse_core::{RequestId, ResponseBody};
use tokio::time::{Instant, Sleep, sleep_until};

use crate::{
    body::{BodyWatch, UpstreamBody},
    error::{BoxError, ProxyError, TimeoutPhase},
    headers,
    service::ProxyResponseBody,
};

/// What the response future needs once the upstream answers.
pub(crate) struct CallContext {
    /// The id, unless it is `request_id_value` itself (an id read from a header),
    /// which is then parsed only if an error answer needs it.
    pub(crate) request_id: Option<RequestId>,
    pub(crate) request_id_value: HeaderValue,
    /// The streamed request body's fault flag (none for an empty body).
    pub(crate) body_watch: Option<BodyWatch>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) client_upgrade: Option<hyper::upgrade::OnUpgrade>,
}

pin_project! {
    /// The response future of [`Proxy`](crate::Proxy).
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Answered { response: Option<Response<ProxyResponseBody<B>>> },
        Waiting {
            #[pin]
            future: F,
            // Created at the first `Pending` only: an upstream that answers at once
            // never pays for a timer.
            #[pin]
            timer: Option<Sleep>,
            timer_at: Option<Instant>,
            timer_phase: TimeoutPhase,
            ctx: CallContext,
        },
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn answered(err: ProxyError, request_id: &RequestId) -> Self {
        Self {
            state: State::Answered {
                response: Some(error_response(err, request_id)),
            },
        }
    }

    pub(crate) fn waiting(future: F, headers_deadline: Option<Instant>, ctx: CallContext) -> Self {
        // The time-to-headers timer fires at whichever comes first: its own deadline or
        // the total one.
        let (at, timer_phase) = match (headers_deadline, ctx.deadline) {
            (Some(h), Some(t)) if t < h => (Some(t), TimeoutPhase::Total),
            (Some(h), _) => (Some(h), TimeoutPhase::ResponseHeaders),
            (None, Some(t)) => (Some(t), TimeoutPhase::Total),
            (None, None) => (None, TimeoutPhase::ResponseHeaders),
        };
        Self {
            state: State::Waiting {
                future,
                timer: None,
                timer_at: at,
                timer_phase,
                ctx,
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ProxyResponseBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Answered { response } => match response.take() {
                Some(res) => Poll::Ready(Ok(res)),
                None => panic!("ResponseFuture polled after completion"),
            },
            StateProj::Waiting {
                future,
                mut timer,
                timer_at,
                timer_phase,
                ctx,
            } => {
                if let Poll::Ready(result) = future.poll(cx) {
                    return Poll::Ready(Ok(finish(ctx, result)));
                }
                if let Some(at) = timer_at.take() {
                    timer.set(Some(sleep_until(at)));
                }
                if let Some(timer) = timer.as_pin_mut() {
                    ready!(timer.poll(cx));
                    let phase = *timer_phase;
                    return Poll::Ready(Ok(error_response(
                        ProxyError::Timeout { phase },
                        &ctx.request_id(),
                    )));
                }
                Poll::Pending
            }
        }
    }
}

fn error_response<B>(err: ProxyError, request_id: &RequestId) -> Response<ProxyResponseBody<B>> {
    err.into_response(Some(request_id), ResponseBody::full)
}

fn finish<B, E>(
    ctx: &mut CallContext,
    result: Result<Response<B>, E>,
) -> Response<ProxyResponseBody<B>>
where
    E: Into<BoxError>,
{
    // A body cut off at the limit, or broken off by the client, may surface as any
    // transport error or even as an upstream answer to a truncated body; the client
    // gets 413 or 400 either way, never a 5xx that blames the upstream.
    if let Some(fault) = ctx.body_watch.as_ref().and_then(BodyWatch::fault) {
        tracing::debug!(kind = %fault, "client request body failed");
        return error_response(fault, &ctx.request_id());
    }
    let res = match result {
        Ok(res) => res,
        Err(e) => {
            let e: BoxError = e.into();
            let err = ProxyError::classify(&*e);
            tracing::debug!(error = %e, kind = %err, "upstream call failed");
            return error_response(err, &ctx.request_id());
        }
    };
    let (mut parts, body) = res.into_parts();
    let upgrade_protocol = if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        match (
            ctx.client_upgrade.take(),
            parts.extensions.remove::<hyper::upgrade::OnUpgrade>(),
        ) {
            (Some(client), Some(upstream)) => {
                crate::upgrade::splice(client, upstream);
                parts.headers.get(header::UPGRADE).cloned()
            }
            (Some(_), None) => {
                return error_response(ProxyError::UpgradeFailed, &ctx.request_id());
            }
            // 101 to a request that did not ask for it (or asked while upgrades are off).
            (None, _) => return error_response(ProxyError::Protocol, &ctx.request_id()),
        }
    } else {
        None
    };
    headers::filter_response(&mut parts.headers, &ctx.request_id_value);
    if let Some(protocol) = upgrade_protocol {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol);
    }
    parts.extensions = http::Extensions::new();
    let deadline = ctx.deadline.map(|at| Box::pin(sleep_until(at)));
    Response::from_parts(
        parts,
        ResponseBody::inner(UpstreamBody::new(body, deadline)),
    )
}

impl CallContext {
    /// The request's id.
    pub(crate) fn request_id(&self) -> RequestId {
        request_id_or_value(self.request_id.as_ref(), &self.request_id_value)
    }
}

/// `id`, or else the (already validated) id in `value`.
pub(crate) fn request_id_or_value(id: Option<&RequestId>, value: &HeaderValue) -> RequestId {
    id.cloned()
        .or_else(|| RequestId::from_header_value(value))
        // Unreachable: `value` was validated as an id when it was read.
        .unwrap_or_else(RequestId::generate)
}
