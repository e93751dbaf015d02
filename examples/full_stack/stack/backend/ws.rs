//! `/ws/job-status`: one upstream subscription to the ETL event stream, shared by every
//! WebSocket, reconnecting with backoff when the ETL service goes away.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Full;
use pulse_core::internal_auth::{InternalCredentialLayer, KeyRing};
use pulse_core::jwt::JwtVerifier;
use pulse_etl::client::{ClientError, EtlClient};
use pulse_proxy::balance::Outcome;
use serde::Deserialize;
use tokio::sync::{broadcast, watch};

use super::auth::json_error;
use super::{EtlPool, Gateway};

/// The first reconnect delay; it doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// The longest reconnect delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// When the hub gives up on a subscription and moves to another instance.
#[derive(Debug, Clone, Copy)]
pub struct HubTiming {
    /// No byte for this long: the subscription is dead.
    pub idle_timeout: Duration,
    /// The wait before moving to another instance (0 in production; tests make events
    /// happen during the switch).
    pub resubscribe_delay: Duration,
}

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
async fn subscribe<T, B>(
    pool: EtlPool,
    clients: Vec<EtlClient<T>>,
    sender: broadcast::Sender<Arc<str>>,
    reports: Reports,
    resubscribe_delay: Duration,
    mut stop: watch::Receiver<bool>,
) where
    T: tower::Service<http::Request<Full<Bytes>>, Response = http::Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    T::Future: Send,
    T::Error: Into<tower::BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
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
                    // Whether the stream broke (or went silent) rather than ended.
                    let mut broke = false;
                    while let Some(item) = stream.next().await {
                        let id = stream.last_event_id();
                        match item {
                            // Never an event twice (a replay overlapping what was seen);
                            // the snapshot after a `reset` shares one id, and is new.
                            Ok(update)
                                if update.kind != pulse_etl::api::RunUpdateKind::Snapshot
                                    && id.is_some()
                                    && last.is_some()
                                    && id <= last => {}
                            Ok(update) => {
                                last = id.or(last);
                                match message(&update, id) {
                                    Ok(text) => {
                                        let _ = sender.send(Arc::from(text));
                                    }
                                    Err(error) => tracing::warn!(%error, "unencodable run update"),
                                }
                            }
                            // Not even a keep-alive comment for the idle timeout: a
                            // frozen instance, or a connection that died silently.
                            Err(error @ ClientError::StreamIdle(_)) => {
                                tracing::warn!(%error, instance = %client.base_url(),
                                    "ETL event stream went silent");
                                broke = true;
                            }
                            Err(error @ ClientError::Transport(_)) => {
                                tracing::debug!(%error, "ETL event stream broke");
                                broke = true;
                            }
                            Err(error) => {
                                tracing::debug!(%error, "ETL event stream item failed")
                            }
                        }
                    }
                    if broke {
                        pool.record(index, Outcome::Failure);
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
    /// A subscription that sends no byte for [`HubTiming::idle_timeout`] — not even the keep-alive
    /// comment the ETL sends on an idle stream — is taken for dead (a frozen instance
    /// keeps its connection open) and replaced the same way.
    ///
    /// [`HubTiming::resubscribe_delay`] (0 in production) holds the move to another
    /// instance back, so that tests can make events happen during the switch.
    pub fn start(
        pool: EtlPool,
        ring: KeyRing,
        tls: &rustls::ClientConfig,
        timing: HubTiming,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let clients = pool
            .names()
            .iter()
            .map(|url| {
                Ok(EtlClient::new(url, super::etl_transport(tls))?
                    .with_credentials(InternalCredentialLayer::new().with_key(ring.clone()))
                    .with_event_idle_timeout(timing.idle_timeout))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self::with_clients(
            pool,
            clients,
            timing.resubscribe_delay,
            stop,
        ))
    }

    /// [`start`](Self::start) over ready-made clients, one per instance of `pool` in
    /// its order (their idle timeout set).
    pub fn with_clients<T, B>(
        pool: EtlPool,
        clients: Vec<EtlClient<T>>,
        resubscribe_delay: Duration,
        stop: watch::Receiver<bool>,
    ) -> Self
    where
        T: tower::Service<http::Request<Full<Bytes>>, Response = http::Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        T::Future: Send,
        T::Error: Into<tower::BoxError>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<tower::BoxError>,
    {
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
        Self {
            updates,
            clients: Arc::default(),
            upstream_up,
            resubscriptions,
            instance,
        }
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body::Frame;
    use http_body_util::StreamBody;
    use http_body_util::combinators::UnsyncBoxBody;
    use pulse_proxy::{ProxyError, ProxyRequestBody};
    use tokio::sync::mpsc;
    use tower::util::BoxCloneSyncService;

    use super::*;

    /// One subscription a fake ETL instance received: its `Last-Event-ID`, and the
    /// sender of its event-stream body (kept open and silent, the instance is frozen).
    struct Subscription {
        instance: usize,
        last_event_id: Option<i64>,
        body: mpsc::UnboundedSender<String>,
    }

    /// A fake ETL instance whose `/api/v1/events` hands each subscription to the test.
    fn instance(
        index: usize,
        subscriptions: mpsc::UnboundedSender<Subscription>,
    ) -> EtlClient<
        impl tower::Service<
            http::Request<Full<Bytes>>,
            Response = http::Response<UnsyncBoxBody<Bytes, Infallible>>,
            Error = Infallible,
            Future: Send,
        > + Clone
        + Send
        + Sync
        + 'static,
    > {
        let transport = tower::service_fn(move |request: http::Request<Full<Bytes>>| {
            let (body, chunks) = mpsc::unbounded_channel::<String>();
            let last_event_id = request
                .headers()
                .get("last-event-id")
                .and_then(|v| v.to_str().ok()?.parse().ok());
            let _ = subscriptions.send(Subscription {
                instance: index,
                last_event_id,
                body,
            });
            let frames = futures_util::stream::unfold(chunks, |mut chunks| async move {
                let chunk = chunks.recv().await?;
                Some((Ok(Frame::data(Bytes::from(chunk))), chunks))
            });
            let response = http::Response::builder()
                .header("content-type", "text/event-stream")
                .body(UnsyncBoxBody::new(StreamBody::new(frames)))
                .expect("static response");
            async move { Ok::<_, Infallible>(response) }
        });
        EtlClient::new(&format!("http://etl-{index}:8001"), transport)
            .expect("valid URL")
            .with_event_idle_timeout(IDLE)
    }

    const IDLE: Duration = Duration::from_secs(3);

    /// The pool the hub picks instances from (its transports are never called here).
    fn pool() -> EtlPool {
        (0..2)
            .fold(pulse_proxy::balance::Pool::builder(), |builder, index| {
                let refuse = tower::service_fn(
                    |_: http::Request<ProxyRequestBody<axum::body::Body>>| async {
                        Err(ProxyError::ConnectRefused)
                    },
                );
                builder.instance(
                    format!("http://etl-{index}:8001"),
                    BoxCloneSyncService::new(refuse),
                    pulse_breaker::Breaker::new(pulse_breaker::BreakerConfig::default())
                        .expect("valid breaker"),
                )
            })
            .build()
            .expect("two instances")
    }

    /// The SSE text of run event `id`.
    fn event(id: i64) -> String {
        event_of("progress", "01936b6e-7a4c-7d7e-8f00-000000000001", id)
    }

    /// The SSE text of a run update of `kind` for run `run`, with SSE id `id`.
    fn event_of(kind: &str, run: &str, id: i64) -> String {
        let update = serde_json::json!({
            "kind": kind,
            "run": {
                "id": run,
                "job_name": "jira_sync",
                "state": "running",
                "params": {},
                "requested_by": null,
                "created_at": "2026-01-01T00:00:00Z",
                "started_at": "2026-01-01T00:00:01Z",
                "finished_at": null,
                "attempts": 1,
                "progress": {"done": id, "total": 10, "message": null},
                "error": null
            }
        });
        format!("event: run\nid: {id}\ndata: {update}\n\n")
    }

    /// A hub over two fake instances: the hub, the subscriptions the instances receive,
    /// the hub's updates to its clients, and its stop switch.
    fn hub_over_two_instances() -> (
        Hub,
        mpsc::UnboundedReceiver<Subscription>,
        broadcast::Receiver<Arc<str>>,
        watch::Sender<bool>,
    ) {
        let (subscriptions, received) = mpsc::unbounded_channel();
        let clients = (0..2)
            .map(|index| instance(index, subscriptions.clone()))
            .collect();
        let (stop, stopped) = watch::channel(false);
        let hub = Hub::with_clients(pool(), clients, Duration::ZERO, stopped);
        let updates = hub.updates.subscribe();
        (hub, received, updates, stop)
    }

    /// A frozen instance keeps its connection open and sends nothing: after the idle
    /// timeout (keep-alive comments hold it open until then) the hub resubscribes to
    /// the other instance with `Last-Event-ID`, and its clients get every event once,
    /// in order. (Without the idle timeout the hub waits on the frozen stream forever.)
    #[tokio::test(start_paused = true)]
    async fn a_silent_stream_is_replaced_by_one_on_another_instance_without_a_gap() {
        let (hub, mut received, mut updates, stop) = hub_over_two_instances();

        let first = received.recv().await.expect("a subscription");
        assert_eq!(first.last_event_id, None);
        first.body.send(event(1)).expect("open");
        first.body.send(event(2)).expect("open");
        // Quiet but alive: a keep-alive comment every second for ten seconds.
        for _ in 0..10 {
            first.body.send(":\n\n".to_owned()).expect("open");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert!(received.try_recv().is_err(), "a quiet stream is kept");
        assert_eq!(hub.resubscriptions(), 0);
        assert_eq!(hub.instance(), Some(first.instance));

        // Frozen: the connection stays open, nothing comes.
        let second = tokio::time::timeout(10 * IDLE, received.recv())
            .await
            .expect("resubscribed after the idle timeout")
            .expect("a subscription");
        assert_ne!(second.instance, first.instance, "to the other instance");
        assert_eq!(
            second.last_event_id,
            Some(2),
            "resuming after the last event"
        );
        // The other instance replays from its store; an overlap is skipped.
        for id in [2, 3, 4] {
            second.body.send(event(id)).expect("open");
        }
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let text = tokio::time::timeout(IDLE, updates.recv())
                .await
                .expect("an update in time")
                .expect("an update");
            let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            seen.push(value["event_id"].as_i64().expect("event_id"));
        }
        assert_eq!(seen, [1, 2, 3, 4]);
        assert!(updates.try_recv().is_err(), "and nothing twice");
        assert_eq!(hub.resubscriptions(), 1);
        assert_eq!(hub.instance(), Some(second.instance));
        drop(first);
        stop.send(true).expect("hub running");
    }

    /// After retention deleted events the hub had not seen, the ETL answers its resume
    /// with a `reset` and the current state: every run of that snapshot reaches the
    /// clients, although they share one SSE id (the replay rule skips only repeats).
    #[tokio::test(start_paused = true)]
    async fn the_snapshot_after_a_reset_reaches_every_client_in_full() {
        let (_hub, mut received, mut updates, stop) = hub_over_two_instances();

        let first = received.recv().await.expect("a subscription");
        first.body.send(event(1)).expect("open");
        first.body.send(event(2)).expect("open");
        first
            .body
            .send(
                "event: reset\nid: 90\ndata: {\"last_event_id\":90,\"pruned_through\":50}\n\n"
                    .to_owned(),
            )
            .expect("open");
        let runs = [
            "01936b6e-7a4c-7d7e-8f00-00000000000a",
            "01936b6e-7a4c-7d7e-8f00-00000000000b",
        ];
        for run in runs {
            first
                .body
                .send(event_of("snapshot", run, 90))
                .expect("open");
        }
        // Live again, after the reset's id; then a replayed repeat, which is skipped.
        first.body.send(event(91)).expect("open");
        first.body.send(event(91)).expect("open");
        let mut seen = Vec::new();
        while seen.len() < 5 {
            let text = tokio::time::timeout(IDLE, updates.recv())
                .await
                .expect("an update in time")
                .expect("an update");
            let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            seen.push((
                value["kind"].as_str().expect("kind").to_owned(),
                value["run"]["id"].as_str().expect("run").to_owned(),
                value["event_id"].as_i64().expect("event_id"),
            ));
        }
        let kinds: Vec<(&str, i64)> = seen.iter().map(|(k, _, id)| (k.as_str(), *id)).collect();
        assert_eq!(
            kinds,
            [
                ("progress", 1),
                ("progress", 2),
                ("snapshot", 90),
                ("snapshot", 90),
                ("progress", 91)
            ]
        );
        assert_eq!(seen[2].1, runs[0]);
        assert_eq!(seen[3].1, runs[1]);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(updates.try_recv().is_err(), "and nothing twice");
        drop(first);
        stop.send(true).expect("hub running");
    }
}
