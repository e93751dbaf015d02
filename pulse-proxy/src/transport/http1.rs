//! The HTTP/1.1 engine of [`HttpTransport`](super::HttpTransport) for `http://`
//! upstreams: hyper's connection API with the pool kept here, and every upstream
//! connection driven by the task that uses it.
//!
//! hyper-util's legacy client spawns a task per connection and hands each request to it
//! over a channel: two task wake-ups per request, often across worker threads, plus a
//! boxed request future of a few kilobytes. Here a request checks an idle connection
//! out of the pool, and its [`TransportFuture`](super::TransportFuture) (then its
//! [`TransportBody`](super::TransportBody)) polls the connection itself, so the request,
//! the upstream's socket and the response body all move on the client's own task. The
//! connection goes back to the pool once its response body has ended.
//!
//! An idle connection is not polled: a checkout polls it once (an upstream that closed
//! it is seen there) and drops it if it is closed, not ready for a request, or idle
//! longer than the idle timeout. A reaper task closes the expired ones in between. A
//! `101 Switching Protocols` response hands its connection to a spawned task, which
//! completes hyper's upgrade. An exchange whose client goes away (the future or the
//! body dropped early) is finished by a task within [`FINISH_TIME`] and
//! [`FINISH_BYTES`], with its in-flight permit, so that the connection is kept: hyper
//! closes a connection whose response future or body is dropped.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    future::{Future, poll_fn},
    hash::{Hash, Hasher},
    pin::Pin,
    sync::{Arc, Mutex, Weak},
    task::{Context, Poll, Waker},
    time::Duration,
};

use http::{
    HeaderValue, Request, Response, StatusCode, Uri, Version,
    header::HOST,
    uri::{Authority, PathAndQuery, Scheme},
};
use http_body::Body;
use hyper::{
    body::Incoming,
    client::conn::{
        TrySendError,
        http1::{Builder, SendRequest},
    },
};
use tokio::{sync::OwnedSemaphorePermit, time::Instant};
use tower_service::Service;

use crate::error::{BoxError, ProxyError};

/// The connection future, boxed once per connection (hyper does not name its
/// upgradeable connection type).
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// The response future of one request, boxed once per request.
pub(super) type Exchange = Pin<
    Box<
        dyn Future<
                Output = Result<
                    (
                        Response<Incoming>,
                        Option<Lease>,
                        Option<OwnedSemaphorePermit>,
                    ),
                    ProxyError,
                >,
            > + Send,
    >,
>;

/// A connection checked out for one request, held by the response body until it ends.
pub(super) type Lease = Box<dyn Leased>;

/// What the response body does with its connection, whatever the request body type.
pub(super) trait Leased: Send {
    /// Drives the connection; `false` once it has closed.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool;
    /// Back to the pool, if it can take another request.
    fn release(self: Box<Self>);
    /// The response body was dropped before its end (the client went away): a task
    /// reads the rest (bounded) so that the connection can go back to the pool. It
    /// holds `permit`, so the in-flight cap still counts the exchange.
    fn finish(self: Box<Self>, body: Incoming, permit: Option<OwnedSemaphorePermit>);
}

/// How long, and how many more body bytes, a task may spend finishing an exchange its
/// client abandoned, to keep the connection; past either the connection is closed.
const FINISH_TIME: Duration = Duration::from_secs(2);
const FINISH_BYTES: usize = 64 * 1024;

/// What hyper answers to one request: the response head, or the request back.
type Answer<B> = Result<Response<Incoming>, TrySendError<Request<B>>>;

/// A response future of hyper's, boxed so that an abandoned exchange can hand it on.
type Pending<B> = Pin<Box<dyn Future<Output = Answer<B>> + Send>>;

/// The pool key: the upstream's authority (the engine takes `http://` only), lowercased
/// once, so that a lookup hashes its bytes in one call and compares them with one
/// `memcmp` (`Authority`'s own `Hash` and `Eq` fold the case byte by byte).
#[derive(Clone, Debug)]
struct Key(Authority);

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        // Both sides are lowercase: bytewise equality is `Authority`'s equality.
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for Key {}

impl Key {
    fn new(authority: &Authority) -> Result<Self, ProxyError> {
        let text = authority.as_str();
        if !text.bytes().any(|b| b.is_ascii_uppercase()) {
            return Ok(Self(authority.clone()));
        }
        Authority::try_from(text.to_ascii_lowercase())
            .map(Self)
            .map_err(|_| ProxyError::Protocol)
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0.as_str().as_bytes());
    }
}

/// The pool and the connector, shared by a transport's clones.
pub(super) struct Http1Pool<B> {
    inner: Arc<Inner<B>>,
}

impl<B> Clone for Http1Pool<B> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// Opens a connection and hands it to hyper, boxed once per connection.
type Connect<B> = Box<
    dyn Fn(
            Uri,
        )
            -> Pin<Box<dyn Future<Output = Result<(SendRequest<B>, Driver), ProxyError>> + Send>>
        + Send
        + Sync,
>;

struct Inner<B> {
    connect: Connect<B>,
    idle: Mutex<Idle<B>>,
    max_idle_per_host: usize,
    idle_timeout: Option<Duration>,
}

/// A host's idle connections, each with the time it went idle; the newest last.
type IdleList<B> = VecDeque<(Box<Conn<B>>, Instant)>;

struct Idle<B> {
    /// foldhash: SipHash of the authority was 2 % of a gateway request's instructions.
    hosts: HashMap<Key, IdleList<B>, foldhash::fast::RandomState>,
    reaper: bool,
}

/// One upstream connection: hyper's sender and the connection future it needs polled.
struct Conn<B> {
    send: SendRequest<B>,
    driver: Option<Driver>,
    key: Key,
    pool: Weak<Inner<B>>,
}

impl<B> Conn<B> {
    fn drive_with(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(driver) = self.driver.as_mut() else {
            return false;
        };
        match driver.as_mut().poll(cx) {
            Poll::Pending => true,
            Poll::Ready(result) => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "upstream connection closed");
                }
                self.driver = None;
                false
            }
        }
    }

    /// Whether it can take a request now: open and idle.
    fn reusable(&mut self, cx: &mut Context<'_>) -> bool {
        self.drive_with(cx) && self.send.is_ready()
    }
}

impl<B: Send + 'static> Leased for Conn<B> {
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        self.drive_with(cx)
    }

    fn finish(self: Box<Self>, body: Incoming, permit: Option<OwnedSemaphorePermit>) {
        spawn_finish(self, None, Some(body), permit);
    }

    fn release(mut self: Box<Self>) {
        // Lets hyper finish the exchange (it then wants the next request); the next
        // checkout polls it with a real waker.
        if !self.reusable(&mut Context::from_waker(Waker::noop())) {
            return;
        }
        if let Some(pool) = self.pool.upgrade() {
            pool.check_in(self);
        }
    }
}

impl<B> Http1Pool<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// A pool over `connector` (a hyper-util connector: plain TCP, a Unix socket).
    pub(super) fn new<K>(
        connector: K,
        max_idle_per_host: usize,
        idle_timeout: Option<Duration>,
    ) -> Self
    where
        K: Service<Uri> + Clone + Send + Sync + 'static,
        K::Response: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
        K::Future: Send,
        K::Error: Into<BoxError>,
    {
        let builder = Builder::new();
        let connect: Connect<B> = Box::new(move |uri| {
            let call = connector.clone().call(uri);
            let builder = builder.clone();
            Box::pin(async move {
                let io = call.await.map_err(|e| {
                    let e: BoxError = e.into();
                    tracing::debug!(error = %e, "upstream connect failed");
                    ProxyError::classify_connect(&*e)
                })?;
                let (send, conn) = builder
                    .handshake::<_, B>(io)
                    .await
                    .map_err(|e| ProxyError::classify(&e))?;
                Ok((send, Box::pin(conn.with_upgrades()) as Driver))
            })
        });
        Self {
            inner: Arc::new(Inner {
                connect,
                idle: Mutex::new(Idle {
                    hosts: HashMap::default(),
                    reaper: false,
                }),
                max_idle_per_host,
                idle_timeout,
            }),
        }
    }

    /// The exchange of one request: a pooled (or new) connection, the request written
    /// and the response head read, all polled by the caller's task.
    pub(super) fn send(&self, req: Request<B>, permit: OwnedSemaphorePermit) -> Exchange {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.exchange(req, permit).await })
    }
}

impl<B> Inner<B> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Idle<B>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn expired(&self, since: Instant, now: Instant) -> bool {
        self.idle_timeout
            .is_some_and(|t| now.saturating_duration_since(since) >= t)
    }
}

impl<B> Inner<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    async fn exchange(
        self: Arc<Self>,
        mut req: Request<B>,
        permit: OwnedSemaphorePermit,
    ) -> Result<
        (
            Response<Incoming>,
            Option<Lease>,
            Option<OwnedSemaphorePermit>,
        ),
        ProxyError,
    > {
        let key = prepare(&mut req)?;
        let mut permit = Some(permit);
        loop {
            let (mut conn, reused) = match poll_fn(|cx| Poll::Ready(self.check_out(&key, cx))).await
            {
                Some(conn) => (conn, true),
                None => (self.connect(&key).await?, false),
            };
            let response: Pending<B> = Box::pin(conn.send.try_send_request(req));
            let mut flight = InFlight {
                exchange: Some((conn, response)),
                permit: permit.take(),
            };
            let result = poll_fn(|cx| flight.poll(cx)).await;
            let (conn, held) = flight.into_parts();
            permit = held;
            let (Some(mut conn), Some(result)) = (conn, result) else {
                return Err(ProxyError::Protocol);
            };
            match result {
                Ok(res) if res.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    // hyper completes the upgrade once the connection future runs on.
                    if let Some(driver) = conn.driver.take() {
                        tokio::spawn(driver);
                    }
                    return Ok((res, None, permit));
                }
                Ok(res) => return Ok((res, Some(conn as Lease), permit)),
                Err(mut e) => match e.take_message() {
                    // Never written: a pooled connection that closed as it was taken.
                    Some(again) if reused => req = again,
                    _ => {
                        let err = e.into_error();
                        tracing::debug!(error = %err, "upstream request failed");
                        return Err(ProxyError::classify(&err));
                    }
                },
            }
        }
    }

    async fn connect(self: &Arc<Self>, key: &Key) -> Result<Box<Conn<B>>, ProxyError> {
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(key.0.clone())
            .path_and_query("/")
            .build()
            .map_err(|_| ProxyError::Protocol)?;
        let (send, driver) = (self.connect)(uri).await?;
        Ok(Box::new(Conn {
            send,
            driver: Some(driver),
            key: key.clone(),
            pool: Arc::downgrade(self),
        }))
    }

    fn check_out(&self, key: &Key, cx: &mut Context<'_>) -> Option<Box<Conn<B>>> {
        let now = Instant::now();
        let mut idle = self.lock();
        let list = idle.hosts.get_mut(key)?;
        while list
            .front()
            .is_some_and(|(_, since)| self.expired(*since, now))
        {
            list.pop_front();
        }
        // The most recently used first: warm, and the least likely to be closed.
        while let Some((mut conn, _)) = list.pop_back() {
            if conn.reusable(cx) {
                return Some(conn);
            }
        }
        None
    }
}

impl<B: Send + 'static> Inner<B> {
    fn check_in(self: Arc<Self>, conn: Box<Conn<B>>) {
        let mut idle = self.lock();
        let list = idle.hosts.entry(conn.key.clone()).or_default();
        if list.len() >= self.max_idle_per_host {
            return;
        }
        list.push_back((conn, Instant::now()));
        if !idle.reaper {
            idle.reaper = self.start_reaper();
        }
    }

    /// Closes expired and closed idle connections every idle timeout, while the pool
    /// lives. `false` when there is nothing to reap or no runtime to reap on.
    fn start_reaper(self: &Arc<Self>) -> bool {
        let Some(period) = self.idle_timeout else {
            return false;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let pool = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval_at(Instant::now() + period, period);
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                pool.reap(Instant::now());
            }
        });
        true
    }

    fn reap(&self, now: Instant) {
        let mut cx = Context::from_waker(Waker::noop());
        let mut idle = self.lock();
        for list in idle.hosts.values_mut() {
            list.retain_mut(|(conn, since)| !self.expired(*since, now) && conn.reusable(&mut cx));
        }
        idle.hosts.retain(|_, list| !list.is_empty());
    }
}

/// An exchange between its request and its response head. Dropped before the head
/// (the client went away), it hands the connection, hyper's response future and the
/// in-flight permit to a task that finishes the exchange: dropping hyper's response
/// future would make hyper close the connection.
struct InFlight<B: Send + 'static> {
    exchange: Option<(Box<Conn<B>>, Pending<B>)>,
    permit: Option<OwnedSemaphorePermit>,
}

impl<B: Send + 'static> InFlight<B> {
    /// `None` once the exchange has been taken apart (never polled then).
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Answer<B>>> {
        match self.exchange.as_mut() {
            Some((conn, response)) => poll_exchange(conn, response, cx).map(Some),
            None => Poll::Ready(None),
        }
    }

    /// The connection and the permit, once the response head is in.
    fn into_parts(mut self) -> (Option<Box<Conn<B>>>, Option<OwnedSemaphorePermit>) {
        let conn = self.exchange.take().map(|(conn, _)| conn);
        (conn, self.permit.take())
    }
}

impl<B: Send + 'static> Drop for InFlight<B> {
    fn drop(&mut self) {
        if let Some((conn, response)) = self.exchange.take() {
            spawn_finish(conn, Some(response), None, self.permit.take());
        }
    }
}

fn poll_exchange<B>(
    conn: &mut Conn<B>,
    response: &mut Pending<B>,
    cx: &mut Context<'_>,
) -> Poll<Answer<B>> {
    if let Poll::Ready(result) = response.as_mut().poll(cx) {
        return Poll::Ready(result);
    }
    // Writes the request and reads the head; a connection that closes fails the
    // request, which the second poll then sees.
    conn.drive_with(cx);
    response.as_mut().poll(cx)
}

/// Finishes an abandoned exchange on a task of its own (the response head if it has
/// not come yet, then the body) within [`FINISH_TIME`] and [`FINISH_BYTES`], and puts
/// the connection back; otherwise, or with no runtime, the connection is closed.
fn spawn_finish<B: Send + 'static>(
    mut conn: Box<Conn<B>>,
    response: Option<Pending<B>>,
    body: Option<Incoming>,
    permit: Option<OwnedSemaphorePermit>,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let finish = async move {
            let mut body = match (response, body) {
                (Some(mut response), _) => {
                    match poll_fn(|cx| poll_exchange(&mut conn, &mut response, cx)).await {
                        Ok(res) if res.status() != StatusCode::SWITCHING_PROTOCOLS => {
                            res.into_body()
                        }
                        _ => return,
                    }
                }
                (None, Some(body)) => body,
                (None, None) => return,
            };
            let mut read = 0;
            loop {
                let frame = poll_fn(|cx| {
                    if let Poll::Ready(frame) = Pin::new(&mut body).poll_frame(cx) {
                        return Poll::Ready(frame);
                    }
                    conn.drive_with(cx);
                    Pin::new(&mut body).poll_frame(cx)
                })
                .await;
                match frame {
                    None => break,
                    Some(Ok(frame)) => {
                        read += frame.data_ref().map_or(0, bytes::Buf::remaining);
                        if read > FINISH_BYTES {
                            return;
                        }
                    }
                    Some(Err(_)) => return,
                }
            }
            drop(body);
            conn.release();
        };
        let _ = tokio::time::timeout(FINISH_TIME, finish).await;
        drop(permit);
    });
}

/// Checks the request as hyper-util's client does for HTTP/1 (version, absolute URI),
/// sets `Host` when it is missing and puts the target in origin form (authority form
/// for `CONNECT`). Returns the pool key.
fn prepare<B>(req: &mut Request<B>) -> Result<Key, ProxyError> {
    match req.version() {
        Version::HTTP_11 | Version::HTTP_10 => {}
        _ => return Err(ProxyError::Protocol),
    }
    if req.uri().scheme() != Some(&Scheme::HTTP) {
        return Err(ProxyError::Protocol);
    }
    let Some(authority) = req.uri().authority() else {
        return Err(ProxyError::Protocol);
    };
    let key = Key::new(authority)?;
    let authority = &key.0;
    if !req.headers().contains_key(HOST) {
        let host = match authority.port_u16() {
            Some(80) | None => HeaderValue::from_str(authority.host()),
            Some(port) => HeaderValue::try_from(format!("{}:{port}", authority.host())),
        }
        .map_err(|_| ProxyError::Protocol)?;
        req.headers_mut().insert(HOST, host);
    }
    let target = if req.method() == http::Method::CONNECT {
        Uri::from(authority.clone())
    } else {
        match req.uri().path_and_query() {
            Some(path) if path.as_str() != "/" => Uri::from(path.clone()),
            _ => Uri::from(PathAndQuery::from_static("/")),
        }
    };
    *req.uri_mut() = target;
    Ok(key)
}

impl<B> fmt::Debug for Http1Pool<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http1Pool")
            .field("max_idle_per_host", &self.inner.max_idle_per_host)
            .field("idle_timeout", &self.inner.idle_timeout)
            .finish_non_exhaustive()
    }
}

/// Whether the HTTP/1 engine takes this request: a plain `http://` URI.
pub(super) fn is_plain_http(uri: &Uri) -> bool {
    uri.scheme() == Some(&Scheme::HTTP)
}
