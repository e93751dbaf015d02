//! Shared test fixtures: an upstream that reports exactly what reached it, and the
//! proxy built over each of the three transports.
#![allow(dead_code, unreachable_pub)]

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    body::Body,
    extract::State,
    http::{HeaderMap, Method, Uri},
    routing::{self, any},
};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;
use pulse_proxy::{
    Proxy, ProxyConfig, ProxyError, ProxyRequestBody,
    transport::{HttpTransport, InProcessTransport, TransportConfig, UnixTransport},
};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tower::{ServiceExt, util::BoxCloneService};

/// What the upstream saw, shared with the test.
#[derive(Clone, Default)]
pub struct Seen {
    pub calls: Arc<AtomicUsize>,
    pub slow_arrived: Arc<Notify>,
}

impl Seen {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// The upstream app: `/api/v1/echo/..` answers with the method, URI, headers (every
/// line) and body it received.
pub fn upstream(seen: Seen) -> Router {
    Router::new()
        .route("/api/v1/echo", any(echo))
        .route("/api/v1/echo/{*rest}", any(echo))
        .route("/api/v1/stream", any(stream_back))
        .route("/api/v1/slow", routing::get(slow))
        .route("/api/v1/cookies", routing::get(cookies))
        .route("/api/v1/status/502", routing::get(bad_gateway))
        .route("/api/v1/trailers", routing::get(trailers))
        .with_state(seen)
}

async fn echo(
    State(seen): State<Seen>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Json<Value> {
    seen.calls.fetch_add(1, Ordering::SeqCst);
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    Json(json!({
        "method": method.as_str(),
        "uri": uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/"),
        "headers": headers,
        "body_len": body.len(),
    }))
}

async fn stream_back(State(seen): State<Seen>, body: Body) -> Body {
    seen.calls.fetch_add(1, Ordering::SeqCst);
    body
}

async fn slow(State(seen): State<Seen>) -> &'static str {
    seen.calls.fetch_add(1, Ordering::SeqCst);
    seen.slow_arrived.notify_one();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    "late"
}

async fn cookies() -> Response<Body> {
    Response::builder()
        .header("set-cookie", "a=1; Path=/")
        .header("set-cookie", "b=2; Path=/")
        .header("connection", "x-leak")
        .header("x-leak", "hop")
        .header("keep-alive", "timeout=5")
        .header("x-internal-secret", "s3cret")
        .header("x-user-id", "someone")
        .header("x-request-id", "upstream-made-this-up")
        .body(Body::from("cookies"))
        .unwrap()
}

async fn bad_gateway(State(seen): State<Seen>) -> (StatusCode, &'static str) {
    seen.calls.fetch_add(1, Ordering::SeqCst);
    (StatusCode::BAD_GATEWAY, "upstream's own 502")
}

async fn trailers() -> Response<Body> {
    let frames = futures_util::stream::iter(vec![
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"payload"))),
        Ok(Frame::trailers({
            let mut t = http::HeaderMap::new();
            t.insert("x-checksum", "abc".parse().unwrap());
            t
        })),
    ]);
    Response::builder()
        .header("trailer", "x-checksum")
        .body(Body::new(StreamBody::new(frames)))
        .unwrap()
}

/// The test's client body type: complete or streamed.
pub type ClientBody = UnsyncBoxBody<Bytes, Infallible>;
/// A proxy over any transport, boxed so that one suite runs over all of them.
pub type TestProxy =
    BoxCloneService<Request<ClientBody>, Response<UnsyncBoxBody<Bytes, ProxyError>>, Infallible>;

/// A running proxy and whatever keeps its upstream alive.
pub struct Harness {
    pub proxy: TestProxy,
    pub seen: Seen,
    pub authority: String,
    _dir: Option<tempfile::TempDir>,
}

impl Harness {
    pub async fn send(
        &self,
        req: Request<ClientBody>,
    ) -> Response<UnsyncBoxBody<Bytes, ProxyError>> {
        self.proxy.clone().oneshot(req).await.unwrap()
    }

    pub async fn echo(&self, req: Request<ClientBody>) -> (StatusCode, Value) {
        let res = self.send(req).await;
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

pub fn boxed<T, RB>(proxy: Proxy<T>) -> TestProxy
where
    T: tower::Service<Request<ProxyRequestBody<ClientBody>>, Response = Response<RB>>
        + Clone
        + Send
        + 'static,
    T::Future: Send + 'static,
    T::Error: Into<pulse_proxy::error::BoxError>,
    RB: http_body::Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<pulse_proxy::error::BoxError>,
{
    BoxCloneService::new(proxy.map_response(|res| res.map(BodyExt::boxed_unsync)))
}

pub fn base_config(authority: &str) -> ProxyConfig {
    ProxyConfig::new(format!("http://{authority}").parse().unwrap())
        .unwrap()
        .with_prefix_rewrite("/api/etl/", "/api/v1/")
}

pub async fn tcp(configure: impl FnOnce(ProxyConfig) -> ProxyConfig) -> Harness {
    tcp_with(configure, TransportConfig::new()).await
}

pub async fn tcp_with(
    configure: impl FnOnce(ProxyConfig) -> ProxyConfig,
    transport: TransportConfig,
) -> Harness {
    let seen = Seen::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority = listener.local_addr().unwrap().to_string();
    let app = upstream(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let proxy = Proxy::new(
        HttpTransport::new(transport),
        configure(base_config(&authority)),
    );
    Harness {
        proxy: boxed(proxy),
        seen,
        authority,
        _dir: None,
    }
}

pub async fn unix(configure: impl FnOnce(ProxyConfig) -> ProxyConfig) -> Harness {
    let seen = Seen::default();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("etl.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let app = upstream(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let authority = "etl.sock".to_owned();
    let proxy = Proxy::new(
        UnixTransport::new(path, TransportConfig::new()),
        configure(base_config(&authority)),
    );
    Harness {
        proxy: boxed(proxy),
        seen,
        authority,
        _dir: Some(dir),
    }
}

pub async fn in_process(configure: impl FnOnce(ProxyConfig) -> ProxyConfig) -> Harness {
    let seen = Seen::default();
    let authority = "etl.internal:8001".to_owned();
    let proxy = Proxy::new(
        InProcessTransport::new(upstream(seen.clone())),
        configure(base_config(&authority)),
    );
    Harness {
        proxy: boxed(proxy),
        seen,
        authority,
        _dir: None,
    }
}

/// Every value of header `name` the upstream saw, in order.
pub fn seen_values(echo: &Value, name: &str) -> Vec<String> {
    echo["headers"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|pair| pair[0].as_str() == Some(name))
                .filter_map(|pair| pair[1].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Every header name the upstream saw.
pub fn seen_names(echo: &Value) -> Vec<String> {
    echo["headers"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|pair| pair[0].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub fn get(uri: &str) -> http::request::Builder {
    Request::get(uri)
}

pub fn empty() -> ClientBody {
    Full::new(Bytes::new()).boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> ClientBody {
    Full::new(bytes.into()).boxed_unsync()
}

/// A body streamed from a channel: it ends when the sender is dropped.
pub fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, ClientBody) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok::<_, Infallible>(Frame::data(c))))
    });
    (tx, StreamBody::new(stream).boxed_unsync())
}

/// A body of the given chunks, with no length announced.
pub fn chunked(chunks: Vec<Bytes>) -> ClientBody {
    let stream = futures_util::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, Infallible>(Frame::data(c))),
    );
    StreamBody::new(stream).boxed_unsync()
}
