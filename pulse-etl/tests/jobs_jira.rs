//! `jira_sync` against a wiremock Jira: pagination, upserts, rate limits, server
//! errors, checkpoint resume, cancellation, token hygiene and bad answers.

mod jobs_support;

use std::time::Duration;

use jobs_support::{Harness, config, exposed_text, hits};
use pulse_etl::RunState;
use pulse_etl::jobs::{JIRA_SYNC, list_items};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "jira-s3cret-token-value";

/// Jira's answer for `startAt`, of `total` issues, `page` per page, titles tagged `tag`.
fn search_page(start_at: u64, page: u64, total: u64, tag: &str) -> Value {
    let issues: Vec<Value> = (start_at..total.min(start_at + page))
        .map(|i| {
            json!({
                "id": format!("{}", 10_000 + i),
                "key": format!("PULSE-{}", i + 1),
                "self": format!("http://jira/rest/api/2/issue/{}", 10_000 + i),
                "fields": {
                    "summary": format!("{tag} issue {}", i + 1),
                    "status": {"name": if i.is_multiple_of(2) { "To Do" } else { "Done" }},
                    "issuetype": {"name": "Bug"},
                    "updated": "2026-11-01T10:00:00.000+0000"
                }
            })
        })
        .collect();
    json!({"startAt": start_at, "maxResults": page, "total": total, "issues": issues})
}

/// Mounts every page of `total` issues, 10 per page.
async fn mount_pages(server: &MockServer, total: u64, tag: &str) {
    let mut start = 0;
    while start < total {
        Mock::given(method("GET"))
            .and(path("/rest/api/2/search"))
            .and(query_param("startAt", start.to_string()))
            .and(query_param("maxResults", "10"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(search_page(start, 10, total, tag)),
            )
            .mount(server)
            .await;
        start += 10;
    }
}

fn page_size_10() -> Value {
    json!({"page_size": 10})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_loads_every_page_and_reports_progress() {
    let server = MockServer::start().await;
    mount_pages(&server, 23, "v1").await;
    let harness = Harness::start(config(&server.uri(), 1)).await;

    let run = harness.run(JIRA_SYNC, page_size_10()).await;

    assert_eq!(run.state, RunState::Succeeded, "{:?}", run.error);
    assert_eq!(harness.count("jira").await, 23);
    assert_eq!((run.progress.done, run.progress.total), (23, Some(23)));
    let result = run.result.unwrap();
    assert_eq!(
        (result["loaded"].clone(), result["pages"].clone()),
        (json!(23), json!(3))
    );
    for start in ["0", "10", "20"] {
        assert_eq!(hits(&server, "startAt", start).await, 1, "startAt={start}");
    }
    let items = list_items(&harness.pool, "jira").await.unwrap();
    let first = items.iter().find(|item| item.key == "PULSE-1").unwrap();
    assert_eq!(first.external_id, "10000");
    assert_eq!(first.title, "v1 issue 1");
    assert_eq!(first.state, "To Do");
    assert_eq!(first.kind, "bug");
    assert_eq!(
        first.url.as_deref(),
        Some(format!("{}/browse/PULSE-1", server.uri()).as_str())
    );
    let logs = harness.logs(run.id).await;
    assert!(
        logs.iter()
            .any(|line| line.message.contains("23 of 23 issues loaded"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_twice_updates_rows_instead_of_duplicating_them() {
    let server = MockServer::start().await;
    mount_pages(&server, 23, "v1").await;
    let harness = Harness::start(config(&server.uri(), 1)).await;
    let first = harness.run(JIRA_SYNC, page_size_10()).await;
    assert_eq!(first.state, RunState::Succeeded, "{:?}", first.error);

    server.reset().await;
    mount_pages(&server, 23, "v2").await;
    let second = harness.run(JIRA_SYNC, page_size_10()).await;

    assert_eq!(second.state, RunState::Succeeded, "{:?}", second.error);
    assert_eq!(harness.count("jira").await, 23);
    let items = list_items(&harness.pool, "jira").await.unwrap();
    assert!(items.iter().all(|item| item.title.starts_with("v2 ")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_waited_out_with_retry_after() {
    let server = MockServer::start().await;
    Mock::given(query_param("startAt", "10"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_pages(&server, 23, "v1").await;
    let harness = Harness::start(config(&server.uri(), 1)).await;

    let run = harness.run(JIRA_SYNC, page_size_10()).await;

    assert_eq!(run.state, RunState::Succeeded, "{:?}", run.error);
    assert_eq!(run.attempts, 1, "the 429 is retried in place");
    assert_eq!(harness.count("jira").await, 23);
    assert_eq!(hits(&server, "startAt", "10").await, 2);
    let logs = harness.logs(run.id).await;
    let warned = logs
        .iter()
        .find(|line| line.message.contains("rate limited"))
        .unwrap();
    assert!(warned.message.contains("in 1000 ms"), "{}", warned.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_to_the_bound_then_fail_retryably_and_resume() {
    let server = MockServer::start().await;
    Mock::given(query_param("startAt", "10"))
        .respond_with(ResponseTemplate::new(500))
        .with_priority(1)
        .mount(&server)
        .await;
    mount_pages(&server, 23, "v1").await;
    // Two attempts: a fatal error would stop after one.
    let harness = Harness::start(config(&server.uri(), 2)).await;

    let run = harness.run(JIRA_SYNC, page_size_10()).await;

    assert_eq!(run.state, RunState::Failed);
    assert_eq!(run.attempts, 2, "a retryable error gets another attempt");
    let error = run.error.unwrap();
    assert!(error.contains("server error (500"), "{error}");
    assert!(error.contains("gave up after 3 tries"), "{error}");
    // Each attempt: 1 try + 2 retries of the failing page; the first page once in all,
    // because the second attempt resumed from the checkpoint.
    assert_eq!(hits(&server, "startAt", "10").await, 6);
    assert_eq!(hits(&server, "startAt", "0").await, 1);
    assert_eq!(harness.count("jira").await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_run_resumes_from_its_checkpoint() {
    let server = MockServer::start().await;
    // Three 500s exhaust the first attempt's retries on the third page.
    Mock::given(query_param("startAt", "20"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(3)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_pages(&server, 23, "v1").await;
    let harness = Harness::start(config(&server.uri(), 3)).await;

    let run = harness.run(JIRA_SYNC, page_size_10()).await;

    assert_eq!(run.state, RunState::Succeeded, "{:?}", run.error);
    assert_eq!(run.attempts, 2);
    assert_eq!(hits(&server, "startAt", "0").await, 1);
    assert_eq!(hits(&server, "startAt", "10").await, 1);
    assert_eq!(hits(&server, "startAt", "20").await, 4);
    assert_eq!(harness.count("jira").await, 23);
    let result = run.result.unwrap();
    assert_eq!(result["resumed_from"], json!(20));
    assert_eq!(result["loaded"], json!(23));
    let logs = harness.logs(run.id).await;
    assert!(
        logs.iter()
            .any(|line| line.attempt == 2 && line.message.contains("resuming at startAt=20"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_the_sync_mid_request() {
    let server = MockServer::start().await;
    Mock::given(query_param("startAt", "10"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(search_page(10, 10, 23, "v1"))
                .set_delay(Duration::from_secs(600)),
        )
        .with_priority(1)
        .mount(&server)
        .await;
    mount_pages(&server, 23, "v1").await;
    let harness = Harness::start(config(&server.uri(), 3)).await;
    let id = harness.start_run(JIRA_SYNC, page_size_10()).await;
    harness.progress_reached(id, 10).await;

    harness.engine.cancel(id).await.unwrap();
    let run = harness.engine.wait_for_terminal(id).await.unwrap();

    assert_eq!(run.state, RunState::Cancelled);
    assert_eq!(run.attempts, 1);
    assert_eq!(harness.count("jira").await, 10);
    assert_eq!(hits(&server, "startAt", "20").await, 0);
    let attempts = harness.engine.attempts(id).await.unwrap();
    assert_eq!(attempts[0].outcome.as_deref(), Some("cancelled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_sent_as_bearer_and_never_exposed() {
    let server = MockServer::start().await;
    Mock::given(query_param("startAt", "10"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "0"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    // Only requests with the token are answered; anything else gets wiremock's 404.
    let mut start = 0;
    while start < 23 {
        Mock::given(header("authorization", format!("Bearer {TOKEN}").as_str()))
            .and(query_param("startAt", start.to_string()))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(search_page(start, 10, 23, "v1")),
            )
            .mount(&server)
            .await;
        start += 10;
    }
    let mut config = config(&server.uri(), 1);
    config.jira = config.jira.with_token(TOKEN);
    let harness = Harness::start(config).await;

    let run = harness.run(JIRA_SYNC, page_size_10()).await;
    assert_eq!(run.state, RunState::Succeeded, "{:?}", run.error);
    assert_eq!(harness.count("jira").await, 23);

    // Without the mocks every request gets a 404: the failure must not show it either.
    server.reset().await;
    let failed = harness.run(JIRA_SYNC, page_size_10()).await;
    assert_eq!(failed.state, RunState::Failed);
    assert!(
        failed.error.as_deref().unwrap_or("").contains("404"),
        "{:?}",
        failed.error
    );

    for run in [&run, &failed] {
        let text = exposed_text(&harness, run).await;
        assert!(!text.contains(TOKEN), "the token leaked: {text}");
        assert!(!text.contains("s3cret"), "part of the token leaked: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_from_the_source_is_a_clear_fatal_error() {
    let server = MockServer::start().await;
    Mock::given(path("/rest/api/2/search"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>maintenance</html>"))
        .mount(&server)
        .await;
    let harness = Harness::start(config(&server.uri(), 3)).await;

    let run = harness.run(JIRA_SYNC, page_size_10()).await;

    assert_eq!(run.state, RunState::Failed);
    assert_eq!(run.attempts, 1, "a bad answer is not retried");
    let error = run.error.unwrap();
    assert!(
        error.contains("jira: startAt=0 is not a valid answer"),
        "{error}"
    );
    assert_eq!(harness.count("jira").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_parameters_are_refused_at_start() {
    let server = MockServer::start().await;
    let harness = Harness::start(config(&server.uri(), 1)).await;
    let refused = harness
        .engine
        .start(pulse_etl::StartRequest::new(JIRA_SYNC).with_params(json!({"pagesize": 3})))
        .await
        .unwrap_err();
    assert_eq!(refused.status(), 400);
}
