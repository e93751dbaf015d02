//! `github_sync` against a wiremock GitHub: `Link` pagination, upserts, GitHub's rate
//! limit, checkpoint resume, foreign links, cancellation, tokens and bad answers.

mod jobs_support;

use std::time::Duration;

use jobs_support::{Harness, config, exposed_text, hits};
use pulse_etl::RunState;
use pulse_etl::jobs::{GITHUB_SYNC, list_items};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "ghp_githubs3cretTOKEN";
const ISSUES: &str = "/repos/pulse/demo/issues";

/// Items of page `page` (from 1) of `total`, `per_page` each; even numbers are PRs.
fn issues_page(page: u64, per_page: u64, total: u64, tag: &str) -> Value {
    let first = (page - 1) * per_page + 1;
    let items: Vec<Value> = (first..=total.min(page * per_page))
        .map(|n| {
            let mut item = json!({
                "id": 900_000 + n,
                "number": n,
                "title": format!("{tag} item {n}"),
                "state": if n.is_multiple_of(3) { "closed" } else { "open" },
                "updated_at": "2026-11-02T08:00:00Z",
                "html_url": format!("http://github.example/pulse/demo/issues/{n}"),
            });
            if n.is_multiple_of(2) {
                item["pull_request"] = json!({"url": "http://x"});
            }
            item
        })
        .collect();
    Value::Array(items)
}

/// GitHub's `Link` header for `page` of `pages`, with absolute URLs on `origin`.
fn link(origin: &str, page: u64, pages: u64, per_page: u64) -> String {
    let url = |p: u64| format!("<{origin}{ISSUES}?state=all&per_page={per_page}&page={p}>");
    let mut parts = Vec::new();
    if page < pages {
        parts.push(format!("{}; rel=\"next\"", url(page + 1)));
        parts.push(format!("{}; rel=\"last\"", url(pages)));
    }
    if page > 1 {
        parts.push(format!("{}; rel=\"first\"", url(1)));
    }
    parts.join(", ")
}

fn page_response(origin: &str, page: u64, total: u64, tag: &str) -> ResponseTemplate {
    let pages = total.div_ceil(10);
    let mut response = ResponseTemplate::new(200).set_body_json(issues_page(page, 10, total, tag));
    let link = link(origin, page, pages, 10);
    if !link.is_empty() {
        response = response.insert_header("link", link.as_str());
    }
    response
}

async fn mount_pages(server: &MockServer, total: u64, tag: &str) {
    for page in 1..=total.div_ceil(10) {
        Mock::given(method("GET"))
            .and(path(ISSUES))
            .and(query_param("page", page.to_string()))
            .respond_with(page_response(&server.uri(), page, total, tag))
            .mount(server)
            .await;
    }
}

fn per_page_10() -> Value {
    json!({"per_page": 10})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_follows_link_headers_and_upserts() {
    let server = MockServer::start().await;
    mount_pages(&server, 25, "v1").await;
    let harness = Harness::start(config(&server.uri(), 1)).await;

    let run = harness.run(GITHUB_SYNC, per_page_10()).await;

    assert_eq!(run.state, RunState::Succeeded, "{:?}", run.error);
    assert_eq!(harness.count("github").await, 25);
    assert_eq!((run.progress.done, run.progress.total), (25, Some(25)));
    for page in ["1", "2", "3"] {
        assert_eq!(hits(&server, "page", page).await, 1, "page {page}");
    }
    let items = list_items(&harness.pool, "github").await.unwrap();
    let two = items
        .iter()
        .find(|item| item.key == "pulse/demo#2")
        .unwrap();
    assert_eq!(two.kind, "pull_request");
    assert_eq!(two.external_id, "900002");
    let three = items
        .iter()
        .find(|item| item.key == "pulse/demo#3")
        .unwrap();
    assert_eq!(
        (three.kind.as_str(), three.state.as_str()),
        ("issue", "closed")
    );

    server.reset().await;
    mount_pages(&server, 25, "v2").await;
    let again = harness.run(GITHUB_SYNC, per_page_10()).await;
    assert_eq!(again.state, RunState::Succeeded, "{:?}", again.error);
    assert_eq!(harness.count("github").await, 25);
    let items = list_items(&harness.pool, "github").await.unwrap();
    assert!(items.iter().all(|item| item.title.starts_with("v2 ")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_github_quota_is_waited_out() {
    let server = MockServer::start().await;
    Mock::given(query_param("page", "2"))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("retry-after", "0"),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_pages(&server, 25, "v1").await;
    let harness = Harness::start(config(&server.uri(), 1)).await;

    let run = harness.run(GITHUB_SYNC, per_page_10()).await;

    assert_eq!(run.state, RunState::Succeeded, "{:?}", run.error);
    assert_eq!(hits(&server, "page", "2").await, 2);
    assert_eq!(harness.count("github").await, 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_run_resumes_after_the_last_loaded_page() {
    let server = MockServer::start().await;
    Mock::given(query_param("page", "3"))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(3)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_pages(&server, 25, "v1").await;
    let harness = Harness::start(config(&server.uri(), 2)).await;

    let run = harness.run(GITHUB_SYNC, per_page_10()).await;

    assert_eq!(run.state, RunState::Succeeded, "{:?}", run.error);
    assert_eq!(run.attempts, 2);
    assert_eq!(hits(&server, "page", "1").await, 1);
    assert_eq!(hits(&server, "page", "2").await, 1);
    assert_eq!(hits(&server, "page", "3").await, 4);
    assert_eq!(harness.count("github").await, 25);
    assert_eq!(run.result.unwrap()["resumed_after_page"], json!(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_to_another_origin_is_not_followed() {
    let server = MockServer::start().await;
    Mock::given(query_param("page", "1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(issues_page(1, 10, 25, "v1"))
                .insert_header("link", "<http://evil.example/steal?page=2>; rel=\"next\""),
        )
        .mount(&server)
        .await;
    let mut config = config(&server.uri(), 3);
    config.github = config.github.with_token(TOKEN);
    let harness = Harness::start(config).await;

    let run = harness.run(GITHUB_SYNC, per_page_10()).await;

    assert_eq!(run.state, RunState::Failed);
    assert_eq!(run.attempts, 1);
    let error = run.error.clone().unwrap();
    assert!(error.contains("leaves the configured origin"), "{error}");
    assert!(!exposed_text(&harness, &run).await.contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_sent_and_a_cancel_stops_the_sync() {
    let server = MockServer::start().await;
    let bearer = format!("Bearer {TOKEN}");
    Mock::given(header("authorization", bearer.as_str()))
        .and(query_param("page", "1"))
        .respond_with(page_response(&server.uri(), 1, 25, "v1"))
        .mount(&server)
        .await;
    Mock::given(header("authorization", bearer.as_str()))
        .and(query_param("page", "2"))
        .respond_with(page_response(&server.uri(), 2, 25, "v1").set_delay(Duration::from_secs(600)))
        .mount(&server)
        .await;
    let mut config = config(&server.uri(), 3);
    config.github = config.github.with_token(TOKEN);
    let harness = Harness::start(config).await;
    let id = harness.start_run(GITHUB_SYNC, per_page_10()).await;
    harness.progress_reached(id, 10).await;

    harness.engine.cancel(id).await.unwrap();
    let run = harness.engine.wait_for_terminal(id).await.unwrap();

    assert_eq!(run.state, RunState::Cancelled);
    assert_eq!(harness.count("github").await, 10);
    assert!(!exposed_text(&harness, &run).await.contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_the_wrong_shape_is_a_clear_fatal_error() {
    let server = MockServer::start().await;
    Mock::given(path(ISSUES))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"message": "Not an array"})))
        .mount(&server)
        .await;
    let harness = Harness::start(config(&server.uri(), 3)).await;

    let run = harness.run(GITHUB_SYNC, per_page_10()).await;

    assert_eq!(run.state, RunState::Failed);
    assert_eq!(run.attempts, 1);
    let error = run.error.unwrap();
    assert!(
        error.contains("github: page 1 is not a valid answer"),
        "{error}"
    );
}
