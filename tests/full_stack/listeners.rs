//! The listeners' limits (issue 9, defect 6): header-read timeout (slowloris), idle
//! timeout, TLS handshake timeout, connection cap.
//!
//! The accept loop is driven over real loopback sockets with paused time: when every
//! task waits, tokio moves the clock to the next timer, so a 10 s timeout passes at
//! once and the time it took is exact. A last test checks that every listener of the
//! real stack applies the configured limits.

use std::future::Future;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::harness::*;
use crate::stack::serve::{Limits, Running, serve};

const HEADER_READ: Duration = Duration::from_secs(10);
const IDLE: Duration = Duration::from_secs(4);
const TLS_HANDSHAKE: Duration = Duration::from_secs(3);
/// A bound far beyond every timeout above, so that a missing timeout fails instead of hanging.
const NEVER: Duration = Duration::from_secs(3600);

fn limits() -> Limits {
    Limits {
        header_read_timeout: HEADER_READ,
        idle_timeout: IDLE,
        tls_handshake_timeout: TLS_HANDSHAKE,
        max_connections: 64,
        grace: Duration::from_millis(100),
    }
}

/// `/` answers `ok`; `/stream` sends five chunks, one every `IDLE + 1 s`; `/hold`
/// answers once `release` turns true.
fn router(release: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/stream",
            get(|| async {
                let chunks = futures_util::stream::unfold(0u8, |sent| async move {
                    if sent == 5 {
                        return None;
                    }
                    tokio::time::sleep(IDLE + Duration::from_secs(1)).await;
                    Some((
                        Ok::<_, std::io::Error>(Bytes::from(vec![b'a' + sent])),
                        sent + 1,
                    ))
                });
                Body::from_stream(chunks)
            }),
        )
        .route(
            "/hold",
            get(move || {
                let mut release = release.clone();
                async move {
                    let _ = release.wait_for(|released| *released).await;
                    "held"
                }
            }),
        )
}

async fn server(limits: Limits) -> (Running, watch::Sender<bool>) {
    let (release, released) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let running = serve("test", listener, router(released), None, limits).expect("serve");
    (running, release)
}

/// Read until the server closes the connection (EOF or reset); what it sent.
async fn until_closed(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return seen,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// `future`'s output and how much (paused) time it took; panics past [`NEVER`].
async fn timed<T>(future: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let output = tokio::time::timeout(NEVER, future)
        .await
        .expect("the server closes the connection");
    (output, started.elapsed())
}

/// Read one `Connection: keep-alive` answer of `ok` (Content-Length 2).
async fn read_ok(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.ends_with(b"\r\n\r\nok") {
        let n = stream.read(&mut buf).await.expect("read");
        assert_ne!(n, 0, "closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Slowloris: half a request head, then nothing. The connection is closed at the
/// header-read timeout, not left open.
#[tokio::test(start_paused = true)]
async fn half_a_request_head_is_cut_off_at_the_header_read_timeout() {
    let (server, _release) = server(limits()).await;
    let mut client = TcpStream::connect(server.addr).await.expect("connect");
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: pulse\r\nX-Slow: ")
        .await
        .expect("write");
    let (answer, waited) = timed(until_closed(&mut client)).await;
    assert!(waited >= HEADER_READ, "closed after {waited:?}");
    assert!(waited < HEADER_READ + IDLE, "closed after {waited:?}");
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "{answer:?}"
    );
    // Nothing else is held: the slot is free again.
    wait_for_open(&server, 0).await;
    server.stop().await;
}

/// A connection that never sends a byte (no request, no HTTP/2 preface) is closed at
/// the header-read timeout too.
#[tokio::test(start_paused = true)]
async fn a_silent_connection_is_closed_at_the_header_read_timeout() {
    let (server, _release) = server(limits()).await;
    let mut client = TcpStream::connect(server.addr).await.expect("connect");
    let (_, waited) = timed(until_closed(&mut client)).await;
    assert!(waited >= HEADER_READ, "closed after {waited:?}");
    assert!(waited < HEADER_READ + IDLE, "closed after {waited:?}");
    server.stop().await;
}

/// HTTP/1.1 keep-alive: after its answer, a connection that sends no next request is
/// closed at the idle timeout (here shorter than the header-read timeout).
#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_is_closed() {
    let (server, _release) = server(limits()).await;
    let mut client = TcpStream::connect(server.addr).await.expect("connect");
    for _ in 0..2 {
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: pulse\r\n\r\n")
            .await
            .expect("write");
        assert!(read_ok(&mut client).await.starts_with("HTTP/1.1 200"));
    }
    let (rest, waited) = timed(until_closed(&mut client)).await;
    assert!(rest.is_empty(), "{rest:?}");
    assert!(waited >= IDLE, "closed after {waited:?}");
    assert!(waited < HEADER_READ, "closed after {waited:?}");
    server.stop().await;
}

/// HTTP/2 (prior knowledge): a connection with no stream open is closed at the idle
/// timeout; hyper's HTTP/2 server has no idle timer of its own.
#[tokio::test(start_paused = true)]
async fn an_idle_http2_connection_is_closed() {
    let (server, _release) = server(limits()).await;
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("HTTP/2 handshake");
    let connection = tokio::spawn(connection);
    let request = Request::builder()
        .uri(format!("http://{}/", server.addr))
        .body(Full::<Bytes>::default())
        .expect("request");
    let response = sender.send_request(request).await.expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], b"ok");
    // The sender stays alive: only the server can end the connection.
    let (ended, waited) = timed(connection).await;
    assert!(ended.is_ok(), "{ended:?}");
    assert!(waited >= IDLE, "closed after {waited:?}");
    assert!(waited < HEADER_READ, "closed after {waited:?}");
    drop(sender);
    server.stop().await;
}

/// An answer still streaming is a request in flight: the idle timeout does not cut it,
/// however long the pauses between chunks.
#[tokio::test(start_paused = true)]
async fn a_streaming_answer_is_not_idle() {
    let (server, _release) = server(limits()).await;
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("HTTP/1 handshake");
    let connection = tokio::spawn(connection);
    let request = Request::builder()
        .uri("/stream")
        .header("host", "pulse")
        .body(Full::<Bytes>::default())
        .expect("request");
    let (body, waited) = timed(async {
        let response = sender.send_request(request).await.expect("answer");
        assert_eq!(response.status(), StatusCode::OK);
        response
            .into_body()
            .collect()
            .await
            .expect("whole body")
            .to_bytes()
    })
    .await;
    assert_eq!(&body[..], b"abcde");
    assert!(waited >= 5 * (IDLE + Duration::from_secs(1)), "{waited:?}");
    drop(sender);
    let _ = connection.await;
    server.stop().await;
}

/// Connection cap: beyond it new connections are not served while the cap is held
/// (they wait unaccepted, however long), and are served once slots free up.
#[tokio::test(start_paused = true)]
async fn connections_beyond_the_cap_wait_until_a_slot_frees() {
    let cap = 2;
    let (server, release) = server(Limits {
        max_connections: cap,
        ..limits()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..cap {
        let mut client = TcpStream::connect(server.addr).await.expect("connect");
        client
            .write_all(b"GET /hold HTTP/1.1\r\nHost: pulse\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        held.push(client);
    }
    wait_for_open(&server, cap as usize).await;

    // The kernel completes the handshake (backlog); the server does not accept it.
    let mut waiting = TcpStream::connect(server.addr).await.expect("connect");
    waiting
        .write_all(b"GET / HTTP/1.1\r\nHost: pulse\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(NEVER, waiting.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond the cap: {early:?}");
    assert_eq!(server.open_connections(), cap as usize);

    // The held requests end; their connections close; the waiting one is served.
    release.send_replace(true);
    for mut client in held {
        let (answer, _) = timed(until_closed(&mut client)).await;
        assert!(String::from_utf8_lossy(&answer).ends_with("held"));
    }
    let (answer, _) = timed(until_closed(&mut waiting)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
        "{answer}"
    );
    server.stop().await;
}

/// A TLS client that never finishes its handshake is dropped at the handshake timeout.
#[tokio::test(start_paused = true)]
async fn a_stalled_tls_handshake_is_dropped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    stack::tls::generate_self_signed(&cert, &key).expect("certificate");
    let acceptor = stack::tls::acceptor(&cert, &key).expect("acceptor");
    let (release, released) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server =
        serve("test", listener, router(released), Some(acceptor), limits()).expect("serve");
    let mut client = TcpStream::connect(server.addr).await.expect("connect");
    // The first bytes of a ClientHello record, then nothing.
    client.write_all(&[0x16, 0x03, 0x01]).await.expect("write");
    let (_, waited) = timed(until_closed(&mut client)).await;
    assert!(waited >= TLS_HANDSHAKE, "closed after {waited:?}");
    assert!(waited < HEADER_READ, "closed after {waited:?}");
    drop(release);
    server.stop().await;
}

/// Poll (in paused time) until `server` has `open` connections.
async fn wait_for_open(server: &Running, open: usize) {
    tokio::time::timeout(NEVER, async {
        while server.open_connections() != open {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{open} connections open"));
}

/// The flags reach every listener of the real stack: frontend, gateway, metrics and
/// ETL each cut off half a request head at the configured header-read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_of_the_stack_has_a_header_read_timeout() {
    let t = start_overriding(&[
        ("--header-read-timeout-ms", "200"),
        ("--idle-timeout-ms", "60000"),
        ("--max-connections", "16"),
    ])
    .await;
    let backend = t.stack.backend.as_ref().expect("backend");
    let addrs = [
        (
            "frontend",
            t.stack.frontend.as_ref().expect("frontend").addr,
        ),
        ("backend", backend.server.addr),
        ("metrics", backend.metrics.addr),
        ("etl", t.stack.etl.as_ref().expect("etl").server.addr),
    ];
    for (name, addr) in addrs {
        let mut client = TcpStream::connect(addr).await.expect("connect");
        client
            .write_all(b"GET /health HTTP/1.1\r\nHost: pulse\r\n")
            .await
            .expect("write");
        // Only a bound against a hang: the close comes after 200 ms.
        let answer = tokio::time::timeout(DEADLINE, until_closed(&mut client))
            .await
            .unwrap_or_else(|_| panic!("{name}: slowloris connection still open"));
        assert!(
            !String::from_utf8_lossy(&answer).contains(" 200 "),
            "{name}: {answer:?}"
        );
    }
    t.stack.shutdown().await;
}

/// The documented defaults, and limits that make no sense are refused.
#[test]
fn listener_flags_have_documented_defaults_and_refuse_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cli = Cli::try_parse_from_args(args(dir.path()));
    let limits = cli.options.limits();
    assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
    assert_eq!(limits.idle_timeout, Duration::from_secs(60));
    assert_eq!(limits.tls_handshake_timeout, Duration::from_secs(10));
    assert_eq!(limits.max_connections, 512);
    // HTTP/1.1 keep-alive ends at the header-read timer; the stack's own client pools
    // (frontend → gateway → ETL) let go of idle connections before that.
    assert_eq!(limits.keep_alive(), Duration::from_secs(10));
    assert!(limits.pool_idle_timeout() < limits.keep_alive());
    let help = <Cli as clap::CommandFactory>::command()
        .render_long_help()
        .to_string();
    for variable in [
        "PULSE_HEADER_READ_TIMEOUT_MS",
        "PULSE_IDLE_TIMEOUT_MS",
        "PULSE_TLS_HANDSHAKE_TIMEOUT_MS",
        "PULSE_MAX_CONNECTIONS",
    ] {
        assert!(help.contains(variable), "--help mentions {variable}");
    }
    for flag in [
        "--header-read-timeout-ms",
        "--idle-timeout-ms",
        "--tls-handshake-timeout-ms",
        "--max-connections",
    ] {
        let mut args = args(dir.path());
        args.extend([flag.to_owned(), "0".to_owned()]);
        assert!(
            <Cli as clap::Parser>::try_parse_from(args).is_err(),
            "{flag} 0 accepted"
        );
    }
}
