//! The shared store suite against [`PgStore`], each test in a fresh schema of the
//! database named by `PULSE_TEST_DATABASE_URL`, so tests run in parallel.

mod store_suite;

use std::sync::Arc;

use pulse_etl::{JobStore, PgStore, PgStoreOptions};

/// Drops the test's schema when the test ends.
struct DropSchema {
    url: String,
    schema: String,
}

impl Drop for DropSchema {
    fn drop(&mut self) {
        let url = self.url.clone();
        let schema = self.schema.clone();
        // Best effort, on a thread of its own: Drop cannot await.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

fn database_url() -> String {
    std::env::var("PULSE_TEST_DATABASE_URL")
        .expect("PULSE_TEST_DATABASE_URL must name the test database")
}

async fn pg_store() -> (Arc<dyn JobStore>, DropSchema) {
    let url = database_url();
    let schema = format!("etl_test_{}", uuid::Uuid::new_v4().simple());
    let store = PgStore::connect_with(PgStoreOptions::new(&url).with_schema(&schema))
        .await
        .unwrap();
    (store.into_dyn(), DropSchema { url, schema })
}

store_suite!(pg_store, #[ignore = "needs PostgreSQL (PULSE_TEST_DATABASE_URL)"]);

#[tokio::test]
#[ignore = "needs PostgreSQL (PULSE_TEST_DATABASE_URL)"]
async fn notifications_reach_other_instances() {
    let url = database_url();
    let schema = format!("etl_test_{}", uuid::Uuid::new_v4().simple());
    let _guard = DropSchema {
        url: url.clone(),
        schema: schema.clone(),
    };
    let options = PgStoreOptions::new(&url).with_schema(&schema);
    let writer = PgStore::connect_with(options.clone()).await.unwrap();
    let reader = PgStore::connect_with(options).await.unwrap();
    let mut changes = reader.changes();
    changes.borrow_and_update();
    store_suite::create(&writer, store_suite::new_run("jira_sync", store_suite::T0)).await;
    tokio::time::timeout(std::time::Duration::from_secs(10), changes.changed())
        .await
        .expect("a NOTIFY from the other instance")
        .unwrap();
    assert_eq!(reader.list_runs(None, 10).await.unwrap().len(), 1);
}

#[tokio::test]
#[ignore = "needs PostgreSQL (PULSE_TEST_DATABASE_URL)"]
async fn closing_the_store_completes_and_later_calls_are_unavailable() {
    let url = database_url();
    let schema = format!("etl_test_{}", uuid::Uuid::new_v4().simple());
    let _guard = DropSchema {
        url: url.clone(),
        schema: schema.clone(),
    };
    let store = PgStore::connect_with(PgStoreOptions::new(&url).with_schema(&schema))
        .await
        .unwrap();
    // The LISTEN connection is checked out for the store's life; closing must not wait
    // for it forever.
    tokio::time::timeout(std::time::Duration::from_secs(30), store.close())
        .await
        .expect("close completes");
    let err = store.ping().await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
}
