//! The response cache's behaviour, run against every store: the in-memory store
//! (always) and Redis (`--features redis`, ignored without PULSE_TEST_REDIS_URL).
//!
//! Each behaviour is one `async fn(Arc<dyn CacheStore>)`; the `suite!` macro runs it
//! once per store.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body as _, Frame};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use pulse_core::Identity;
use pulse_proxy::cache::{
    CacheBody, CacheLayer, CacheStats, CacheStore, KeyPart, MemoryStore, StoreError,
};
use tokio::sync::Semaphore;
use tower::{Layer, ServiceExt, service_fn, util::BoxCloneSyncService};

type UpBody = BoxBody<Bytes, Infallible>;
type Svc = BoxCloneSyncService<Request<Full<Bytes>>, Response<CacheBody<UpBody>>, Infallible>;

/// A fake upstream that counts calls per path and answers by path.
struct Upstream {
    calls: Mutex<HashMap<String, usize>>,
    /// `/gated*` requests wait for a permit.
    gate: Semaphore,
}

impl Default for Upstream {
    fn default() -> Self {
        Self {
            calls: Mutex::default(),
            gate: Semaphore::new(0),
        }
    }
}

impl Upstream {
    fn calls(&self, path: &str) -> usize {
        self.calls.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    async fn handle(self: Arc<Self>, req: Request<Full<Bytes>>) -> Response<UpBody> {
        let path = req.uri().path().to_owned();
        let n = {
            let mut calls = self.calls.lock().unwrap();
            let n = calls.entry(path.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let user = req
            .extensions()
            .get::<Identity>()
            .map(|id| id.subject.clone())
            .or_else(|| {
                req.headers()
                    .get("x-user-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "-".to_owned());
        let text = format!("{} {path} user={user} n={n}", req.method());
        let mut res = Response::builder();
        if let Some(id) = req.headers().get("x-request-id") {
            res = res.header("x-request-id", id);
        }
        let body = match path.as_str() {
            p if p.starts_with("/gated") => {
                let _permit = self.gate.acquire().await.unwrap();
                if p.ends_with("-503") {
                    res = res.status(503);
                }
                full(text)
            }
            "/hang-first" if n == 1 => std::future::pending().await,
            "/err500" => {
                res = res.status(500);
                full(text)
            }
            "/err503" => {
                res = res.status(503).header("retry-after", "1");
                full(text)
            }
            "/no-store" => {
                res = res.header("cache-control", "no-store");
                full(text)
            }
            "/private" => {
                res = res.header("cache-control", "private, max-age=60");
                full(text)
            }
            "/cookie" => {
                res = res.header("set-cookie", "session=abc");
                full(text)
            }
            "/big" => full(big_body()),
            "/big-chunked" => chunked(big_body(), 512),
            "/small-chunked" => chunked(text, 7),
            // A body of unknown length, announced by `Content-Length`.
            "/sized-chunked" => {
                res = res.header("content-length", text.len());
                chunked(text, 7)
            }
            "/vary-accept" => {
                res = res.header("vary", "accept");
                let accept = req.headers().get("accept").and_then(|v| v.to_str().ok());
                full(format!("{text} accept={}", accept.unwrap_or("-")))
            }
            "/max-age-2" => {
                res = res.header("cache-control", "max-age=2");
                full(text)
            }
            _ => full(text),
        };
        res.header("content-type", "text/plain").body(body).unwrap()
    }
}

fn full(text: impl Into<Bytes>) -> UpBody {
    Full::new(text.into()).boxed()
}

/// A body of unknown length, in chunks.
fn chunked(text: impl Into<Bytes>, chunk: usize) -> UpBody {
    let bytes: Bytes = text.into();
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = (0..bytes.len())
        .step_by(chunk)
        .map(|i| Ok(Frame::data(bytes.slice(i..(i + chunk).min(bytes.len())))))
        .collect();
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

fn big_body() -> String {
    (0..4096)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect()
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn x_cache(&self) -> &str {
        self.headers
            .get("x-cache")
            .map_or("", |v| v.to_str().unwrap())
    }
}

struct Harness {
    svc: Svc,
    upstream: Arc<Upstream>,
    stats: CacheStats,
}

impl Harness {
    fn new(layer: CacheLayer) -> Self {
        Self::with_upstream(layer, Arc::default())
    }

    fn with_upstream(layer: CacheLayer, upstream: Arc<Upstream>) -> Self {
        let up = upstream.clone();
        let service = service_fn(move |req| {
            let up = up.clone();
            async move { Ok::<_, Infallible>(up.handle(req).await) }
        });
        Self {
            svc: BoxCloneSyncService::new(layer.layer(service)),
            upstream,
            stats: layer.stats(),
        }
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Reply {
        let res = self.svc.clone().oneshot(req).await.unwrap();
        let (parts, body) = res.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    async fn get(&self, path: &str, user: &str) -> Reply {
        self.send(get(path, user)).await
    }
}

fn request(method: Method, path: &str, user: &str) -> Request<Full<Bytes>> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .body(Full::default())
        .unwrap();
    req.extensions_mut().insert(Identity::new(user));
    req
}

fn get(path: &str, user: &str) -> Request<Full<Bytes>> {
    request(Method::GET, path, user)
}

/// Waits (yielding to the other tasks) until `cond` holds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("never happened: {what}");
}

// ---- the behaviours -------------------------------------------------------------

async fn second_get_is_a_hit(store: Arc<dyn CacheStore>) {
    let h = Harness::new(CacheLayer::from_arc(store));
    let first = h.get("/items", "u1").await;
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(first.body, "GET /items user=u1 n=1");
    let second = h.get("/items", "u1").await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.x_cache(), "HIT");
    assert_eq!(second.body, first.body);
    assert_eq!(second.headers["content-type"], "text/plain");
    assert!(second.headers.contains_key("age"));
    // Another query is another resource.
    assert_eq!(h.get("/items?page=2", "u1").await.x_cache(), "MISS");
    assert_eq!(h.upstream.calls("/items"), 2);
    let stats = h.stats.snapshot();
    assert_eq!((stats.hits, stats.misses, stats.stores), (1, 2, 2));
}

async fn head_is_answered_from_the_get_entry(store: Arc<dyn CacheStore>) {
    let h = Harness::new(CacheLayer::from_arc(store));
    let head = h.send(request(Method::HEAD, "/items", "u1")).await;
    assert_eq!(head.x_cache(), "MISS");
    h.get("/items", "u1").await;
    let head = h.send(request(Method::HEAD, "/items", "u1")).await;
    assert_eq!(head.x_cache(), "HIT");
    assert_eq!(head.body, "");
    assert_eq!(head.headers["content-length"], "22");
    assert_eq!(h.upstream.calls("/items"), 2);
}

async fn concurrent_misses_make_one_upstream_call(store: Arc<dyn CacheStore>) {
    const N: usize = 16;
    let h = Arc::new(Harness::new(CacheLayer::from_arc(store)));
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { h.get("/gated", "u1").await })
        })
        .collect();
    until("every request has joined the flight", || {
        h.upstream.calls("/gated") == 1 && h.stats.snapshot().waits == (N - 1) as u64
    })
    .await;
    h.upstream.gate.add_permits(1);
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "GET /gated user=u1 n=1");
    }
    assert_eq!(h.upstream.calls("/gated"), 1);
    let stats = h.stats.snapshot();
    assert_eq!((stats.misses, stats.coalesced), (1, (N - 1) as u64));
    // And the result was stored.
    assert_eq!(h.get("/gated", "u1").await.x_cache(), "HIT");
}

async fn concurrent_misses_share_a_server_error_without_storing_it(store: Arc<dyn CacheStore>) {
    const N: usize = 4;
    let h = Arc::new(Harness::new(CacheLayer::from_arc(store)));
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { h.get("/gated-503", "u1").await })
        })
        .collect();
    until("every request has joined the flight", || {
        h.upstream.calls("/gated-503") == 1 && h.stats.snapshot().waits == (N - 1) as u64
    })
    .await;
    h.upstream.gate.add_permits(N + 1);
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.x_cache(), "MISS");
        assert_eq!(reply.body, "GET /gated-503 user=u1 n=1");
    }
    // Shared with the waiters of that moment, never stored.
    let next = h.get("/gated-503", "u1").await;
    assert_eq!(next.body, "GET /gated-503 user=u1 n=2");
    assert_eq!(h.stats.snapshot().stores, 0);
}

async fn dropped_leader_does_not_wedge_waiters(store: Arc<dyn CacheStore>) {
    let h = Arc::new(Harness::new(CacheLayer::from_arc(store)));
    let leader = tokio::spawn({
        let h = h.clone();
        async move { h.get("/hang-first", "u1").await }
    });
    until("the leader is upstream", || {
        h.upstream.calls("/hang-first") == 1
    })
    .await;
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { h.get("/hang-first", "u1").await })
        })
        .collect();
    until("the waiters wait", || h.stats.snapshot().waits == 3).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    for waiter in waiters {
        let reply = waiter.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "GET /hang-first user=u1 n=2");
    }
    // One waiter led the retry; the others shared its answer.
    assert_eq!(h.upstream.calls("/hang-first"), 2);
}

async fn leader_dropping_its_body_releases_waiters(store: Arc<dyn CacheStore>) {
    let h = Arc::new(Harness::new(CacheLayer::from_arc(store)));
    let leader = h.svc.clone().oneshot(get("/items", "u1")).await.unwrap();
    assert_eq!(leader.headers()["x-cache"], "MISS");
    let waiter = tokio::spawn({
        let h = h.clone();
        async move { h.get("/items", "u1").await }
    });
    until("the waiter waits", || h.stats.snapshot().waits == 1).await;
    drop(leader);
    let reply = waiter.await.unwrap();
    assert_eq!(reply.body, "GET /items user=u1 n=2");
    assert_eq!(reply.x_cache(), "MISS");
}

async fn no_store_is_honoured_both_ways(store: Arc<dyn CacheStore>) {
    let h = Harness::new(CacheLayer::from_arc(store));
    // Request side: never looked up, never stored.
    for _ in 0..2 {
        let mut req = get("/items", "u1");
        req.headers_mut()
            .insert("cache-control", "no-store".parse().unwrap());
        assert_eq!(h.send(req).await.x_cache(), "BYPASS");
    }
    assert_eq!(h.get("/items", "u1").await.x_cache(), "MISS");
    assert_eq!(h.upstream.calls("/items"), 3);
    // Response side: no-store, private and Set-Cookie are never stored.
    for path in ["/no-store", "/private", "/cookie"] {
        assert_eq!(h.get(path, "u1").await.x_cache(), "MISS", "{path}");
        assert_eq!(h.get(path, "u1").await.x_cache(), "MISS", "{path}");
        assert_eq!(h.upstream.calls(path), 2, "{path}");
    }
    assert_eq!(h.stats.snapshot().stores, 1);
}

async fn no_cache_request_refreshes_the_entry(store: Arc<dyn CacheStore>) {
    let h = Harness::new(CacheLayer::from_arc(store));
    h.get("/items", "u1").await;
    let mut req = get("/items", "u1");
    req.headers_mut()
        .insert("cache-control", "no-cache".parse().unwrap());
    let fresh = h.send(req).await;
    assert_eq!(fresh.x_cache(), "MISS");
    assert_eq!(fresh.body, "GET /items user=u1 n=2");
    let hit = h.get("/items", "u1").await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.body, "GET /items user=u1 n=2");
}

async fn errors_are_never_cached(store: Arc<dyn CacheStore>) {
    let h = Harness::new(CacheLayer::from_arc(store));
    for path in ["/err500", "/err503"] {
        for n in 1..=3 {
            let reply = h.get(path, "u1").await;
            assert!(reply.status.is_server_error());
            assert_eq!(reply.x_cache(), "MISS");
            assert_eq!(reply.body, format!("GET {path} user=u1 n={n}"));
        }
    }
    assert_eq!(h.stats.snapshot().stores, 0);
}

async fn mutation_invalidates_its_prefix(store: Arc<dyn CacheStore>) {
    let layer = CacheLayer::from_arc(store)
        .with_scope("/api/jobs")
        .with_scope("/api/runs");
    let h = Harness::new(layer);
    for path in ["/api/jobs", "/api/jobs/a", "/api/runs/1"] {
        assert_eq!(h.get(path, "u1").await.x_cache(), "MISS");
        assert_eq!(h.get(path, "u1").await.x_cache(), "HIT");
    }
    // Another user's entry under the prefix goes stale too: the resource changed.
    h.get("/api/jobs", "u2").await;

    let post = h
        .send(request(Method::POST, "/api/jobs/a/start", "u1"))
        .await;
    assert_eq!(post.x_cache(), "BYPASS");
    assert_eq!(h.get("/api/jobs", "u1").await.x_cache(), "MISS");
    assert_eq!(h.get("/api/jobs", "u2").await.x_cache(), "MISS");
    assert_eq!(h.get("/api/jobs/a", "u1").await.x_cache(), "MISS");
    assert_eq!(h.get("/api/runs/1", "u1").await.x_cache(), "HIT");

    // A mutation outside every configured prefix flushes everything (the default).
    h.send(request(Method::DELETE, "/api/other/1", "u1")).await;
    assert_eq!(h.get("/api/runs/1", "u1").await.x_cache(), "MISS");
    assert_eq!(h.stats.snapshot().invalidations, 2);
}

async fn users_never_share_entries(store: Arc<dyn CacheStore>) {
    let h = Harness::new(CacheLayer::from_arc(store.clone()));
    assert_eq!(h.get("/me", "u1").await.body, "GET /me user=u1 n=1");
    let u2 = h.get("/me", "u2").await;
    assert_eq!(
        (u2.x_cache(), u2.body.as_str()),
        ("MISS", "GET /me user=u2 n=2")
    );
    let u1 = h.get("/me", "u1").await;
    assert_eq!(
        (u1.x_cache(), u1.body.as_str()),
        ("HIT", "GET /me user=u1 n=1")
    );
    // No verified identity: not cached at all.
    let anonymous = Request::get("/me").body(Full::default()).unwrap();
    assert_eq!(h.send(anonymous).await.x_cache(), "BYPASS");

    // Keyed by a header set by a trusted layer in front.
    let layer = CacheLayer::from_arc(store)
        .with_key_parts([KeyPart::UserHeader("x-user-id".parse().unwrap())]);
    let h = Harness::new(layer);
    let by_header = |user: &str| {
        Request::get("/me-h")
            .header("x-user-id", user)
            .body(Full::default())
            .unwrap()
    };
    assert_eq!(h.send(by_header("a")).await.x_cache(), "MISS");
    assert_eq!(h.send(by_header("b")).await.x_cache(), "MISS");
    let a = h.send(by_header("a")).await;
    assert_eq!(
        (a.x_cache(), a.body.as_str()),
        ("HIT", "GET /me-h user=a n=1")
    );
    let no_header = Request::get("/me-h").body(Full::default()).unwrap();
    assert_eq!(h.send(no_header).await.x_cache(), "BYPASS");
}

async fn oversize_bodies_pass_through_intact(store: Arc<dyn CacheStore>) {
    let h = Harness::new(CacheLayer::from_arc(store).with_max_body_bytes(1024));
    for path in ["/big", "/big-chunked"] {
        for _ in 0..2 {
            let reply = h.get(path, "u1").await;
            assert_eq!(reply.x_cache(), "MISS", "{path}");
            assert_eq!(reply.body, big_body(), "{path}");
        }
        assert_eq!(h.upstream.calls(path), 2, "{path}");
    }
    // A small body of unknown length is recorded while it streams, then served.
    let first = h.get("/small-chunked", "u1").await;
    let second = h.get("/small-chunked", "u1").await;
    assert_eq!(second.x_cache(), "HIT");
    assert_eq!(second.body, first.body);
    assert_eq!(
        second.headers["content-length"],
        first.body.len().to_string()
    );
    assert_eq!(h.stats.snapshot().stores, 1);
}

async fn hits_carry_this_requests_id(store: Arc<dyn CacheStore>) {
    let h = Harness::new(CacheLayer::from_arc(store));
    let with_id = |id: &str| {
        let mut req = get("/items", "u1");
        req.headers_mut()
            .insert("x-request-id", id.parse().unwrap());
        req
    };
    assert_eq!(
        h.send(with_id("req-a")).await.headers["x-request-id"],
        "req-a"
    );
    let hit = h.send(with_id("req-b")).await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.headers["x-request-id"], "req-b");
}

async fn layers_sharing_a_store_share_entries_and_invalidations(store: Arc<dyn CacheStore>) {
    // Two gateways over one store.
    let upstream = Arc::new(Upstream::default());
    let a = Harness::with_upstream(
        CacheLayer::from_arc(store.clone()).with_scope("/api/jobs"),
        upstream.clone(),
    );
    let b = Harness::with_upstream(
        CacheLayer::from_arc(store).with_scope("/api/jobs"),
        upstream.clone(),
    );
    assert_eq!(a.get("/api/jobs", "u1").await.x_cache(), "MISS");
    assert_eq!(b.get("/api/jobs", "u1").await.x_cache(), "HIT");
    b.send(request(Method::PUT, "/api/jobs/x", "u1")).await;
    assert_eq!(a.get("/api/jobs", "u1").await.x_cache(), "MISS");
    assert_eq!(upstream.calls("/api/jobs"), 2);
}

async fn vary_is_stored_only_when_the_key_covers_it(store: Arc<dyn CacheStore>) {
    let accept = |value: &str| {
        let mut req = get("/vary-accept", "u1");
        req.headers_mut().insert("accept", value.parse().unwrap());
        req
    };
    // The default key does not include `Accept`: never stored.
    let h = Harness::new(CacheLayer::from_arc(store.clone()));
    h.send(accept("text/csv")).await;
    assert_eq!(h.send(accept("text/csv")).await.x_cache(), "MISS");

    let layer = CacheLayer::from_arc(store).with_key_part(KeyPart::Header(http::header::ACCEPT));
    let h = Harness::new(layer);
    assert_eq!(h.send(accept("text/csv")).await.x_cache(), "MISS");
    assert_eq!(h.send(accept("application/json")).await.x_cache(), "MISS");
    let csv = h.send(accept("text/csv")).await;
    assert_eq!(csv.x_cache(), "HIT");
    assert!(csv.body.ends_with("accept=text/csv"), "{}", csv.body);
}

async fn x_cache_header_can_be_turned_off(store: Arc<dyn CacheStore>) {
    let h = Harness::new(CacheLayer::from_arc(store).with_x_cache_header(false));
    h.get("/items", "u1").await;
    let hit = h.get("/items", "u1").await;
    assert!(!hit.headers.contains_key("x-cache"));
    assert_eq!(h.stats.snapshot().hits, 1);
}

async fn a_body_is_complete_when_the_upstream_body_ends(store: Arc<dyn CacheStore>) {
    let h = Harness::new(CacheLayer::from_arc(store));
    let res = h.svc.clone().oneshot(get("/items", "u1")).await.unwrap();
    let mut body = res.into_body();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "GET /items user=u1 n=1");
    // The upstream body said it ended: stored, and reported as ended, without a poll
    // to `None` (a server never makes it).
    assert!(body.is_end_stream());
    assert_eq!(body.size_hint().exact(), Some(0));
    assert_eq!(h.stats.snapshot().stores, 1);
    assert_eq!(h.get("/items", "u1").await.x_cache(), "HIT");
    drop(body);
    assert_eq!(h.upstream.calls("/items"), 1);
}

async fn a_body_is_complete_at_its_content_length(store: Arc<dyn CacheStore>) {
    let h = Harness::new(CacheLayer::from_arc(store));
    let res = h
        .svc
        .clone()
        .oneshot(get("/sized-chunked", "u1"))
        .await
        .unwrap();
    let len: usize = res.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut body = res.into_body();
    let mut got = Vec::new();
    // What a server does: read `Content-Length` bytes, then stop.
    while got.len() < len {
        let frame = body.frame().await.unwrap().unwrap();
        got.extend_from_slice(&frame.into_data().unwrap());
    }
    assert_eq!(got, b"GET /sized-chunked user=u1 n=1");
    assert_eq!(h.stats.snapshot().stores, 1);
    let hit = h.get("/sized-chunked", "u1").await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.body, "GET /sized-chunked user=u1 n=1");
    // The end of the stream, seen later, stores nothing more.
    assert!(body.frame().await.is_none());
    assert_eq!(h.stats.snapshot().stores, 1);
    assert_eq!(h.upstream.calls("/sized-chunked"), 1);
}

async fn a_body_dropped_before_its_length_is_not_stored(store: Arc<dyn CacheStore>) {
    let h = Harness::new(CacheLayer::from_arc(store));
    let res = h
        .svc
        .clone()
        .oneshot(get("/sized-chunked", "u1"))
        .await
        .unwrap();
    let mut body = res.into_body();
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        "GET /si"
    );
    assert!(!body.is_end_stream());
    drop(body);
    assert_eq!(h.stats.snapshot().stores, 0);
    let next = h.get("/sized-chunked", "u1").await;
    assert_eq!(next.x_cache(), "MISS");
    assert_eq!(next.body, "GET /sized-chunked user=u1 n=2");
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    super::$name(Arc::new(MemoryStore::new())).await;
                }
            )*
        }

        #[cfg(feature = "cache-redis")]
        mod redis_store {
            $(
                #[tokio::test]
                #[ignore = "needs Redis (PULSE_TEST_REDIS_URL)"]
                async fn $name() {
                    super::$name(super::redis::store(stringify!($name)).await).await;
                }
            )*
        }
    };
}

suite! {
    second_get_is_a_hit,
    head_is_answered_from_the_get_entry,
    concurrent_misses_make_one_upstream_call,
    concurrent_misses_share_a_server_error_without_storing_it,
    dropped_leader_does_not_wedge_waiters,
    leader_dropping_its_body_releases_waiters,
    no_store_is_honoured_both_ways,
    no_cache_request_refreshes_the_entry,
    errors_are_never_cached,
    mutation_invalidates_its_prefix,
    users_never_share_entries,
    oversize_bodies_pass_through_intact,
    hits_carry_this_requests_id,
    layers_sharing_a_store_share_entries_and_invalidations,
    x_cache_header_can_be_turned_off,
    vary_is_stored_only_when_the_key_covers_it,
    a_body_is_complete_when_the_upstream_body_ends,
    a_body_is_complete_at_its_content_length,
    a_body_dropped_before_its_length_is_not_stored,
}

// ---- store-specific ---------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn memory_entries_expire_after_the_ttl() {
    let h = Harness::new(CacheLayer::new(MemoryStore::new()).with_ttl(Duration::from_secs(10)));
    h.get("/items", "u1").await;
    tokio::time::advance(Duration::from_secs(9)).await;
    let hit = h.get("/items", "u1").await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.headers["age"], "9");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(h.get("/items", "u1").await.x_cache(), "MISS");
    // A response's max-age shortens the TTL.
    h.get("/max-age-2", "u1").await;
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(h.get("/max-age-2", "u1").await.x_cache(), "MISS");
}

/// A store that always fails.
struct BrokenStore;

impl CacheStore for BrokenStore {
    fn get(
        &self,
        _: &pulse_proxy::cache::CacheKey,
    ) -> pulse_proxy::cache::store::StoreFuture<pulse_proxy::cache::store::Lookup> {
        Box::pin(async { Err(StoreError::Backend("down".into())) })
    }

    fn put(
        &self,
        _: &pulse_proxy::cache::CacheKey,
        _: Arc<pulse_proxy::cache::CachedResponse>,
        _: u64,
        _: Duration,
    ) -> pulse_proxy::cache::store::StoreFuture<()> {
        Box::pin(async { Err(StoreError::Backend("down".into())) })
    }

    fn invalidate(&self, _: &[Arc<str>]) -> pulse_proxy::cache::store::StoreFuture<()> {
        Box::pin(async { Err(StoreError::Backend("down".into())) })
    }
}

#[tokio::test(start_paused = true)]
async fn a_broken_store_never_fails_a_request() {
    let h = Harness::new(CacheLayer::new(BrokenStore));
    for _ in 0..2 {
        let reply = h.get("/items", "u1").await;
        assert_eq!((reply.status, reply.x_cache()), (StatusCode::OK, "MISS"));
    }
    let post = h.send(request(Method::POST, "/items", "u1")).await;
    assert_eq!(post.status, StatusCode::OK);
    assert_eq!(h.stats.snapshot().store_errors, 3);
}

/// A memory store whose writes wait for a permit.
struct GatedStore {
    inner: MemoryStore,
    gate: Arc<Semaphore>,
}

impl CacheStore for GatedStore {
    fn get(
        &self,
        key: &pulse_proxy::cache::CacheKey,
    ) -> pulse_proxy::cache::store::StoreFuture<pulse_proxy::cache::store::Lookup> {
        self.inner.get(key)
    }

    fn put(
        &self,
        key: &pulse_proxy::cache::CacheKey,
        response: Arc<pulse_proxy::cache::CachedResponse>,
        generation: u64,
        ttl: Duration,
    ) -> pulse_proxy::cache::store::StoreFuture<()> {
        let put = self.inner.put(key, response, generation, ttl);
        let gate = self.gate.clone();
        Box::pin(async move {
            let _permit = gate.acquire().await.unwrap();
            put.await
        })
    }

    fn invalidate(&self, scopes: &[Arc<str>]) -> pulse_proxy::cache::store::StoreFuture<()> {
        self.inner.invalidate(scopes)
    }
}

#[tokio::test(start_paused = true)]
async fn a_complete_body_dropped_during_its_write_is_still_stored() {
    use futures_util::FutureExt;

    let gate = Arc::new(Semaphore::new(0));
    let h = Arc::new(Harness::new(CacheLayer::new(GatedStore {
        inner: MemoryStore::new(),
        gate: gate.clone(),
    })));
    let res = h.svc.clone().oneshot(get("/items", "u1")).await.unwrap();
    let waiter = tokio::spawn({
        let h = h.clone();
        async move { h.get("/items", "u1").await }
    });
    until("the waiter waits", || h.stats.snapshot().waits == 1).await;
    let mut body = res.into_body();
    // The body is complete; its last frame waits for the write.
    assert!(body.frame().now_or_never().is_none());
    assert!(!body.is_end_stream());
    drop(body);
    gate.add_permits(1);
    let shared = waiter.await.unwrap();
    assert_eq!(shared.body, "GET /items user=u1 n=1");
    assert_eq!(shared.x_cache(), "HIT");
    assert_eq!(h.stats.snapshot().stores, 1);
    gate.add_permits(1);
    assert_eq!(h.get("/items", "u1").await.x_cache(), "HIT");
    assert_eq!(h.upstream.calls("/items"), 1);
}

#[cfg(feature = "cache-redis")]
mod redis {
    use super::*;
    use pulse_proxy::cache::RedisStore;

    fn url() -> String {
        std::env::var("PULSE_TEST_REDIS_URL").expect("PULSE_TEST_REDIS_URL")
    }

    /// A store under a namespace of its own, emptied first.
    pub(super) async fn store(test: &str) -> Arc<dyn CacheStore> {
        let namespace = format!("pulse-test:cache:{test}");
        clear(&namespace).await;
        Arc::new(
            RedisStore::connect(&url())
                .await
                .unwrap()
                .with_namespace(namespace),
        )
    }

    async fn connection() -> ::redis::aio::MultiplexedConnection {
        ::redis::Client::open(url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    async fn clear(namespace: &str) {
        let mut conn = connection().await;
        let keys: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("{namespace}:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            let () = ::redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    #[ignore = "needs Redis (PULSE_TEST_REDIS_URL)"]
    async fn entries_carry_the_ttl_and_no_user_id_in_key_names() {
        let namespace = "pulse-test:cache:ttl";
        clear(namespace).await;
        let store = RedisStore::connect(&url())
            .await
            .unwrap()
            .with_namespace(namespace);
        let h = Harness::new(CacheLayer::new(store).with_ttl(Duration::from_secs(10)));
        h.get("/items", "secret-user").await;
        let mut conn = connection().await;
        let keys: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("{namespace}:e:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(keys.len(), 1);
        assert!(!keys[0].contains("secret-user"));
        let pttl: i64 = ::redis::cmd("PTTL")
            .arg(&keys[0])
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((1..=10_000).contains(&pttl), "{pttl}");
    }

    #[tokio::test]
    #[ignore = "needs Redis (PULSE_TEST_REDIS_URL)"]
    async fn corrupt_entries_are_misses() {
        let namespace = "pulse-test:cache:corrupt";
        clear(namespace).await;
        let store = RedisStore::connect(&url())
            .await
            .unwrap()
            .with_namespace(namespace);
        let h = Harness::new(CacheLayer::new(store));
        h.get("/items", "u1").await;
        let mut conn = connection().await;
        let keys: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("{namespace}:e:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        let () = ::redis::cmd("SET")
            .arg(&keys[0])
            .arg("garbage")
            .query_async(&mut conn)
            .await
            .unwrap();
        let reply = h.get("/items", "u1").await;
        assert_eq!((reply.status, reply.x_cache()), (StatusCode::OK, "MISS"));
        assert_eq!(h.stats.snapshot().store_errors, 1);
    }
}
