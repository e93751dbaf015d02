//! Ready-made checks.

use std::{fmt, future::Future};

use bytes::Bytes;
use futures_util::future::poll_fn;
use http::{Method, Request, Response, Uri};
use http_body_util::Empty;
use tower_service::Service;

use super::{Health, HealthCheck};

/// Checks a dependency over HTTP: `GET uri` through any tower service (a hyper-util
/// client, a Pulse proxy transport, an in-process router). Healthy on a 2xx answer;
/// `"unexpected status"` on any other; `"unreachable"` when the service fails.
///
/// The service is cloned for each check; the answer's body is not read.
#[derive(Clone)]
pub struct ServiceCheck<S> {
    service: S,
    uri: Uri,
}

impl<S> ServiceCheck<S> {
    /// Check `uri` through `service`.
    pub const fn new(service: S, uri: Uri) -> Self {
        Self { service, uri }
    }
}

impl<S> fmt::Debug for ServiceCheck<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceCheck")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl<S, B> HealthCheck for ServiceCheck<S>
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: fmt::Display + Send,
{
    fn check(&self) -> impl Future<Output = Health> + Send {
        let mut service = self.service.clone();
        let mut req = Request::new(Empty::new());
        *req.method_mut() = Method::GET;
        *req.uri_mut() = self.uri.clone();
        async move {
            let result = match poll_fn(|cx| service.poll_ready(cx)).await {
                Ok(()) => service.call(req).await,
                Err(err) => Err(err),
            };
            match result {
                Ok(res) if res.status().is_success() => Health::Healthy,
                Ok(res) => {
                    tracing::debug!(status = %res.status(), "health check: unexpected status");
                    Health::unhealthy("unexpected status")
                }
                Err(err) => {
                    // The detail goes to the log only, never into the report.
                    tracing::debug!(error = %err, "health check: service failed");
                    Health::unhealthy("unreachable")
                }
            }
        }
    }
}
