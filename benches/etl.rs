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
//! SQLite (a WAL file in a temporary directory) always; PostgreSQL as well when
//! `PULSE_TEST_DATABASE_URL` is set (in a fresh schema, dropped afterwards). Without
//! `--bench` (as under `cargo test --benches`) it runs a tiny smoke-sized load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pulse::etl::{
    EngineConfig, InstanceId, Job, JobContext, JobEngine, JobError, JobOutput, JobRegistry,
    JobStore, NoParams, PgStore, PgStoreOptions, RunId, RunState, SqliteStore, StartRequest,
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
}

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
    EngineConfig::default().with_concurrency(8)
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

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let sizes = if full {
        Sizes {
            latency_samples: 300,
            throughput_runs: 3000,
            recoveries: 5,
        }
    } else {
        Sizes {
            latency_samples: 5,
            throughput_runs: 40,
            recoveries: 1,
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
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
