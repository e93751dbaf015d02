//! The stack on PostgreSQL.

use crate::harness::*;

/// The stack on PostgreSQL (`PULSE_DATABASE_URL=postgres://…`), in its own schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (PULSE_TEST_DATABASE_URL)"]
async fn the_stack_runs_on_postgresql() {
    let url = std::env::var("PULSE_TEST_DATABASE_URL").expect("PULSE_TEST_DATABASE_URL");
    let dir = tempfile::tempdir().expect("temp dir");
    let schema = format!("full_stack_{}", std::process::id());
    let t = TestStack {
        stack: start_service(
            Service::All,
            dir.path(),
            &["--database-url", &url, "--database-schema", &schema],
        )
        .await,
        _dir: None,
        http: client(),
    };
    let back = t.backend();
    let token = t.login(&back, "admin@pulse.local", "admin").await;
    let started = t
        .call(
            Method::POST,
            &format!("{back}/api/etl/jobs/jira_sync/start"),
            Some(&token),
            None,
            &[],
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let run_id = started.body["run_id"].as_str().expect("run_id").to_owned();
    assert_eq!(t.wait_terminal(&token, &run_id).await["state"], "succeeded");
    let health = t
        .call(Method::GET, &format!("{back}/health"), None, None, &[])
        .await;
    assert_eq!(health.body["services"]["database"]["status"], "healthy");
    t.stack.shutdown().await;
    if let Ok(pool) = sqlx::PgPool::connect(&url).await {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&pool)
            .await;
    }
}
