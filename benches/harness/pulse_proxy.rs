//! pulse-proxy alone, for the gateway harness (`benches/gateway.sh`): a `Proxy` over
//! the pooled HTTP transport with the gateway's prefix rewrite (`/api/etl/` →
//! `/api/v1/`), framing and path checks and header hygiene both ways — no
//! authentication — served by hyper's HTTP/1.1 server.
//!
//! ```text
//! bench_pulse_proxy --addr 127.0.0.1:9200 --upstream 127.0.0.1:9000 [--threads 1]
//! ```

#[path = "common.rs"]
mod common;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use pulse_proxy::transport::{HttpTransport, TransportConfig};
use pulse_proxy::{Proxy, ProxyConfig};
use tower::ServiceExt;

/// The allocator the full stack ships with (see examples/full_stack/main.rs).
#[cfg(not(pulse_system_alloc))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::io::Result<()> {
    let addr = common::addr("127.0.0.1:9200");
    let upstream = common::arg("--upstream").unwrap_or_else(|| "127.0.0.1:9000".into());
    common::runtime()?.block_on(async move {
        let config = ProxyConfig::new(format!("http://{upstream}").parse().expect("upstream"))
            .expect("proxy config")
            .with_prefix_rewrite("/api/etl/", "/api/v1/");
        let proxy = Proxy::new(HttpTransport::new(TransportConfig::new()), config);
        println!("pulse-proxy listening on {addr} -> {upstream}");
        common::serve(addr, || {
            let proxy = proxy.clone();
            service_fn(move |req: Request<Incoming>| proxy.clone().oneshot(req))
        })
        .await
    })
}
