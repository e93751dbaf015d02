//! One accept loop for every service: plain TCP or TLS, HTTP/1.1 (with upgrades) and
//! HTTP/2, graceful shutdown bounded by a grace period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::Layer;
use tracing::Instrument;

/// Drive one connection; on stop ask it to finish gracefully, and drop it after `grace`.
macro_rules! drive {
    ($conn:expr, $stop:expr, $grace:expr) => {{
        let mut conn = std::pin::pin!($conn);
        let finished = tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                true
            }
            _ = $stop.wait_for(|stopped| *stopped) => false,
        };
        if !finished {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout($grace, conn).await;
        }
    }};
}

/// A running server: its address, and how to stop it.
#[derive(Debug)]
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stop accepting, let in-flight requests finish (at most the grace period), close.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Serve `router` on `listener` (over TLS when `tls` is given) until stopped.
pub fn serve(
    name: &'static str,
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    grace: Duration,
) -> std::io::Result<Running> {
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);
    let span = tracing::info_span!("service", service = name);
    let task = tokio::spawn(
        async move {
            let builder = Arc::new(Builder::new(TokioExecutor::new()));
            let mut connections = JoinSet::new();
            loop {
                let (stream, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            tracing::warn!(%error, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = stopped.changed() => break,
                };
                let _ = stream.set_nodelay(true);
                // Handlers (the login throttle) and proxies read the peer as axum's ConnectInfo.
                let service =
                    TowerToHyperService::new(Extension(ConnectInfo(peer)).layer(router.clone()));
                let builder = Arc::clone(&builder);
                let tls = tls.clone();
                let mut stop = stopped.clone();
                connections.spawn(
                    async move {
                        match tls {
                            Some(acceptor) => match acceptor.accept(stream).await {
                                Ok(stream) => {
                                    let conn = builder.serve_connection_with_upgrades(
                                        TokioIo::new(stream),
                                        service,
                                    );
                                    drive!(conn, stop, grace);
                                }
                                Err(error) => {
                                    tracing::debug!(%error, %peer, "TLS handshake failed")
                                }
                            },
                            None => {
                                let conn = builder
                                    .serve_connection_with_upgrades(TokioIo::new(stream), service);
                                drive!(conn, stop, grace);
                            }
                        }
                    }
                    .in_current_span(),
                );
                // Reap finished connections so the set does not grow.
                while connections.try_join_next().is_some() {}
            }
            drop(listener);
            tracing::info!("stopped accepting; waiting for in-flight requests");
            // Connections finish on their own within `grace`; past it they are closed.
            if tokio::time::timeout(grace + Duration::from_millis(100), async {
                while connections.join_next().await.is_some() {}
            })
            .await
            .is_err()
            {
                connections.abort_all();
            }
            tracing::info!("stopped");
        }
        .instrument(span),
    );
    Ok(Running { addr, stop, task })
}
