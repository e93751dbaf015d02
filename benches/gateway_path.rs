//! The gateway's whole path in one process: the full stack (gateway, ETL service and
//! their listeners) started in this process on loopback, exactly as
//! `cargo run --example full_stack` runs it, and requests sent to the gateway over warm
//! keep-alive connections.
//!
//! Run with: `cargo bench --bench gateway_path` (add `-- --quick` for a short run).
//!
//! - `gateway_path/jobs_status`: an authenticated `GET /api/etl/jobs/status` — request
//!   id, JWT verification, revocation check, RBAC, breaker, internal token, the proxy
//!   hop to the ETL service and back (the figure `benches/gateway.sh` measures across
//!   processes, here without the load generator's own cost);
//! - `gateway_path/unauthenticated`: the same request without a token (401 before the
//!   proxy: the cost of the edge layers alone);
//! - `gateway_path/health`: `GET /health`, the gateway's aggregate of its upstreams.

#[allow(dead_code, unreachable_pub, unused_imports)]
#[path = "../examples/full_stack/stack/mod.rs"]
mod stack;

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use tokio::runtime::Runtime;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The stack on ephemeral ports in `dir`, with cheap password hashing for the login.
async fn start(dir: &std::path::Path) -> stack::Stack {
    let args = [
        "full_stack",
        "--frontend-addr",
        "127.0.0.1:0",
        "--backend-addr",
        "127.0.0.1:0",
        "--etl-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--data-dir",
        dir.to_str().expect("utf-8 temp path"),
        "--argon2-memory-kib",
        "1024",
        "--argon2-iterations",
        "1",
    ];
    let cli = <stack::config::Cli as clap::Parser>::try_parse_from(args).expect("valid flags");
    stack::Stack::start(stack::config::Service::All, cli.options)
        .await
        .expect("the stack starts")
}

async fn send(client: &HttpClient, request: Request<Full<Bytes>>) -> (StatusCode, Bytes) {
    let response = client.request(request).await.expect("an answer");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    (status, body)
}

async fn login(client: &HttpClient, base: &str) -> String {
    let request = Request::post(format!("{base}/api/auth/login"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::from(
            r#"{"email":"admin@pulse.local","password":"admin"}"#,
        ))
        .expect("request");
    let (status, body) = send(client, request).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    value["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

fn gateway_path(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let stack = rt.block_on(start(dir.path()));
    let base = format!(
        "http://{}",
        stack.backend.as_ref().expect("the gateway").server.addr
    );
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let token = rt.block_on(login(&client, &base));
    let get = |path: &str, token: Option<&str>| {
        let mut request = Request::get(format!("{base}{path}"));
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request.body(Full::default()).expect("request")
    };
    // Warm the pools, and check each path answers what it should before timing it.
    for (path, token, expected) in [
        ("/api/etl/jobs/status", Some(token.as_str()), StatusCode::OK),
        ("/api/etl/jobs/status", None, StatusCode::UNAUTHORIZED),
        ("/health", None, StatusCode::OK),
    ] {
        let (status, body) = rt.block_on(send(&client, get(path, token)));
        assert_eq!(status, expected, "{path}: {body:?}");
    }

    let mut group = c.benchmark_group("gateway_path");
    group.bench_function("jobs_status", |b| {
        b.to_async(&rt).iter(|| async {
            let (status, body) = send(&client, get("/api/etl/jobs/status", Some(&token))).await;
            debug_assert_eq!(status, StatusCode::OK);
            black_box(body)
        });
    });
    group.bench_function("unauthenticated", |b| {
        b.to_async(&rt).iter(|| async {
            let (status, body) = send(&client, get("/api/etl/jobs/status", None)).await;
            debug_assert_eq!(status, StatusCode::UNAUTHORIZED);
            black_box(body)
        });
    });
    group.bench_function("health", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(send(&client, get("/health", None)).await) });
    });
    group.finish();
    rt.block_on(stack.shutdown());
}

criterion_group!(benches, gateway_path);
criterion_main!(benches);
