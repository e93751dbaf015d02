//! `github_sync`: a repository's issues and pull requests from
//! `/repos/{owner}/{repo}/issues`, paginated by the `Link: <…>; rel="next"` header.

use std::time::Duration;

use http::HeaderName;
use serde::{Deserialize, Serialize};

use super::http::{FetchPolicy, SourceHttp, SourceToken};
use super::load::SourceItem;
use super::url::{BaseUrl, encode_query_value, link_target, query_param};
use super::{SourceConfigError, load_page, parse_page};
use crate::engine::{RetryPolicy, Schedule};
use crate::job::{Job, JobContext, JobError, JobOutput};

/// The registered name of the GitHub job.
pub const GITHUB_SYNC: &str = "github_sync";

/// Where and how `github_sync` reads GitHub.
#[derive(Debug, Clone, PartialEq)]
pub struct GitHubConfig {
    pub(crate) base_url: String,
    pub(crate) token: Option<SourceToken>,
    pub(crate) owner: String,
    pub(crate) repo: String,
    pub(crate) per_page: u32,
    pub(crate) fetch: FetchPolicy,
    pub(crate) retry: RetryPolicy,
    pub(crate) timeout: Duration,
    pub(crate) schedule: Option<Schedule>,
}

impl GitHubConfig {
    /// Reads `owner/repo` from the GitHub API at `base_url` (`http://host[:port][/prefix]`),
    /// without a token, 50 issues per page.
    #[must_use]
    pub fn new(
        base_url: impl Into<String>,
        owner: impl Into<String>,
        repo: impl Into<String>,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            token: None,
            owner: owner.into(),
            repo: repo.into(),
            per_page: 50,
            fetch: FetchPolicy::default(),
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(3600),
            schedule: None,
        }
    }

    /// Sends `Authorization: Bearer <token>`.
    #[must_use]
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(SourceToken::new(token));
        self
    }

    /// The default page size (`per_page`, 1 to 100).
    #[must_use]
    pub fn with_per_page(mut self, per_page: u32) -> Self {
        self.per_page = per_page.clamp(1, 100);
        self
    }

    /// How each page request is retried.
    #[must_use]
    pub fn with_fetch_policy(mut self, fetch: FetchPolicy) -> Self {
        self.fetch = fetch;
        self
    }

    /// How failed attempts of the run are retried (each resumes from the checkpoint).
    #[must_use]
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// How long one attempt may run.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Starts a run by itself on `schedule` (each slot fires once across instances).
    #[must_use]
    pub fn with_schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = Some(schedule);
        self
    }
}

/// The parameters of a `github_sync` run: `{"state"?: "all"|"open"|"closed", "per_page"?: 50}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitHubParams {
    /// Which issues: `all` (the default), `open` or `closed`.
    #[serde(default)]
    pub state: Option<String>,
    /// The page size instead of the configured one.
    #[serde(default)]
    pub per_page: Option<u32>,
}

/// Where a `github_sync` run stands: saved after every loaded page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct GitHubCursor {
    /// The path (with query) of the next page; `None` once the last page is loaded.
    next: Option<String>,
    /// Items loaded so far by this run.
    loaded: u64,
    /// Pages loaded so far by this run.
    pages: u64,
}

#[derive(Debug, Deserialize)]
struct GitHubIssue {
    id: u64,
    number: u64,
    title: String,
    state: String,
    updated_at: String,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    pull_request: Option<serde_json::Value>,
}

/// The `github_sync` job: extracts a repository's issues (and pull requests, which
/// GitHub lists with them) page by page following `Link` headers, loads them into
/// `etl_source_items` (source `github`), reports progress and checkpoints after each
/// page. Only `Link` targets on the configured origin are followed.
#[derive(Debug, Clone)]
pub struct GitHubSync {
    config: GitHubConfig,
    http: SourceHttp,
}

impl GitHubSync {
    /// The job for `config`.
    ///
    /// # Errors
    /// [`SourceConfigError`] for a bad base URL, repository or token.
    pub fn new(config: GitHubConfig) -> Result<Self, SourceConfigError> {
        let valid = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !valid(&config.owner) || !valid(&config.repo) {
            return Err(SourceConfigError::InvalidRepository(format!(
                "{}/{}",
                config.owner, config.repo
            )));
        }
        let base = BaseUrl::parse("github", &config.base_url)?;
        let headers = [
            (http::header::ACCEPT, "application/vnd.github+json"),
            (
                HeaderName::from_static("x-github-api-version"),
                "2022-11-28",
            ),
        ];
        let http = SourceHttp::new("github", base, config.token.clone(), &headers, config.fetch)?;
        Ok(Self { config, http })
    }

    /// The cursor an attempt starts from: the checkpoint of an earlier attempt, else
    /// the first page.
    async fn start_cursor(
        &self,
        ctx: &JobContext,
        resumed: Option<GitHubCursor>,
        state: &str,
        per_page: u32,
    ) -> Result<GitHubCursor, JobError> {
        if let Some(cursor) = resumed {
            ctx.info(format!(
                "github: resuming after page {} ({} items already loaded)",
                cursor.pages, cursor.loaded
            ))
            .await?;
            return Ok(cursor);
        }
        let (owner, repo) = (&self.config.owner, &self.config.repo);
        ctx.info(format!(
            "github: syncing {owner}/{repo} (state={state}), {per_page} per page"
        ))
        .await?;
        let first = format!(
            "/repos/{owner}/{repo}/issues?state={}&sort=created&direction=asc\
             &per_page={per_page}&page=1",
            encode_query_value(state)
        );
        Ok(GitHubCursor {
            next: Some(self.http.base().path(&first)),
            loaded: 0,
            pages: 0,
        })
    }

    /// The path of the `rel="next"` page, refusing a link to another origin (which
    /// would receive the token).
    fn next_page(
        &self,
        headers: &http::HeaderMap,
        page_label: &str,
    ) -> Result<Option<String>, JobError> {
        let Some(link) = link_target(headers, "next") else {
            return Ok(None);
        };
        self.http
            .base()
            .same_origin_path(link)
            .map(Some)
            .ok_or_else(|| {
                JobError::fatal(format!(
                    "github: the next page link of {page_label} leaves the configured origin"
                ))
            })
    }

    fn transform(&self, issue: GitHubIssue) -> SourceItem {
        SourceItem {
            source: "github".to_owned(),
            external_id: issue.id.to_string(),
            key: format!(
                "{}/{}#{}",
                self.config.owner, self.config.repo, issue.number
            ),
            kind: if issue.pull_request.is_some() {
                "pull_request"
            } else {
                "issue"
            }
            .to_owned(),
            title: issue.title,
            state: issue.state,
            updated_at: issue.updated_at,
            url: issue.html_url,
        }
    }
}

impl Job for GitHubSync {
    type Params = GitHubParams;

    fn name(&self) -> &str {
        GITHUB_SYNC
    }

    fn timeout(&self) -> Duration {
        self.config.timeout
    }

    fn retry_policy(&self) -> RetryPolicy {
        self.config.retry
    }

    fn schedule(&self) -> Option<Schedule> {
        self.config.schedule.clone()
    }

    async fn run(&self, ctx: JobContext) -> Result<JobOutput, JobError> {
        let params: GitHubParams = ctx.params()?;
        let state = params.state.unwrap_or_else(|| "all".to_owned());
        if !matches!(state.as_str(), "all" | "open" | "closed") {
            return Err(JobError::fatal(format!(
                "github: state must be all, open or closed, not `{state}`"
            )));
        }
        let per_page = params
            .per_page
            .unwrap_or(self.config.per_page)
            .clamp(1, 100);
        let resumed: Option<GitHubCursor> = ctx.checkpoint_as();
        let resumed_at_page = resumed.as_ref().map_or(0, |cursor| cursor.pages);
        let mut cursor = self.start_cursor(&ctx, resumed, &state, per_page).await?;
        let mut total = None;
        while let Some(path) = cursor.next.clone() {
            ctx.check_cancelled()?;
            let fetched = self.http.get(&ctx, &path).await?;
            let page_label = format!("page {}", cursor.pages + 1);
            let issues: Vec<GitHubIssue> = parse_page("github", &page_label, &fetched.body)?;
            let next = self.next_page(&fetched.headers, &page_label)?;
            // `rel="last"` gives the page count, hence an upper bound of the total.
            if let Some(last_page) = link_target(&fetched.headers, "last")
                .and_then(|link| query_param(link, "page"))
                .and_then(|page| page.parse::<u64>().ok())
            {
                total = Some(last_page * u64::from(per_page));
            }
            let items: Vec<SourceItem> = issues
                .into_iter()
                .map(|issue| self.transform(issue))
                .collect();
            cursor.loaded += items.len() as u64;
            cursor.pages += 1;
            cursor.next = next;
            if cursor.next.is_none() {
                total = Some(cursor.loaded);
            }
            let message = format!("github: {} items loaded ({page_label})", cursor.loaded);
            load_page(&ctx, &items, &cursor, cursor.loaded, total, message).await?;
        }
        ctx.info(format!(
            "github: done, {} items in {} pages",
            cursor.loaded, cursor.pages
        ))
        .await?;
        Ok(JobOutput::new(serde_json::json!({
            "source": "github",
            "loaded": cursor.loaded,
            "pages": cursor.pages,
            "resumed_after_page": resumed_at_page,
        })))
    }
}
