//! The API over PostgreSQL with two instances: an API-only one serving the router and
//! a worker one executing runs; the API's event stream sees the worker's events.

mod api_support;

use std::time::Duration;

use api_support::{GithubSync, JiraSync};
use futures_util::StreamExt;
use http::StatusCode;
use pulse_core::internal_auth::{InternalAuthLayer, KeyRing};
use pulse_etl::api::{EtlApi, RunUpdateKind};
use pulse_etl::client::{EtlClient, StartOptions};
use pulse_etl::{EngineConfig, JobEngine, JobRegistry, PgStore, PgStoreOptions, RunState};

fn registry() -> JobRegistry {
    JobRegistry::new().with_job(JiraSync).with_job(GithubSync)
}

async fn store(url: &str, schema: &str) -> PgStore {
    PgStore::connect_with(PgStoreOptions::new(url).with_schema(schema))
        .await
        .unwrap()
}

#[tokio::test]
#[ignore = "needs PostgreSQL (PULSE_TEST_DATABASE_URL)"]
async fn an_api_instance_streams_the_events_of_a_worker_instance() {
    let url = std::env::var("PULSE_TEST_DATABASE_URL").expect("PULSE_TEST_DATABASE_URL");
    let schema = format!("api_test_{}", uuid::Uuid::now_v7().simple());
    let config = EngineConfig::default()
        .with_poll_interval(Duration::from_millis(50))
        .with_schedules(false);

    let api_store = store(&url, &schema).await;
    let api_engine = JobEngine::launch(
        api_store.clone().into_dyn(),
        registry(),
        config.clone().with_concurrency(0),
    )
    .await
    .unwrap();
    let ring = KeyRing::parse("gw:0123456789abcdef0123456789abcdef").unwrap();
    let router = EtlApi::new(api_engine.clone())
        .with_internal_auth(InternalAuthLayer::new(ring.clone()))
        .into_router();
    // In process: the router itself is the client's transport.
    let client = EtlClient::new("http://etl.internal", router)
        .unwrap()
        .with_key_ring(ring);

    assert!(client.health().await.unwrap().is_healthy());
    let mut updates = client.events().await.unwrap();
    let started = client
        .start_job("jira_sync", StartOptions::new())
        .await
        .unwrap();
    let conflict = client
        .start_job("jira_sync", StartOptions::new())
        .await
        .unwrap_err();
    assert_eq!(conflict.status(), Some(StatusCode::CONFLICT));

    let worker = JobEngine::launch(
        store(&url, &schema).await.into_dyn(),
        registry(),
        config.with_concurrency(1),
    )
    .await
    .unwrap();
    loop {
        let update = updates.next().await.expect("stream open").unwrap();
        assert_eq!(update.run.id, started.run_id);
        if update.kind == RunUpdateKind::StateChanged && update.run.state == RunState::Succeeded {
            break;
        }
    }
    let logs = client.logs(started.run_id).await.unwrap();
    assert!(logs.iter().any(|line| line.message == "fetched page 1"));

    worker.shutdown().await;
    api_engine.shutdown().await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(api_store.pg_pool())
        .await
        .unwrap();
}

/// Status, `Retry-After` presence and JSON body of `request` sent to `router`.
async fn send(
    router: &axum::Router,
    request: http::Request<axum::body::Body>,
) -> (StatusCode, bool, serde_json::Value) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let retry_after = response.headers().contains_key("retry-after");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        retry_after,
        serde_json::from_slice(&bytes).unwrap_or_default(),
    )
}

fn start(job: &str, body: &str) -> http::Request<axum::body::Body> {
    http::Request::post(format!("/api/v1/jobs/{job}/start"))
        .header("x-internal-auth", "0123456789abcdef0123456789abcdef")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_owned()))
        .unwrap()
}

#[tokio::test]
#[ignore = "needs PostgreSQL (PULSE_TEST_DATABASE_URL)"]
async fn store_failures_on_postgres_are_answered_by_cause() {
    let url = std::env::var("PULSE_TEST_DATABASE_URL").expect("PULSE_TEST_DATABASE_URL");
    let schema = format!("api_test_{}", uuid::Uuid::now_v7().simple());
    let store = store(&url, &schema).await;
    let engine = JobEngine::launch(
        store.clone().into_dyn(),
        registry(),
        EngineConfig::default()
            .with_concurrency(0)
            .with_schedules(false),
    )
    .await
    .unwrap();
    let ring = KeyRing::parse("gw:0123456789abcdef0123456789abcdef").unwrap();
    let router = EtlApi::new(engine.clone())
        .with_internal_auth(InternalAuthLayer::new(ring))
        .into_router();
    let no_internals = |body: &serde_json::Value| {
        let text = body.to_string().to_lowercase();
        for word in [
            "sql",
            "constraint",
            "unique",
            "etl_",
            "unicode",
            "jsonb",
            "postgres",
        ] {
            assert!(!text.contains(word), "{word} in {text}");
        }
    };

    // a value PostgreSQL refuses (jsonb has no NUL character): 422, not 503
    let (status, retry_after, body) = send(
        &router,
        start("github_sync", r#"{"params": {"note": "\u0000"}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "validation_failed");
    assert!(!retry_after);
    no_internals(&body);

    // a unique index the deployment added: the next run's event row violates it
    let (status, _, body) = send(&router, start("jira_sync", "")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    sqlx::query("CREATE UNIQUE INDEX test_one_event_per_kind ON etl_events (kind)")
        .execute(store.pg_pool())
        .await
        .unwrap();
    let (status, retry_after, body) = send(&router, start("github_sync", "")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "conflict");
    assert!(!retry_after);
    no_internals(&body);

    // a store that is gone: 503 with Retry-After
    engine.shutdown().await;
    store.close().await;
    let list = http::Request::get("/api/v1/jobs")
        .header("x-internal-auth", "0123456789abcdef0123456789abcdef")
        .body(axum::body::Body::empty())
        .unwrap();
    let (status, retry_after, body) = send(&router, list).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "store_unavailable");
    assert!(retry_after);
    no_internals(&body);

    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut conn)
        .await
        .unwrap();
}
