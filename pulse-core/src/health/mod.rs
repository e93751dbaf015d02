//! Health aggregation: run every dependency check at once, each under a timeout, and
//! answer `{status, services: {...}, timestamp}` with 200 when all are healthy and
//! 503 otherwise.
//!
//! A check implements [`HealthCheck`] (or is a closure, see [`check_fn`]) and returns
//! [`Health::Healthy`] or [`Health::Unhealthy`] with a short, fixed reason. Reasons are
//! `&'static str` on purpose: a health endpoint is often public, and a formatted error
//! would carry host names, SQL or credentials into it. Log the detail from the check
//! instead.
//!
//! [`ServiceCheck`] checks an HTTP dependency (`GET /health` → 2xx) through any tower
//! service, and [`HealthService`] serves the report (mount it at `/health`).
//!
//! ```
//! use std::time::Duration;
//!
//! use http::StatusCode;
//! use pulse_core::health::{Health, HealthAggregator, check_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let health = HealthAggregator::new()
//!     .with_timeout(Duration::from_secs(1))
//!     .with_check("database", check_fn(|| async { Health::Healthy }))
//!     .with_check("etl_service", check_fn(|| async {
//!         tokio::time::sleep(Duration::from_secs(5)).await; // hangs: times out
//!         Health::Healthy
//!     }));
//!
//! let report = health.check().await;
//! assert!(!report.is_healthy());
//! assert_eq!(report.services["database"].health, Health::Healthy);
//! assert_eq!(report.services["etl_service"].health, Health::Unhealthy { reason: "timed out" });
//! assert_eq!(report.into_http_response().status(), StatusCode::SERVICE_UNAVAILABLE);
//! # }
//! ```

mod checks;
mod service;
#[cfg(test)]
mod tests;

pub use checks::ServiceCheck;
pub use service::{HealthService, ResponseFuture};

use std::{
    collections::BTreeMap, fmt, future::Future, panic::AssertUnwindSafe, pin::Pin, sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::{Serialize, Serializer, ser::SerializeStruct};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// Working.
    Healthy,
    /// Not working, with a short fixed reason ("connection refused", "timed out").
    Unhealthy {
        /// Why, in a few words, without internal detail.
        reason: &'static str,
    },
}

impl Health {
    /// Whether this is [`Health::Healthy`].
    pub const fn is_healthy(&self) -> bool {
        matches!(self, Self::Healthy)
    }

    /// `Unhealthy` with this reason.
    pub const fn unhealthy(reason: &'static str) -> Self {
        Self::Unhealthy { reason }
    }

    /// `"healthy"` or `"unhealthy"`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Unhealthy { .. } => "unhealthy",
        }
    }
}

/// A health check of one dependency.
///
/// Implement it with an `async fn`:
///
/// ```
/// use pulse_core::health::{Health, HealthCheck};
///
/// struct AlwaysUp;
///
/// impl HealthCheck for AlwaysUp {
///     async fn check(&self) -> Health {
///         Health::Healthy
///     }
/// }
/// ```
pub trait HealthCheck: Send + Sync + 'static {
    /// Check the dependency. It need not enforce a timeout: the aggregator does.
    fn check(&self) -> impl Future<Output = Health> + Send;
}

/// A [`HealthCheck`] made from a closure returning a future; see [`check_fn`].
#[derive(Clone)]
pub struct CheckFn<F> {
    f: F,
}

impl<F> fmt::Debug for CheckFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckFn").finish_non_exhaustive()
    }
}

/// A [`HealthCheck`] from a closure: `check_fn(|| async { Health::Healthy })`.
pub const fn check_fn<F, Fut>(f: F) -> CheckFn<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Health> + Send,
{
    CheckFn { f }
}

impl<F, Fut> HealthCheck for CheckFn<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Health> + Send,
{
    fn check(&self) -> impl Future<Output = Health> + Send {
        (self.f)()
    }
}

type BoxHealthFuture<'a> = Pin<Box<dyn Future<Output = Health> + Send + 'a>>;

/// Object-safe form of [`HealthCheck`], so checks of different types share a list.
trait DynHealthCheck: Send + Sync {
    fn check_boxed(&self) -> BoxHealthFuture<'_>;
}

impl<T: HealthCheck> DynHealthCheck for T {
    fn check_boxed(&self) -> BoxHealthFuture<'_> {
        Box::pin(self.check())
    }
}

struct Entry {
    name: String,
    check: Arc<dyn DynHealthCheck>,
    timeout: Option<Duration>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Runs every registered check concurrently, each under a timeout, into a
/// [`HealthReport`].
///
/// A check that times out is `Unhealthy { reason: "timed out" }`; one that panics is
/// `Unhealthy { reason: "check failed" }`. With no checks the report is healthy.
#[derive(Debug)]
pub struct HealthAggregator {
    checks: Vec<Entry>,
    timeout: Duration,
}

impl Default for HealthAggregator {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthAggregator {
    /// The default per-check timeout: 2 seconds.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

    /// An aggregator with no checks and the default timeout.
    pub const fn new() -> Self {
        Self {
            checks: Vec::new(),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// Set the per-check timeout for checks without their own.
    #[must_use]
    pub const fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Add a check reported under `name` (a later check of the same name replaces it
    /// in the report).
    #[must_use]
    pub fn with_check(mut self, name: impl Into<String>, check: impl HealthCheck) -> Self {
        self.checks.push(Entry {
            name: name.into(),
            check: Arc::new(check),
            timeout: None,
        });
        self
    }

    /// Add a check with its own timeout.
    #[must_use]
    pub fn with_check_timeout(
        mut self,
        name: impl Into<String>,
        check: impl HealthCheck,
        timeout: Duration,
    ) -> Self {
        self.checks.push(Entry {
            name: name.into(),
            check: Arc::new(check),
            timeout: Some(timeout),
        });
        self
    }

    /// The names of the checks, in the order they were added.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.checks.iter().map(|e| e.name.as_str())
    }

    /// Run every check at once and collect the report.
    pub async fn check(&self) -> HealthReport {
        let runs = self.checks.iter().map(|entry| async move {
            let timeout = entry.timeout.unwrap_or(self.timeout);
            let started = tokio::time::Instant::now();
            let run = AssertUnwindSafe(entry.check.check_boxed()).catch_unwind();
            let health = match tokio::time::timeout(timeout, run).await {
                Ok(Ok(health)) => health,
                Ok(Err(_panic)) => {
                    tracing::warn!(check = %entry.name, "health check panicked");
                    Health::unhealthy("check failed")
                }
                Err(_elapsed) => Health::unhealthy("timed out"),
            };
            let latency = started.elapsed();
            (entry.name.clone(), ServiceHealth { health, latency })
        });
        let services: BTreeMap<String, ServiceHealth> = futures_util::future::join_all(runs)
            .await
            .into_iter()
            .collect();
        HealthReport {
            services,
            timestamp: OffsetDateTime::now_utc(),
        }
    }
}

/// The health of one service in a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceHealth {
    /// The check's outcome.
    pub health: Health,
    /// How long the check took (up to the timeout).
    pub latency: Duration,
}

impl Serialize for ServiceHealth {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let reason = match self.health {
            Health::Healthy => None,
            Health::Unhealthy { reason } => Some(reason),
        };
        let mut s = serializer.serialize_struct("ServiceHealth", 3)?;
        s.serialize_field("status", self.health.as_str())?;
        if let Some(reason) = reason {
            s.serialize_field("reason", reason)?;
        } else {
            s.skip_field("reason")?;
        }
        let millis = u64::try_from(self.latency.as_millis()).unwrap_or(u64::MAX);
        s.serialize_field("latency_ms", &millis)?;
        s.end()
    }
}

/// The aggregated report:
/// `{"status": "healthy"|"unhealthy", "services": {name: {"status", "reason"?,
/// "latency_ms"}}, "timestamp": "<RFC 3339>"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthReport {
    /// Each check's outcome, by name.
    pub services: BTreeMap<String, ServiceHealth>,
    /// When the report was made (UTC).
    pub timestamp: OffsetDateTime,
}

impl HealthReport {
    /// Whether every service is healthy.
    pub fn is_healthy(&self) -> bool {
        self.services.values().all(|s| s.health.is_healthy())
    }

    /// `"healthy"` or `"unhealthy"`.
    pub fn status(&self) -> &'static str {
        if self.is_healthy() {
            "healthy"
        } else {
            "unhealthy"
        }
    }

    /// 200 when healthy, 503 otherwise.
    pub fn status_code(&self) -> StatusCode {
        if self.is_healthy() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> Bytes {
        // A map of plain fields cannot fail to serialise; keep a valid body anyway.
        serde_json::to_vec(self).map_or_else(
            |_| Bytes::from_static(br#"{"status":"unhealthy","services":{}}"#),
            Bytes::from,
        )
    }

    /// The HTTP answer: 200 or 503, `application/json`, `Cache-Control: no-store`.
    pub fn into_http_response(self) -> Response<Full<Bytes>> {
        let mut res = Response::new(Full::new(self.to_json()));
        *res.status_mut() = self.status_code();
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        res
    }
}

impl Serialize for HealthReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let timestamp = self
            .timestamp
            .format(&Rfc3339)
            .map_err(serde::ser::Error::custom)?;
        let mut s = serializer.serialize_struct("HealthReport", 3)?;
        s.serialize_field("status", self.status())?;
        s.serialize_field("services", &self.services)?;
        s.serialize_field("timestamp", &timestamp)?;
        s.end()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for HealthReport {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let status = || {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["healthy", "unhealthy"]))
        };
        let service = ObjectBuilder::new()
            .property("status", status())
            .property(
                "reason",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("Why it is unhealthy")),
            )
            .property(
                "latency_ms",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            )
            .required("status")
            .required("latency_ms");
        ObjectBuilder::new()
            .description(Some(
                "The aggregated report: each check's outcome by name, healthy only when all are",
            ))
            .property("status", status())
            .property(
                "services",
                ObjectBuilder::new().additional_properties(Some(service)),
            )
            .property(
                "timestamp",
                ObjectBuilder::new().schema_type(Type::String).format(Some(
                    utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::DateTime,
                    ),
                )),
            )
            .required("status")
            .required("services")
            .required("timestamp")
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for HealthReport {}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for HealthReport {
    fn into_response(self) -> axum::response::Response {
        self.into_http_response().map(axum::body::Body::new)
    }
}
