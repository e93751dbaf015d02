//! The example fixture source (examples/full_stack/fixture_source.rs) is deterministic,
//! and both seed jobs sync it completely through its 429s and 500s.

#[path = "../../examples/full_stack/fixture_source.rs"]
mod fixture_source;
mod jobs_support;

use std::time::Duration;

use fixture_source::{Fault, FixtureConfig, fault_for, github_issues_page, jira_search_page};
use jobs_support::{Harness, config};
use pulse_etl::RunState;
use pulse_etl::jobs::{GITHUB_SYNC, JIRA_SYNC, list_items};
use serde_json::json;

fn quick() -> FixtureConfig {
    FixtureConfig {
        latency: Duration::ZERO,
        retry_after: Duration::ZERO,
        ..FixtureConfig::default()
    }
}

#[test]
fn pages_are_a_pure_function_of_their_position() {
    let config = FixtureConfig::default();
    assert_eq!(
        jira_search_page(&config, 50, 25),
        jira_search_page(&config, 50, 25)
    );
    let last = jira_search_page(&config, 100, 50);
    assert_eq!(last["total"], json!(120));
    assert_eq!(last["issues"].as_array().map(Vec::len), Some(20));
    assert_eq!(last["issues"][0]["key"], json!("PULSE-101"));
    let (page, pages) = github_issues_page(&config, "all", 2, 30);
    assert_eq!(page, github_issues_page(&config, "all", 2, 30).0);
    assert_eq!(pages, 3);
    assert_eq!(page[0]["number"], json!(31));
    let (closed, _) = github_issues_page(&config, "closed", 1, 100);
    assert!(
        closed
            .as_array()
            .unwrap()
            .iter()
            .all(|item| item["state"] == "closed")
    );
    // Odd requests to the second page of four fail, to the third are rate limited.
    assert_eq!(fault_for(1, 1), Some(Fault::ServerError));
    assert_eq!(fault_for(2, 1), Some(Fault::RateLimited));
    assert_eq!(fault_for(2, 2), None);
    assert_eq!(fault_for(5, 3), Some(Fault::ServerError));
    assert_eq!(fault_for(0, 1), None);
    assert_eq!(fault_for(3, 1), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_seed_jobs_sync_the_fixture_through_its_faults() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(fixture_source::serve(listener, quick()));
    let harness = Harness::start(config(&base, 1)).await;

    // 120 issues at 20 a page: six pages; the 2nd and 6th fail once, the 3rd is rate limited.
    let jira = harness.run(JIRA_SYNC, json!({"page_size": 20})).await;
    let github = harness.run(GITHUB_SYNC, json!({"per_page": 10})).await;

    assert_eq!(jira.state, RunState::Succeeded, "{:?}", jira.error);
    assert_eq!(github.state, RunState::Succeeded, "{:?}", github.error);
    assert_eq!(jira.attempts, 1, "faults are retried in place");
    assert_eq!(harness.count("jira").await, 120);
    assert_eq!(harness.count("github").await, 85);
    assert_eq!(
        (github.progress.done, github.progress.total),
        (85, Some(85))
    );
    let logs = harness.logs(jira.id).await;
    assert!(
        logs.iter()
            .any(|line| line.message.contains("rate limited (429"))
    );
    assert!(
        logs.iter()
            .any(|line| line.message.contains("server error (500"))
    );
    let items = list_items(&harness.pool, "github").await.unwrap();
    let four = items
        .iter()
        .find(|item| item.key == "pulse/demo#4")
        .unwrap();
    assert_eq!(four.kind, "pull_request");
    server.abort();
}
