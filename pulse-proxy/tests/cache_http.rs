//! The cache over a real HTTP hop: an axum upstream on loopback, reached with
//! hyper-util's pooled client, so the bodies the cache records and replays are hyper's
//! own (`Incoming`, sized and chunked).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{Router, body::Body, routing::get};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use pulse_core::Identity;
use pulse_proxy::cache::{CacheLayer, MemoryStore};
use tower::{Layer, ServiceExt};

async fn upstream(calls: Arc<AtomicUsize>) -> SocketAddr {
    let sized = {
        let calls = calls.clone();
        move || {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move { format!("sized n={n}") }
        }
    };
    let chunked = move || {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let chunks = ["chunk-1 ", "chunk-2 ", "n="]
                .into_iter()
                .map(String::from)
                .chain([n.to_string()])
                .map(Ok::<_, Infallible>);
            Body::from_stream(futures_util::stream::iter(chunks))
        }
    };
    let app = Router::new()
        .route("/sized", get(sized))
        .route("/chunked", get(chunked));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test]
async fn hyper_bodies_are_recorded_and_replayed() {
    let calls = Arc::new(AtomicUsize::new(0));
    let addr = upstream(calls.clone()).await;
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let layer = CacheLayer::new(MemoryStore::new());
    let cache = layer.layer(client);

    for path in ["/sized", "/chunked"] {
        let send = || {
            let mut req = Request::get(format!("http://{addr}{path}"))
                .body(Full::default())
                .unwrap();
            req.extensions_mut().insert(Identity::new("u1"));
            cache.clone().oneshot(req)
        };
        let first = send().await.unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.headers()["x-cache"], "MISS");
        let first_body = first.into_body().collect().await.unwrap().to_bytes();

        let second = send().await.unwrap();
        assert_eq!(second.headers()["x-cache"], "HIT", "{path}");
        assert_eq!(
            second.headers()["content-length"],
            first_body.len().to_string()
        );
        let second_body = second.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(second_body, first_body, "{path}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(layer.stats().snapshot().stores, 2);
}

/// Counts the upstream calls per path.
#[derive(Clone, Default)]
struct PathCalls(Arc<std::sync::Mutex<std::collections::HashMap<&'static str, usize>>>);

impl PathCalls {
    fn bump(&self, path: &'static str) -> usize {
        let mut calls = self.0.lock().unwrap();
        let n = calls.entry(path).or_insert(0);
        *n += 1;
        *n
    }

    fn get(&self, path: &str) -> usize {
        self.0.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// An upstream with a sized, a chunked and an empty `200`.
async fn upstream_by_path(calls: PathCalls) -> SocketAddr {
    let sized = {
        let calls = calls.clone();
        move || {
            let n = calls.bump("/sized");
            async move { format!("sized n={n}") }
        }
    };
    let chunked = {
        let calls = calls.clone();
        move || {
            let n = calls.bump("/chunked");
            async move {
                let chunks = ["chunk-1 ", "chunk-2 ", "n="]
                    .into_iter()
                    .map(String::from)
                    .chain([n.to_string()])
                    .map(Ok::<_, Infallible>);
                Body::from_stream(futures_util::stream::iter(chunks))
            }
        }
    };
    let empty = move || {
        calls.bump("/empty");
        async {}
    };
    let app = Router::new()
        .route("/sized", get(sized))
        .route("/chunked", get(chunked))
        .route("/empty", get(empty));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Serves the cache (in front of a hyper-util client to `upstream`) with hyper's own
/// server, which stops polling a response body once it has written its
/// `Content-Length`: the cache must store an entry without seeing the end of its body.
async fn serve_cache(upstream: SocketAddr, layer: &CacheLayer) -> SocketAddr {
    use hyper::{body::Incoming, service::service_fn};
    use hyper_util::{rt::TokioIo, server::conn::auto};

    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build_http();
    let cache = layer.layer(client);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let cache = cache.clone();
            let svc = service_fn(move |mut req: Request<Incoming>| {
                let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
                *req.uri_mut() = format!("http://{upstream}{path}").parse().unwrap();
                req.extensions_mut().insert(Identity::new("u1"));
                cache.clone().oneshot(req)
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// Two GETs of `path` through a real server: the second is a hit, and the upstream is
/// called once.
async fn second_get_through_a_server_is_a_hit(path: &str, body: &str) {
    let calls = PathCalls::default();
    let upstream = upstream_by_path(calls.clone()).await;
    let layer = CacheLayer::new(MemoryStore::new());
    let proxy = serve_cache(upstream, &layer).await;
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let get = || {
        let req = Request::get(format!("http://{proxy}{path}"))
            .body(Full::default())
            .unwrap();
        client.request(req)
    };

    let first = get().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["x-cache"], "MISS");
    let first_body = first.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(first_body, body);

    let second = get().await.unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(second.headers()["x-cache"], "HIT");
    assert_eq!(second.headers()["content-length"], body.len().to_string());
    let second_body = second.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(second_body, body);
    assert_eq!(calls.get(path), 1);
    assert_eq!(layer.stats().snapshot().stores, 1);
}

#[tokio::test]
async fn a_real_server_stores_a_sized_body() {
    second_get_through_a_server_is_a_hit("/sized", "sized n=1").await;
}

#[tokio::test]
async fn a_real_server_stores_a_chunked_body() {
    second_get_through_a_server_is_a_hit("/chunked", "chunk-1 chunk-2 n=1").await;
}

#[tokio::test]
async fn a_real_server_stores_an_empty_body() {
    second_get_through_a_server_is_a_hit("/empty", "").await;
}
