//! Faults on the way to the ETL service, and whose fault each one is: a client's broken
//! body is the client's (400, never a breaker failure), a hung or vanishing ETL is the
//! upstream's (504/503, counted by the circuit).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::*;

/// Write `request` to `addr` as raw bytes and read the answer until the server closes:
/// the status code and the JSON body.
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = match (text.find('{'), text.rfind('}')) {
        (Some(start), Some(end)) => serde_json::from_str(&text[start..=end]).unwrap_or_default(),
        _ => Value::Null,
    };
    (status, body)
}

/// A stack's backend alone, in front of a fake ETL at `etl`.
async fn backend_before(etl: std::net::SocketAddr, extra: &[&str]) -> TestStack {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("http://{etl}");
    let mut args = vec!["--etl-url", url.as_str()];
    args.extend_from_slice(extra);
    let stack = start_service(Service::Backend, dir.path(), &args).await;
    TestStack {
        stack,
        _dir: Some(dir),
        http: client(),
    }
}

/// Six (and more) malformed chunked bodies from the read-only viewer are answered 400
/// `invalid_body` and leave the circuit closed for everyone (issue 9, defect 1: they
/// were 502s counted as ETL failures, and opened the circuit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewers_malformed_bodies_never_open_the_circuit() {
    let t = start().await;
    let back = t.backend();
    let addr = t.stack.backend.as_ref().expect("backend").server.addr;
    let viewer = t.login(&back, "viewer@pulse.local", "viewer").await;
    let request = format!(
        "POST /api/etl/jobs HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {viewer}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         ZZ\r\n{{}}\r\n0\r\n\r\n"
    );
    for _ in 0..8 {
        let (status, body) = raw_exchange(addr, request.as_bytes()).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["code"], "invalid_body", "{body}");
        assert!(body["request_id"].is_string(), "{body}");
    }
    let breaker = &t.stack.backend.as_ref().expect("backend").breaker;
    assert_eq!(breaker.state(), pulse_breaker::State::Closed);
    let admin = t.login(&back, "admin@pulse.local", "admin").await;
    let jobs = t
        .call(
            Method::GET,
            &format!("{back}/api/etl/jobs"),
            Some(&admin),
            None,
            &[],
        )
        .await;
    assert_eq!(jobs.status, StatusCode::OK, "{}", jobs.body);
    t.stack.shutdown().await;
}

/// An ETL that accepts and never answers: 504 after `--etl-timeout-ms`, and the
/// timeouts count, so the circuit opens (before, the proxy's own timer dropped the
/// breaker's call, which counted as nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_etl_times_out_and_opens_the_circuit() {
    let hung = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let etl = hung.local_addr().expect("addr");
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = hung.accept().await {
            open.push(stream);
        }
    });
    let t = backend_before(etl, &["--etl-timeout-ms", "200"]).await;
    let back = t.backend();
    let token = t.login(&back, "admin@pulse.local", "admin").await;
    let jobs = format!("{back}/api/etl/jobs");
    for _ in 0..5 {
        let answer = t.call(Method::GET, &jobs, Some(&token), None, &[]).await;
        assert_eq!(
            answer.status,
            StatusCode::GATEWAY_TIMEOUT,
            "{}",
            answer.body
        );
        assert_eq!(answer.body["code"], "gateway_timeout");
    }
    let open = t.call(Method::GET, &jobs, Some(&token), None, &[]).await;
    assert_eq!(
        open.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        open.body
    );
    assert_eq!(open.body["code"], "circuit_open");
    assert!(open.headers.contains_key("retry-after"));
    t.stack.shutdown().await;
    held.abort();
}

/// An ETL that reads the request and drops the connection (it was killed mid-request):
/// 503 with `Retry-After` — the upstream is unavailable — not a 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etl_dropping_the_connection_is_a_503() {
    let dropping = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let etl = dropping.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        while let Ok((mut stream, _)) = dropping.accept().await {
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head).await;
            drop(stream);
        }
    });
    let t = backend_before(etl, &[]).await;
    let back = t.backend();
    let token = t.login(&back, "admin@pulse.local", "admin").await;
    let answer = t
        .call(
            Method::GET,
            &format!("{back}/api/etl/jobs"),
            Some(&token),
            None,
            &[],
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert_eq!(answer.body["code"], "service_unavailable");
    assert!(answer.headers.contains_key("retry-after"));
    t.stack.shutdown().await;
    server.abort();
}
