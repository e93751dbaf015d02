//! Run with: cargo bench --bench etl
//!
//! A load benchmark of the pulse-etl job engine (a plain binary, not criterion: what
//! matters here are latency percentiles and throughput under real storage):
//!
//! - **start-to-running latency**: from `JobEngine::start` returning to the job's first
//!   line executing on a worker of the same instance;
//! - **throughput** of no-op runs (start → claim → run → finish, each state change a
//!   transaction with its event row);
//! - **time to recover** a run whose worker died: from the dead worker's claim to the
//!   run's success on another instance (lease 1 s, sweep every 250 ms).
//!
//! - the two shapes comparable with graphile-worker (see `benches/etl_vs_graphile.sh`):
//!   **queued**: N runs (of N jobs: one active run per job) created first, then drained
//!   by one instance with 8 workers, like graphile-worker's own benchmark; **stream**:
//!   N starts, one call each with 32 calls in flight, by an API-only instance, executed
//!   by 8 workers of another instance. Both time the first start (or the worker's
//!   launch) to the last run's `succeeded` event.
//!
//! SQLite (a WAL file in a temporary directory) always; PostgreSQL as well when
//! `PULSE_TEST_DATABASE_URL` is set (in a fresh schema, dropped afterwards). Without
//! `--bench` (as under `cargo test --benches`) it runs a tiny smoke-sized load.
//!
//! One measurement, for scripts: `--shape queued|stream|latency --store sqlite|postgres
//! [--runs N]` prints one `RESULT key=value …` line (used by `benches/etl_vs_graphile.sh`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use pulse::etl::{
    EngineConfig, InstanceId, Job, JobContext, JobEngine, JobError, JobOutput, JobRegistry,
    JobStore, NoParams, PgStore, PgStoreOptions, RunEventKind, RunId, RunState, SqliteStore,
    StartRequest,
};
use tokio::sync::mpsc;

/// A job that does nothing but say when it began.
struct Noop {
    name: String,
    began: mpsc::UnboundedSender<(RunId, Instant)>,
}

impl Job for Noop {
    type Params = NoParams;

    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, ctx: JobContext) -> Result<JobOutput, JobError> {
        let _ = self.began.send((ctx.run_id(), Instant::now()));
        Ok(JobOutput::empty())
    }
}

struct Sizes {
    latency_samples: usize,
    throughput_runs: usize,
    recoveries: usize,
    compare_runs: usize,
}

/// Workers of the instance that executes (graphile-worker's `concurrency`).
const WORKERS: usize = 8;
/// Starts in flight in the stream shape.
const IN_FLIGHT: usize = 32;

fn registry(jobs: usize) -> (JobRegistry, mpsc::UnboundedReceiver<(RunId, Instant)>) {
    let (began, receiver) = mpsc::unbounded_channel();
    let mut registry = JobRegistry::new();
    for i in 0..jobs {
        registry.register(Noop {
            name: format!("noop_{i}"),
            began: began.clone(),
        });
    }
    (registry, receiver)
}

fn config() -> EngineConfig {
    EngineConfig::default().with_concurrency(WORKERS)
}

/// Waits for `runs` `succeeded` events on `events`; panics on any other terminal state.
async fn wait_succeeded(
    events: &mut tokio::sync::broadcast::Receiver<pulse::etl::RunEvent>,
    runs: usize,
) {
    let mut succeeded = 0;
    while succeeded < runs {
        let event = events.recv().await.expect("the bench keeps up with events");
        if let RunEventKind::State { state, .. } = event.kind {
            assert!(
                !state.is_terminal() || state == RunState::Succeeded,
                "a no-op run ended {state}"
            );
            succeeded += usize::from(state == RunState::Succeeded);
        }
    }
}

/// graphile-worker's benchmark shape: `runs` runs queued first (by an instance that
/// executes nothing), then one instance with 8 workers drains them. Times the worker's
/// launch to the last `succeeded` event.
async fn queued(store: Arc<dyn JobStore>, runs: usize) -> Duration {
    let (jobs, _began) = registry(runs);
    let api = JobEngine::launch(
        Arc::clone(&store),
        jobs.clone(),
        EngineConfig::default().with_concurrency(0),
    )
    .await
    .unwrap();
    for i in 0..runs {
        api.start(StartRequest::new(format!("noop_{i}")))
            .await
            .unwrap();
    }
    api.shutdown().await;
    let clock = Instant::now();
    let worker = JobEngine::launch(store, jobs, config().with_event_capacity(4 * runs + 64))
        .await
        .unwrap();
    let mut events = worker.subscribe();
    wait_succeeded(&mut events, runs).await;
    let elapsed = clock.elapsed();
    worker.shutdown().await;
    elapsed
}

/// Starts one call each, 32 in flight, by an instance that executes nothing (an API
/// server, on `starts`: its own pool when the caller opened a second store), executed by
/// 8 workers of another instance on `store`. Times the first start to the last
/// `succeeded` event.
async fn stream(store: Arc<dyn JobStore>, starts: Arc<dyn JobStore>, runs: usize) -> Duration {
    let (jobs, _began) = registry(runs);
    let api = JobEngine::launch(
        starts,
        jobs.clone(),
        EngineConfig::default().with_concurrency(0),
    )
    .await
    .unwrap();
    let worker = JobEngine::launch(store, jobs, config().with_event_capacity(4 * runs + 64))
        .await
        .unwrap();
    let mut events = worker.subscribe();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clock = Instant::now();
    let mut starters = Vec::new();
    for _ in 0..IN_FLIGHT {
        let api = api.clone();
        let next = Arc::clone(&next);
        starters.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= runs {
                    return;
                }
                api.start(StartRequest::new(format!("noop_{i}")))
                    .await
                    .unwrap();
            }
        }));
    }
    wait_succeeded(&mut events, runs).await;
    let elapsed = clock.elapsed();
    for starter in starters {
        starter.await.unwrap();
    }
    api.shutdown().await;
    worker.shutdown().await;
    elapsed
}

async fn latency(store: Arc<dyn JobStore>, samples: usize) -> Vec<Duration> {
    let (registry, mut began) = registry(1);
    let engine = JobEngine::launch(store, registry, config()).await.unwrap();
    let mut latencies = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = engine.start(StartRequest::new("noop_0")).await.unwrap();
        let returned = Instant::now();
        let (run_id, at) = began.recv().await.unwrap();
        assert_eq!(run_id, started.run.id);
        latencies.push(at.saturating_duration_since(returned));
        engine.wait_for_terminal(run_id).await.unwrap();
    }
    engine.shutdown().await;
    latencies
}

async fn throughput(store: Arc<dyn JobStore>, runs: usize) -> (usize, Duration) {
    const JOBS: usize = 32;
    let (registry, _began) = registry(JOBS);
    let engine = JobEngine::launch(store, registry, config()).await.unwrap();
    let clock = Instant::now();
    let mut done = 0;
    while done < runs {
        let wave = JOBS.min(runs - done);
        let mut ids = Vec::with_capacity(wave);
        for i in 0..wave {
            let started = engine
                .start(StartRequest::new(format!("noop_{i}")))
                .await
                .unwrap();
            ids.push(started.run.id);
        }
        for id in ids {
            let run = engine.wait_for_terminal(id).await.unwrap();
            assert_eq!(run.state, RunState::Succeeded);
        }
        done += wave;
    }
    let elapsed = clock.elapsed();
    engine.shutdown().await;
    (done, elapsed)
}

async fn recovery(store: Arc<dyn JobStore>) -> Duration {
    let lease = Duration::from_secs(1);
    let (api_jobs, _began) = registry(1);
    let api = JobEngine::launch(
        Arc::clone(&store),
        api_jobs,
        EngineConfig::default().with_concurrency(0),
    )
    .await
    .unwrap();
    let started = api.start(StartRequest::new("noop_0")).await.unwrap();
    // A worker claims the run and dies at once: it never heartbeats.
    let clock = Instant::now();
    store
        .claim(
            InstanceId::new(),
            &["noop_0".to_owned()],
            time::OffsetDateTime::now_utc(),
            lease,
        )
        .await
        .unwrap()
        .unwrap();
    let (worker_jobs, _began) = registry(1);
    let worker = JobEngine::launch(
        Arc::clone(&store),
        worker_jobs,
        EngineConfig::default()
            .with_lease(lease)
            .with_heartbeat_interval(Duration::from_millis(250))
            .with_sweep_interval(Duration::from_millis(250))
            .with_poll_interval(Duration::from_millis(50)),
    )
    .await
    .unwrap();
    let run = worker.wait_for_terminal(started.run.id).await.unwrap();
    let elapsed = clock.elapsed();
    assert_eq!((run.state, run.attempts), (RunState::Succeeded, 2));
    worker.shutdown().await;
    api.shutdown().await;
    elapsed
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn bench_store<F, Fut>(label: &str, sizes: &Sizes, open: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn JobStore>>,
{
    let mut latencies = latency(open().await, sizes.latency_samples).await;
    latencies.sort();
    println!(
        "{label:<10} start-to-running  p50 {}  p95 {}  p99 {}  max {}  ({} samples)",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.95)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 1.0)),
        latencies.len()
    );
    let (runs, elapsed) = throughput(open().await, sizes.throughput_runs).await;
    println!(
        "{label:<10} no-op throughput  {:.0} runs/s  ({runs} runs in {:.2} s, 8 workers, 32 jobs)",
        runs as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    let runs = sizes.compare_runs;
    let elapsed = queued(open().await, runs).await;
    println!(
        "{label:<10} queued, drained  {:.0} runs/s  ({runs} runs queued, then {WORKERS} workers)",
        runs as f64 / elapsed.as_secs_f64()
    );
    let store = open().await;
    let elapsed = stream(Arc::clone(&store), store, runs).await;
    println!(
        "{label:<10} one start a call {:.0} runs/s  ({runs} starts, {IN_FLIGHT} in flight, {WORKERS} workers)",
        runs as f64 / elapsed.as_secs_f64()
    );
    let mut recoveries = Vec::new();
    for _ in 0..sizes.recoveries {
        recoveries.push(recovery(open().await).await);
    }
    recoveries.sort();
    println!(
        "{label:<10} time to recover   median {}  max {}  (lease 1 s, sweep 250 ms, {} kills)",
        ms(percentile(&recoveries, 0.5)),
        ms(percentile(&recoveries, 1.0)),
        recoveries.len()
    );
}

/// One measurement for scripts: `--shape queued|stream|latency --store sqlite|postgres
/// [--runs N]`.
struct Single {
    shape: String,
    store: String,
    runs: usize,
}

fn single(args: &[String]) -> Option<Single> {
    let value = |flag: &str| {
        args.iter()
            .position(|arg| arg == flag)
            .and_then(|at| args.get(at + 1))
            .cloned()
    };
    Some(Single {
        shape: value("--shape")?,
        store: value("--store").unwrap_or_else(|| "postgres".to_owned()),
        runs: value("--runs").map_or(3000, |runs| runs.parse().expect("--runs N")),
    })
}

async fn run_single(single: Single, dir: &std::path::Path) {
    let (store, starts) = match single.store.as_str() {
        "sqlite" => {
            let path = dir.join("single.db");
            let store = SqliteStore::open(&path).await.unwrap().into_dyn();
            (store, SqliteStore::open(&path).await.unwrap().into_dyn())
        }
        "postgres" => {
            let url = std::env::var("PULSE_TEST_DATABASE_URL")
                .expect("--store postgres needs PULSE_TEST_DATABASE_URL");
            let schema = format!("etl_bench_{}", uuid::Uuid::new_v4().simple());
            let store = PgStore::connect_with(PgStoreOptions::new(&url).with_schema(&schema))
                .await
                .unwrap();
            // The stream shape starts runs through a second pool, as an API server would.
            let starts = PgStore::connect_with(PgStoreOptions::new(&url).with_schema(&schema))
                .await
                .unwrap();
            let result =
                measure(&single, store.clone().into_dyn(), starts.clone().into_dyn()).await;
            starts.close().await;
            let _ = sqlx_drop_schema(&store, &schema).await;
            store.close().await;
            println!("{result}");
            return;
        }
        other => panic!("unknown --store {other}"),
    };
    println!("{}", measure(&single, store, starts).await);
}

async fn measure(single: &Single, store: Arc<dyn JobStore>, starts: Arc<dyn JobStore>) -> String {
    let Single {
        shape,
        store: kind,
        runs,
    } = single;
    let runs = *runs;
    let elapsed = match shape.as_str() {
        "queued" => queued(store, runs).await,
        "stream" => stream(store, starts, runs).await,
        "latency" => {
            let mut latencies = latency(store, runs).await;
            latencies.sort();
            return format!(
                "RESULT engine=pulse-etl store={kind} shape=latency samples={runs} \
                 p50_ms={:.3} p95_ms={:.3} p99_ms={:.3} max_ms={:.3}",
                percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
                percentile(&latencies, 0.95).as_secs_f64() * 1000.0,
                percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
                percentile(&latencies, 1.0).as_secs_f64() * 1000.0,
            );
        }
        other => panic!("unknown --shape {other}"),
    };
    format!(
        "RESULT engine=pulse-etl store={kind} shape={shape} runs={runs} secs={:.3} per_sec={:.0}",
        elapsed.as_secs_f64(),
        runs as f64 / elapsed.as_secs_f64()
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|arg| arg == "--bench");
    let sizes = if full {
        Sizes {
            latency_samples: 300,
            throughput_runs: 3000,
            recoveries: 5,
            compare_runs: 3000,
        }
    } else {
        Sizes {
            latency_samples: 5,
            throughput_runs: 40,
            recoveries: 1,
            compare_runs: 40,
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Some(single) = single(&args) {
        let dir = tempfile::tempdir().unwrap();
        runtime.block_on(run_single(single, dir.path()));
        return;
    }
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let counter = std::sync::atomic::AtomicUsize::new(0);
        bench_store("sqlite", &sizes, || {
            let path = dir.path().join(format!(
                "bench-{}.db",
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            async move { SqliteStore::open(path).await.unwrap().into_dyn() }
        })
        .await;

        if let Ok(url) = std::env::var("PULSE_TEST_DATABASE_URL") {
            let schemas = std::sync::Mutex::new(Vec::new());
            bench_store("postgres", &sizes, || {
                let schema = format!("etl_bench_{}", uuid::Uuid::new_v4().simple());
                schemas.lock().unwrap().push(schema.clone());
                let options = PgStoreOptions::new(&url).with_schema(schema);
                async move { PgStore::connect_with(options).await.unwrap().into_dyn() }
            })
            .await;
            let cleanup = PgStore::connect(&url).await.unwrap();
            for schema in schemas.into_inner().unwrap() {
                let _ = sqlx_drop_schema(&cleanup, &schema).await;
            }
        } else {
            println!("postgres   skipped (set PULSE_TEST_DATABASE_URL)");
        }
    });
}

async fn sqlx_drop_schema(store: &PgStore, schema: &str) -> Result<(), sqlx::Error> {
    if let pulse::etl::StorePool::Postgres(pool) = store.pool() {
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(&pool)
            .await?;
    }
    Ok(())
}
