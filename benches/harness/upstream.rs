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

#[path = "common.rs"]
mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;

#[derive(Default)]
struct Stats {
    connections: AtomicU64,
    requests: AtomicU64,
}

/// `{"ok":true,"service":"upstream","pad":"…"}` and a newline, padded to `size` bytes
/// (at least the bare object).
fn body(size: usize) -> Bytes {
    let bare = r#"{"ok":true,"service":"upstream","pad":""}"#.len() + 1;
    let pad = "x".repeat(size.saturating_sub(bare));
    Bytes::from(format!(
        "{{\"ok\":true,\"service\":\"upstream\",\"pad\":\"{pad}\"}}\n"
    ))
}

fn main() -> std::io::Result<()> {
    let addr = common::addr("127.0.0.1:9000");
    let size: usize =
        common::arg("--body-bytes").map_or(51, |s| s.parse().expect("--body-bytes N"));
    let payload = body(size);
    let stats = Arc::new(Stats::default());
    // One thread, so that it can be pinned to one core beside the contender.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        println!(
            "upstream listening on {addr} ({} byte answers)",
            payload.len()
        );
        common::serve(addr, || {
            stats.connections.fetch_add(1, Ordering::Relaxed);
            let stats = Arc::clone(&stats);
            let payload = payload.clone();
            service_fn(move |req: Request<Incoming>| {
                let body = if req.uri().path() == "/_harness/stats" {
                    Bytes::from(format!(
                        "{{\"connections\":{},\"requests\":{}}}",
                        stats.connections.load(Ordering::Relaxed),
                        stats.requests.load(Ordering::Relaxed)
                    ))
                } else {
                    stats.requests.fetch_add(1, Ordering::Relaxed);
                    payload.clone()
                };
                let response = Response::builder()
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Full::new(body))
                    .expect("static response");
                async move { Ok::<_, Infallible>(response) }
            })
        })
        .await
    })
}
