//! The HTTP/1 engine of `HttpTransport` against a hand-written upstream that counts its
//! connections: reuse, what is never reused, the idle cap and the idle timeout.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use pulse_proxy::transport::{HttpTransport, TransportBody, TransportConfig};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tower::ServiceExt;

#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    closed: AtomicUsize,
    requests: AtomicUsize,
}

struct Upstream {
    addr: SocketAddr,
    counts: Arc<Counts>,
    /// `/slow` answers once it gets a permit.
    release: Arc<Semaphore>,
}

impl Upstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let release = Arc::new(Semaphore::new(0));
        let (c, r) = (Arc::clone(&counts), Arc::clone(&release));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, Arc::clone(&c), Arc::clone(&r)));
            }
        });
        Self {
            addr,
            counts,
            release,
        }
    }

    fn accepted(&self) -> usize {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    fn closed(&self) -> usize {
        self.counts.closed.load(Ordering::SeqCst)
    }

    fn request(&self, method: Method, path: &str) -> Request<Full<Bytes>> {
        Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .body(Full::default())
            .unwrap()
    }
}

/// HTTP/1.1 keep-alive, requests without bodies, answers by path.
async fn serve(mut stream: TcpStream, counts: Arc<Counts>, release: Arc<Semaphore>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    counts.closed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        counts.requests.fetch_add(1, Ordering::SeqCst);
        let mut words = head.split_whitespace();
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let mut close_after = false;
        let response: Vec<u8> = match path {
            "/big" => {
                let mut r = b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n".to_vec();
                r.resize(r.len() + 1_048_576, b'x');
                r
            }
            "/small" => {
                let mut r = b"HTTP/1.1 200 OK\r\ncontent-length: 8192\r\n\r\n".to_vec();
                r.resize(r.len() + 8192, b'x');
                r
            }
            "/empty" => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
            "/close-soon" => {
                close_after = true;
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()
            }
            "/slow" => {
                release.acquire().await.unwrap().forget();
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()
            }
            _ if method == "HEAD" => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n".to_vec(),
            _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        };
        if stream.write_all(&response).await.is_err() {
            return;
        }
        if close_after {
            // The keep-alive timeout of a server, run out while the connection idles.
            tokio::time::sleep(Duration::from_millis(20)).await;
            // Closed (the FIN sent) before it is counted.
            drop(stream);
            counts.closed.fetch_add(1, Ordering::SeqCst);
            return;
        }
    }
}

type Transport = HttpTransport<Full<Bytes>>;

async fn send(transport: &Transport, req: Request<Full<Bytes>>) -> (StatusCode, Bytes) {
    let res = transport.clone().oneshot(req).await.unwrap();
    let status = res.status();
    (status, res.into_body().collect().await.unwrap().to_bytes())
}

async fn head_only(transport: &Transport, req: Request<Full<Bytes>>) -> Response<TransportBody> {
    transport.clone().oneshot(req).await.unwrap()
}

/// Waits (bounded) until `done` holds: the upstream sees closes asynchronously.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let up = Upstream::start().await;
    let transport = Transport::new(TransportConfig::new());
    for _ in 0..20 {
        let (status, body) = send(&transport, up.request(Method::GET, "/ok")).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
    }
    assert_eq!(up.accepted(), 1);
    assert_eq!(up.counts.requests.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn bodies_that_end_early_give_their_connection_back() {
    let up = Upstream::start().await;
    let transport = Transport::new(TransportConfig::new());
    for _ in 0..3 {
        let (status, body) = send(&transport, up.request(Method::HEAD, "/ok")).await;
        assert_eq!((status, body.len()), (StatusCode::OK, 0));
        let (status, _) = send(&transport, up.request(Method::GET, "/empty")).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        // A server does not poll a body that says it is empty: only dropped.
        drop(head_only(&transport, up.request(Method::HEAD, "/ok")).await);
    }
    let (status, _) = send(&transport, up.request(Method::GET, "/big")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(up.accepted(), 1);
}

/// Past the 64 KiB a task reads for a client that went away.
#[tokio::test]
async fn a_large_body_dropped_unread_closes_its_connection() {
    let up = Upstream::start().await;
    let transport = Transport::new(TransportConfig::new());
    let res = head_only(&transport, up.request(Method::GET, "/big")).await;
    assert_eq!(res.status(), StatusCode::OK);
    drop(res);
    eventually("the upstream sees the close", || up.closed() == 1).await;
    let (status, body) = send(&transport, up.request(Method::GET, "/ok")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
    assert_eq!(up.accepted(), 2);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used() {
    let up = Upstream::start().await;
    let transport = Transport::new(TransportConfig::new());
    for round in 1..=3 {
        let (status, _) = send(&transport, up.request(Method::GET, "/close-soon")).await;
        assert_eq!(status, StatusCode::OK);
        eventually("the upstream closes", || up.closed() == round).await;
    }
    assert_eq!(up.accepted(), 3);
    let (status, _) = send(&transport, up.request(Method::GET, "/ok")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(up.accepted(), 4);
}

#[tokio::test]
async fn idle_connections_above_the_cap_are_closed() {
    let up = Upstream::start().await;
    let transport = Transport::new(TransportConfig::new().with_max_idle_per_host(1));
    let concurrent = |n: usize| {
        let calls: Vec<_> = (0..n)
            .map(|_| {
                let (t, req) = (transport.clone(), up.request(Method::GET, "/slow"));
                tokio::spawn(async move { send(&t, req).await.0 })
            })
            .collect();
        let release = Arc::clone(&up.release);
        let counts = Arc::clone(&up.counts);
        async move {
            let before = counts.requests.load(Ordering::SeqCst);
            eventually("the upstream has every request", || {
                counts.requests.load(Ordering::SeqCst) >= before + n
            })
            .await;
            release.add_permits(n);
            for call in calls {
                assert_eq!(call.await.unwrap(), StatusCode::OK);
            }
        }
    };
    concurrent(3).await;
    assert_eq!(up.accepted(), 3);
    eventually("two of three are closed", || up.closed() == 2).await;
    // One kept: of two at once, one reuses it.
    concurrent(2).await;
    assert_eq!(up.accepted(), 4);
}

#[tokio::test]
async fn an_idle_connection_past_the_idle_timeout_is_closed() {
    let up = Upstream::start().await;
    let transport =
        Transport::new(TransportConfig::new().with_idle_timeout(Some(Duration::from_millis(100))));
    let (status, _) = send(&transport, up.request(Method::GET, "/ok")).await;
    assert_eq!(status, StatusCode::OK);
    // The reaper closes it without another request.
    eventually("the reaper closes it", || up.closed() == 1).await;
    let (status, _) = send(&transport, up.request(Method::GET, "/ok")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(up.accepted(), 2);
}

#[tokio::test]
async fn dropping_the_transport_closes_its_idle_connections() {
    let up = Upstream::start().await;
    let transport = Transport::new(TransportConfig::new());
    let (status, _) = send(&transport, up.request(Method::GET, "/ok")).await;
    assert_eq!(status, StatusCode::OK);
    drop(transport);
    eventually("the idle connection is closed", || up.closed() == 1).await;
}

#[tokio::test]
async fn an_http2_request_over_the_http1_engine_is_refused() {
    let up = Upstream::start().await;
    let transport = Transport::new(TransportConfig::new());
    let mut req = up.request(Method::GET, "/ok");
    *req.version_mut() = http::Version::HTTP_2;
    let err = transport.clone().oneshot(req).await.unwrap_err();
    assert_eq!(err, pulse_proxy::ProxyError::Protocol);
    assert_eq!(up.accepted(), 0);
}

#[tokio::test]
async fn authorities_differing_in_case_share_their_connections() {
    let up = Upstream::start().await;
    let transport = Transport::new(TransportConfig::new());
    let port = up.addr.port();
    for host in ["localhost", "LocalHost", "LOCALHOST"] {
        let req = Request::get(format!("http://{host}:{port}/ok"))
            .body(Full::default())
            .unwrap();
        let (status, _) = send(&transport, req).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn a_small_body_dropped_unread_keeps_its_connection() {
    let up = Upstream::start().await;
    let transport = Transport::new(TransportConfig::new());
    for _ in 0..3 {
        let res = head_only(&transport, up.request(Method::GET, "/small")).await;
        assert_eq!(res.status(), StatusCode::OK);
        drop(res);
        // A task reads the rest and puts the connection back, holding the permit.
        let max = TransportConfig::new().max_in_flight();
        eventually("the task has read the body", || {
            transport.available() == max
        })
        .await;
    }
    let (status, _) = send(&transport, up.request(Method::GET, "/ok")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(up.accepted(), 1);
    assert_eq!(up.closed(), 0);
}

/// Sends `/slow` and goes away once the upstream has it, before the answer.
async fn abandon_slow_request(up: &Upstream, transport: &Transport) {
    let abandoned = {
        let (t, req) = (transport.clone(), up.request(Method::GET, "/slow"));
        tokio::spawn(async move { send(&t, req).await })
    };
    let counts = Arc::clone(&up.counts);
    eventually("the upstream has the request", || {
        counts.requests.load(Ordering::SeqCst) == 1
    })
    .await;
    abandoned.abort();
    let _ = abandoned.await;
}

/// The client goes away before the answer: a task waits for it (holding the in-flight
/// permit meanwhile) and keeps the connection.
#[tokio::test]
async fn an_exchange_abandoned_before_its_answer_keeps_its_connection() {
    let up = Upstream::start().await;
    let transport = Transport::new(TransportConfig::new().with_max_in_flight(1));
    abandon_slow_request(&up, &transport).await;
    // Still in flight: the cap counts it.
    let err = transport
        .clone()
        .oneshot(up.request(Method::GET, "/ok"))
        .await
        .unwrap_err();
    assert_eq!(err, pulse_proxy::ProxyError::PoolExhausted);
    up.release.add_permits(1);
    eventually("the task has the answer", || transport.available() == 1).await;
    let (status, _) = send(&transport, up.request(Method::GET, "/ok")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(up.accepted(), 1);
    assert_eq!(up.closed(), 0);
}

/// An abandoned exchange whose answer does not come within the bound (2 s) is closed,
/// and its permit freed.
#[tokio::test(start_paused = true)]
async fn an_abandoned_exchange_is_given_up_after_its_bound() {
    let up = Upstream::start().await;
    let transport = Transport::new(TransportConfig::new().with_max_in_flight(1));
    abandon_slow_request(&up, &transport).await;
    tokio::time::sleep(Duration::from_millis(1900)).await;
    assert_eq!(transport.available(), 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(transport.available(), 1);
    // The upstream, answering at last, finds the connection closed.
    up.release.add_permits(1);
    eventually("the connection is closed", || up.closed() == 1).await;
}
