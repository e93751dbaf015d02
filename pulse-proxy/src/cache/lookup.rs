//! The flow of a cacheable request: look up, coalesce, call upstream, record.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body::Body;
use pulse_core::RequestId;
use tower_service::Service;

use super::{
    CacheBody, X_CACHE,
    body::{Recorder, StoreTicket},
    coalesce::{self, Outcome, Role},
    key::CacheKey,
    layer::Shared,
    policy::content_length,
    store::CachedResponse,
};

/// The value of the `X-Cache` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum XCache {
    Hit,
    Miss,
    Bypass,
}

impl XCache {
    const fn value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Bypass => "BYPASS",
        })
    }
}

/// Adds `X-Cache` when enabled.
pub(crate) fn tag<B>(mut res: Response<B>, enabled: bool, value: XCache) -> Response<B> {
    if enabled {
        res.headers_mut().insert(X_CACHE, value.value());
    }
    res
}

/// What [`run`] does.
pub(crate) struct Plan {
    pub(crate) key: CacheKey,
    pub(crate) head: bool,
    pub(crate) revalidate: bool,
}

/// Answers a cacheable request.
pub(crate) async fn run<S, ReqBody, ResBody>(
    svc: S,
    req: Request<ReqBody>,
    plan: Plan,
    shared: Arc<Shared>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
{
    let x_cache = shared.config.x_cache;
    let stats = &shared.stats;
    let mut revalidate = plan.revalidate;
    loop {
        let generation = match shared.store.get(&plan.key).await {
            Ok(lookup) => {
                let generation = lookup.generation;
                if !revalidate && let Some(entry) = lookup.fresh() {
                    stats.hit();
                    let res = stored_response(&entry.response, entry.age, &req, plan.head);
                    return Ok(tag(res, x_cache, XCache::Hit));
                }
                generation
            }
            Err(err) => {
                // A broken cache must not break the service: forward uncached.
                stats.store_error();
                tracing::warn!(error = %err, "cache lookup failed");
                stats.miss();
                return forward(svc, req, x_cache).await;
            }
        };
        if plan.head {
            // A HEAD miss is forwarded as a HEAD; only a GET fills the entry.
            stats.miss();
            return forward(svc, req, x_cache).await;
        }
        match shared.flights.join(&plan.key, generation) {
            Role::Leader(guard) => {
                stats.miss();
                let ticket = StoreTicket {
                    store: shared.store.clone(),
                    key: plan.key,
                    generation,
                    ttl: None,
                    stats: stats.clone(),
                    guard,
                };
                return lead(svc, req, ticket, &shared).await;
            }
            Role::Waiter(rx) => {
                stats.wait();
                match coalesce::wait(rx).await {
                    Outcome::Shared { response, stored } => {
                        stats.coalesce();
                        let res = stored_response(&response, Duration::ZERO, &req, false);
                        let value = if stored { XCache::Hit } else { XCache::Miss };
                        return Ok(tag(res, x_cache, value));
                    }
                    Outcome::GoUpstream => {
                        stats.miss();
                        return forward(svc, req, x_cache).await;
                    }
                    // The leader went away before it had an answer: start over. The
                    // first of us to get here leads; the others find its entry or
                    // join its flight. Whatever is found now is fresh enough.
                    Outcome::Abandoned => revalidate = false,
                }
            }
        }
    }
}

/// Calls upstream without storing.
async fn forward<S, ReqBody, ResBody>(
    mut svc: S,
    req: Request<ReqBody>,
    x_cache: bool,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
{
    let res = svc.call(req).await?;
    Ok(tag(res.map(CacheBody::inner), x_cache, XCache::Miss))
}

/// Calls upstream for a flight, and records the answer when it may be stored, or
/// shared with the flight's waiters.
async fn lead<S, ReqBody, ResBody>(
    mut svc: S,
    req: Request<ReqBody>,
    mut ticket: StoreTicket,
    shared: &Shared,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
{
    let config = &shared.config;
    let res = match svc.call(req).await {
        Ok(res) => res,
        Err(err) => {
            // Waiters go upstream at once rather than one after another: a transport
            // that fails may take a whole timeout to do so.
            ticket.give_up();
            return Err(err);
        }
    };
    let (parts, body) = res.into_parts();
    let max = config.storage.max_body_bytes as u64;
    let hint = body.size_hint();
    let too_large =
        hint.lower() > max || content_length(&parts.headers).is_some_and(|len| len > max);
    let ttl = config.storage.storable_ttl(&parts, &config.key_parts);
    // A server error is never stored, but the waiters that piled up behind it get it
    // too: during an outage they would otherwise each wait for their own.
    let share_error = parts.status.is_server_error()
        && hint.upper().is_some_and(|upper| upper <= max)
        && !parts.headers.contains_key(header::SET_COOKIE);
    let body = if too_large || (ttl.is_none() && !share_error) {
        ticket.give_up();
        CacheBody::inner(body)
    } else {
        ticket.ttl = ttl;
        // The exact length, from the body or a `Content-Length` it does not contradict:
        // the recording completes when it is reached, since a server stops polling a
        // body once it has written its `Content-Length`.
        let expected = hint.exact().or_else(|| {
            content_length(&parts.headers).filter(|len| {
                hint.lower() <= *len && hint.upper().is_none_or(|upper| *len <= upper)
            })
        });
        let recorder = Recorder::new(
            config.storage.max_body_bytes,
            expected,
            parts.status,
            parts.headers.clone(),
            ticket,
        );
        if recorder.is_complete(body.is_end_stream()) {
            // Empty: a server may never poll it at all.
            recorder.finish().run().await;
            CacheBody::inner(body)
        } else {
            CacheBody::tee(body, recorder)
        }
    };
    Ok(tag(
        Response::from_parts(parts, body),
        config.x_cache,
        XCache::Miss,
    ))
}

/// A response from a stored (or shared) entry, with `Age` and this request's id.
fn stored_response<B, ReqBody>(
    stored: &CachedResponse,
    age: Duration,
    req: &Request<ReqBody>,
    head: bool,
) -> Response<CacheBody<B>> {
    let body = if head {
        Bytes::new()
    } else {
        stored.body.clone()
    };
    let mut res = Response::new(CacheBody::stored(body));
    *res.status_mut() = stored.status;
    *res.headers_mut() = stored.headers.clone();
    let headers = res.headers_mut();
    headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
    if let Some(id) = RequestId::from_parts(req.extensions(), req.headers()) {
        headers.insert(pulse_core::request_id::X_REQUEST_ID, id.to_header_value());
    }
    res
}
