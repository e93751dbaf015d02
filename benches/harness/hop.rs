//! The minimal hyper hop of the gateway harness (`benches/gateway.sh`): an HTTP/1.1
//! server that forwards every request to one upstream with hyper-util's legacy pooled
//! client — no checks, no auth, no header hygiene. The floor any Rust proxy on hyper
//! starts from.
//!
//! ```text
//! bench_hop --addr 127.0.0.1:9100 --upstream 127.0.0.1:9000 [--threads 1]
//! ```

#[path = "common.rs"]
mod common;

use http::{Request, Uri};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

fn main() -> std::io::Result<()> {
    let addr = common::addr("127.0.0.1:9100");
    let upstream = common::arg("--upstream").unwrap_or_else(|| "127.0.0.1:9000".into());
    common::runtime()?.block_on(async move {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1024)
            .build(connector);
        println!("hop listening on {addr} -> {upstream}");
        common::serve(addr, || {
            let client = client.clone();
            let upstream = upstream.clone();
            service_fn(move |mut req: Request<Incoming>| {
                let client = client.clone();
                let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
                *req.uri_mut() = format!("http://{upstream}{path}")
                    .parse::<Uri>()
                    .expect("upstream uri");
                async move { client.request(req).await }
            })
        })
        .await
    })
}
