//! Retention driven by the engine's clock: what a pass deletes as a manual clock moves
//! on by days.

mod engine_support;

use std::sync::Arc;
use std::time::Duration;

use engine_support::{ScriptJob, fast_config, wait_for_state};
use pulse_etl::{
    EngineError, JobEngine, JobRegistry, JobStore, ManualWallClock, Retention, RunState,
    SqliteStore, StartRequest,
};
use serde_json::json;
use time::macros::datetime;

const DAY: Duration = Duration::from_secs(86_400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_deletes_by_age_on_the_engine_clock_and_keeps_each_jobs_latest_run() {
    let clock = Arc::new(ManualWallClock::new(datetime!(2026-01-01 10:00 UTC)));
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn JobStore> = SqliteStore::open(dir.path().join("jobs.db"))
        .await
        .unwrap()
        .into_dyn();
    let engine = JobEngine::launch(
        Arc::clone(&store),
        JobRegistry::new().with_job(ScriptJob::new("sync")),
        // The test runs the passes itself.
        fast_config().with_clock(clock.clone()).without_retention(),
    )
    .await
    .unwrap();
    let run = |steps: u64| {
        let engine = engine.clone();
        async move {
            let started = engine
                .start(StartRequest::new("sync").with_params(json!({"steps": steps})))
                .await
                .unwrap();
            wait_for_state(&engine, started.run.id, RunState::Succeeded).await
        }
    };
    let first = run(2).await;
    assert_eq!(engine.logs(first.id).await.unwrap().len(), 2);
    let retention = Retention::default();

    // A day on: nothing is old enough.
    clock.advance(DAY);
    let report = engine.prune(retention).await.unwrap();
    assert_eq!((report.events, report.runs), (0, 0));
    assert_eq!(engine.events_pruned_through().await.unwrap(), 0);

    // Eight days on: the events go, the run and its log stay.
    clock.advance(7 * DAY);
    let report = engine.prune(retention).await.unwrap();
    assert!(report.events > 0 && report.runs == 0, "{report:?}");
    assert!(engine.events_pruned_through().await.unwrap() > 0);
    assert_eq!(engine.logs(first.id).await.unwrap().len(), 2);
    let events = engine.events_since(0, 100).await.unwrap();
    assert!(
        events
            .iter()
            .all(|event| matches!(event.kind, pulse_etl::RunEventKind::Log { .. }))
    );

    // Ninety-one days on: the first run is still the job's latest, so it stays; once a
    // newer one ran, it goes with its log.
    clock.advance(83 * DAY);
    assert_eq!(engine.prune(retention).await.unwrap().runs, 0);
    let second = run(1).await;
    let report = engine.prune(retention).await.unwrap();
    assert_eq!(report.runs, 1, "{report:?}");
    assert!(matches!(
        engine.run(first.id).await,
        Err(EngineError::NotFound { .. })
    ));
    assert!(matches!(
        engine.logs(first.id).await,
        Err(EngineError::NotFound { .. })
    ));
    assert!(store.logs(first.id).await.unwrap().is_empty());
    assert_eq!(
        engine.run(second.id).await.unwrap().state,
        RunState::Succeeded
    );
    engine.shutdown().await;
}
