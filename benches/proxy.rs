//! Proxy overhead benchmarks.
//!
//! Run with: `cargo bench --bench proxy` (add `-- --quick` for a short run).
//!
//! - `proxy_logic`: the proxy's own work per request (checks, header hygiene and
//!   injection, request id, response filtering) against an in-memory upstream that
//!   answers at once, next to a call of that upstream alone.
//! - `loopback_get`: a GET over loopback with warm pools: straight to the upstream,
//!   through a pulse-proxy gateway, and through an `axum-reverse-proxy` gateway (the
//!   peer), all three served by axum on the same runtime.
//! - `transport`: the same proxied GET over TCP, a Unix socket and in process.
//! - `body_size`: a POST echoed through the proxy over TCP, 0 B to 1 MiB.
//! - `error_paths`: the 503 answers (connection refused; in-flight cap reached) and the
//!   504 answer (time-to-headers timeout of zero over an upstream that never answers).

use std::{convert::Infallible, future::Future, hint::black_box, time::Duration};

use axum::{Router, body::Body, routing::get};
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use pulse_core::Identity;
use pulse_proxy::{
    Proxy, ProxyConfig, ProxyRequestBody,
    transport::{HttpTransport, InProcessTransport, TransportConfig, UnixTransport},
};
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt, service_fn};

type ReqBody = Full<Bytes>;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The upstream: a tiny GET answer and a POST that streams the body back.
fn upstream() -> Router {
    Router::new()
        .route("/api/v1/echo", get(|| async { "ok" }))
        .route(
            "/api/v1/stream",
            axum::routing::post(|body: Body| async move { body }),
        )
}

async fn serve_tcp(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

fn config(authority: &str) -> ProxyConfig {
    ProxyConfig::new(format!("http://{authority}").parse().expect("uri"))
        .expect("config")
        .with_prefix_rewrite("/api/etl/", "/api/v1/")
}

/// A request as the gateway sees it after authentication.
fn request(uri: &str, body: Bytes) -> Request<ReqBody> {
    let method = if body.is_empty() {
        http::Method::GET
    } else {
        http::Method::POST
    };
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("accept", "application/json")
        .header("x-user-id", "spoofed")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .body(Full::new(body))
        .expect("request");
    req.extensions_mut()
        .insert(Identity::new("user-42").with_email("u42@pulse.local"));
    req
}

/// Time `iters` sequential runs of `f` inside the runtime.
fn timed<F, Fut>(rt: &Runtime, iters: u64, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    rt.block_on(async {
        let start = std::time::Instant::now();
        for _ in 0..iters {
            f().await;
        }
        start.elapsed()
    })
}

async fn drain<B>(res: Response<B>) -> usize
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    assert!(res.status().is_success(), "status {}", res.status());
    res.into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .len()
}

fn proxy_logic(c: &mut Criterion) {
    let rt = runtime();
    let answer = || async { Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())) };
    let upstream = service_fn(move |_req: Request<ProxyRequestBody<ReqBody>>| answer());
    let proxy = Proxy::new(
        InProcessTransport::new(upstream),
        config("etl.internal:8001"),
    );
    let bare = service_fn(move |_req: Request<ReqBody>| answer());

    let mut group = c.benchmark_group("proxy_logic");
    group.bench_function("upstream_alone", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || {
                let mut svc = bare;
                async move {
                    let mut req = request("/api/etl/jobs?limit=5", Bytes::new());
                    req.headers_mut()
                        .insert("x-request-id", http::HeaderValue::from_static("req-1"));
                    black_box(
                        svc.ready()
                            .await
                            .expect("infallible")
                            .call(req)
                            .await
                            .expect("infallible"),
                    );
                }
            })
        });
    });
    // Behind pulse-core's request-id layer the id is already there.
    group.bench_function("through_proxy", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || {
                let mut svc = proxy.clone();
                async move {
                    let mut req = request("/api/etl/jobs?limit=5", Bytes::new());
                    req.headers_mut()
                        .insert("x-request-id", http::HeaderValue::from_static("req-1"));
                    black_box(
                        svc.ready()
                            .await
                            .expect("infallible")
                            .call(req)
                            .await
                            .expect("infallible"),
                    );
                }
            })
        });
    });
    // Without it, the proxy generates a UUIDv7 per request.
    group.bench_function("through_proxy_new_id", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || {
                let mut svc = proxy.clone();
                async move {
                    let req = request("/api/etl/jobs?limit=5", Bytes::new());
                    black_box(
                        svc.ready()
                            .await
                            .expect("infallible")
                            .call(req)
                            .await
                            .expect("infallible"),
                    );
                }
            })
        });
    });
    group.finish();
}

struct Loopback {
    upstream: String,
    pulse_gateway: String,
    peer_gateway: String,
    unix_path: std::path::PathBuf,
}

fn start_loopback(rt: &Runtime) -> Loopback {
    rt.block_on(async {
        let upstream_addr = serve_tcp(upstream()).await;
        let pulse = Proxy::new(
            HttpTransport::new(TransportConfig::new()),
            config(&upstream_addr),
        );
        let pulse_gateway = serve_tcp(Router::new().fallback_service(pulse)).await;
        let peer = axum_reverse_proxy::ReverseProxy::new(
            "/api/etl",
            format!("http://{upstream_addr}/api/v1").as_str(),
        );
        let peer_gateway = serve_tcp(Router::new().merge(peer)).await;
        let unix_path =
            std::env::temp_dir().join(format!("pulse-proxy-bench-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&unix_path);
        let listener = tokio::net::UnixListener::bind(&unix_path).expect("unix bind");
        tokio::spawn(async move { axum::serve(listener, upstream()).await });
        Loopback {
            upstream: upstream_addr,
            pulse_gateway,
            peer_gateway,
            unix_path,
        }
    })
}

fn loopback_get(c: &mut Criterion, rt: &Runtime, lb: &Loopback) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let targets = [
        ("direct", format!("http://{}/api/v1/echo", lb.upstream)),
        (
            "pulse_proxy",
            format!("http://{}/api/etl/echo", lb.pulse_gateway),
        ),
        (
            "axum_reverse_proxy",
            format!("http://{}/api/etl/echo", lb.peer_gateway),
        ),
    ];
    let mut group = c.benchmark_group("loopback_get");
    for (name, url) in targets {
        let uri: http::Uri = url.parse().expect("uri");
        // Warm both pools (client → gateway, gateway → upstream) and check the route.
        rt.block_on(async {
            for _ in 0..4 {
                let res = client.get(uri.clone()).await.expect("warm-up");
                assert_eq!(drain(res).await, 2, "{name}");
            }
        });
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                timed(rt, iters, || {
                    let fut = client.get(uri.clone());
                    async move {
                        black_box(drain(fut.await.expect("get")).await);
                    }
                })
            });
        });
    }
    group.finish();
}

fn transports(c: &mut Criterion, rt: &Runtime, lb: &Loopback) {
    let tcp = Proxy::new(
        HttpTransport::new(TransportConfig::new()),
        config(&lb.upstream),
    );
    let unix = Proxy::new(
        UnixTransport::new(&lb.unix_path, TransportConfig::new()),
        config("etl.sock"),
    );
    let in_process = Proxy::new(InProcessTransport::new(upstream()), config("etl.internal"));
    let mut group = c.benchmark_group("transport");
    macro_rules! bench_transport {
        ($name:literal, $proxy:expr) => {
            let proxy = $proxy;
            group.bench_function($name, |b| {
                b.iter_custom(|iters| {
                    timed(rt, iters, || {
                        let svc = proxy.clone();
                        async move {
                            let res = svc
                                .oneshot(request("/api/etl/echo", Bytes::new()))
                                .await
                                .expect("infallible");
                            black_box(drain(res).await);
                        }
                    })
                });
            });
        };
    }
    bench_transport!("tcp", tcp);
    bench_transport!("unix", unix);
    bench_transport!("in_process", in_process);
    group.finish();
}

fn body_size(c: &mut Criterion, rt: &Runtime, lb: &Loopback) {
    let proxy = Proxy::new(
        HttpTransport::new(TransportConfig::new()),
        config(&lb.upstream),
    );
    let mut group = c.benchmark_group("body_size");
    for size in [0usize, 1024, 64 * 1024, 1024 * 1024] {
        let payload = Bytes::from(vec![b'x'; size]);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &payload, |b, payload| {
            b.iter_custom(|iters| {
                timed(rt, iters, || {
                    let svc = proxy.clone();
                    let mut req = request("/api/etl/stream", payload.clone());
                    *req.method_mut() = http::Method::POST;
                    async move {
                        let res = svc.oneshot(req).await.expect("infallible");
                        assert_eq!(drain(res).await, size);
                    }
                })
            });
        });
    }
    group.finish();
}

fn error_paths(c: &mut Criterion, rt: &Runtime) {
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let refused = Proxy::new(
        HttpTransport::new(TransportConfig::new()),
        config(&format!("127.0.0.1:{closed_port}")),
    );
    let exhausted = Proxy::new(
        HttpTransport::new(TransportConfig::new().with_max_in_flight(0)),
        config(&format!("127.0.0.1:{closed_port}")),
    );
    let never = service_fn(|_req: Request<ProxyRequestBody<ReqBody>>| {
        std::future::pending::<Result<Response<Empty<Bytes>>, Infallible>>()
    });
    let timeout = Proxy::new(
        InProcessTransport::new(never),
        config("etl.internal").with_response_timeout(Duration::ZERO),
    );
    let mut group = c.benchmark_group("error_paths");
    macro_rules! bench_error {
        ($name:literal, $proxy:expr, $status:literal) => {
            let proxy = $proxy;
            group.bench_function($name, |b| {
                b.iter_custom(|iters| {
                    timed(rt, iters, || {
                        let svc = proxy.clone();
                        async move {
                            let res = svc
                                .oneshot(request("/api/etl/echo", Bytes::new()))
                                .await
                                .expect("infallible");
                            assert_eq!(res.status(), $status);
                            black_box(res);
                        }
                    })
                });
            });
        };
    }
    bench_error!("503_connect_refused", refused, 503);
    bench_error!("503_pool_exhausted", exhausted, 503);
    bench_error!("504_timeout", timeout, 504);
    group.finish();
}

fn network(c: &mut Criterion) {
    let rt = runtime();
    let lb = start_loopback(&rt);
    loopback_get(c, &rt, &lb);
    transports(c, &rt, &lb);
    body_size(c, &rt, &lb);
    error_paths(c, &rt);
    let _ = std::fs::remove_file(&lb.unix_path);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = proxy_logic, network
}
criterion_main!(benches);
