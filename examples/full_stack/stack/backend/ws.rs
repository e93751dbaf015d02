//! `/ws/job-status`: one upstream subscription to the ETL event stream, shared by every
//! WebSocket, reconnecting with backoff when the ETL service goes away.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use pulse_core::internal_auth::{InternalCredentialLayer, KeyRing};
use pulse_core::jwt::JwtVerifier;
use pulse_etl::client::EtlClient;
use serde::Deserialize;
use tokio::sync::{broadcast, watch};

use super::Gateway;
use super::auth::json_error;

/// The first reconnect delay; it doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// The longest reconnect delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The fan-out of ETL run updates to WebSocket clients.
#[derive(Debug, Clone)]
pub struct Hub {
    updates: broadcast::Sender<Arc<str>>,
    clients: Arc<AtomicUsize>,
    upstream_up: watch::Receiver<bool>,
}

impl Hub {
    /// Start the shared subscription to the ETL's `/api/v1/events` (stops with `stop`).
    pub fn start(
        client: EtlClient<super::EtlTransport>,
        ring: KeyRing,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let client = client.with_credentials(InternalCredentialLayer::new().with_key(ring));
        let (updates, _) = broadcast::channel(256);
        let (up_tx, upstream_up) = watch::channel(false);
        let sender = updates.clone();
        tokio::spawn(async move {
            let mut backoff = MIN_BACKOFF;
            loop {
                let session = async {
                    match client.events().await {
                        Ok(mut stream) => {
                            tracing::info!("subscribed to the ETL event stream");
                            let _ = up_tx.send(true);
                            backoff = MIN_BACKOFF;
                            while let Some(item) = stream.next().await {
                                match item {
                                    Ok(update) => match serde_json::to_string(&update) {
                                        Ok(text) => {
                                            let _ = sender.send(Arc::from(text));
                                        }
                                        Err(error) => {
                                            tracing::warn!(%error, "unencodable run update")
                                        }
                                    },
                                    Err(error) => {
                                        tracing::debug!(%error, "ETL event stream item failed")
                                    }
                                }
                            }
                            tracing::warn!("ETL event stream ended; reconnecting");
                        }
                        Err(error) => tracing::debug!(%error, "ETL event stream unavailable"),
                    }
                    let _ = up_tx.send(false);
                };
                tokio::select! {
                    () = session => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
        Ok(Self {
            updates,
            clients: Arc::default(),
            upstream_up,
        })
    }

    /// Connected WebSocket clients.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Whether the upstream subscription is open.
    pub fn upstream_up(&self) -> bool {
        *self.upstream_up.borrow()
    }
}

/// `?access_token=`.
#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    access_token: Option<String>,
}

/// `GET /ws/job-status`: authenticate (subprotocols `bearer, <token>` or
/// `?access_token=`), then forward every run update as a text message.
pub async fn job_status(
    State(gateway): State<Gateway>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let request_id = pulse_core::RequestId::current().map(|id| id.to_string());
    let token = subprotocol_token(&headers).or(query.access_token);
    let identity = token.as_deref().map(|t| verify(&gateway.verifier, t));
    let identity = match identity {
        Some(Ok(identity)) => identity,
        _ => {
            let mut response = json_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "A valid access token is required",
                request_id,
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return response;
        }
    };
    pulse_core::request_id::record_user_id(&identity.subject);
    if !identity.has_permission("etl.access") {
        return json_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Missing permission etl.access",
            request_id,
        );
    }
    let Ok(ws) = ws else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Expected a WebSocket upgrade",
            request_id,
        );
    };
    let hub = gateway.hub.clone();
    let user = identity.subject.clone();
    ws.protocols(["bearer"])
        .on_upgrade(move |socket| forward(socket, hub, user))
        .into_response()
}

fn verify(verifier: &JwtVerifier, token: &str) -> Result<pulse_core::Identity, ()> {
    verifier.verify(token).map_err(|_| ())
}

/// The token of `Sec-WebSocket-Protocol: bearer, <token>`.
fn subprotocol_token(headers: &HeaderMap) -> Option<String> {
    let mut parts = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    while let Some(part) = parts.next() {
        if part.eq_ignore_ascii_case("bearer") {
            return parts.next().map(str::to_owned);
        }
    }
    None
}

async fn forward(mut socket: WebSocket, hub: Hub, user: String) {
    hub.clients.fetch_add(1, Ordering::Relaxed);
    tracing::info!(user_id = %user, "WebSocket client connected");
    let mut updates = hub.updates.subscribe();
    loop {
        tokio::select! {
            update = updates.recv() => match update {
                Ok(text) => {
                    if socket.send(Message::Text(text.as_ref().into())).await.is_err() {
                        break;
                    }
                }
                // A slow client missed some updates; it keeps the next ones.
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "WebSocket client lagged");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    hub.clients.fetch_sub(1, Ordering::Relaxed);
    tracing::info!(user_id = %user, "WebSocket client left");
}
