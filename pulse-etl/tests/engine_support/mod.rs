//! Test jobs and helpers shared by the engine and recovery tests.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pulse_etl::{
    EngineConfig, Job, JobContext, JobEngine, JobError, JobOutput, JobRegistry, JobStore,
    MemoryStore, RetryPolicy, Run, RunEvent, RunEventKind, RunId, RunState, Schedule, StorePool,
    TokioWallClock,
};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Semaphore, broadcast};

/// How long a test waits for a state before it gives up (a safety net, not an assertion
/// about speed).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Short leases and intervals, so recovery happens within a second or two.
pub fn fast_config() -> EngineConfig {
    EngineConfig::default()
        .with_concurrency(4)
        .with_lease(Duration::from_secs(2))
        .with_heartbeat_interval(Duration::from_millis(200))
        .with_sweep_interval(Duration::from_millis(200))
        .with_poll_interval(Duration::from_millis(20))
        .with_cancel_grace(Duration::from_millis(300))
        .with_shutdown_grace(Duration::from_millis(300))
}

/// [`fast_config`] on a wall clock that follows tokio's: with `start_paused`, leases,
/// backoffs and grace periods pass in virtual time.
pub fn virtual_time() -> EngineConfig {
    fast_config().with_clock(Arc::new(TokioWallClock::new(
        time::OffsetDateTime::now_utc(),
    )))
}

/// An engine over a fresh in-memory store.
pub async fn memory_engine(
    registry: JobRegistry,
    config: EngineConfig,
) -> (JobEngine, Arc<dyn JobStore>) {
    let store = MemoryStore::new().into_dyn();
    let engine = JobEngine::launch(Arc::clone(&store), registry, config)
        .await
        .unwrap();
    (engine, store)
}

/// What a [`ScriptJob`] run does, from its params.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Script {
    /// Steps to take; each reports progress, logs and saves a checkpoint.
    pub steps: u64,
    /// Sleep per step, in milliseconds.
    pub step_ms: u64,
    /// Fail retryably on attempts up to this number.
    pub fail_attempts: u32,
    /// Fail retryably at this step (on attempts up to `fail_attempts`) instead of at the start.
    pub fail_at_step: Option<u64>,
    /// Fail fatally.
    pub fatal: bool,
    /// Panic on attempts up to `fail_attempts`.
    pub panic: bool,
    /// Hold (wait) on attempts up to this number, until cancelled or released.
    pub hold_attempts: u32,
    /// While holding, ignore the cancellation token (forces an abort).
    pub ignore_cancel: bool,
    /// Write an output row keyed by run id when done.
    pub write_output: bool,
}

/// Counts how many runs execute at once.
#[derive(Debug, Default)]
pub struct Gauge {
    pub current: AtomicUsize,
    pub max: AtomicUsize,
    pub started: AtomicUsize,
}

impl Gauge {
    fn enter(&self) {
        let now = self.current.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        self.started.fetch_add(1, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.current.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A job whose behaviour its params script.
#[derive(Clone)]
pub struct ScriptJob {
    pub name: String,
    pub timeout: Duration,
    pub policy: RetryPolicy,
    pub schedule: Option<Schedule>,
    pub gauge: Arc<Gauge>,
    /// Holding runs wait for a permit of this semaphore (or a cancel).
    pub release: Arc<Semaphore>,
}

impl ScriptJob {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            timeout: Duration::from_secs(60),
            policy: RetryPolicy::default()
                .with_initial_backoff(Duration::from_millis(20))
                .with_max_backoff(Duration::from_millis(100)),
            schedule: None,
            gauge: Arc::new(Gauge::default()),
            release: Arc::new(Semaphore::new(0)),
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn with_schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = Some(schedule);
        self
    }

    pub fn sharing(mut self, gauge: &Arc<Gauge>, release: &Arc<Semaphore>) -> Self {
        self.gauge = Arc::clone(gauge);
        self.release = Arc::clone(release);
        self
    }

    async fn script(&self, ctx: &JobContext, script: &Script) -> Result<JobOutput, JobError> {
        let attempt = ctx.attempt();
        if script.fatal {
            return Err(JobError::fatal("bad credentials"));
        }
        if script.panic && attempt <= script.fail_attempts {
            panic!("script panic on attempt {attempt}");
        }
        if script.fail_at_step.is_none() && attempt <= script.fail_attempts {
            return Err(JobError::retryable(format!(
                "HTTP 503 on attempt {attempt}"
            )));
        }
        if attempt <= script.hold_attempts {
            if script.ignore_cancel {
                let _permit = self.release.acquire().await;
            } else {
                tokio::select! {
                    _ = self.release.acquire() => {}
                    () = ctx.cancelled() => return Err(JobError::Cancelled),
                }
            }
        }
        let resume_from = ctx.checkpoint_as::<u64>().unwrap_or(0);
        for step in resume_from + 1..=script.steps {
            ctx.check_cancelled()?;
            if script.fail_at_step == Some(step) && attempt <= script.fail_attempts {
                return Err(JobError::retryable(format!("failed at step {step}")));
            }
            if script.step_ms > 0 {
                tokio::time::sleep(Duration::from_millis(script.step_ms)).await;
            }
            ctx.progress(step, Some(script.steps), format!("step {step}"))
                .await?;
            ctx.info(format!("step {step} done")).await?;
            ctx.set_checkpoint(step).await?;
        }
        if script.write_output {
            ctx.check_lease().await?;
            write_output(&ctx.pool(), ctx.run_id(), attempt)
                .await
                .map_err(|err| JobError::retryable(err.to_string()))?;
        }
        Ok(JobOutput::new(json!({
            "attempt": attempt,
            "resumed_from": resume_from,
        })))
    }
}

impl Job for ScriptJob {
    type Params = Script;

    fn name(&self) -> &str {
        &self.name
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn retry_policy(&self) -> RetryPolicy {
        self.policy
    }

    fn schedule(&self) -> Option<Schedule> {
        self.schedule.clone()
    }

    async fn run(&self, ctx: JobContext) -> Result<JobOutput, JobError> {
        let script: Script = ctx.params()?;
        self.gauge.enter();
        let result = self.script(&ctx, &script).await;
        self.gauge.leave();
        result
    }
}

/// Creates the table test jobs load their output into (idempotently, keyed by run).
pub async fn create_output_table(store: &dyn JobStore) {
    match store.pool() {
        StorePool::Sqlite(pool) => {
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS test_outputs (run_id TEXT PRIMARY KEY, \
                 attempt INTEGER NOT NULL, writes INTEGER NOT NULL)",
            )
            .execute(&pool)
            .await
            .unwrap();
        }
        StorePool::Postgres(pool) => {
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS test_outputs (run_id TEXT PRIMARY KEY, \
                 attempt INTEGER NOT NULL, writes INTEGER NOT NULL)",
            )
            .execute(&pool)
            .await
            .unwrap();
        }
        _ => unreachable!("unknown store"),
    }
}

async fn write_output(pool: &StorePool, run_id: RunId, attempt: u32) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO test_outputs (run_id, attempt, writes) VALUES ($1, $2, 1) \
               ON CONFLICT (run_id) DO UPDATE SET attempt = excluded.attempt, \
               writes = test_outputs.writes + 1";
    match pool {
        StorePool::Sqlite(pool) => {
            sqlx::query(sql)
                .bind(run_id.to_string())
                .bind(i64::from(attempt))
                .execute(pool)
                .await?;
        }
        StorePool::Postgres(pool) => {
            sqlx::query(sql)
                .bind(run_id.to_string())
                .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
                .execute(pool)
                .await?;
        }
        _ => unreachable!("unknown store"),
    }
    Ok(())
}

/// How many times each run's output was written: `(run_id, writes)`.
pub async fn output_writes(store: &dyn JobStore, run_id: RunId) -> i64 {
    let sql = "SELECT COALESCE(SUM(writes), 0) FROM test_outputs WHERE run_id = $1";
    match store.pool() {
        StorePool::Sqlite(pool) => sqlx::query_scalar(sql)
            .bind(run_id.to_string())
            .fetch_one(&pool)
            .await
            .unwrap(),
        StorePool::Postgres(pool) => sqlx::query_scalar::<_, i64>(
            "SELECT COALESCE(SUM(writes), 0)::bigint FROM test_outputs WHERE run_id = $1",
        )
        .bind(run_id.to_string())
        .fetch_one(&pool)
        .await
        .unwrap(),
        _ => unreachable!("unknown store"),
    }
}

/// Polls the store until the run satisfies `done`; panics with the run after
/// [`PATIENCE`]. For runs that worker processes execute (the recovery tests), whose
/// progress this process can only read from the database; in-process engines are
/// awaited with [`wait_for_state`].
pub async fn wait_for_run(
    store: &dyn JobStore,
    run_id: RunId,
    what: &str,
    done: impl Fn(&Run) -> bool,
) -> Run {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let run = store.get_run(run_id).await.unwrap();
        if let Some(run) = &run
            && done(run)
        {
            return run.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}: {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the run is in `state`, on the engine's event stream (an instance sees the
/// events of every instance on its store), never by polling: it subscribes first, then
/// reads the run, so a change between the two is not missed. Panics after [`PATIENCE`]
/// without a matching event.
pub async fn wait_for_state(engine: &JobEngine, run_id: RunId, state: RunState) -> Run {
    let mut events = engine.subscribe();
    loop {
        let run = engine.run(run_id).await.unwrap();
        if run.state == state {
            return run;
        }
        loop {
            let event = tokio::time::timeout(PATIENCE, events.recv())
                .await
                .unwrap_or_else(|_| panic!("gave up waiting for {state}: {run:?}"));
            match event {
                Ok(RunEvent {
                    run_id: id,
                    kind: RunEventKind::State { state: now, .. },
                    ..
                }) if id == run_id && now == state => break,
                Ok(_) => {}
                // Missed some: read the run again.
                Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(broadcast::error::RecvError::Closed) => {
                    panic!("the event stream ended before {state}: {run:?}")
                }
            }
        }
    }
}

/// Waits until `check` holds, polling; panics after [`PATIENCE`].
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The slots recorded for `job`, oldest first, each with whether it made a run.
pub async fn recorded_slots(store: &dyn JobStore, job: &str) -> Vec<(time::OffsetDateTime, bool)> {
    match store.pool() {
        StorePool::Sqlite(pool) => {
            let rows: Vec<(i64, Option<String>)> = sqlx::query_as(
                "SELECT slot, run_id FROM etl_schedule_slots WHERE job_name = ? ORDER BY slot",
            )
            .bind(job)
            .fetch_all(&pool)
            .await
            .unwrap();
            rows.into_iter()
                .map(|(micros, run)| {
                    let at =
                        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
                            .unwrap();
                    (at, run.is_some())
                })
                .collect()
        }
        StorePool::Postgres(pool) => {
            let rows: Vec<(time::OffsetDateTime, Option<uuid::Uuid>)> = sqlx::query_as(
                "SELECT slot, run_id FROM etl_schedule_slots WHERE job_name = $1 ORDER BY slot",
            )
            .bind(job)
            .fetch_all(&pool)
            .await
            .unwrap();
            rows.into_iter()
                .map(|(at, run)| (at, run.is_some()))
                .collect()
        }
        _ => panic!("a store of an unknown kind"),
    }
}

/// Missed slots across an engine restart, on a manual clock. A ten-minute schedule whose
/// 09:50 slot was recorded fires 10:00 on one engine, which then stops; a second engine
/// with `policy` starts at 10:49:59.9 (10:10 to 10:40 missed), the test waits until the
/// slots in `caught_up` ran, then moves the clock to the 10:50 slot. Returns the slots
/// recorded, oldest first, with whether each made a run, once 10:50 has run.
pub async fn catch_up_across_a_restart<F, Fut>(
    store: F,
    policy: pulse_etl::CatchUp,
    caught_up: &[time::OffsetDateTime],
) -> Vec<(time::OffsetDateTime, bool)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn JobStore>>,
{
    use time::macros::datetime;

    let clock = Arc::new(pulse_etl::ManualWallClock::new(
        datetime!(2026-01-01 09:59:59.9 UTC),
    ));
    let schedule = Schedule::every(Duration::from_secs(600))
        .unwrap()
        .with_catch_up(policy);
    let engine = |store| {
        let job = ScriptJob::new("tick").with_schedule(schedule.clone());
        pulse_etl::JobEngine::launch(
            store,
            pulse_etl::JobRegistry::new().with_job(job),
            fast_config().with_clock(Arc::clone(&clock) as Arc<dyn pulse_etl::WallClock>),
        )
    };
    let reader = store().await;
    let ran = |slots: Vec<time::OffsetDateTime>| {
        let reader = Arc::clone(&reader);
        async move {
            let recorded = recorded_slots(reader.as_ref(), "tick").await;
            slots.iter().all(|slot| recorded.contains(&(*slot, true)))
                && reader.active_runs(Some("tick")).await.unwrap().is_empty()
        }
    };

    // The 09:50 slot is on record (fired and run), so missed slots count from there.
    let seeded = reader
        .fire_schedule(
            datetime!(2026-01-01 09:50 UTC),
            pulse_etl::NewRun {
                id: RunId::new(),
                job_name: "tick".to_owned(),
                params: json!({}),
                requested_by: None,
                idempotency_key: None,
                max_attempts: 1,
                force: false,
                created_at: datetime!(2026-01-01 09:50 UTC),
            },
        )
        .await
        .unwrap();
    assert!(seeded.is_some());
    let first = engine(store().await).await.unwrap();
    wait_until("the 09:50 run finished", || {
        ran(vec![datetime!(2026-01-01 09:50 UTC)])
    })
    .await;
    clock.set(datetime!(2026-01-01 10:00:00.05 UTC));
    wait_until("the 10:00 slot ran", || {
        ran(vec![datetime!(2026-01-01 10:00 UTC)])
    })
    .await;
    first.shutdown().await;

    // Down from 10:00 to 10:49:59.9: 10:10, 10:20, 10:30 and 10:40 went by.
    clock.set(datetime!(2026-01-01 10:49:59.9 UTC));
    let second = engine(store().await).await.unwrap();
    wait_until("the missed slots ran", || ran(caught_up.to_vec())).await;
    clock.set(datetime!(2026-01-01 10:50:00.05 UTC));
    wait_until("the 10:50 slot ran", || {
        ran(vec![datetime!(2026-01-01 10:50 UTC)])
    })
    .await;
    second.shutdown().await;
    recorded_slots(reader.as_ref(), "tick").await
}
