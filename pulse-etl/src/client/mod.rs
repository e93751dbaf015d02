//! [`EtlClient`]: a typed async client of the ETL service's API, used by the gateway
//! and by tests.
//!
//! The transport is any `tower::Service<http::Request<Full<Bytes>>>`: the pooled
//! hyper-util client ([`EtlClient::http`]) or, in process, the API's router itself.
//! Every request carries the internal credential (through pulse-core's
//! [`InternalCredentialLayer`]: the ring's key and/or a token minted for the
//! [`Identity`] the call acts for) and the correlation id (the one set with
//! [`with_request_id`](EtlClient::with_request_id), else [`RequestId::current`], else
//! a fresh one).
//!
//! [`events`](EtlClient::events) is one subscription; [`follow`](EtlClient::follow)
//! is the one a gateway wants: it reconnects with backoff and resumes after the last
//! event id, so the service replays what the broken connection missed.
//!
//! ```
//! use futures_util::StreamExt;
//! use pulse_core::internal_auth::{InternalAuthLayer, KeyRing};
//! use pulse_etl::api::{EtlApi, RunUpdateKind};
//! use pulse_etl::client::{EtlClient, StartOptions};
//! use pulse_etl::{EngineConfig, JobEngine, JobRegistry, RunState, SqliteStore};
//! # use pulse_etl::{Job, JobContext, JobError, JobOutput, NoParams};
//! # struct Noop;
//! # impl Job for Noop {
//! #     type Params = NoParams;
//! #     fn name(&self) -> &str { "noop" }
//! #     async fn run(&self, _ctx: JobContext) -> Result<JobOutput, JobError> { Ok(JobOutput::empty()) }
//! # }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SqliteStore::open_in_memory().await?;
//! // An API-only engine (no workers): runs stay pending until cancelled.
//! let config = EngineConfig::default().with_concurrency(0);
//! let engine = JobEngine::launch(store.into_dyn(), JobRegistry::new().with_job(Noop), config).await?;
//! let ring = KeyRing::parse("gw:0123456789abcdef0123456789abcdef")?;
//! let router = EtlApi::new(engine.clone())
//!     .with_internal_auth(InternalAuthLayer::new(ring.clone()))
//!     .into_router();
//!
//! // In process; `EtlClient::http("http://127.0.0.1:8001")?` goes over the network.
//! let client = EtlClient::new("http://etl.internal", router)?.with_key_ring(ring);
//! let mut updates = client.events().await?;
//! let started = client.start_job("noop", StartOptions::new()).await?;
//! assert_eq!(started.run.state, RunState::Pending);
//!
//! let update = updates.next().await.expect("stream open")?;
//! assert_eq!(update.kind, RunUpdateKind::StateChanged);
//! assert_eq!(update.run.id, started.run_id);
//! engine.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use pulse_core::Identity;
use pulse_core::internal_auth::{InternalCredential, InternalCredentialLayer, KeyRing};
use pulse_core::request_id::RequestId;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tower::{Service, ServiceExt};

use crate::api::{
    CancelResponse, IDEMPOTENCY_KEY, JobView, JobsResponse, LogEntry, LogsResponse, RunsResponse,
    StartJobBody, StartResponse, StatusResponse,
};
use crate::model::{Run, RunId};

mod error;
mod sse;
mod stream;

pub use error::{BoxError, ClientError};
pub use sse::{SseDecoder, SseEvent};
pub use stream::{FOLLOW_INITIAL_BACKOFF, FOLLOW_MAX_BACKOFF, RunUpdates, SseEvents};

/// The pooled hyper-util HTTP/1 client over TCP.
pub type HttpTransport = Client<HttpConnector, Full<Bytes>>;

/// The largest answer body the client reads: 16 MiB.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// The options of a start.
#[derive(Debug, Clone, Default, PartialEq)]
#[must_use]
pub struct StartOptions {
    body: StartJobBody,
    idempotency_key: Option<String>,
}

impl StartOptions {
    /// No parameters, no force, no idempotency key.
    pub fn new() -> Self {
        Self::default()
    }

    /// The run's parameters.
    pub fn with_params(mut self, params: Value) -> Self {
        self.body.params = params;
        self
    }

    /// Cancel the job's active run, if any, and start anew.
    pub fn with_force(mut self, force: bool) -> Self {
        self.body.force = force;
        self
    }

    /// An `Idempotency-Key`: a retried start with the same key returns the first run.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// The answer of `GET /health`.
#[derive(Debug, Clone, PartialEq)]
pub struct EtlHealth {
    /// 200 when healthy, 503 otherwise.
    pub status: StatusCode,
    /// The report `{status, services, timestamp}`.
    pub report: Value,
}

impl EtlHealth {
    /// Whether the service reported itself healthy.
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        self.status == StatusCode::OK
    }
}

/// A typed client of the ETL API. Cheap to clone; clones share the transport's pool.
#[derive(Clone)]
pub struct EtlClient<S = HttpTransport> {
    base: Arc<str>,
    service: InternalCredential<S>,
    identity: Option<Identity>,
    request_id: Option<RequestId>,
    timeout: Option<Duration>,
    event_idle_timeout: Option<Duration>,
}

impl EtlClient<HttpTransport> {
    /// A client of the service at `base_url` (e.g. `http://127.0.0.1:8001`) over a
    /// pooled HTTP/1 connection. Needs a tokio runtime when used.
    ///
    /// # Errors
    /// [`ClientError::InvalidUrl`] when `base_url` is not an `http` URL.
    pub fn http(base_url: &str) -> Result<Self, ClientError> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Self::new(base_url, client)
    }
}

impl<S> EtlClient<S> {
    /// A client of the service at `base_url` over `transport`. Without credentials
    /// until [`with_key_ring`](Self::with_key_ring) or
    /// [`with_credentials`](Self::with_credentials).
    ///
    /// # Errors
    /// [`ClientError::InvalidUrl`] when `base_url` is not an absolute `http(s)` URL
    /// without query.
    pub fn new(base_url: &str, transport: S) -> Result<Self, ClientError> {
        let uri: Uri = base_url
            .parse()
            .map_err(|_| ClientError::InvalidUrl(base_url.to_owned()))?;
        let valid = matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.authority().is_some()
            && uri.query().is_none();
        if !valid {
            return Err(ClientError::InvalidUrl(base_url.to_owned()));
        }
        Ok(Self {
            base: Arc::from(base_url.trim_end_matches('/')),
            service: InternalCredential::new(transport, InternalCredentialLayer::new()),
            identity: None,
            request_id: None,
            timeout: None,
            event_idle_timeout: None,
        })
    }

    /// Add credentials with this layer (a key ring's primary key and/or tokens minted
    /// for the [`Identity`] a call acts for).
    #[must_use]
    pub fn with_credentials(self, layer: InternalCredentialLayer) -> Self {
        Self {
            service: InternalCredential::new(self.service.into_inner(), layer),
            ..self
        }
    }

    /// Send the ring's primary key in `X-Internal-Auth` (shorthand for
    /// [`with_credentials`](Self::with_credentials)).
    #[must_use]
    pub fn with_key_ring(self, ring: KeyRing) -> Self {
        self.with_credentials(InternalCredentialLayer::new().with_key(ring))
    }

    /// Give up on a call (not on an event stream once open) after `timeout`.
    #[must_use]
    pub const fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Treat an open event stream that sends no byte for `idle` as broken: it yields
    /// [`ClientError::StreamIdle`], then ends. The service sends a keep-alive comment
    /// on an idle stream (every 15 s by default, see
    /// [`EtlApi::with_keep_alive`](crate::api::EtlApi::with_keep_alive)), so a few of
    /// its intervals tell a quiet stream from a frozen or unreachable instance whose
    /// connection never breaks. Off by default.
    #[must_use]
    pub const fn with_event_idle_timeout(mut self, idle: Duration) -> Self {
        self.event_idle_timeout = Some(idle);
        self
    }

    /// A client whose calls act for `identity`: with a token minter configured, each
    /// call carries a token signed for it, and a start records it as `requested_by`.
    #[must_use]
    pub fn acting_for(&self, identity: Identity) -> Self
    where
        S: Clone,
    {
        Self {
            identity: Some(identity),
            ..self.clone()
        }
    }

    /// A client whose calls carry this correlation id.
    #[must_use]
    pub fn with_request_id(&self, request_id: RequestId) -> Self
    where
        S: Clone,
    {
        Self {
            request_id: Some(request_id),
            ..self.clone()
        }
    }

    /// The base URL.
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The transport.
    pub fn transport(&self) -> &S {
        self.service.get_ref()
    }
}

impl<S> fmt::Debug for EtlClient<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtlClient")
            .field("base", &self.base)
            .field("identity", &self.identity.as_ref().map(|id| &id.subject))
            .field("request_id", &self.request_id)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<S, B> EtlClient<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    /// `GET /health`.
    ///
    /// # Errors
    /// [`ClientError::Transport`], [`ClientError::Timeout`], [`ClientError::Decode`].
    pub async fn health(&self) -> Result<EtlHealth, ClientError> {
        let request = self.request(Method::GET, "/health", None)?;
        self.timed(async {
            let (status, bytes) = self.exchange(request).await?;
            let report = serde_json::from_slice(&bytes)
                .map_err(|err| ClientError::Decode(err.to_string()))?;
            Ok(EtlHealth { status, report })
        })
        .await
    }

    /// `GET /api/v1/jobs`.
    ///
    /// # Errors
    /// [`ClientError::Api`] and the transport errors.
    pub async fn jobs(&self) -> Result<Vec<JobView>, ClientError> {
        let answer: JobsResponse = self.json(Method::GET, "/api/v1/jobs", None).await?;
        Ok(answer.jobs)
    }

    /// `GET /api/v1/jobs/status`.
    ///
    /// # Errors
    /// [`ClientError::Api`] and the transport errors.
    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        self.json(Method::GET, "/api/v1/jobs/status", None).await
    }

    /// `POST /api/v1/jobs/{name}/start`.
    ///
    /// # Errors
    /// [`ClientError::Api`] with 409 (`run_id` is the active run), 422 (unknown job),
    /// 400 (invalid parameters), and the transport errors.
    pub async fn start_job(
        &self,
        job_name: &str,
        options: StartOptions,
    ) -> Result<StartResponse, ClientError> {
        let path = format!("/api/v1/jobs/{}/start", encode_segment(job_name));
        let body = to_json(&options.body)?;
        let mut request = self.request(Method::POST, &path, Some(body))?;
        if let Some(key) = &options.idempotency_key {
            let value = HeaderValue::from_str(key)
                .map_err(|_| ClientError::InvalidRequest("invalid Idempotency-Key".to_owned()))?;
            request.headers_mut().insert(IDEMPOTENCY_KEY, value);
        }
        self.timed(self.decode(request)).await
    }

    /// `GET /api/v1/runs/{id}`.
    ///
    /// # Errors
    /// [`ClientError::Api`] with 404, and the transport errors.
    pub async fn run(&self, run_id: RunId) -> Result<Run, ClientError> {
        self.json(Method::GET, &format!("/api/v1/runs/{run_id}"), None)
            .await
    }

    /// `GET /api/v1/jobs/{name}/runs?limit=`, newest first.
    ///
    /// # Errors
    /// [`ClientError::Api`] with 422 (unknown job), and the transport errors.
    pub async fn runs(&self, job_name: &str, limit: Option<u32>) -> Result<Vec<Run>, ClientError> {
        let mut path = format!("/api/v1/jobs/{}/runs", encode_segment(job_name));
        if let Some(limit) = limit {
            path.push_str(&format!("?limit={limit}"));
        }
        let answer: RunsResponse = self.json(Method::GET, &path, None).await?;
        Ok(answer.runs)
    }

    /// `POST /api/v1/runs/{id}/cancel`.
    ///
    /// # Errors
    /// [`ClientError::Api`] with 404 or 409 (already finished), and the transport errors.
    pub async fn cancel(&self, run_id: RunId) -> Result<CancelResponse, ClientError> {
        self.json(Method::POST, &format!("/api/v1/runs/{run_id}/cancel"), None)
            .await
    }

    /// `GET /api/v1/runs/{id}/logs`, oldest first.
    ///
    /// # Errors
    /// [`ClientError::Api`] with 404, and the transport errors.
    pub async fn logs(&self, run_id: RunId) -> Result<Vec<LogEntry>, ClientError> {
        let answer: LogsResponse = self
            .json(Method::GET, &format!("/api/v1/runs/{run_id}/logs"), None)
            .await?;
        Ok(answer.logs)
    }

    /// `GET /api/v1/events`: resolves once the service accepted the subscription, then
    /// yields every run update from then on. Events the stream lagged behind are
    /// skipped by the service; re-read the runs you care about after a gap.
    ///
    /// # Errors
    /// [`ClientError::Api`] and the transport errors while subscribing; the stream
    /// yields [`ClientError::Transport`] if the connection breaks (then ends) and
    /// [`ClientError::Decode`] for an event it cannot read (then goes on).
    pub async fn events(&self) -> Result<RunUpdates, ClientError> {
        self.events_after(None).await
    }

    /// Like [`events`](Self::events), resuming after the SSE id `last_event_id` (the
    /// service first replays the stored events after it).
    ///
    /// # Errors
    /// As [`events`](Self::events).
    pub async fn events_after(
        &self,
        last_event_id: Option<i64>,
    ) -> Result<RunUpdates, ClientError> {
        let raw = self.sse_events(last_event_id).await?;
        Ok(RunUpdates::new(raw, last_event_id))
    }

    /// `GET /api/v1/events` as raw server-sent events (with their ids).
    ///
    /// # Errors
    /// As [`events`](Self::events).
    pub async fn sse_events(&self, last_event_id: Option<i64>) -> Result<SseEvents, ClientError> {
        let mut request = self.request(Method::GET, "/api/v1/events", None)?;
        let headers = request.headers_mut();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        if let Some(id) = last_event_id {
            headers.insert("last-event-id", HeaderValue::from(id));
        }
        let response = self.timed(self.send(request)).await?;
        let status = response.status();
        if !status.is_success() {
            let bytes = collect(response.into_body()).await?;
            return Err(ClientError::from_answer(status, &bytes));
        }
        let is_sse = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("text/event-stream"));
        if !is_sse {
            return Err(ClientError::Decode(
                "the event stream is not text/event-stream".to_owned(),
            ));
        }
        Ok(SseEvents::from_body(
            response.into_body(),
            self.event_idle_timeout,
        ))
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let uri = format!("{}{path}", self.base);
        let uri: Uri = uri.parse().map_err(|_| ClientError::InvalidUrl(uri))?;
        let has_body = body.is_some();
        let mut request = Request::new(Full::new(body.unwrap_or_default()));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        if has_body {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        self.request_id
            .clone()
            .or_else(RequestId::current)
            .unwrap_or_else(RequestId::generate)
            .set_on(headers);
        if let Some(identity) = &self.identity {
            request.extensions_mut().insert(identity.clone());
        }
        Ok(request)
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<T, ClientError> {
        let request = self.request(method, path, body)?;
        self.timed(self.decode(request)).await
    }

    async fn decode<T: DeserializeOwned>(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.exchange(request).await?;
        if !status.is_success() {
            return Err(ClientError::from_answer(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|err| ClientError::Decode(err.to_string()))
    }

    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let response = self.send(request).await?;
        let status = response.status();
        Ok((status, collect(response.into_body()).await?))
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Result<Response<B>, ClientError> {
        self.service
            .clone()
            .oneshot(request)
            .await
            .map_err(|err| ClientError::Transport(err.into()))
    }

    async fn timed<T>(
        &self,
        call: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        match self.timeout {
            Some(timeout) => tokio::time::timeout(timeout, call)
                .await
                .map_err(|_| ClientError::Timeout)?,
            None => call.await,
        }
    }
}

async fn collect<B>(body: B) -> Result<Bytes, ClientError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    Limited::new(body, MAX_ANSWER_BYTES)
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .map_err(ClientError::Transport)
}

fn to_json<T: Serialize>(value: &T) -> Result<Bytes, ClientError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|err| ClientError::Decode(err.to_string()))
}

/// Percent-encodes everything but unreserved characters (and the dots of `.` and
/// `..`), so a job name stays one path segment.
fn encode_segment(segment: &str) -> String {
    if segment == "." || segment == ".." {
        return segment.replace('.', "%2E");
    }
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("jira_sync"), "jira_sync");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(encode_segment(".."), "%2E%2E");
    }

    #[test]
    fn base_urls_are_checked() {
        assert!(EtlClient::new("http://127.0.0.1:8001/", ()).is_ok());
        assert!(EtlClient::new("127.0.0.1:8001", ()).is_err());
        assert!(EtlClient::new("ftp://x", ()).is_err());
        assert!(EtlClient::new("http://x/?q", ()).is_err());
        let client = EtlClient::new("http://x/prefix/", ()).unwrap();
        assert_eq!(client.base_url(), "http://x/prefix");
    }
}
