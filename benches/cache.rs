//! Response-cache cost: one in-process `GET` through pulse-proxy's `CacheLayer`, as a
//! hit and as a miss, next to the bare upstream service.
//!
//! Run with: cargo bench --bench cache -- --warm-up-time 1 --measurement-time 3
//!
//! Groups:
//! - `cache/memory`: `direct` (the upstream alone, the floor), `hit` (the same key
//!   every time), `miss` (a new key every time: lookup, flight, upstream call,
//!   recording, store write), `bypass` (a `no-store` request: the cache's own overhead
//!   on the path it does not touch); 1 KiB bodies, a per-user key;
//! - `cache/redis`: `hit` and `miss` against the Redis store, only when
//!   `PULSE_TEST_REDIS_URL` is set (loopback round trips dominate).

use std::{
    convert::Infallible,
    hint::black_box,
    sync::atomic::{AtomicU64, Ordering},
};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use pulse_core::Identity;
use pulse_proxy::cache::{CacheLayer, CacheStore, MemoryStore, RedisStore};
use tower::{Layer, Service, ServiceExt, service_fn};

static BODY: [u8; 1024] = [b'x'; 1024];

type Upstream = tower::util::ServiceFn<fn(Request<Full<Bytes>>) -> Answer>;
type Answer = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;

fn upstream() -> Upstream {
    fn answer(_req: Request<Full<Bytes>>) -> Answer {
        std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(&BODY)))))
    }
    service_fn(answer as fn(Request<Full<Bytes>>) -> Answer)
}

fn request(path: &str, no_store: bool) -> Request<Full<Bytes>> {
    let mut builder = Request::get(path);
    if no_store {
        builder = builder.header("cache-control", "no-store");
    }
    let mut req = builder.body(Full::default()).unwrap_or_default();
    req.extensions_mut().insert(Identity::new("bench-user"));
    req
}

/// Sends one request and reads the whole body, as a client would.
async fn send<S, B>(svc: &S, req: Request<Full<Bytes>>) -> usize
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = Infallible> + Clone,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let res = svc
        .clone()
        .oneshot(req)
        .await
        .unwrap_or_else(|e| match e {});
    match res.into_body().collect().await {
        Ok(collected) => collected.to_bytes().len(),
        Err(err) => panic!("body failed: {err:?}"),
    }
}

fn group(c: &mut Criterion, name: &str, rt: &tokio::runtime::Runtime, store: impl CacheStore) {
    let mut group = c.benchmark_group(format!("cache/{name}"));
    let cache = CacheLayer::new(store).layer(upstream());

    if name == "memory" {
        let direct = upstream();
        group.bench_function("direct", |b| {
            b.to_async(rt)
                .iter(|| async { black_box(send(&direct, request("/jobs", false)).await) });
        });
        group.bench_function("bypass", |b| {
            b.to_async(rt)
                .iter(|| async { black_box(send(&cache, request("/jobs", true)).await) });
        });
    }

    rt.block_on(send(&cache, request("/jobs", false)));
    group.bench_function("hit", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(send(&cache, request("/jobs", false)).await) });
    });

    let counter = AtomicU64::new(0);
    group.bench_function("miss", |b| {
        b.to_async(rt).iter(|| async {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            black_box(send(&cache, request(&format!("/jobs?n={n}"), false)).await)
        });
    });
    group.finish();
}

fn cache(c: &mut Criterion) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => panic!("no runtime: {err}"),
    };
    group(c, "memory", &rt, MemoryStore::new());

    if let Ok(url) = std::env::var("PULSE_TEST_REDIS_URL") {
        match rt.block_on(RedisStore::connect(&url)) {
            Ok(store) => group(c, "redis", &rt, store.with_namespace("pulse-bench:cache")),
            Err(err) => eprintln!("cache/redis skipped: {err}"),
        }
    }
}

criterion_group!(benches, cache);
criterion_main!(benches);
