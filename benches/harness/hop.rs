//! The minimal hyper hop of the gateway harness (`benches/gateway.sh`): an HTTP/1.1
//! server that forwards every request to one upstream with hyper-util's legacy pooled
//! client — no checks, no auth, no header hygiene. The floor any Rust proxy on hyper
//! starts from.
//!
//! ```text
//! bench_hop --addr 127.0.0.1:9100 --upstream 127.0.0.1:9000 [--threads 1]
//! ```

use std::net::SocketAddr;

use http::{Request, Uri};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

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
        .unwrap_or_else(|| "127.0.0.1:9100".into())
        .parse()
        .expect("--addr host:port");
    let upstream = arg("--upstream").unwrap_or_else(|| "127.0.0.1:9000".into());
    let threads: usize = arg("--threads").map_or(1, |t| t.parse().expect("--threads N"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1024)
            .build(connector);
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("hop listening on {addr} -> {upstream}");
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(_) => continue,
            };
            let _ = stream.set_nodelay(true);
            let client = client.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let service = service_fn(move |mut req: Request<Incoming>| {
                    let client = client.clone();
                    let path = req
                        .uri()
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_owned();
                    *req.uri_mut() = format!("http://{upstream}{path}")
                        .parse::<Uri>()
                        .expect("upstream uri");
                    async move { client.request(req).await }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
