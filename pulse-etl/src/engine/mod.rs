//! The job engine: a worker pool over a [`JobStore`], with leases, heartbeats, a lease
//! sweeper, retries with backoff, timeouts, cancels, schedules and graceful shutdown.
//!
//! [`JobEngine`] is the facade the HTTP API calls; it is cheap to clone.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::{Semaphore, broadcast};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::job::{JobRegistry, normalise_params};
use crate::model::{
    EngineHealth, InstanceId, JobStatus, JobSummary, LogLine, Run, RunEvent, RunId, StatusSummary,
};
use crate::store::{CancelOutcome, CreateOutcome, JobStore, NewRun};

mod clock;
mod error;
mod retention;
mod retry;
mod schedule;
mod worker;

pub use clock::{ManualWallClock, SystemWallClock, TokioWallClock, WallClock};
pub use error::EngineError;
pub use retention::Retention;
pub use retry::{Backoff, RetryPolicy};
pub use schedule::{CatchUp, Due, Schedule, ScheduleError};

/// How an engine instance behaves. Every field has a `with_*` builder.
#[derive(Clone)]
pub struct EngineConfig {
    pub(crate) concurrency: usize,
    pub(crate) lease: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) sweep_interval: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) cancel_grace: Duration,
    pub(crate) shutdown_grace: Duration,
    pub(crate) schedules: bool,
    pub(crate) event_capacity: usize,
    pub(crate) clock: Arc<dyn WallClock>,
    pub(crate) retention: Option<Retention>,
}

impl Default for EngineConfig {
    /// 4 workers, 30 s leases renewed every 10 s, a sweep every 15 s, a claim/event
    /// poll every second, 10 s cancel and shutdown grace, schedules on, the default
    /// [`Retention`].
    fn default() -> Self {
        Self {
            concurrency: 4,
            lease: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            sweep_interval: Duration::from_secs(15),
            poll_interval: Duration::from_secs(1),
            cancel_grace: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            schedules: true,
            event_capacity: 1024,
            clock: Arc::new(SystemWallClock),
            retention: Some(Retention::default()),
        }
    }
}

impl EngineConfig {
    /// The default configuration.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The most attempts this instance executes at once; 0 makes an API-only instance
    /// that starts, lists and cancels runs but executes none.
    #[must_use]
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// How long a lease lasts without a heartbeat; a run whose worker died is
    /// reclaimed at most `lease + sweep_interval` after its last heartbeat.
    #[must_use]
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How often a running attempt renews its lease (keep it well under the lease).
    #[must_use]
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// How often expired leases are swept.
    #[must_use]
    pub fn with_sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = interval;
        self
    }

    /// How often idle workers and the event pump look at the store when no change
    /// notification arrived (due retries, other processes on one SQLite file).
    #[must_use]
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How long a cancelled or timed-out job may take to stop before it is aborted.
    #[must_use]
    pub fn with_cancel_grace(mut self, grace: Duration) -> Self {
        self.cancel_grace = grace;
        self
    }

    /// How long shutdown lets running attempts finish before handing them back.
    #[must_use]
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Whether this instance fires schedules (any number of instances may; each slot
    /// fires once).
    #[must_use]
    pub fn with_schedules(mut self, enabled: bool) -> Self {
        self.schedules = enabled;
        self
    }

    /// How many events a slow subscriber may lag behind before it misses some.
    #[must_use]
    pub fn with_event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity.max(1);
        self
    }

    /// How long the store keeps events, runs and logs ([`Retention`]); this instance
    /// takes part in deleting the rest.
    #[must_use]
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = Some(retention);
        self
    }

    /// Keeps everything: this instance deletes nothing (others may).
    #[must_use]
    pub fn without_retention(mut self) -> Self {
        self.retention = None;
        self
    }

    /// The clock of stored timestamps.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn WallClock>) -> Self {
        self.clock = clock;
        self
    }
}

impl fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineConfig")
            .field("concurrency", &self.concurrency)
            .field("lease", &self.lease)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("sweep_interval", &self.sweep_interval)
            .field("poll_interval", &self.poll_interval)
            .field("cancel_grace", &self.cancel_grace)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("schedules", &self.schedules)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

/// A request to start a run.
#[derive(Debug, Clone, PartialEq)]
pub struct StartRequest {
    /// The job to run.
    pub job_name: String,
    /// Its parameters (`null` means none).
    pub params: Value,
    /// Cancel the job's active run, if any, and start anew.
    pub force: bool,
    /// The user id of the verified identity.
    pub requested_by: Option<String>,
    /// A retried start with the same key returns the first answer.
    pub idempotency_key: Option<String>,
}

impl StartRequest {
    /// A start of `job_name` without parameters.
    #[must_use]
    pub fn new(job_name: impl Into<String>) -> Self {
        Self {
            job_name: job_name.into(),
            params: Value::Null,
            force: false,
            requested_by: None,
            idempotency_key: None,
        }
    }

    /// Sets the parameters.
    #[must_use]
    pub fn with_params(mut self, params: Value) -> Self {
        self.params = params;
        self
    }

    /// Sets `force`.
    #[must_use]
    pub fn with_force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    /// Sets who requested it.
    #[must_use]
    pub fn with_requested_by(mut self, user_id: impl Into<String>) -> Self {
        self.requested_by = Some(user_id.into());
        self
    }

    /// Sets the idempotency key.
    #[must_use]
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// What [`JobEngine::start`] did. The run is committed when this is returned.
#[derive(Debug, Clone, PartialEq)]
pub struct StartOutcome {
    /// The run (the first one, for a replayed idempotency key).
    pub run: Run,
    /// `false` when an earlier start with the same idempotency key made the run.
    pub created: bool,
    /// The active run that `force` cancelled, if any.
    pub replaced: Option<RunId>,
}

/// The job engine: start, inspect and cancel runs, and execute them on a worker pool.
///
/// ```
/// use pulse_etl::{EngineConfig, Job, JobContext, JobEngine, JobError, JobOutput, JobRegistry,
///     NoParams, RunState, SqliteStore, StartRequest};
///
/// struct Hello;
///
/// impl Job for Hello {
///     type Params = NoParams;
///     fn name(&self) -> &str { "hello" }
///     async fn run(&self, ctx: JobContext) -> Result<JobOutput, JobError> {
///         ctx.progress(1, Some(1), "said hello").await?;
///         Ok(JobOutput::empty())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = SqliteStore::open_in_memory().await?;
/// let engine = JobEngine::launch(
///     store.into_dyn(),
///     JobRegistry::new().with_job(Hello),
///     EngineConfig::default(),
/// )
/// .await?;
/// let mut events = engine.subscribe();
/// let started = engine.start(StartRequest::new("hello").with_requested_by("u1")).await?;
/// let run = engine.wait_for_terminal(started.run.id).await?;
/// assert_eq!(run.state, RunState::Succeeded);
/// assert_eq!(run.progress.done, 1);
/// assert!(events.recv().await.is_ok());
/// engine.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct JobEngine {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn JobStore>,
    pub(crate) registry: JobRegistry,
    /// The registry's names, as every claim passes them.
    pub(crate) job_names: Arc<Vec<String>>,
    pub(crate) config: EngineConfig,
    pub(crate) instance_id: InstanceId,
    pub(crate) events: broadcast::Sender<RunEvent>,
    pub(crate) running: Mutex<HashMap<RunId, worker::LocalAttempt>>,
    pub(crate) permits: Arc<Semaphore>,
    /// Stops claiming, sweeping, scheduling and the event pump.
    pub(crate) stop: CancellationToken,
    /// Tells running attempts to hand their runs back (after the shutdown grace).
    pub(crate) hand_back: CancellationToken,
    pub(crate) shutting_down: AtomicBool,
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl JobEngine {
    /// Starts an engine instance on `store`: applies crash recovery (sweeps leases
    /// that expired while no instance ran), then spawns the worker pool, the lease
    /// sweeper, the schedules and the event pump. Needs a tokio runtime.
    ///
    /// # Errors
    /// [`EngineError::Store`] when the store does not answer.
    pub async fn launch(
        store: Arc<dyn JobStore>,
        registry: JobRegistry,
        config: EngineConfig,
    ) -> Result<Self, EngineError> {
        store.ping().await?;
        let now = config.clock.now();
        let recovered = store.sweep_expired(now).await?;
        if !recovered.is_empty() {
            tracing::info!(?recovered, "recovered runs whose leases expired");
        }
        let last_seq = store.latest_event_seq().await?;
        let (events, _) = broadcast::channel(config.event_capacity);
        let inner = Arc::new(Inner {
            permits: Arc::new(Semaphore::new(config.concurrency)),
            store,
            job_names: Arc::new(registry.names()),
            registry,
            instance_id: InstanceId::new(),
            events,
            running: Mutex::new(HashMap::new()),
            stop: CancellationToken::new(),
            hand_back: CancellationToken::new(),
            shutting_down: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
            config,
        });
        worker::spawn_background(&inner, last_seq);
        Ok(Self { inner })
    }

    /// This instance's id (fresh at every launch).
    #[must_use]
    pub fn instance_id(&self) -> InstanceId {
        self.inner.instance_id
    }

    /// The registered jobs.
    #[must_use]
    pub fn registry(&self) -> &JobRegistry {
        &self.inner.registry
    }

    /// Starts a run. The returned run is committed (pending).
    ///
    /// # Errors
    /// [`EngineError::UnknownJob`] (422), [`EngineError::InvalidParams`] (400),
    /// [`EngineError::AlreadyActive`] (409, unless `force`), [`EngineError::ShuttingDown`],
    /// [`EngineError::Store`].
    pub async fn start(&self, request: StartRequest) -> Result<StartOutcome, EngineError> {
        let inner = &self.inner;
        if inner.shutting_down.load(Ordering::Acquire) {
            return Err(EngineError::ShuttingDown);
        }
        let job = inner
            .registry
            .get(&request.job_name)
            .ok_or_else(|| EngineError::UnknownJob {
                name: request.job_name.clone(),
                allowed: inner.registry.names(),
            })?;
        let params = normalise_params(request.params);
        job.check_params(&params)
            .map_err(|message| EngineError::InvalidParams {
                job_name: request.job_name.clone(),
                message,
            })?;
        let new = NewRun {
            id: RunId::new(),
            job_name: request.job_name.clone(),
            params,
            requested_by: request.requested_by,
            idempotency_key: request.idempotency_key,
            max_attempts: job.retry_policy().max_attempts.max(1),
            force: request.force,
            created_at: inner.config.clock.now(),
        };
        match inner.store.create_run(new).await? {
            CreateOutcome::Created { run, replaced } => {
                if let Some(replaced) = replaced {
                    worker::signal_cancel(inner, replaced);
                }
                Ok(StartOutcome {
                    run,
                    created: true,
                    replaced,
                })
            }
            CreateOutcome::Existing(run) => Ok(StartOutcome {
                run,
                created: false,
                replaced: None,
            }),
            CreateOutcome::AlreadyActive(run_id) => Err(EngineError::AlreadyActive {
                job_name: request.job_name,
                run_id,
            }),
        }
    }

    /// Cancels a run: at once when it is waiting, cooperatively (then by force after
    /// the cancel grace) when it is executing on any instance.
    ///
    /// # Errors
    /// [`EngineError::NotFound`], [`EngineError::AlreadyFinished`], [`EngineError::Store`].
    pub async fn cancel(&self, run_id: RunId) -> Result<Run, EngineError> {
        let now = self.inner.config.clock.now();
        match self.inner.store.request_cancel(run_id, now).await? {
            CancelOutcome::Cancelled(run) => Ok(run),
            CancelOutcome::Cancelling(run) => {
                worker::signal_cancel(&self.inner, run_id);
                Ok(run)
            }
            CancelOutcome::AlreadyFinished(run) => Err(EngineError::AlreadyFinished {
                run_id,
                state: run.state,
            }),
            CancelOutcome::NotFound => Err(EngineError::NotFound { run_id }),
        }
    }

    /// One run.
    ///
    /// # Errors
    /// [`EngineError::NotFound`], [`EngineError::Store`].
    pub async fn run(&self, run_id: RunId) -> Result<Run, EngineError> {
        self.inner
            .store
            .get_run(run_id)
            .await?
            .ok_or(EngineError::NotFound { run_id })
    }

    /// The run history of one job, newest first.
    ///
    /// # Errors
    /// [`EngineError::UnknownJob`], [`EngineError::Store`].
    pub async fn runs_for_job(&self, job_name: &str, limit: u32) -> Result<Vec<Run>, EngineError> {
        self.check_job(job_name)?;
        Ok(self.inner.store.list_runs(Some(job_name), limit).await?)
    }

    /// The newest runs of every job.
    ///
    /// # Errors
    /// [`EngineError::Store`].
    pub async fn recent_runs(&self, limit: u32) -> Result<Vec<Run>, EngineError> {
        Ok(self.inner.store.list_runs(None, limit).await?)
    }

    /// Every registered job with its latest run and state.
    ///
    /// # Errors
    /// [`EngineError::Store`].
    pub async fn jobs(&self) -> Result<Vec<JobSummary>, EngineError> {
        let latest = self.latest_by_job().await?;
        let active = self.active_jobs().await?;
        let last_slots: HashMap<String, OffsetDateTime> = self
            .inner
            .store
            .last_schedule_slots()
            .await?
            .into_iter()
            .collect();
        let now = self.inner.config.clock.now();
        Ok(self
            .inner
            .registry
            .infos()
            .into_iter()
            .map(|info| {
                let latest_run = latest.get(&info.name).cloned();
                let last_slot = info
                    .schedule
                    .as_ref()
                    .and_then(|_| last_slots.get(&info.name).copied());
                JobSummary {
                    active: active.contains(&info.name),
                    state: latest_run.as_ref().map(|run| run.state),
                    schedule: info.schedule.as_ref().map(ToString::to_string),
                    catch_up: info
                        .schedule
                        .as_ref()
                        .map(|schedule| schedule.catch_up().to_string()),
                    next_slot: info
                        .schedule
                        .as_ref()
                        .and_then(|schedule| schedule.next_after(now)),
                    last_slot,
                    timeout_secs: info.timeout.as_secs(),
                    max_attempts: info.retry_policy.max_attempts,
                    latest_run,
                    name: info.name,
                }
            })
            .collect())
    }

    /// The status summary the dashboard polls.
    ///
    /// # Errors
    /// [`EngineError::Store`].
    pub async fn status_summary(&self) -> Result<StatusSummary, EngineError> {
        let latest = self.latest_by_job().await?;
        let active = self.active_jobs().await?;
        let counts = self.inner.store.count_states().await?;
        let jobs = self
            .inner
            .registry
            .names()
            .into_iter()
            .map(|name| {
                let run = latest.get(&name);
                JobStatus {
                    state: run.map(|run| run.state),
                    last_run_id: run.map(|run| run.id),
                    last_finished_at: run.and_then(|run| run.finished_at),
                    progress: run.map(|run| run.progress.clone()),
                    error: run.and_then(|run| run.error.clone()),
                    active: active.contains(&name),
                    name,
                }
            })
            .collect();
        Ok(StatusSummary {
            jobs,
            counts,
            running_here: self.running_here(),
            instance_id: self.inner.instance_id,
            generated_at: self.inner.config.clock.now(),
        })
    }

    /// A run's log, oldest first.
    ///
    /// # Errors
    /// [`EngineError::NotFound`], [`EngineError::Store`].
    pub async fn logs(&self, run_id: RunId) -> Result<Vec<LogLine>, EngineError> {
        self.run(run_id).await?;
        Ok(self.inner.store.logs(run_id).await?)
    }

    /// A run's attempts, in order.
    ///
    /// # Errors
    /// [`EngineError::NotFound`], [`EngineError::Store`].
    pub async fn attempts(&self, run_id: RunId) -> Result<Vec<crate::model::Attempt>, EngineError> {
        self.run(run_id).await?;
        Ok(self.inner.store.attempts(run_id).await?)
    }

    /// Every event the store writes from now on (state changes, progress, logs), from
    /// every instance sharing the store, in store order.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<RunEvent> {
        self.inner.events.subscribe()
    }

    /// The highest event sequence number retention deleted (0 when none): a subscriber
    /// resuming after an older one has missed events and must reload its state.
    ///
    /// # Errors
    /// [`EngineError::Store`].
    pub async fn events_pruned_through(&self) -> Result<i64, EngineError> {
        Ok(self.inner.store.events_pruned_through().await?)
    }

    /// One retention pass now, with `retention`'s ages against the engine's clock:
    /// batches until nothing is left (or another instance holds the retention lock).
    /// The engine runs one every [`Retention::interval`] by itself.
    ///
    /// # Errors
    /// [`EngineError::Store`] (the batches deleted before the error stay deleted).
    pub async fn prune(&self, retention: Retention) -> Result<crate::PruneReport, EngineError> {
        Ok(worker::prune_pass(&self.inner, retention).await?)
    }

    /// The sequence number of the latest stored event (0 when there is none).
    ///
    /// # Errors
    /// [`EngineError::Store`].
    pub async fn latest_event_seq(&self) -> Result<i64, EngineError> {
        // Never below what retention deleted, even when it deleted every event.
        let latest = self.inner.store.latest_event_seq().await?;
        Ok(latest.max(self.inner.store.events_pruned_through().await?))
    }

    /// Stored events after `after_seq` (for an SSE client resuming with `Last-Event-ID`).
    ///
    /// # Errors
    /// [`EngineError::Store`].
    pub async fn events_since(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<RunEvent>, EngineError> {
        Ok(self.inner.store.events_since(after_seq, limit).await?)
    }

    /// Waits until the run is terminal and returns it (watching events, re-reading the
    /// store on each one).
    ///
    /// # Errors
    /// [`EngineError::NotFound`], [`EngineError::Store`].
    pub async fn wait_for_terminal(&self, run_id: RunId) -> Result<Run, EngineError> {
        let mut events = self.subscribe();
        let mut poll = tokio::time::interval(
            self.inner
                .config
                .poll_interval
                .max(Duration::from_millis(10)),
        );
        loop {
            let run = self.run(run_id).await?;
            if run.state.is_terminal() {
                return Ok(run);
            }
            tokio::select! {
                _ = events.recv() => {}
                _ = poll.tick() => {}
            }
        }
    }

    /// The engine's health: the store answers and shutdown has not begun.
    pub async fn health(&self) -> EngineHealth {
        let store_error = self
            .inner
            .store
            .ping()
            .await
            .err()
            .map(|err| err.to_string());
        let shutting_down = self.inner.shutting_down.load(Ordering::Acquire);
        EngineHealth {
            healthy: store_error.is_none() && !shutting_down,
            store: self.inner.store.kind().to_owned(),
            store_error,
            instance_id: self.inner.instance_id,
            running: self.running_here(),
            concurrency: self.inner.config.concurrency,
            shutting_down,
        }
    }

    /// How many attempts this instance is executing.
    #[must_use]
    pub fn running_here(&self) -> usize {
        self.inner
            .running
            .lock()
            .map(|map| map.values().filter(|a| a.is_executing()).count())
            .unwrap_or(0)
    }

    /// Graceful shutdown: stops claiming and scheduling, lets running attempts finish
    /// for the shutdown grace, then hands the rest back (state `retrying`, not counted
    /// against their retry budget) so another instance takes them at once.
    pub async fn shutdown(&self) {
        worker::shutdown(&self.inner).await;
    }

    fn check_job(&self, job_name: &str) -> Result<(), EngineError> {
        if self.inner.registry.contains(job_name) {
            Ok(())
        } else {
            Err(EngineError::UnknownJob {
                name: job_name.to_owned(),
                allowed: self.inner.registry.names(),
            })
        }
    }

    async fn latest_by_job(&self) -> Result<HashMap<String, Run>, EngineError> {
        Ok(self
            .inner
            .store
            .latest_runs()
            .await?
            .into_iter()
            .map(|run| (run.job_name.clone(), run))
            .collect())
    }

    async fn active_jobs(&self) -> Result<std::collections::HashSet<String>, EngineError> {
        Ok(self
            .inner
            .store
            .active_runs(None)
            .await?
            .into_iter()
            .map(|run| run.job_name)
            .collect())
    }
}

impl fmt::Debug for JobEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobEngine")
            .field("instance_id", &self.inner.instance_id)
            .field("store", &self.inner.store.kind())
            .field("registry", &self.inner.registry)
            .field("config", &self.inner.config)
            .finish()
    }
}
