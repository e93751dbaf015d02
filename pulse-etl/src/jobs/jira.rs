//! `jira_sync`: Jira issues from `/rest/api/2/search`, paginated by
//! `startAt`/`maxResults` against the answer's `total`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::http::{FetchPolicy, SourceHttp, SourceToken};
use super::load::SourceItem;
use super::url::{BaseUrl, encode_query_value};
use super::{SourceConfigError, load_page, parse_page};
use crate::engine::{RetryPolicy, Schedule};
use crate::job::{Job, JobContext, JobError, JobOutput};

/// The registered name of the Jira job.
pub const JIRA_SYNC: &str = "jira_sync";

/// Where and how `jira_sync` reads Jira.
#[derive(Debug, Clone, PartialEq)]
pub struct JiraConfig {
    pub(crate) base_url: String,
    pub(crate) token: Option<SourceToken>,
    pub(crate) jql: String,
    pub(crate) page_size: u32,
    pub(crate) fetch: FetchPolicy,
    pub(crate) retry: RetryPolicy,
    pub(crate) timeout: Duration,
    pub(crate) schedule: Option<Schedule>,
}

impl JiraConfig {
    /// Reads the Jira at `base_url` (`http://host[:port][/prefix]`), without a token,
    /// every issue (`jql = "order by key asc"`), 50 per page.
    #[must_use]
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            token: None,
            jql: "order by key asc".to_owned(),
            page_size: 50,
            fetch: FetchPolicy::default(),
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(3600),
            schedule: None,
        }
    }

    /// Sends `Authorization: Bearer <token>` (a Jira personal access token).
    #[must_use]
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(SourceToken::new(token));
        self
    }

    /// The default JQL query (a run's `jql` parameter overrides it). Use a stable
    /// order, so that pages do not shift between requests.
    #[must_use]
    pub fn with_jql(mut self, jql: impl Into<String>) -> Self {
        self.jql = jql.into();
        self
    }

    /// The default page size (`maxResults`, 1 to 1000).
    #[must_use]
    pub fn with_page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size.clamp(1, 1000);
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

/// The parameters of a `jira_sync` run: `{"jql"?: "...", "page_size"?: 50}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JiraParams {
    /// The JQL query instead of the configured one.
    #[serde(default)]
    pub jql: Option<String>,
    /// The page size instead of the configured one.
    #[serde(default)]
    pub page_size: Option<u32>,
}

/// Where a `jira_sync` run stands: saved after every loaded page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct JiraCursor {
    /// The `startAt` of the next page.
    start_at: u64,
    /// Items loaded so far by this run.
    loaded: u64,
    /// Pages loaded so far by this run.
    pages: u64,
}

/// One page of `/rest/api/2/search`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchPage {
    total: u64,
    issues: Vec<JiraIssue>,
}

#[derive(Debug, Deserialize)]
struct JiraIssue {
    id: String,
    key: String,
    fields: JiraFields,
}

#[derive(Debug, Deserialize)]
struct JiraFields {
    summary: String,
    updated: String,
    status: Named,
    #[serde(default)]
    issuetype: Option<Named>,
}

#[derive(Debug, Deserialize)]
struct Named {
    name: String,
}

/// The `jira_sync` job: extracts Jira issues page by page, loads them into
/// `etl_source_items` (source `jira`), reports progress against Jira's `total` and
/// checkpoints after each page.
#[derive(Debug, Clone)]
pub struct JiraSync {
    config: JiraConfig,
    http: SourceHttp,
}

impl JiraSync {
    /// The job for `config`.
    ///
    /// # Errors
    /// [`SourceConfigError`] for a bad base URL or token.
    pub fn new(config: JiraConfig) -> Result<Self, SourceConfigError> {
        let base = BaseUrl::parse("jira", &config.base_url)?;
        let http = SourceHttp::new("jira", base, config.token.clone(), &[], config.fetch)?;
        Ok(Self { config, http })
    }

    fn transform(&self, issue: JiraIssue) -> SourceItem {
        let url = self
            .http
            .base()
            .url(&self.http.base().path(&format!("/browse/{}", issue.key)));
        SourceItem {
            source: "jira".to_owned(),
            external_id: issue.id,
            key: issue.key,
            kind: issue
                .fields
                .issuetype
                .map_or_else(|| "issue".to_owned(), |t| t.name.to_lowercase()),
            title: issue.fields.summary,
            state: issue.fields.status.name,
            updated_at: issue.fields.updated,
            url: Some(url),
        }
    }
}

impl Job for JiraSync {
    type Params = JiraParams;

    fn name(&self) -> &str {
        JIRA_SYNC
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
        let params: JiraParams = ctx.params()?;
        let jql = params.jql.unwrap_or_else(|| self.config.jql.clone());
        let page_size = params
            .page_size
            .unwrap_or(self.config.page_size)
            .clamp(1, 1000);
        let mut cursor: JiraCursor = ctx.checkpoint_as().unwrap_or_default();
        let resumed_from = cursor.start_at;
        if resumed_from > 0 {
            ctx.info(format!(
                "jira: resuming at startAt={resumed_from} ({} issues already loaded)",
                cursor.loaded
            ))
            .await?;
        } else {
            ctx.info(format!("jira: syncing `{jql}`, {page_size} per page"))
                .await?;
        }
        let mut total;
        loop {
            ctx.check_cancelled()?;
            let path = self.http.base().path(&format!(
                "/rest/api/2/search?jql={}&startAt={}&maxResults={page_size}\
                 &fields=summary,status,issuetype,updated",
                encode_query_value(&jql),
                cursor.start_at
            ));
            let fetched = self.http.get(&ctx, &path).await?;
            let page: SearchPage = parse_page(
                "jira",
                &format!("startAt={}", cursor.start_at),
                &fetched.body,
            )?;
            total = page.total;
            let count = page.issues.len() as u64;
            let items: Vec<SourceItem> = page
                .issues
                .into_iter()
                .map(|issue| self.transform(issue))
                .collect();
            cursor.start_at += count;
            cursor.loaded += count;
            cursor.pages += 1;
            let message = format!(
                "jira: {} of {total} issues loaded (page {})",
                cursor.loaded, cursor.pages
            );
            load_page(&ctx, &items, &cursor, cursor.loaded, Some(total), message).await?;
            if count == 0 || cursor.start_at >= total {
                break;
            }
        }
        ctx.info(format!(
            "jira: done, {} issues in {} pages",
            cursor.loaded, cursor.pages
        ))
        .await?;
        Ok(JobOutput::new(serde_json::json!({
            "source": "jira",
            "loaded": cursor.loaded,
            "pages": cursor.pages,
            "total": total,
            "resumed_from": resumed_from,
        })))
    }
}
