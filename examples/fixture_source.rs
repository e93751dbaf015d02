//! Run with: cargo run --example fixture_source
//!
//! Serves a deterministic, paginated fake of the Jira and GitHub REST APIs (with a few
//! 429 and 500 answers on purpose, and some latency) on `127.0.0.1:8002`, or on
//! `PULSE_FIXTURE_ADDR`. Point the seed jobs at it:
//!
//! ```text
//! PULSE_JIRA_URL=http://127.0.0.1:8002 PULSE_GITHUB_URL=http://127.0.0.1:8002 …
//! curl 'http://127.0.0.1:8002/rest/api/2/search?startAt=0&maxResults=2'
//! curl -i 'http://127.0.0.1:8002/repos/pulse/demo/issues?state=all&per_page=2&page=1'
//! ```

#[path = "full_stack/fixture_source.rs"]
mod fixture_source;

use fixture_source::FixtureConfig;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::var("PULSE_FIXTURE_ADDR").unwrap_or_else(|_| "127.0.0.1:8002".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let config = FixtureConfig::default();
    println!(
        "fixture source on http://{}: {} Jira issues, {} GitHub items in {}/{}",
        listener.local_addr()?,
        config.jira_issues,
        config.github_issues,
        config.repository.0,
        config.repository.1,
    );
    fixture_source::serve(listener, config).await
}
