//! `GET /api/v1/events`: server-sent events of the engine's store events.

mod api_support;

use api_support::{api_only, app, app_with, keyed};
use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use pulse_etl::client::{SseDecoder, SseEvent};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

/// Reads the event stream until `n` events arrived.
async fn next_events(body: &mut Body, decoder: &mut SseDecoder, n: usize) -> Vec<SseEvent> {
    let mut events = Vec::new();
    while events.len() < n {
        let frame = body.frame().await.expect("stream open").unwrap();
        if let Ok(data) = frame.into_data() {
            events.extend(decoder.push(&data));
        }
    }
    events
}

async fn subscribe(app: &api_support::TestApp, last_event_id: Option<&str>) -> Body {
    let mut request = keyed(Request::get("/api/v1/events"));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response =
        tower::ServiceExt::oneshot(app.router.clone(), request.body(Body::empty()).unwrap())
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    response.into_body()
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_receives_state_changes_as_run_events() {
    let app = api_only().await;
    let mut body = subscribe(&app, None).await;
    let mut decoder = SseDecoder::new();

    let started = app.post("/api/v1/jobs/jira_sync/start", "").await;
    let run_id = started.body["run_id"].clone();
    // First where the stream starts: after the latest stored event (none yet).
    let events = next_events(&mut body, &mut decoder, 1).await;
    assert_eq!(events[0].event, "position");
    assert_eq!(events[0].id.as_deref(), Some("0"));
    assert_eq!(events[0].data, r#"{"last_event_id":0}"#);
    let events = next_events(&mut body, &mut decoder, 1).await;
    assert_eq!(events[0].event, "run");
    assert!(events[0].id.as_deref().unwrap().parse::<i64>().is_ok());
    let data: Value = serde_json::from_str(&events[0].data).unwrap();
    let mut keys: Vec<_> = data.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["kind", "run"]);
    assert_eq!(data["kind"], "state_changed");
    assert_eq!(data["run"]["id"], run_id);

    let cancelled = app
        .post(
            &format!("/api/v1/runs/{}/cancel", run_id.as_str().unwrap()),
            "",
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::ACCEPTED);
    let events = next_events(&mut body, &mut decoder, 1).await;
    let data: Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(data["kind"], "state_changed");
    assert_eq!(data["run"]["state"], "cancelled");
}

#[tokio::test(start_paused = true)]
async fn progress_and_log_lines_are_streamed() {
    let app = app(1).await;
    let mut body = subscribe(&app, None).await;
    let mut decoder = SseDecoder::new();
    let started = app.post("/api/v1/jobs/jira_sync/start", "").await;
    let run_id = started.body["run_id"].clone();

    let mut kinds = Vec::new();
    let mut log = Value::Null;
    while !(kinds.iter().any(|kind| kind == "log") && kinds.iter().any(|kind| kind == "progress")) {
        for event in next_events(&mut body, &mut decoder, 1).await {
            if event.event == "position" {
                continue;
            }
            let data: Value = serde_json::from_str(&event.data).unwrap();
            assert_eq!(data["run"]["id"], run_id);
            if data["kind"] == "log" {
                log = data["log"].clone();
            }
            kinds.push(data["kind"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(kinds[0], "state_changed");
    assert_eq!(log["message"], "fetched page 1");
    assert_eq!(log["level"], "info");
    assert!(log["at"].is_string());
}

#[tokio::test(start_paused = true)]
async fn a_client_resuming_with_last_event_id_gets_the_events_it_missed() {
    let app = api_only().await;
    let first = app.post("/api/v1/jobs/jira_sync/start", "").await;
    let second = app.post("/api/v1/jobs/github_sync/start", "").await;

    // From the start: both creations are replayed, in order, without any new event.
    let mut body = subscribe(&app, Some("0")).await;
    let mut decoder = SseDecoder::new();
    let events = next_events(&mut body, &mut decoder, 2).await;
    let ids: Vec<Value> = events
        .iter()
        .map(|event| serde_json::from_str::<Value>(&event.data).unwrap()["run"]["id"].clone())
        .collect();
    assert_eq!(
        ids,
        [first.body["run_id"].clone(), second.body["run_id"].clone()]
    );

    // Resuming after the first: only the second.
    let mut body = subscribe(&app, events[0].id.as_deref()).await;
    let mut decoder = SseDecoder::new();
    let resumed = next_events(&mut body, &mut decoder, 1).await;
    assert_eq!(resumed[0].id, events[1].id);
}

#[tokio::test(start_paused = true)]
async fn a_lagging_subscriber_skips_events_and_is_told_so() {
    let app = app_with(0, |config| config.with_event_capacity(1)).await;
    let mut body = subscribe(&app, None).await;
    let mut probe = app.engine.subscribe();

    // Six events while the subscriber reads nothing.
    for _ in 0..3 {
        let started = app.post("/api/v1/jobs/jira_sync/start", "").await;
        let run_id = started.body["run_id"].as_str().unwrap().to_owned();
        app.post(&format!("/api/v1/runs/{run_id}/cancel"), "").await;
    }
    // Wait until the engine has broadcast the last of them.
    let last = app
        .engine
        .events_since(0, 100)
        .await
        .unwrap()
        .last()
        .unwrap()
        .seq;
    loop {
        match probe.recv().await {
            Ok(event) if event.seq == last => break,
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => panic!("engine stopped"),
        }
    }

    // After its position, the subscriber learns that it skipped events, then gets the
    // newest one.
    let mut decoder = SseDecoder::new();
    let position = next_events(&mut body, &mut decoder, 1).await;
    assert_eq!(position[0].event, "position");
    let mut text = String::new();
    let mut events = Vec::new();
    while events.is_empty() {
        let frame = body.frame().await.expect("stream open").unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
            events.extend(decoder.push(&data));
        }
    }
    assert!(text.starts_with(": skipped "), "{text}");
    assert_eq!(events[0].id, Some(last.to_string()));
}

#[tokio::test(start_paused = true)]
async fn an_idle_stream_sends_keep_alive_comments() {
    let app = api_only().await;
    let router = pulse_etl::api::EtlApi::new(app.engine.clone())
        .with_internal_auth(pulse_core::internal_auth::InternalAuthLayer::new(
            app.ring.clone(),
        ))
        .with_keep_alive(std::time::Duration::from_millis(10))
        .into_router();
    let request = keyed(Request::get("/api/v1/events"))
        .body(Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(router, request).await.unwrap();
    let mut body = response.into_body();
    let frame = body.frame().await.expect("stream open").unwrap();
    let data = frame.into_data().unwrap();
    assert!(data.starts_with(b"event: position"), "{data:?}");
    let frame = body.frame().await.expect("stream open").unwrap();
    let data = frame.into_data().unwrap();
    assert!(data.starts_with(b":"), "{data:?}");
}

#[tokio::test(start_paused = true)]
async fn a_long_backlog_is_replayed_in_full() {
    let app = api_only().await;
    // Forced starts: each writes the new run's and the replaced run's state changes.
    for _ in 0..300 {
        let answer = app
            .post("/api/v1/jobs/jira_sync/start", r#"{"force": true}"#)
            .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
    }
    let stored = app.engine.events_since(0, 10_000).await.unwrap();
    assert!(stored.len() > 500, "{}", stored.len());

    let mut body = subscribe(&app, Some("0")).await;
    let mut decoder = SseDecoder::new();
    let events = next_events(&mut body, &mut decoder, stored.len()).await;
    let ids: Vec<String> = events
        .iter()
        .map(|event| event.id.clone().unwrap())
        .collect();
    let expected: Vec<String> = stored.iter().map(|event| event.seq.to_string()).collect();
    assert_eq!(ids, expected);
}

#[tokio::test(start_paused = true)]
async fn resuming_after_events_that_retention_deleted_gets_a_reset_then_the_current_state() {
    let clock = std::sync::Arc::new(pulse_etl::ManualWallClock::new(
        time::OffsetDateTime::now_utc(),
    ));
    let app = app_with(1, |config| {
        config.with_clock(clock.clone()).without_retention()
    })
    .await;
    let mut runs = Vec::new();
    for job in ["jira_sync", "github_sync"] {
        let started = app.post(&format!("/api/v1/jobs/{job}/start"), "").await;
        assert_eq!(started.status, StatusCode::ACCEPTED, "{:?}", started.body);
        let id: pulse_etl::RunId = started.body["run_id"].as_str().unwrap().parse().unwrap();
        runs.push(id);
    }
    for id in &runs {
        app.engine.wait_for_terminal(*id).await.unwrap();
    }
    // A subscriber that saw the first event only, then went away for eight days.
    let first = app.engine.events_since(0, 1).await.unwrap()[0].seq;
    clock.advance(std::time::Duration::from_secs(8 * 86_400));
    let pruned = app
        .engine
        .prune(pulse_etl::Retention::default())
        .await
        .unwrap();
    assert!(pruned.events > 0);
    let through = app.engine.events_pruned_through().await.unwrap();
    assert!(through > first);
    let latest = app.engine.latest_event_seq().await.unwrap();

    let mut body = subscribe(&app, Some(&first.to_string())).await;
    let mut decoder = SseDecoder::new();
    let events = next_events(&mut body, &mut decoder, 3).await;
    assert_eq!(events[0].event, "reset");
    assert_eq!(events[0].id.as_deref(), Some(latest.to_string().as_str()));
    let reset: Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(reset["last_event_id"], latest);
    assert_eq!(reset["pruned_through"], through);
    // The current state: each job's latest run, as it is now.
    let mut seen = Vec::new();
    for event in &events[1..] {
        assert_eq!(event.event, "run");
        assert_eq!(event.id.as_deref(), Some(latest.to_string().as_str()));
        let data: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(data["kind"], "snapshot");
        assert_eq!(data["run"]["state"], "succeeded");
        seen.push(
            data["run"]["id"]
                .as_str()
                .unwrap()
                .parse::<pulse_etl::RunId>()
                .unwrap(),
        );
    }
    seen.sort_by_key(ToString::to_string);
    runs.sort_by_key(ToString::to_string);
    assert_eq!(seen, runs);
    // Then the live events, after the latest id.
    let started = app.post("/api/v1/jobs/jira_sync/start", "").await;
    let events = next_events(&mut body, &mut decoder, 1).await;
    assert_eq!(events[0].event, "run");
    assert!(events[0].id.as_deref().unwrap().parse::<i64>().unwrap() > latest);
    let data: Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(data["run"]["id"], started.body["run_id"]);

    // A subscriber resuming after the mark gets no reset: nothing it missed is gone.
    let mut body = subscribe(&app, Some(&through.to_string())).await;
    let mut decoder = SseDecoder::new();
    let events = next_events(&mut body, &mut decoder, 1).await;
    assert_eq!(events[0].event, "run");
}
