//! pulse-proxy alone, for the gateway harness (`benches/gateway.sh`): a `Proxy` over
//! the pooled HTTP transport with the gateway's prefix rewrite (`/api/etl/` →
//! `/api/v1/`), framing and path checks and header hygiene both ways — no
//! authentication — served by hyper's HTTP/1.1 server.
//!
//! ```text
//! bench_pulse_proxy --addr 127.0.0.1:9200 --upstream 127.0.0.1:9000 [--threads 1]
//! ```

use std::net::SocketAddr;

use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use pulse_proxy::transport::{HttpTransport, TransportConfig};
use pulse_proxy::{Proxy, ProxyConfig};
use tower::ServiceExt;

fn arg(name: &str) -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == name {
            return args.next();
        }
    }
    None
}

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = arg("--addr")
        .unwrap_or_else(|| "127.0.0.1:9200".into())
        .parse()
        .expect("--addr host:port");
    let upstream = arg("--upstream").unwrap_or_else(|| "127.0.0.1:9000".into());
    let threads: usize = arg("--threads").map_or(1, |t| t.parse().expect("--threads N"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let config = ProxyConfig::new(format!("http://{upstream}").parse().expect("upstream"))
            .expect("proxy config")
            .with_prefix_rewrite("/api/etl/", "/api/v1/");
        let proxy = Proxy::new(HttpTransport::new(TransportConfig::new()), config);
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("pulse-proxy listening on {addr} -> {upstream}");
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(_) => continue,
            };
            let _ = stream.set_nodelay(true);
            let proxy = proxy.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| proxy.clone().oneshot(req));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
