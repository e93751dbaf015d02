//! Run with: cargo run -p pulse-etl --example embedded_engine --features sqlite,client
//!
//! An embedded job engine on SQLite with its HTTP API and client, on loopback: a `count`
//! job is registered, the engine runs on a SQLite file in a temporary directory, the API
//! is served behind internal authentication, and `EtlClient` — over HTTP, with the
//! internal key — starts a run and follows its events until it has succeeded. A client
//! without the key is refused (403). Then everything shuts down.

use std::error::Error;
use std::time::Duration;

use futures_util::StreamExt;
use pulse_core::internal_auth::{InternalAuthLayer, KeyRing};
use pulse_etl::api::EtlApi;
use pulse_etl::client::{ClientError, EtlClient, StartOptions};
use pulse_etl::{
    EngineConfig, Job, JobContext, JobEngine, JobError, JobOutput, JobRegistry, RunState,
    SqliteStore,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct CountParams {
    to: u64,
}

/// Counts to `to`, reporting progress and honouring cancels.
struct Count;

impl Job for Count {
    type Params = CountParams;

    fn name(&self) -> &str {
        "count"
    }

    async fn run(&self, ctx: JobContext) -> Result<JobOutput, JobError> {
        let params: CountParams = ctx.params()?;
        for i in 1..=params.to {
            ctx.check_cancelled()?;
            ctx.progress(i, Some(params.to), format!("counted {i}"))
                .await?;
        }
        Ok(JobOutput::new(serde_json::json!({ "counted": params.to })))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path().join("jobs.db")).await?; // migrations applied here
    let engine = JobEngine::launch(
        store.into_dyn(),
        JobRegistry::new().with_job(Count),
        EngineConfig::default(),
    )
    .await?;

    // The API behind internal authentication, on a loopback port.
    let ring = KeyRing::parse("example:0123456789abcdef0123456789abcdef")?;
    let app = EtlApi::new(engine.clone())
        .with_internal_auth(InternalAuthLayer::new(ring.clone()))
        .into_router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    println!("ETL API on {url}");

    // A caller without the internal key is refused.
    match EtlClient::http(&url)?.jobs().await {
        Err(ClientError::Api { status, body, .. }) => {
            println!("without the key: {status} {}", body.code);
        }
        other => return Err(format!("expected a 403, got {other:?}").into()),
    }

    let client = EtlClient::http(&url)?.with_key_ring(ring);
    let jobs = client.jobs().await?;
    println!(
        "jobs: {:?}",
        jobs.iter().map(|job| job.name.as_str()).collect::<Vec<_>>()
    );

    let mut events = client.events().await?;
    let started = client
        .start_job(
            "count",
            StartOptions::new().with_params(serde_json::json!({ "to": 3 })),
        )
        .await?;
    println!("started run {} ({:?})", started.run_id, started.run.state);

    let finished = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(update) = events.next().await {
            let run = update?.run;
            if run.id != started.run_id {
                continue;
            }
            println!(
                "  event: {:?}, progress {}/{}",
                run.state,
                run.progress.done,
                run.progress.total.unwrap_or(0)
            );
            if run.state.is_terminal() {
                return Ok::<_, Box<dyn Error>>(run);
            }
        }
        Err("the event stream ended".into())
    })
    .await??;
    let run = client.run(finished.id).await?;
    println!("run {}: {:?}, result {:?}", run.id, run.state, run.result);

    // The event stream is a long-lived request: close it (and the client's pooled
    // connections) first, or the graceful shutdown waits for it forever.
    drop(events);
    drop(client);
    let _ = stop.send(());
    server.await??;
    engine.shutdown().await;
    if run.state != RunState::Succeeded {
        return Err(format!("the run ended {:?}", run.state).into());
    }
    Ok(())
}
