//! The engine on the in-memory store in virtual time (`start_paused`, a wall clock that
//! follows tokio's): minutes of backoff and leases pass in milliseconds, and every run
//! decides the same way. Waits are on the engine's own event stream, never on sleeps.

mod engine_support;

use std::sync::Arc;
use std::time::Duration;

use engine_support::ScriptJob;
use pulse_etl::{
    EngineConfig, JobEngine, JobRegistry, MemoryStore, RetryPolicy, RunEvent, RunEventKind, RunId,
    RunState, StartRequest, TokioWallClock,
};
use serde_json::json;
use time::macros::datetime;
use tokio::sync::broadcast;

/// The state events of `run` until it is terminal, from the engine's stream.
async fn states_until_terminal(
    events: &mut broadcast::Receiver<RunEvent>,
    run: RunId,
) -> Vec<(RunState, u32)> {
    let mut states = Vec::new();
    loop {
        let event = events.recv().await.expect("the engine's event stream");
        if event.run_id != run {
            continue;
        }
        if let RunEventKind::State { state, attempt, .. } = event.kind {
            states.push((state, attempt));
            if state.is_terminal() {
                return states;
            }
        }
    }
}

fn engine_config(clock: TokioWallClock) -> EngineConfig {
    EngineConfig::default()
        .with_clock(Arc::new(clock))
        .with_schedules(false)
        .without_retention()
}

#[tokio::test(start_paused = true)]
async fn retries_wait_out_their_backoff_in_virtual_time() {
    let clock = TokioWallClock::new(datetime!(2026-01-01 10:00 UTC));
    let policy = RetryPolicy::default()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_secs(60))
        .with_multiplier(2.0)
        .with_jitter(0.0);
    let engine = JobEngine::launch(
        MemoryStore::new().into_dyn(),
        JobRegistry::new().with_job(ScriptJob::new("sync").with_policy(policy)),
        engine_config(clock),
    )
    .await
    .unwrap();
    let mut events = engine.subscribe();
    let started = engine
        .start(StartRequest::new("sync").with_params(json!({"fail_attempts": 2})))
        .await
        .unwrap();
    let states = states_until_terminal(&mut events, started.run.id).await;
    assert_eq!(
        states,
        [
            (RunState::Pending, 0),
            (RunState::Running, 1),
            (RunState::Retrying, 1),
            (RunState::Running, 2),
            (RunState::Retrying, 2),
            (RunState::Running, 3),
            (RunState::Succeeded, 3),
        ]
    );
    // The attempts started exactly one and two backoffs apart (no jitter): 60 s, 120 s.
    let attempts = engine.attempts(started.run.id).await.unwrap();
    let gaps: Vec<Duration> = attempts
        .windows(2)
        .map(|pair| {
            let finished = pair[0].finished_at.expect("finished");
            Duration::try_from(pair[1].started_at - finished).unwrap()
        })
        .collect();
    assert!(
        gaps[0] >= Duration::from_secs(60) && gaps[0] < Duration::from_secs(62),
        "{gaps:?}"
    );
    assert!(
        gaps[1] >= Duration::from_secs(120) && gaps[1] < Duration::from_secs(122),
        "{gaps:?}"
    );
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_job_past_its_timeout_is_stopped_and_retried_in_virtual_time() {
    let clock = TokioWallClock::new(datetime!(2026-01-01 10:00 UTC));
    let policy = RetryPolicy::default()
        .with_max_attempts(2)
        .with_initial_backoff(Duration::from_secs(1))
        .with_jitter(0.0);
    let job = ScriptJob::new("slow")
        .with_policy(policy)
        .with_timeout(Duration::from_secs(600));
    let engine = JobEngine::launch(
        MemoryStore::new().into_dyn(),
        JobRegistry::new().with_job(job),
        engine_config(clock),
    )
    .await
    .unwrap();
    let mut events = engine.subscribe();
    // The first attempt holds until cancelled (the timeout), the second goes through.
    let started = engine
        .start(StartRequest::new("slow").with_params(json!({"hold_attempts": 1})))
        .await
        .unwrap();
    let states = states_until_terminal(&mut events, started.run.id).await;
    assert_eq!(states.last(), Some(&(RunState::Succeeded, 2)), "{states:?}");
    let attempts = engine.attempts(started.run.id).await.unwrap();
    let first = &attempts[0];
    let held = first.finished_at.expect("finished") - first.started_at;
    assert!(
        held >= time::Duration::seconds(600),
        "the timeout ended it: {held}"
    );
    assert_eq!(first.outcome.as_deref(), Some("failed"));
    engine.shutdown().await;
}
