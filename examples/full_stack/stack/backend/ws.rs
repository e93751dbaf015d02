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

use super::super::upstream::Outcome;
use super::auth::json_error;
use super::{EtlPool, Gateway};

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
    resubscriptions: Arc<AtomicUsize>,
    /// 1 + the index of the instance subscribed to, 0 while none is.
    instance: Arc<AtomicUsize>,
}

/// What the subscription loop reports to the [`Hub`].
struct Reports {
    up_tx: watch::Sender<bool>,
    resubscriptions: Arc<AtomicUsize>,
    instance: Arc<AtomicUsize>,
}

/// The hub's subscription loop (see [`Hub::start`]).
async fn subscribe(
    pool: EtlPool,
    clients: Vec<EtlClient<super::EtlTransport>>,
    sender: broadcast::Sender<Arc<str>>,
    reports: Reports,
    resubscribe_delay: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let Reports {
        up_tx,
        resubscriptions,
        instance,
    } = reports;
    let mut backoff = MIN_BACKOFF;
    // The id of the last event forwarded: resumed after on the next subscription.
    let mut last: Option<i64> = None;
    // The instance whose stream just broke: the next subscription goes elsewhere.
    let mut avoid: Option<usize> = None;
    let mut subscribed_before = false;
    loop {
        let index = pool.pick(avoid);
        let client = &clients[index];
        let session = async {
            match client.events_after(last).await {
                Ok(mut stream) => {
                    pool.record(index, Outcome::Success);
                    if subscribed_before {
                        resubscriptions.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("pulse_ws_resubscriptions_total").increment(1);
                    }
                    subscribed_before = true;
                    tracing::info!(instance = %client.base_url(), last_event_id = ?last,
                        "subscribed to the ETL event stream");
                    instance.store(index + 1, Ordering::Relaxed);
                    let _ = up_tx.send(true);
                    backoff = MIN_BACKOFF;
                    while let Some(item) = stream.next().await {
                        let id = stream.last_event_id();
                        match item {
                            // Never an event twice (a replay overlapping what was seen).
                            Ok(_) if id.is_some() && last.is_some() && id <= last => {}
                            Ok(update) => {
                                last = id.or(last);
                                match message(&update, id) {
                                    Ok(text) => {
                                        let _ = sender.send(Arc::from(text));
                                    }
                                    Err(error) => tracing::warn!(%error, "unencodable run update"),
                                }
                            }
                            Err(error) => {
                                tracing::debug!(%error, "ETL event stream item failed")
                            }
                        }
                    }
                    // Resume after the stream's last id even when no run event came:
                    // the instance said where the stream started (`position`).
                    last = last.max(stream.last_event_id());
                    tracing::warn!(instance = %client.base_url(), last_event_id = ?last,
                        "ETL event stream ended; subscribing to another instance");
                    true
                }
                Err(error) => {
                    pool.record(index, Outcome::Failure);
                    tracing::debug!(%error, instance = %client.base_url(), "ETL event stream unavailable");
                    false
                }
            }
        };
        let was_up = tokio::select! {
            up = session => up,
            _ = stop.wait_for(|s| *s) => return,
        };
        instance.store(0, Ordering::Relaxed);
        let _ = up_tx.send(false);
        avoid = Some(index);
        // A stream that was up and broke: straight to another instance. A refused
        // subscription: wait a little (doubling) before the next one.
        if was_up && clients.len() > 1 {
            if !resubscribe_delay.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(resubscribe_delay) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The WebSocket message of `update`: its JSON with the ETL's event id as `event_id`
/// (clients can tell a gap or a repeat).
fn message(update: &pulse_etl::api::RunUpdate, id: Option<i64>) -> serde_json::Result<String> {
    let mut value = serde_json::to_value(update)?;
    if let (Some(object), Some(id)) = (value.as_object_mut(), id) {
        object.insert("event_id".to_owned(), serde_json::Value::from(id));
    }
    serde_json::to_string(&value)
}

impl Hub {
    /// Start the shared subscription to the `/api/v1/events` of one of `pool`'s ETL
    /// instances (stops with `stop`). When that instance's stream breaks, the hub
    /// subscribes at once to another one (p2c, ejected ones last) with `Last-Event-ID`,
    /// so that it replays what was missed: every event once, in order. (The ETL
    /// instances share one PostgreSQL database, so event ids are the same everywhere.)
    ///
    /// `resubscribe_delay` (0 in production) holds the move to another instance back,
    /// so that tests can make events happen during the switch.
    pub fn start(
        pool: EtlPool,
        ring: KeyRing,
        tls: &rustls::ClientConfig,
        resubscribe_delay: Duration,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let clients = pool
            .urls()
            .iter()
            .map(|url| {
                Ok(EtlClient::new(url, super::etl_transport(tls))?
                    .with_credentials(InternalCredentialLayer::new().with_key(ring.clone())))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (updates, _) = broadcast::channel(256);
        let (up_tx, upstream_up) = watch::channel(false);
        let resubscriptions = Arc::new(AtomicUsize::new(0));
        let instance = Arc::new(AtomicUsize::new(0));
        tokio::spawn(subscribe(
            pool,
            clients,
            updates.clone(),
            Reports {
                up_tx,
                resubscriptions: Arc::clone(&resubscriptions),
                instance: Arc::clone(&instance),
            },
            resubscribe_delay,
            stop,
        ));
        Ok(Self {
            updates,
            clients: Arc::default(),
            upstream_up,
            resubscriptions,
            instance,
        })
    }

    /// How many times the hub subscribed again after its stream broke.
    #[allow(dead_code)] // read by the tests
    pub fn resubscriptions(&self) -> usize {
        self.resubscriptions.load(Ordering::Relaxed)
    }

    /// The index (in the pool) of the ETL instance whose stream the hub reads now.
    #[allow(dead_code)] // read by the tests
    pub fn instance(&self) -> Option<usize> {
        self.instance.load(Ordering::Relaxed).checked_sub(1)
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
