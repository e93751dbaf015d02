//! What the gateway harness's servers share (`#[path]`-included by each): argument
//! lookup, the runtime and the HTTP/1.1 accept loop.

// Each binary uses a part of it.
#![allow(dead_code)]

use std::net::SocketAddr;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The value after `name` on the command line.
pub(crate) fn arg(name: &str) -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == name {
            return args.next();
        }
    }
    None
}

/// `--addr`, or `default`.
pub(crate) fn addr(default: &str) -> SocketAddr {
    arg("--addr")
        .unwrap_or_else(|| default.into())
        .parse()
        .expect("--addr host:port")
}

/// A multi-thread runtime with `--threads` workers (1 by default), or a current-thread
/// one with `--threads 0`.
pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let threads: usize = arg("--threads").map_or(1, |t| t.parse().expect("--threads N"));
    if threads == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

/// Accepts connections on `addr` for ever, serving each with the service `make`
/// returns for it (HTTP/1.1, keep-alive, `TCP_NODELAY`).
pub(crate) async fn serve<F, S, B>(addr: SocketAddr, make: F) -> std::io::Result<()>
where
    F: Fn() -> S,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = make();
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
