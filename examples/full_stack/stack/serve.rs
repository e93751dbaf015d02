//! One accept loop for every service: plain TCP or TLS, HTTP/1.1 (with upgrades) and
//! HTTP/2, graceful shutdown bounded by a grace period, and the limits that keep a
//! slow or greedy client from holding the listener ([`Limits`]):
//!
//! - **connection cap**: at most `max_connections` sockets at once (WebSockets
//!   included). At the cap the loop stops accepting, so new connections wait in the
//!   kernel's backlog and are served as soon as a slot frees (HAProxy's `maxconn`);
//! - **TLS handshake timeout**;
//! - **header-read timeout** (slowloris): hyper's HTTP/1 timer, running from the moment
//!   a connection waits for a request head (on accept, and again after each answer)
//!   until the head is complete. A new connection must also deliver its first request
//!   within it, whatever the protocol (the HTTP/2 preface included);
//! - **idle timeout**: a connection with no request in flight (an answer being
//!   streamed counts as in flight) is closed after it. hyper has no idle timer of its
//!   own; on HTTP/1.1 the header-read timer also runs while a kept-alive connection
//!   waits, so such a connection closes after the shorter of the two. HTTP/2
//!   connections are also pinged, and closed when the pings go unanswered.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, header};
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::{Layer, ServiceExt};
use tower_http::set_header::SetResponseHeaderLayer;
use tracing::Instrument;

/// Default [`Limits::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`Limits::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`Limits::tls_handshake_timeout`].
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`Limits::max_connections`]: below the common 1024 open-file limit, which
/// a process running all three services shares with its outbound connections.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 512;
/// Default [`Limits::grace`].
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// How often an HTTP/2 connection is pinged, and how long a ping may go unanswered.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);
/// `Strict-Transport-Security` of every answer served over TLS: one year, as the
/// HSTS preload list asks.
pub const HSTS: &str = "max-age=31536000";

/// How a listener treats its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest wait for a complete request head (and for a new connection's first request).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Longest TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Most connections open at once; beyond it new ones wait unaccepted.
    pub max_connections: u32,
    /// At shutdown, the longest wait for in-flight requests.
    pub grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            grace: DEFAULT_GRACE,
        }
    }
}

impl Limits {
    /// How long an idle HTTP/1.1 connection to a listener with these limits stays
    /// open: the header-read timer runs while it waits, so the shorter of the two.
    pub fn keep_alive(&self) -> Duration {
        self.header_read_timeout.min(self.idle_timeout)
    }

    /// How long a client pool may keep an idle connection to a listener with these
    /// limits: half its keep-alive, so the pool drops the connection before the
    /// server closes it under a new request.
    pub fn pool_idle_timeout(&self) -> Duration {
        self.keep_alive() / 2
    }

    /// The same limits with another shutdown grace period.
    #[must_use]
    pub const fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }
}

/// Drive one connection; on stop, or once it has been idle too long, ask it to finish
/// gracefully, and drop it after `grace`.
macro_rules! drive {
    ($conn:expr, $stop:expr, $idle:expr, $grace:expr) => {{
        let mut conn = std::pin::pin!($conn);
        let finished = tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    record_error(&*error);
                    tracing::debug!(%error, "connection ended with an error");
                }
                true
            }
            _ = $stop.wait_for(|stopped| *stopped) => false,
            () = $idle => {
                metrics::counter!("pulse_connection_timeouts_total", "phase" => "idle").increment(1);
                tracing::debug!("closing an idle connection");
                false
            }
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
    open: Arc<AtomicUsize>,
}

impl Running {
    /// Stop accepting, let in-flight requests finish (at most the grace period), close.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Connections open now (accepted and not yet closed, upgraded ones included).
    #[allow(dead_code)] // the tests watch the cap with it
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// Serve `router` on `listener` (over TLS, with HSTS, when `tls` is given) until stopped.
pub fn serve(
    name: &'static str,
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    limits: Limits,
) -> std::io::Result<Running> {
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);
    let max_connections = (limits.max_connections as usize).clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max_connections));
    let open = Arc::new(AtomicUsize::new(0));
    let router = match tls {
        // Browsers that once reached us over HTTPS never fall back to plain HTTP.
        Some(_) => router.layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        )),
        None => router,
    };
    let builder = Arc::new(builder(&limits));
    let span = tracing::info_span!("service", service = name);
    let counter = Arc::clone(&open);
    let task = tokio::spawn(
        async move {
            let mut connections = JoinSet::new();
            loop {
                // At the cap, stop accepting: new connections wait in the backlog.
                let permit = tokio::select! {
                    permit = Arc::clone(&slots).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    _ = stopped.changed() => break,
                };
                let (stream, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            // Out of file descriptors, most likely: give closing ones a moment.
                            tracing::warn!(%error, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = stopped.changed() => break,
                };
                let _ = stream.set_nodelay(true);
                let stream = Slotted::new(stream, permit, name, Arc::clone(&counter));
                let router = router.clone();
                let builder = Arc::clone(&builder);
                let tls = tls.clone();
                let stop = stopped.clone();
                connections.spawn(
                    connection(stream, peer, router, builder, tls, stop, limits).in_current_span(),
                );
                // Reap finished connections so the set does not grow.
                while connections.try_join_next().is_some() {}
            }
            drop(listener);
            tracing::info!("stopped accepting; waiting for in-flight requests");
            // Connections finish on their own within `grace`; past it they are closed.
            if tokio::time::timeout(limits.grace + Duration::from_millis(100), async {
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
    Ok(Running {
        addr,
        stop,
        task,
        open,
    })
}

/// The HTTP/1.1 + HTTP/2 connection builder with the limits' timers.
fn builder(limits: &Limits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEP_ALIVE)
        .keep_alive_timeout(H2_KEEP_ALIVE);
    builder
}

/// Serve one accepted connection: the TLS handshake (bounded), then HTTP until the
/// client leaves, the connection idles out, or the server stops.
async fn connection(
    stream: Slotted,
    peer: SocketAddr,
    router: Router,
    builder: Arc<Builder<TokioExecutor>>,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
    limits: Limits,
) {
    let activity = Activity::default();
    // Handlers (the login throttle) and proxies read the peer as axum's ConnectInfo.
    let service = TowerToHyperService::new(
        Extension(ConnectInfo(peer)).layer(tracked(router, activity.clone())),
    );
    let idle = activity.idle(limits.header_read_timeout, limits.idle_timeout);
    match tls {
        Some(acceptor) => {
            match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(stream)).await
            {
                Ok(Ok(stream)) => {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    drive!(conn, stop, idle, limits.grace);
                }
                Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
                Err(_) => {
                    metrics::counter!("pulse_connection_timeouts_total", "phase" => "tls_handshake")
                        .increment(1);
                    tracing::debug!(%peer, "TLS handshake timed out");
                }
            }
        }
        None => {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            drive!(conn, stop, idle, limits.grace);
        }
    }
}

/// Count hyper's header-read timeouts (the other connection errors are the client's
/// business and only logged).
fn record_error(error: &(dyn std::error::Error + 'static)) {
    if error
        .downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_timeout)
    {
        metrics::counter!("pulse_connection_timeouts_total", "phase" => "header_read").increment(1);
    }
}

/// A connection's requests in flight (an answer counts until its body has been sent)
/// and when the last one ended. A request touches two atomics; only the connection's
/// idle timer reads them, when it fires (no wake-up, no timer reset per request).
#[derive(Debug, Clone)]
struct Activity(Arc<ActivityState>);

#[derive(Debug)]
struct ActivityState {
    in_flight: AtomicUsize,
    /// When the last request ended, in microseconds after `epoch`; 0 before any began.
    last_end: AtomicU64,
    epoch: Instant,
}

impl Default for Activity {
    fn default() -> Self {
        Self(Arc::new(ActivityState {
            in_flight: AtomicUsize::new(0),
            last_end: AtomicU64::new(0),
            epoch: Instant::now(),
        }))
    }
}

impl Activity {
    fn start(&self) -> InFlight {
        self.0.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    fn end(&self) {
        let state = &*self.0;
        let since = Instant::now().saturating_duration_since(state.epoch);
        // At least 1: 0 means "no request yet".
        let micros = u64::try_from(since.as_micros()).unwrap_or(u64::MAX).max(1);
        state.last_end.fetch_max(micros, Ordering::Relaxed);
        // After the time, so that the timer seeing none in flight sees when it ended.
        state.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Resolves once the connection has had no request in flight for `first` (before
    /// its first request) or `then` (after one ended).
    ///
    /// The timer looks at least every `then`: a request that ends while it sleeps is
    /// then seen no later than its own deadline.
    async fn idle(&self, first: Duration, then: Duration) {
        let state = &*self.0;
        let start = Instant::now();
        let mut deadline = start + first.min(then);
        loop {
            tokio::time::sleep_until(deadline).await;
            let now = Instant::now();
            let due = if state.in_flight.load(Ordering::Acquire) > 0 {
                // Busy (a long download, a slow upstream).
                now + then
            } else {
                match state.last_end.load(Ordering::Relaxed) {
                    0 => start + first,
                    ended => state.epoch + Duration::from_micros(ended) + then,
                }
            };
            if due <= now {
                return;
            }
            deadline = due.min(now + then);
        }
    }
}

/// `router`, counting each request in flight in `activity`.
fn tracked(
    router: Router,
    activity: Activity,
) -> impl tower::Service<
    axum::http::Request<hyper::body::Incoming>,
    Response = axum::http::Response<TrackedBody>,
    Error = std::convert::Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static {
    ServiceExt::<axum::http::Request<hyper::body::Incoming>>::map_future(router, move |answer| {
        let in_flight = activity.start();
        async move {
            let response: axum::response::Response = answer.await?;
            Ok(response.map(|body| TrackedBody {
                inner: body,
                _in_flight: in_flight,
            }))
        }
    })
}

/// One request in flight; dropping it (with the answer's body) ends it.
#[derive(Debug)]
struct InFlight(Activity);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// An answer's body, keeping its request in flight until hyper has sent (or dropped) it.
struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// An accepted socket holding one of the listener's connection slots: the slot frees
/// when the socket closes, also after a WebSocket upgrade took it over.
struct Slotted {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    listener: &'static str,
    open: Arc<AtomicUsize>,
}

impl Slotted {
    fn new(
        stream: TcpStream,
        slot: OwnedSemaphorePermit,
        listener: &'static str,
        open: Arc<AtomicUsize>,
    ) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("pulse_open_connections", "listener" => listener).increment(1.0);
        Self {
            stream,
            _slot: slot,
            listener,
            open,
        }
    }
}

impl Drop for Slotted {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("pulse_open_connections", "listener" => self.listener).decrement(1.0);
    }
}

impl AsyncRead for Slotted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Slotted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
