//! Jobs: the [`Job`] trait, the [`JobContext`] a run gets, and the [`JobRegistry`].

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::engine::{RetryPolicy, Schedule, WallClock};
use crate::model::{LogLevel, Progress, RunId};
use crate::store::{AttemptFence, JobStore, StoreError, StorePool};

/// What a successful run returns: an optional JSON result stored with the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobOutput {
    /// The result, stored as the run's `result`.
    pub result: Option<Value>,
}

impl JobOutput {
    /// No result.
    #[must_use]
    pub const fn empty() -> Self {
        Self { result: None }
    }

    /// A JSON result.
    #[must_use]
    pub fn new(result: impl Into<Value>) -> Self {
        Self {
            result: Some(result.into()),
        }
    }
}

impl From<Value> for JobOutput {
    fn from(value: Value) -> Self {
        Self::new(value)
    }
}

impl From<()> for JobOutput {
    fn from((): ()) -> Self {
        Self::empty()
    }
}

/// Why an attempt failed, which decides whether it is retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// A transient failure (network, rate limit, 5xx): retried with backoff while
    /// attempts remain. `retry_after` asks for at least that long a wait (e.g. from a
    /// `Retry-After` header).
    #[error("{message}")]
    Retryable {
        /// What went wrong.
        message: String,
        /// The least time to wait before the next attempt.
        retry_after: Option<Duration>,
    },
    /// A permanent failure (bad parameters, 4xx, invalid data): the run fails at once.
    #[error("{message}")]
    Fatal {
        /// What went wrong.
        message: String,
    },
    /// The job saw its cancellation token and stopped.
    #[error("cancelled")]
    Cancelled,
    /// The attempt lost its lease (another worker took the run over); its writes are
    /// rejected and it must stop.
    #[error("the attempt lost its lease")]
    LeaseLost,
}

impl JobError {
    /// A retryable error.
    #[must_use]
    pub fn retryable(message: impl Into<String>) -> Self {
        JobError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    /// A retryable error that asks to wait at least `after` before the next attempt.
    #[must_use]
    pub fn retry_after(message: impl Into<String>, after: Duration) -> Self {
        JobError::Retryable {
            message: message.into(),
            retry_after: Some(after),
        }
    }

    /// A fatal error: no retry.
    #[must_use]
    pub fn fatal(message: impl Into<String>) -> Self {
        JobError::Fatal {
            message: message.into(),
        }
    }

    /// `true` when another attempt may succeed.
    #[must_use]
    pub const fn is_retryable(&self) -> bool {
        matches!(self, JobError::Retryable { .. })
    }
}

impl From<StoreError> for JobError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Fenced => JobError::LeaseLost,
            other => JobError::retryable(other.to_string()),
        }
    }
}

/// Parameters of a job that takes none: accepts any JSON object (or `null`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct NoParams {}

/// Registered code that runs: a name, a parameters type, a timeout, a retry policy and
/// an optional schedule.
///
/// ```
/// use pulse_etl::{Job, JobContext, JobError, JobOutput, NoParams};
///
/// struct Hello;
///
/// impl Job for Hello {
///     type Params = NoParams;
///
///     fn name(&self) -> &str {
///         "hello"
///     }
///
///     async fn run(&self, ctx: JobContext) -> Result<JobOutput, JobError> {
///         ctx.info("hello from a job").await?;
///         Ok(JobOutput::new(serde_json::json!({"greeted": 1})))
///     }
/// }
/// # assert_eq!(Hello.name(), "hello");
/// ```
pub trait Job: Send + Sync + 'static {
    /// The parameters a run takes; a start whose params do not deserialise into it is
    /// refused with `EngineError::InvalidParams` before anything is stored.
    type Params: DeserializeOwned + Send;

    /// The unique name runs are started by.
    fn name(&self) -> &str;

    /// How long one attempt may run before it is cancelled and counted as a retryable
    /// failure. Default: one hour.
    fn timeout(&self) -> Duration {
        Duration::from_secs(3600)
    }

    /// How failed attempts are retried. Default: [`RetryPolicy::default`].
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    /// When the engine starts runs by itself. Default: never.
    fn schedule(&self) -> Option<Schedule> {
        None
    }

    /// Runs one attempt. Long loops should check [`JobContext::is_cancelled`] (or select
    /// on [`JobContext::cancelled`]) and resume from [`JobContext::checkpoint`].
    fn run(&self, ctx: JobContext) -> impl Future<Output = Result<JobOutput, JobError>> + Send;
}

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe face of a [`Job`], kept by the registry.
pub(crate) trait ErasedJob: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn timeout(&self) -> Duration;
    fn retry_policy(&self) -> RetryPolicy;
    fn schedule(&self) -> Option<Schedule>;
    fn check_params(&self, params: &Value) -> Result<(), String>;
    fn run_boxed(
        self: Arc<Self>,
        ctx: JobContext,
    ) -> BoxFuture<'static, Result<JobOutput, JobError>>;
}

impl<J: Job> ErasedJob for J {
    fn name(&self) -> &str {
        Job::name(self)
    }

    fn timeout(&self) -> Duration {
        Job::timeout(self)
    }

    fn retry_policy(&self) -> RetryPolicy {
        Job::retry_policy(self)
    }

    fn schedule(&self) -> Option<Schedule> {
        Job::schedule(self)
    }

    fn check_params(&self, params: &Value) -> Result<(), String> {
        serde_json::from_value::<J::Params>(normalise_params(params.clone()))
            .map(drop)
            .map_err(|err| err.to_string())
    }

    fn run_boxed(
        self: Arc<Self>,
        ctx: JobContext,
    ) -> BoxFuture<'static, Result<JobOutput, JobError>> {
        Box::pin(async move { self.run(ctx).await })
    }
}

/// `null` params mean "none": an empty object.
pub(crate) fn normalise_params(params: Value) -> Value {
    if params.is_null() {
        Value::Object(serde_json::Map::new())
    } else {
        params
    }
}

/// What the engine knows about a registered job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobInfo {
    /// Its name.
    pub name: String,
    /// Its timeout per attempt.
    pub timeout: Duration,
    /// Its retry policy.
    pub retry_policy: RetryPolicy,
    /// Its schedule.
    pub schedule: Option<Schedule>,
}

/// The registered jobs, by name. Only registered names can be started.
#[derive(Clone, Default)]
pub struct JobRegistry {
    jobs: BTreeMap<String, Arc<dyn ErasedJob>>,
}

impl JobRegistry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a job; a job registered earlier under the same name is replaced.
    pub fn register<J: Job>(&mut self, job: J) -> &mut Self {
        let name = Job::name(&job).to_owned();
        self.jobs.insert(name, Arc::new(job));
        self
    }

    /// Registers a job, builder style.
    #[must_use]
    pub fn with_job<J: Job>(mut self, job: J) -> Self {
        self.register(job);
        self
    }

    /// The registered names, sorted.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        self.jobs.keys().cloned().collect()
    }

    /// `true` when `name` is registered.
    #[must_use]
    pub fn contains(&self, name: &str) -> bool {
        self.jobs.contains_key(name)
    }

    /// How many jobs are registered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// `true` when no job is registered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// What is known about one job.
    #[must_use]
    pub fn info(&self, name: &str) -> Option<JobInfo> {
        self.jobs.get(name).map(|job| info_of(job.as_ref()))
    }

    /// What is known about every job, sorted by name.
    #[must_use]
    pub fn infos(&self) -> Vec<JobInfo> {
        self.jobs
            .values()
            .map(|job| info_of(job.as_ref()))
            .collect()
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<dyn ErasedJob>> {
        self.jobs.get(name)
    }
}

fn info_of(job: &dyn ErasedJob) -> JobInfo {
    JobInfo {
        name: job.name().to_owned(),
        timeout: job.timeout(),
        retry_policy: job.retry_policy(),
        schedule: job.schedule(),
    }
}

impl fmt::Debug for JobRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobRegistry")
            .field("jobs", &self.names())
            .finish()
    }
}

/// What one attempt of a run gets: its identity and parameters, a cancellation token,
/// a progress reporter, a log sink, a checkpoint cursor, the engine's clock and the
/// store's connection pool for the job's own tables — not the store itself.
///
/// Every write through the context is fenced by the attempt number: once another
/// worker has taken the run over, the writes fail with [`JobError::LeaseLost`].
#[derive(Clone)]
pub struct JobContext {
    pub(crate) job_name: Arc<str>,
    pub(crate) fence: AttemptFence,
    pub(crate) params: Arc<Value>,
    pub(crate) cancel: CancellationToken,
    pub(crate) store: Arc<dyn JobStore>,
    pub(crate) clock: Arc<dyn WallClock>,
    pub(crate) checkpoint: Arc<std::sync::Mutex<Option<Value>>>,
}

impl JobContext {
    /// The run's id.
    #[must_use]
    pub fn run_id(&self) -> RunId {
        self.fence.run_id
    }

    /// The job's name.
    #[must_use]
    pub fn job_name(&self) -> &str {
        &self.job_name
    }

    /// This attempt's number, from 1.
    #[must_use]
    pub fn attempt(&self) -> u32 {
        self.fence.attempt
    }

    /// The raw parameters (a JSON object).
    #[must_use]
    pub fn params_json(&self) -> &Value {
        &self.params
    }

    /// The parameters as `T`; a mismatch is a fatal error.
    ///
    /// # Errors
    /// [`JobError::Fatal`] when the parameters do not deserialise into `T`.
    pub fn params<T: DeserializeOwned>(&self) -> Result<T, JobError> {
        serde_json::from_value(normalise_params((*self.params).clone()))
            .map_err(|err| JobError::fatal(format!("invalid parameters: {err}")))
    }

    /// The token cancelled when the run is cancelled, times out or the engine shuts down.
    #[must_use]
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// `true` once the attempt should stop.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves once the attempt should stop.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }

    /// Returns [`JobError::Cancelled`] once the attempt should stop: `ctx.check_cancelled()?`.
    ///
    /// # Errors
    /// [`JobError::Cancelled`] when cancelled.
    pub fn check_cancelled(&self) -> Result<(), JobError> {
        if self.cancel.is_cancelled() {
            Err(JobError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Reports progress; stored with the run and sent as a `progress` event.
    ///
    /// # Errors
    /// [`JobError::LeaseLost`] when the attempt was taken over; a retryable error when
    /// the store fails.
    pub async fn progress(
        &self,
        done: u64,
        total: Option<u64>,
        message: impl Into<String>,
    ) -> Result<(), JobError> {
        let progress = Progress::new(done, total).with_message(message);
        self.report(progress).await
    }

    /// Reports a whole [`Progress`].
    ///
    /// # Errors
    /// As [`JobContext::progress`].
    pub async fn report(&self, progress: Progress) -> Result<(), JobError> {
        self.store
            .record_progress(&self.fence, &progress, self.clock.now())
            .await
            .map_err(JobError::from)
    }

    /// Appends a line to the run's log (and sends it as a `log` event).
    ///
    /// # Errors
    /// As [`JobContext::progress`].
    pub async fn log(&self, level: LogLevel, message: impl Into<String>) -> Result<(), JobError> {
        self.store
            .append_log(&self.fence, level, &message.into(), self.clock.now())
            .await
            .map_err(JobError::from)
    }

    /// Appends an `info` line to the run's log.
    ///
    /// # Errors
    /// As [`JobContext::progress`].
    pub async fn info(&self, message: impl Into<String>) -> Result<(), JobError> {
        self.log(LogLevel::Info, message).await
    }

    /// Appends a `warn` line to the run's log.
    ///
    /// # Errors
    /// As [`JobContext::progress`].
    pub async fn warn(&self, message: impl Into<String>) -> Result<(), JobError> {
        self.log(LogLevel::Warn, message).await
    }

    /// The checkpoint cursor saved by this run's latest [`set_checkpoint`](Self::set_checkpoint),
    /// in this attempt or an earlier one: where a retried sync resumes.
    #[must_use]
    pub fn checkpoint(&self) -> Option<Value> {
        self.checkpoint
            .lock()
            .map(|cursor| cursor.clone())
            .unwrap_or_default()
    }

    /// The checkpoint as `T` (`None` when there is none or it does not deserialise).
    #[must_use]
    pub fn checkpoint_as<T: DeserializeOwned>(&self) -> Option<T> {
        self.checkpoint()
            .and_then(|cursor| serde_json::from_value(cursor).ok())
    }

    /// Saves the checkpoint cursor (fenced), so a later attempt resumes from it.
    ///
    /// # Errors
    /// As [`JobContext::progress`].
    pub async fn set_checkpoint(&self, cursor: impl serde::Serialize) -> Result<(), JobError> {
        let cursor = serde_json::to_value(cursor)
            .map_err(|err| JobError::fatal(format!("checkpoint is not JSON: {err}")))?;
        self.store
            .save_checkpoint(&self.fence, &cursor, self.clock.now())
            .await?;
        if let Ok(mut slot) = self.checkpoint.lock() {
            *slot = Some(cursor);
        }
        Ok(())
    }

    /// The engine's wall clock now ([`EngineConfig::with_clock`](crate::EngineConfig::with_clock)):
    /// use it for the timestamps a job writes, so tests on a manual clock see them move
    /// with the engine's.
    #[must_use]
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Fails with [`JobError::LeaseLost`] once this attempt no longer holds its run
    /// (another worker took it over, or it ended): check before a write the store does
    /// not fence itself, such as rows of the job's own tables.
    ///
    /// # Errors
    /// [`JobError::LeaseLost`], or a retryable error when the store cannot tell.
    pub async fn check_lease(&self) -> Result<(), JobError> {
        Ok(self.store.check_fence(&self.fence).await?)
    }

    /// The store's connection pool, for the job's own tables.
    #[must_use]
    pub fn pool(&self) -> StorePool {
        self.store.pool()
    }
}

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("job_name", &self.job_name)
            .field("fence", &self.fence)
            .field("params", &self.params)
            .field("cancelled", &self.cancel.is_cancelled())
            .finish_non_exhaustive()
    }
}
