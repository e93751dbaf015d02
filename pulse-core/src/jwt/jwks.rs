//! [`JwksSource`]: verification keys fetched from a JWKS URL.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header::ACCEPT};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::{
    client::legacy::{Client, connect::Connect},
    rt::TokioExecutor,
};
use tokio::{sync::watch, task::AbortHandle, time::Instant};

use super::{KeyRefresh, KeySet, KeySource, VerificationKey};

/// How often the key set is refetched in the background by default: 5 minutes.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// The shortest interval between two refetches caused by unknown `kid`s: 30 seconds.
pub const DEFAULT_MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// The time a fetch may take by default: 5 seconds.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JWKS document read by default: 256 KiB.
pub const DEFAULT_MAX_JWKS_BYTES: usize = 256 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type FetchFuture = Pin<Box<dyn Future<Output = Result<(StatusCode, Bytes), JwksError>> + Send>>;
type Fetch = Arc<dyn Fn(Uri, usize) -> FetchFuture + Send + Sync>;

/// Fetching or reading a JWKS document failed. The keys already held stay in use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// The HTTP request failed.
    #[error("JWKS request failed: {0}")]
    Request(#[source] BoxError),
    /// The server answered with a non-success status.
    #[error("JWKS endpoint answered {0}")]
    Status(StatusCode),
    /// The fetch took longer than the timeout.
    #[error("JWKS fetch timed out")]
    Timeout,
    /// The document is not a JSON object with a `keys` array.
    #[error("JWKS document does not parse: {0}")]
    Parse(#[source] serde_json::Error),
}

/// Verification keys fetched from a JWKS URL and cached.
///
/// - [`JwksSource::refresh`] fetches now (await it once at start-up).
/// - [`JwksSource::spawn_background_refresh`] starts a tokio task that refetches every
///   refresh interval; requests never wait for it: they use the keys held.
/// - A token naming an unknown `kid` causes a refetch **before it is answered**, as
///   Envoy's `jwt_authn` does: [`JwtAuthLayer`](super::JwtAuthLayer) and
///   [`JwtVerifier::verify_async`](super::JwtVerifier::verify_async) wait for it and
///   verify once more, so a key the issuer has just started using is accepted, not
///   refused while the new set is on its way. The refetch is
///   - *coalesced*: every request that meets an unknown `kid` while a refetch runs
///     waits on that one;
///   - *rate-limited*: at most one per minimum refetch interval (the cool-down,
///     [`DEFAULT_MIN_REFETCH_INTERVAL`]); during the cool-down an unknown `kid` is
///     refused (401) at once, so a flood of made-up `kid`s cannot hammer the
///     endpoint nor hold requests;
///   - *bounded*: a request waits at most the fetch timeout
///     ([`DEFAULT_FETCH_TIMEOUT`]), and a client that goes away does not cancel the
///     fetch the others wait on.
///
///   The synchronous [`JwtVerifier::verify`](super::JwtVerifier::verify) does not
///   wait: it refuses at once and starts the same refetch in the background.
///
/// Each key is pinned to its JWK `alg` (or its family's usual algorithm); symmetric
/// keys and keys that do not parse are skipped. A failed fetch keeps the keys held.
///
/// ```no_run
/// use pulse_core::jwt::{JwksSource, JwtVerifier};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let jwks = JwksSource::new("http://127.0.0.1:9000/.well-known/jwks.json".parse()?);
/// jwks.refresh().await?;
/// jwks.spawn_background_refresh();
/// let verifier = JwtVerifier::new(jwks).with_issuer("https://idp.example");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct JwksSource {
    inner: Arc<Inner>,
}

struct Inner {
    url: Uri,
    keys: KeySet,
    fetch: Fetch,
    refresh_interval: Duration,
    min_refetch_interval: Duration,
    timeout: Duration,
    max_bytes: usize,
    refetch: Mutex<Refetch>,
    task: Mutex<Option<AbortHandle>>,
    generation: watch::Sender<u64>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl JwksSource {
    /// A source fetching `url` over plain HTTP with hyper-util's client.
    pub fn new(url: Uri) -> Self {
        Self::with_connector(
            url,
            hyper_util::client::legacy::connect::HttpConnector::new(),
        )
    }

    /// A source fetching `url` through `connector` (e.g. an HTTPS connector).
    pub fn with_connector<C>(url: Uri, connector: C) -> Self
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        let client: Client<C, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build(connector);
        let fetch: Fetch = Arc::new(move |uri: Uri, max_bytes: usize| {
            let client = client.clone();
            Box::pin(async move {
                let req = Request::get(uri)
                    .header(ACCEPT, "application/json")
                    .body(Empty::new())
                    .map_err(|e| JwksError::Request(e.into()))?;
                let res = client
                    .request(req)
                    .await
                    .map_err(|e| JwksError::Request(e.into()))?;
                let status = res.status();
                let body = Limited::new(res.into_body(), max_bytes)
                    .collect()
                    .await
                    .map_err(JwksError::Request)?
                    .to_bytes();
                Ok((status, body))
            })
        });
        Self {
            inner: Arc::new(Inner {
                url,
                keys: KeySet::new(),
                fetch,
                refresh_interval: DEFAULT_REFRESH_INTERVAL,
                min_refetch_interval: DEFAULT_MIN_REFETCH_INTERVAL,
                timeout: DEFAULT_FETCH_TIMEOUT,
                max_bytes: DEFAULT_MAX_JWKS_BYTES,
                refetch: Mutex::new(Refetch::default()),
                task: Mutex::new(None),
                generation: watch::Sender::new(0),
            }),
        }
    }

    fn configure(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        // Only possible before the source is shared; afterwards the setting is ignored.
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            f(inner);
        }
        self
    }

    /// How often the background task refetches (default [`DEFAULT_REFRESH_INTERVAL`]).
    /// Set it before cloning or spawning.
    #[must_use]
    pub fn with_refresh_interval(self, interval: Duration) -> Self {
        self.configure(|inner| inner.refresh_interval = interval)
    }

    /// The shortest interval between refetches caused by unknown `kid`s, the
    /// cool-down (default [`DEFAULT_MIN_REFETCH_INTERVAL`]). Set it before cloning or
    /// spawning.
    #[must_use]
    pub fn with_min_refetch_interval(self, interval: Duration) -> Self {
        self.configure(|inner| inner.min_refetch_interval = interval)
    }

    /// The time a fetch may take, and so the longest a request waits for a refetch
    /// caused by an unknown `kid` (default [`DEFAULT_FETCH_TIMEOUT`]). Set it before
    /// cloning or spawning.
    #[must_use]
    pub fn with_timeout(self, timeout: Duration) -> Self {
        self.configure(|inner| inner.timeout = timeout)
    }

    /// The URL fetched.
    pub fn url(&self) -> &Uri {
        &self.inner.url
    }

    /// The keys held now.
    pub fn keys(&self) -> &KeySet {
        &self.inner.keys
    }

    /// A receiver whose value changes each time the key set is replaced (a counter of
    /// successful fetches): to wait for a refresh, or to export it as a metric.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    /// Fetch the key set now and replace the keys held; the number of usable keys.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        self.inner.refresh().await
    }

    /// Start the background task (idempotent). It refetches every refresh interval
    /// (unknown `kid`s cause their own refetches, see above), and stops when the last clone of this
    /// source is dropped. Must be called inside a tokio runtime.
    pub fn spawn_background_refresh(&self) {
        let mut task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if task.is_some() {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let interval = self.inner.refresh_interval;
        let handle = tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(inner) = weak.upgrade() else { break };
                if let Err(err) = inner.refresh().await {
                    tracing::warn!(url = %inner.url, error = %err, "JWKS refresh failed; keeping the keys held");
                }
            }
        });
        *task = Some(handle.abort_handle());
    }
}

/// The refetches caused by unknown `kid`s.
#[derive(Default)]
struct Refetch {
    /// When the last one started: the cool-down runs from there.
    last_started: Option<Instant>,
    /// The one under way: `true` once it has ended.
    in_flight: Option<watch::Receiver<bool>>,
}

impl Inner {
    /// Join the refetch under way, or start one unless the cool-down forbids it.
    fn refetch_for_unknown_kid(self: &Arc<Self>) -> Option<KeyRefresh> {
        let mut state = self.refetch.lock().unwrap_or_else(PoisonError::into_inner);
        // (A fetch whose task is gone, with its runtime, without ending is not joined.)
        if let Some(done) = &state.in_flight
            && !*done.borrow()
            && done.has_changed().is_ok()
        {
            return Some(self.wait_for(done.clone()));
        }
        let now = Instant::now();
        if state
            .last_started
            .is_some_and(|at| now.duration_since(at) < self.min_refetch_interval)
        {
            return None;
        }
        // Spawned, so that the fetch outlives the request that started it.
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (ended, done) = watch::channel(false);
        state.last_started = Some(now);
        state.in_flight = Some(done.clone());
        let inner = Arc::clone(self);
        runtime.spawn(async move {
            match inner.refresh().await {
                Ok(_) => tracing::info!(url = %inner.url, "JWKS refetched for an unknown kid"),
                Err(err) => {
                    tracing::warn!(url = %inner.url, error = %err, "JWKS refetch for an unknown kid failed; keeping the keys held");
                }
            }
            let _ = ended.send(true);
        });
        Some(self.wait_for(done))
    }

    /// The wait for a refetch: until it ends, at most the fetch timeout.
    fn wait_for(&self, mut done: watch::Receiver<bool>) -> KeyRefresh {
        let bound = self.timeout;
        KeyRefresh::new(async move {
            // An error means the fetch task is gone (runtime shutting down): stop waiting.
            let _ = tokio::time::timeout(bound, done.wait_for(|ended| *ended)).await;
        })
    }

    async fn refresh(&self) -> Result<usize, JwksError> {
        let fetch = (self.fetch)(self.url.clone(), self.max_bytes);
        let (status, body) = tokio::time::timeout(self.timeout, fetch)
            .await
            .map_err(|_| JwksError::Timeout)??;
        if !status.is_success() {
            return Err(JwksError::Status(status));
        }
        let keys = parse_jwks(&body)?;
        let count = keys.len();
        self.keys.replace_all(keys);
        self.generation.send_modify(|generation| *generation += 1);
        tracing::debug!(url = %self.url, keys = count, "JWKS refreshed");
        Ok(count)
    }
}

/// The usable keys of a JWKS document; keys that do not parse are skipped, so one
/// odd key does not take the others down.
fn parse_jwks(body: &[u8]) -> Result<Vec<VerificationKey>, JwksError> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document = serde_json::from_slice(body).map_err(JwksError::Parse)?;
    Ok(document
        .keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<jsonwebtoken::jwk::Jwk>(value).ok())
        .filter_map(|jwk| VerificationKey::from_jwk(&jwk).ok())
        .collect())
}

impl KeySource for JwksSource {
    fn key(&self, kid: Option<&str>) -> Option<VerificationKey> {
        self.inner.keys.key(kid)
    }

    fn on_unknown_kid(&self, kid: &str) {
        // The same refetch, not waited for.
        drop(self.refresh_unknown_kid(kid));
    }

    fn refresh_unknown_kid(&self, _kid: &str) -> Option<KeyRefresh> {
        self.inner.refetch_for_unknown_kid()
    }
}

impl fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksSource")
            .field("url", &self.inner.url)
            .field("keys", &self.inner.keys)
            .field("refresh_interval", &self.inner.refresh_interval)
            .field("min_refetch_interval", &self.inner.min_refetch_interval)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_keys_are_skipped() {
        let doc = br#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI","kid":"sym"},
            {"kty":"nonsense"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"enc","use":"enc"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed"}
        ]}"#;
        let keys = parse_jwks(doc).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid(), Some("ed"));
        assert_eq!(keys[0].algorithm(), jsonwebtoken::Algorithm::EdDSA);
    }

    #[test]
    fn not_a_key_set_is_an_error() {
        assert!(matches!(parse_jwks(b"[]"), Err(JwksError::Parse(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_kid_refetch_is_rate_limited() {
        // A port nothing listens on: each fetch fails fast, which is all this needs.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let source = JwksSource::new(format!("http://127.0.0.1:{port}/jwks").parse().unwrap())
            .with_min_refetch_interval(Duration::from_secs(30));
        let started = || source.inner.refetch.lock().unwrap().last_started;
        source.refresh_unknown_kid("a").expect("a refetch").await;
        let first = started();
        assert!(first.is_some());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(source.refresh_unknown_kid("b").is_none(), "cool-down");
        assert_eq!(started(), first);
        tokio::time::advance(Duration::from_secs(21)).await;
        assert!(source.refresh_unknown_kid("c").is_some());
        assert_ne!(started(), first);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_whose_task_is_gone_is_not_joined() {
        let source = JwksSource::new("http://127.0.0.1:9/jwks".parse().unwrap())
            .with_min_refetch_interval(Duration::ZERO);
        // A fetch under way whose task died (its runtime shut down) without ending.
        let (ended, done) = watch::channel(false);
        drop(ended);
        source.inner.refetch.lock().unwrap().in_flight = Some(done);
        assert!(source.refresh_unknown_kid("a").is_some());
        let state = source.inner.refetch.lock().unwrap();
        assert!(state.last_started.is_some(), "a new fetch was started");
        assert!(state.in_flight.as_ref().unwrap().has_changed().is_ok());
    }
}
