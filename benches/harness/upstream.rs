//! The fixed upstream of the gateway harness (`benches/gateway.sh`): a minimal hyper
//! HTTP/1.1 server answering every request with a small JSON body (51 bytes, or
//! `--body-bytes N`), on one current-thread runtime so it can be pinned to one core.
//!
//! `GET /_harness/stats` answers `{"connections":N,"requests":M}`: the connections it
//! accepted and the requests it served, so the harness can count the upstream
//! connections a contender opens per 1,000 requests.
//!
//! ```text
//! bench_upstream --addr 127.0.0.1:9000 [--body-bytes 16384]
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

#[derive(Default)]
struct Stats {
    connections: AtomicU64,
    requests: AtomicU64,
}

fn arg(name: &str) -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == name {
            return args.next();
        }
    }
    None
}

fn body(size: usize) -> Bytes {
    // {"ok":true,"pad":"…"} padded to exactly `size` bytes (at least the bare object).
    let base = r#"{"ok":true,"service":"upstream","pad":""}"#;
    let pad = size.saturating_sub(base.len() + 1);
    Bytes::from(format!(
        "{{\"ok\":true,\"service\":\"upstream\",\"pad\":\"{}\"}}\n",
        "x".repeat(pad)
    ))
}

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = arg("--addr")
        .unwrap_or_else(|| "127.0.0.1:9000".into())
        .parse()
        .expect("--addr host:port");
    let size: usize = arg("--body-bytes")
        .map(|s| s.parse().expect("--body-bytes N"))
        .unwrap_or(51);
    let payload = body(size);
    let stats = Arc::new(Stats::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!(
            "upstream listening on {addr} ({} byte answers)",
            payload.len()
        );
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(_) => continue,
            };
            let _ = stream.set_nodelay(true);
            stats.connections.fetch_add(1, Ordering::Relaxed);
            let stats = Arc::clone(&stats);
            let payload = payload.clone();
            tokio::task::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let stats = Arc::clone(&stats);
                    let payload = payload.clone();
                    async move {
                        let body = if req.uri().path() == "/_harness/stats" {
                            Bytes::from(format!(
                                "{{\"connections\":{},\"requests\":{}}}",
                                stats.connections.load(Ordering::Relaxed),
                                stats.requests.load(Ordering::Relaxed)
                            ))
                        } else {
                            stats.requests.fetch_add(1, Ordering::Relaxed);
                            payload
                        };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header(header::CONTENT_TYPE, "application/json")
                                .body(Full::new(body))
                                .expect("static response"),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
