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
