//! WebSocket forwarding through a real gateway: the client's handshake reaches the
//! upstream first, the upstream's 101 comes back, then frames flow both ways.

use axum::{
    Router,
    extract::ws::{Message, WebSocket, WebSocketUpgrade},
    http::HeaderMap,
    routing::get,
};
use futures_util::{SinkExt, StreamExt};
use pulse_proxy::{
    Proxy, ProxyConfig,
    transport::{HttpTransport, TransportConfig},
};
use tokio_tungstenite::tungstenite;

async fn upstream_ws(ws: WebSocketUpgrade, headers: HeaderMap) -> axum::response::Response {
    let user = headers
        .get("x-user-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    ws.on_upgrade(move |mut socket: WebSocket| async move {
        while let Some(Ok(msg)) = socket.recv().await {
            if let Message::Text(text) = msg {
                let reply = format!("{user}:{}", text.as_str());
                if socket.send(Message::Text(reply.into())).await.is_err() {
                    break;
                }
            }
        }
    })
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

async fn gateway(upgrades: bool) -> String {
    let upstream = serve(Router::new().route("/api/v1/ws", get(upstream_ws))).await;
    let config = ProxyConfig::new(format!("http://{upstream}").parse().unwrap())
        .unwrap()
        .with_prefix_rewrite("/api/etl/", "/api/v1/")
        .with_upgrades(upgrades);
    let proxy = Proxy::new(HttpTransport::new(TransportConfig::new()), config);
    serve(Router::new().fallback_service(proxy)).await
}

#[tokio::test]
async fn websocket_is_forwarded_when_upgrades_are_enabled() {
    let gw = gateway(true).await;
    let request = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{gw}/api/etl/ws"
    ))
    .unwrap();
    let mut request = request;
    request
        .headers_mut()
        .insert("x-user-id", "spoofed".parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), 101);
    assert!(response.headers().contains_key("x-request-id"));
    socket
        .send(tungstenite::Message::Text("hello".into()))
        .await
        .unwrap();
    let reply = socket.next().await.unwrap().unwrap();
    // No identity layer runs in front of this gateway, so the upstream sees no user
    // at all, and certainly not the spoofed one.
    assert_eq!(reply.into_text().unwrap().as_str(), "none:hello");
}

#[tokio::test]
async fn upgrade_headers_are_dropped_when_upgrades_are_disabled() {
    let gw = gateway(false).await;
    let err = tokio_tungstenite::connect_async(format!("ws://{gw}/api/etl/ws"))
        .await
        .unwrap_err();
    // The upstream saw a plain GET, which axum's extractor refuses.
    match err {
        tungstenite::Error::Http(response) => assert_ne!(response.status(), 101),
        other => panic!("unexpected error: {other}"),
    }
}
