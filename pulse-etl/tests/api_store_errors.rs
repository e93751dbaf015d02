//! Store failures are answered by cause, over `oneshot` against an engine on a temp-dir
//! SQLite store that each test damages the way a deployment or an outage could: `409`
//! for a constraint, `500` for a bug, `503` with `Retry-After` only for a store that
//! cannot be reached — and never a word from the database in the body.

mod api_support;

use api_support::{Answer, TestApp, error_code, sqlite_api_only};
use http::StatusCode;

async fn execute(app: &TestApp, sql: &str) {
    sqlx::query(sql)
        .execute(app.sqlite().sqlite_pool())
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"));
}

/// The body says nothing of SQL, tables, columns or SQLite.
#[track_caller]
fn assert_no_internals(answer: &Answer) {
    let body = answer.body.to_string().to_lowercase();
    for word in [
        "sql",
        "constraint",
        "unique",
        "etl_",
        "column",
        "table",
        "decode",
        "mismatch",
    ] {
        assert!(!body.contains(word), "{word} in {body}");
    }
}

#[tokio::test]
async fn a_closed_store_is_503_with_retry_after() {
    let app = sqlite_api_only().await;
    app.sqlite().close().await;
    let answer = app.get("/api/v1/jobs").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&answer), "store_unavailable");
    assert_eq!(answer.body["error"], "Job store unavailable");
    assert!(answer.headers.contains_key("retry-after"));
    assert_no_internals(&answer);
}

#[tokio::test]
async fn a_write_a_constraint_refuses_is_409_conflict() {
    let app = sqlite_api_only().await;
    assert_eq!(
        app.post("/api/v1/jobs/jira_sync/start", "").await.status,
        StatusCode::ACCEPTED
    );
    // a unique index the deployment added: the next run's event row violates it
    execute(
        &app,
        "CREATE UNIQUE INDEX test_one_event_per_kind ON etl_events (kind)",
    )
    .await;
    let answer = app.post("/api/v1/jobs/github_sync/start", "").await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{answer:?}");
    assert_eq!(error_code(&answer), "conflict");
    assert!(!answer.headers.contains_key("retry-after"));
    assert_no_internals(&answer);
    // nothing of the refused start was kept
    let runs = app.get("/api/v1/jobs/github_sync/runs").await;
    assert_eq!(runs.body["runs"], serde_json::json!([]));
}

#[tokio::test]
async fn a_schema_the_store_cannot_read_is_500_without_detail() {
    let app = sqlite_api_only().await;
    execute(
        &app,
        "ALTER TABLE etl_runs RENAME COLUMN progress_message TO renamed",
    )
    .await;
    let answer = app.get("/api/v1/jobs").await;
    assert_eq!(
        answer.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{answer:?}"
    );
    assert_eq!(error_code(&answer), "internal_error");
    assert_eq!(answer.body["error"], "Internal server error");
    assert!(!answer.headers.contains_key("retry-after"));
    assert_no_internals(&answer);
}

#[tokio::test]
async fn a_row_that_does_not_decode_is_500_without_detail() {
    let app = sqlite_api_only().await;
    let started = app.post("/api/v1/jobs/jira_sync/start", "").await;
    let run_id = started.body["run_id"].as_str().unwrap().to_owned();
    execute(&app, "UPDATE etl_runs SET attempts = 'many'").await;
    let answer = app.get(&format!("/api/v1/runs/{run_id}")).await;
    assert_eq!(
        answer.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{answer:?}"
    );
    assert_eq!(error_code(&answer), "internal_error");
    assert_no_internals(&answer);
}
