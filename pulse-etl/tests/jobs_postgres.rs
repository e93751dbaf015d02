//! The seed jobs' load step on PostgreSQL: the `etl_source_items` migration and the
//! upsert, through the real engine over a `PgStore` in a private schema.

mod jobs_support;

use jobs_support::{Harness, config};
use pulse_etl::jobs::{GITHUB_SYNC, JIRA_SYNC, list_items};
use pulse_etl::{PgStore, PgStoreOptions, RunState};
use serde_json::json;
use wiremock::matchers::{path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn database_url() -> String {
    std::env::var("PULSE_TEST_DATABASE_URL")
        .expect("PULSE_TEST_DATABASE_URL must name the test database")
}

/// Drops the test's schema, also when the test fails.
struct DropSchema {
    url: String,
    schema: String,
}

impl Drop for DropSchema {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        // A fresh runtime on a fresh thread: the test's own runtime may be gone.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(pool) = sqlx::PgPool::connect(&url).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .execute(&pool)
                        .await;
                }
            });
        })
        .join();
    }
}

async fn mount(server: &MockServer, tag: &str) {
    for start in [0_u64, 10] {
        let issues: Vec<_> = (start..(start + 10).min(15))
            .map(|i| {
                json!({"id": format!("{}", 100 + i), "key": format!("PG-{i}"),
                    "fields": {"summary": format!("{tag} {i}"), "status": {"name": "Done"},
                        "updated": "2026-11-01T00:00:00.000+0000"}})
            })
            .collect();
        Mock::given(path("/rest/api/2/search"))
            .and(query_param("startAt", start.to_string()))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                json!({"startAt": start, "maxResults": 10, "total": 15, "issues": issues}),
            ))
            .mount(server)
            .await;
    }
    let items = json!([{"id": 7, "number": 1, "title": format!("{tag} gh"), "state": "open",
        "updated_at": "2026-11-01T00:00:00Z"}]);
    Mock::given(path("/repos/pulse/demo/issues"))
        .respond_with(ResponseTemplate::new(200).set_body_json(items))
        .mount(server)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (PULSE_TEST_DATABASE_URL)"]
async fn seed_jobs_upsert_into_postgres() {
    let url = database_url();
    let schema = format!("etl_jobs_{}", uuid::Uuid::new_v4().simple());
    let _drop = DropSchema {
        url: url.clone(),
        schema: schema.clone(),
    };
    let store = PgStore::connect_with(PgStoreOptions::new(&url).with_schema(&schema))
        .await
        .unwrap();
    let server = MockServer::start().await;
    mount(&server, "v1").await;
    let dir = tempfile::tempdir().unwrap();
    let harness = Harness::start_on(store.into_dyn(), dir, config(&server.uri(), 1)).await;

    for tag in ["v1", "v2"] {
        server.reset().await;
        mount(&server, tag).await;
        let jira = harness.run(JIRA_SYNC, json!({"page_size": 10})).await;
        assert_eq!(jira.state, RunState::Succeeded, "{:?}", jira.error);
        let github = harness.run(GITHUB_SYNC, json!({})).await;
        assert_eq!(github.state, RunState::Succeeded, "{:?}", github.error);
    }

    assert_eq!(harness.count("jira").await, 15);
    assert_eq!(harness.count("github").await, 1);
    let items = list_items(&harness.pool, "jira").await.unwrap();
    assert!(items.iter().all(|item| item.title.starts_with("v2 ")));
    harness.engine.shutdown().await;
}
