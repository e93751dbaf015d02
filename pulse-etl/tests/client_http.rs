//! [`EtlClient`] against the API served on a real 127.0.0.1 listener.

#[path = "api_support/mod.rs"]
mod api_support;

use std::net::SocketAddr;

use api_support::{AUDIENCE, TestApp, api_only, app};
use futures_util::StreamExt;
use http::StatusCode;
use pulse_core::Identity;
use pulse_core::internal_auth::{InternalCredentialLayer, KeyRing};
use pulse_core::request_id::RequestId;
use pulse_etl::RunState;
use pulse_etl::api::RunUpdateKind;
use pulse_etl::client::{ClientError, EtlClient, HttpTransport, StartOptions};
use serde_json::json;

/// Serves the app's router on an ephemeral loopback port.
async fn serve(app: &TestApp) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router.clone();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr
}

/// A client sending the key and a token for the identity each call acts for.
fn client(app: &TestApp, addr: SocketAddr) -> EtlClient<HttpTransport> {
    EtlClient::http(&format!("http://{addr}"))
        .unwrap()
        .with_credentials(
            InternalCredentialLayer::new()
                .with_key(app.ring.clone())
                .with_token(app.minter.clone(), AUDIENCE),
        )
}

#[tokio::test]
async fn typed_calls_over_http() {
    let app = api_only().await;
    let addr = serve(&app).await;
    let client = client(&app, addr);

    let health = client.health().await.unwrap();
    assert!(health.is_healthy());
    assert_eq!(health.report["status"], "healthy");

    let jobs = client.jobs().await.unwrap();
    let names: Vec<_> = jobs.iter().map(|job| job.name.as_str()).collect();
    assert_eq!(names, ["github_sync", "jira_sync"]);
    assert!(jobs.iter().all(|job| job.state.is_none()));

    let user = client.acting_for(Identity::new("user-7"));
    let started = user
        .start_job(
            "github_sync",
            StartOptions::new().with_params(json!({"pages": 2})),
        )
        .await
        .unwrap();
    assert!(started.success);
    assert_eq!(started.run.requested_by.as_deref(), Some("user-7"));
    assert_eq!(started.run.params, json!({"pages": 2}));

    let run = client.run(started.run_id).await.unwrap();
    assert_eq!(run, started.run);
    let runs = client.runs("github_sync", Some(5)).await.unwrap();
    assert_eq!(runs.len(), 1);

    let status = client.status().await.unwrap();
    assert_eq!(status.active_runs, 1);
    assert_eq!(status.jobs["github_sync"].run_id, Some(started.run_id));

    let cancelled = client.cancel(started.run_id).await.unwrap();
    assert_eq!(cancelled.run.state, RunState::Cancelled);
    assert!(client.logs(started.run_id).await.unwrap().is_empty());
}

#[tokio::test]
async fn api_errors_are_typed() {
    let app = api_only().await;
    let addr = serve(&app).await;
    let client = client(&app, addr);

    let first = client
        .start_job("jira_sync", StartOptions::new())
        .await
        .unwrap();
    match client.start_job("jira_sync", StartOptions::new()).await {
        Err(ClientError::Api {
            status,
            body,
            run_id,
        }) => {
            assert_eq!(status, StatusCode::CONFLICT);
            assert_eq!(body.code, "run_already_active");
            assert_eq!(run_id, Some(first.run_id));
        }
        other => panic!("expected a 409, got {other:?}"),
    }

    let err = client
        .start_job("no/such job", StartOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::UNPROCESSABLE_ENTITY));
    assert_eq!(err.code(), Some("unknown_job"));

    let traced = client.with_request_id(RequestId::parse("trace-1").unwrap());
    let err = traced.run(pulse_etl::RunId::new()).await.unwrap_err();
    match err {
        ClientError::Api { status, body, .. } => {
            assert_eq!(status, StatusCode::NOT_FOUND);
            assert_eq!(body.request_id.as_deref(), Some("trace-1"));
        }
        other => panic!("expected a 404, got {other:?}"),
    }

    let anonymous = EtlClient::http(&format!("http://{addr}")).unwrap();
    let err = anonymous.jobs().await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));
    assert_eq!(err.code(), Some("internal_auth_required"));

    let wrong = EtlClient::http(&format!("http://{addr}"))
        .unwrap()
        .with_key_ring(KeyRing::parse("x:ffffffffffffffffffffffffffffffffffff").unwrap());
    assert_eq!(
        wrong.jobs().await.unwrap_err().status(),
        Some(StatusCode::FORBIDDEN)
    );
}

#[tokio::test]
async fn idempotent_retries_return_the_first_run() {
    let app = api_only().await;
    let addr = serve(&app).await;
    let client = client(&app, addr);
    let options = StartOptions::new().with_idempotency_key("k-1");
    let first = client
        .start_job("jira_sync", options.clone())
        .await
        .unwrap();
    let retried = client.start_job("jira_sync", options).await.unwrap();
    assert_eq!(retried, first);
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = EtlClient::http(&format!("http://{addr}")).unwrap();
    assert!(matches!(
        client.jobs().await,
        Err(ClientError::Transport(_))
    ));
}

#[tokio::test]
async fn the_event_stream_follows_a_run_to_its_end() {
    let app = app(1).await;
    let addr = serve(&app).await;
    let client = client(&app, addr);

    let mut updates = client.events().await.unwrap();
    let started = client
        .start_job("jira_sync", StartOptions::new())
        .await
        .unwrap();
    let mut kinds = Vec::new();
    loop {
        let update = updates.next().await.expect("stream open").unwrap();
        assert_eq!(update.run.id, started.run_id);
        kinds.push(update.kind);
        if update.kind == RunUpdateKind::Log {
            assert_eq!(update.log.unwrap().message, "fetched page 1");
        }
        // The run is read when its event is sent, so an early event may already show
        // the end: stop at the terminal state once the run's own events were seen.
        let seen = kinds.contains(&RunUpdateKind::Progress) && kinds.contains(&RunUpdateKind::Log);
        if seen
            && update.kind == RunUpdateKind::StateChanged
            && update.run.state == RunState::Succeeded
        {
            break;
        }
    }
    assert_eq!(kinds[0], RunUpdateKind::StateChanged);

    // Resuming after the first event replays the rest of the run's events.
    let seen = updates.last_event_id().expect("events carry ids");
    let mut resumed = client.events_after(Some(seen - 1)).await.unwrap();
    let update = resumed.next().await.expect("stream open").unwrap();
    assert_eq!(update.run.id, started.run_id);
    assert_eq!(resumed.last_event_id(), Some(seen));
}

#[tokio::test]
async fn the_event_stream_needs_the_credential() {
    let app = api_only().await;
    let addr = serve(&app).await;
    let anonymous = EtlClient::http(&format!("http://{addr}")).unwrap();
    let err = anonymous.events().await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));
}

#[tokio::test(start_paused = true)]
async fn a_silent_service_is_a_timeout() {
    // Accepts connections (the kernel does) but never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = EtlClient::http(&format!("http://{addr}"))
        .unwrap()
        .with_timeout(std::time::Duration::from_secs(5));
    assert!(matches!(client.jobs().await, Err(ClientError::Timeout)));
    drop(listener);
}
