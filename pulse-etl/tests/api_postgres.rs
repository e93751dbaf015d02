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
