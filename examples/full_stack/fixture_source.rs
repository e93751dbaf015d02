//! A deterministic fake of the Jira and GitHub REST APIs, so the seed jobs
//! (`jira_sync`, `github_sync`) work offline in the full-stack demo and in tests.
//!
//! - `GET /rest/api/2/search?jql=&startAt=&maxResults=` answers Jira's search shape
//!   (`{startAt, maxResults, total, issues: [{id, key, fields: {summary, status,
//!   issuetype, updated}}]}`).
//! - `GET /repos/{owner}/{repo}/issues?state=&page=&per_page=` answers GitHub's list
//!   shape, with a `Link` header (`rel="next"`, `"last"`, `"first"`, `"prev"`).
//! - Every answer waits [`FixtureConfig::latency`] first, so progress is visible in the
//!   dashboard.
//! - Some pages fail on every odd request to them: of every four pages, the second
//!   with `500` and the third with `429 Too Many Requests` + `Retry-After`. The request
//!   after succeeds, so every run of a few pages meets (and survives) both; the first
//!   page never fails.
//! - With [`FixtureConfig::token`] set, requests without `Authorization: Bearer <token>`
//!   get `401`.
//!
//! The items are a pure function of their number, so every run sees the same data.
// Included as a private module by several targets, each using a part of it.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// What the fixture source serves.
#[derive(Debug, Clone)]
pub struct FixtureConfig {
    /// How many Jira issues exist.
    pub jira_issues: u64,
    /// How many GitHub issues and pull requests the repository has.
    pub github_issues: u64,
    /// The one repository served, as `(owner, repo)`; others get 404.
    pub repository: (String, String),
    /// The wait before every answer.
    pub latency: Duration,
    /// Whether some pages answer 429 and 500 on odd requests.
    pub faults: bool,
    /// The `Retry-After` of the 429 answers.
    pub retry_after: Duration,
    /// The bearer token required, if any.
    pub token: Option<String>,
}

impl Default for FixtureConfig {
    /// 120 Jira issues, 85 GitHub items in `pulse/demo`, 400 ms latency, faults on
    /// with a 1 s `Retry-After`, no token.
    fn default() -> Self {
        Self {
            jira_issues: 120,
            github_issues: 85,
            repository: ("pulse".to_owned(), "demo".to_owned()),
            latency: Duration::from_millis(400),
            faults: true,
            retry_after: Duration::from_secs(1),
            token: None,
        }
    }
}

/// A deterministic failure of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `429 Too Many Requests` with `Retry-After`.
    RateLimited,
    /// `500 Internal Server Error`.
    ServerError,
}

/// The fault of the `hit`-th request (from 1) to page `index` (from 0), if any.
#[must_use]
pub fn fault_for(index: u64, hit: u64) -> Option<Fault> {
    match (hit % 2, index % 4) {
        (1, 1) => Some(Fault::ServerError),
        (1, 2) => Some(Fault::RateLimited),
        _ => None,
    }
}

const VERBS: [&str; 8] = [
    "Fix", "Add", "Refactor", "Document", "Speed up", "Remove", "Test", "Harden",
];
const NOUNS: [&str; 9] = [
    "login throttling",
    "job retries",
    "the SSE stream",
    "circuit breaker metrics",
    "gateway timeouts",
    "the dashboard",
    "checkpoint cursors",
    "the lease sweeper",
    "cache invalidation",
];

fn title(n: u64) -> String {
    let verb = VERBS[(n % 8) as usize];
    let noun = NOUNS[(n * 7 % 9) as usize];
    format!("{verb} {noun}")
}

fn updated(n: u64) -> (u64, u64) {
    (1 + n % 27, n % 24)
}

/// Jira issue `n` (from 1).
#[must_use]
pub fn jira_issue(n: u64) -> Value {
    let (day, hour) = updated(n);
    let status = ["To Do", "In Progress", "Done"][(n % 3) as usize];
    let kind = ["Bug", "Task", "Story", "Task"][(n % 4) as usize];
    json!({
        "id": (10_000 + n).to_string(),
        "key": format!("PULSE-{n}"),
        "self": format!("/rest/api/2/issue/{}", 10_000 + n),
        "fields": {
            "summary": title(n),
            "status": {"name": status},
            "issuetype": {"name": kind},
            "updated": format!("2026-11-{day:02}T{hour:02}:00:00.000+0000"),
        }
    })
}

/// Jira's search answer for `start_at` and `max_results` (clamped to 1..=100).
#[must_use]
pub fn jira_search_page(config: &FixtureConfig, start_at: u64, max_results: u64) -> Value {
    let max_results = max_results.clamp(1, 100);
    let end = config.jira_issues.min(start_at.saturating_add(max_results));
    let issues: Vec<Value> = (start_at..end).map(|i| jira_issue(i + 1)).collect();
    json!({
        "startAt": start_at,
        "maxResults": max_results,
        "total": config.jira_issues,
        "issues": issues,
    })
}

/// GitHub item `n` (from 1) of `owner/repo`: every fourth is a pull request, every
/// third closed.
#[must_use]
pub fn github_issue(owner: &str, repo: &str, n: u64) -> Value {
    let (day, hour) = updated(n);
    let mut item = json!({
        "id": 500_000 + n,
        "number": n,
        "title": title(n + 3),
        "state": if n.is_multiple_of(3) { "closed" } else { "open" },
        "updated_at": format!("2026-11-{day:02}T{hour:02}:00:00Z"),
        "html_url": format!("https://github.com/{owner}/{repo}/issues/{n}"),
    });
    if n.is_multiple_of(4) {
        item["pull_request"] =
            json!({"html_url": format!("https://github.com/{owner}/{repo}/pull/{n}")});
    }
    item
}

/// The numbers of the items in `state` (`all`, `open`, `closed`).
fn github_numbers(config: &FixtureConfig, state: &str) -> Vec<u64> {
    (1..=config.github_issues)
        .filter(|n| match state {
            "open" => !n.is_multiple_of(3),
            "closed" => n.is_multiple_of(3),
            _ => true,
        })
        .collect()
}

/// GitHub's list answer for `page` (from 1) of `per_page` (clamped to 1..=100), and
/// the number of pages.
#[must_use]
pub fn github_issues_page(
    config: &FixtureConfig,
    state: &str,
    page: u64,
    per_page: u64,
) -> (Value, u64) {
    let per_page = per_page.clamp(1, 100);
    let numbers = github_numbers(config, state);
    let pages = (numbers.len() as u64).div_ceil(per_page).max(1);
    let (owner, repo) = &config.repository;
    let items: Vec<Value> = numbers
        .iter()
        .skip(
            usize::try_from(page.saturating_sub(1).saturating_mul(per_page)).unwrap_or(usize::MAX),
        )
        .take(per_page as usize)
        .map(|n| github_issue(owner, repo, *n))
        .collect();
    (Value::Array(items), pages)
}

#[derive(Clone)]
struct Fixture {
    config: Arc<FixtureConfig>,
    hits: Arc<Mutex<HashMap<(&'static str, u64), u64>>>,
}

impl Fixture {
    /// Waits the latency, checks the token, counts the hit and applies its fault.
    async fn gate(
        &self,
        headers: &HeaderMap,
        source: &'static str,
        index: u64,
    ) -> Option<Response> {
        tokio::time::sleep(self.config.latency).await;
        if let Some(token) = &self.config.token {
            let expected = format!("Bearer {token}");
            let sent = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if sent != Some(expected.as_str()) {
                return Some(error(
                    StatusCode::UNAUTHORIZED,
                    "a valid bearer token is required",
                ));
            }
        }
        if !self.config.faults {
            return None;
        }
        let hit = {
            let mut hits = self
                .hits
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let count = hits.entry((source, index)).or_insert(0);
            *count += 1;
            *count
        };
        match fault_for(index, hit)? {
            Fault::RateLimited => {
                let mut response = error(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
                let seconds = self.config.retry_after.as_secs().to_string();
                if let Ok(value) = HeaderValue::from_str(&seconds) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
                Some(response)
            }
            Fault::ServerError => Some(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the fixture failed on purpose",
            )),
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"message": message}))).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchQuery {
    #[serde(default)]
    start_at: u64,
    #[serde(default = "fifty")]
    max_results: u64,
}

fn fifty() -> u64 {
    50
}

async fn jira_search(
    State(fixture): State<Fixture>,
    Query(query): Query<SearchQuery>,
    headers: HeaderMap,
) -> Response {
    let max_results = query.max_results.clamp(1, 100);
    let index = query.start_at / max_results;
    if let Some(refused) = fixture.gate(&headers, "jira", index).await {
        return refused;
    }
    Json(jira_search_page(
        &fixture.config,
        query.start_at,
        max_results,
    ))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct IssuesQuery {
    #[serde(default = "first_page")]
    page: u64,
    #[serde(default = "thirty")]
    per_page: u64,
    #[serde(default)]
    state: Option<String>,
}

fn first_page() -> u64 {
    1
}

fn thirty() -> u64 {
    30
}

async fn github_issues(
    State(fixture): State<Fixture>,
    Path((owner, repo)): Path<(String, String)>,
    Query(query): Query<IssuesQuery>,
    headers: HeaderMap,
) -> Response {
    if (owner.as_str(), repo.as_str())
        != (
            fixture.config.repository.0.as_str(),
            fixture.config.repository.1.as_str(),
        )
    {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let page = query.page.max(1);
    if let Some(refused) = fixture.gate(&headers, "github", page - 1).await {
        return refused;
    }
    let state = query.state.unwrap_or_else(|| "open".to_owned());
    let per_page = query.per_page.clamp(1, 100);
    let (items, pages) = github_issues_page(&fixture.config, &state, page, per_page);
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    let url = |p: u64| {
        format!(
            "<http://{host}/repos/{owner}/{repo}/issues?state={state}&per_page={per_page}&page={p}>"
        )
    };
    let mut links = Vec::new();
    if page < pages {
        links.push(format!("{}; rel=\"next\"", url(page + 1)));
        links.push(format!("{}; rel=\"last\"", url(pages)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", url(1)));
        links.push(format!("{}; rel=\"prev\"", url(page - 1)));
    }
    let mut response = Json(items).into_response();
    if !links.is_empty()
        && let Ok(value) = HeaderValue::from_str(&links.join(", "))
    {
        response.headers_mut().insert(header::LINK, value);
    }
    response
}

/// The fixture's routes, for serving in process.
pub fn router(config: FixtureConfig) -> Router {
    let fixture = Fixture {
        config: Arc::new(config),
        hits: Arc::default(),
    };
    Router::new()
        .route("/rest/api/2/search", get(jira_search))
        .route("/repos/{owner}/{repo}/issues", get(github_issues))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .with_state(fixture)
}

/// Serves the fixture source on `listener` until the task is dropped or fails.
///
/// # Errors
/// The listener's I/O error.
pub async fn serve(listener: TcpListener, config: FixtureConfig) -> std::io::Result<()> {
    axum::serve(listener, router(config)).await
}
