//! The two seed jobs, as real ETL: `jira_sync` and `github_sync`.
//!
//! Each one **extracts** from a REST API (base URL and bearer token configurable;
//! Jira paginated by `startAt`/`maxResults` against `total`, GitHub by
//! `Link: <…>; rel="next"`; `429`/`5xx` retried in place with backoff, honouring
//! `Retry-After`, then handed to the engine as a retryable error), **transforms** each
//! item into a normalised [`SourceItem`], and **loads** it into the store's database
//! (`etl_source_items`, keyed by `(source, external_id)`) with an upsert, so re-runs and
//! retried pages never duplicate a row. After every page a job saves a checkpoint
//! cursor, so a retried run resumes after the last loaded page; it reports progress
//! `{done, total, message}`, writes a log line per page, and stops at the next await
//! when cancelled. The token is never logged.
//!
//! ```
//! use pulse_etl::jobs::{GitHubConfig, JiraConfig, SeedJobsConfig, register_seed_jobs};
//! use pulse_etl::JobRegistry;
//!
//! # fn main() -> Result<(), pulse_etl::jobs::SourceConfigError> {
//! // Both jobs against one base URL (e.g. the example fixture server) …
//! let mut registry = JobRegistry::new();
//! register_seed_jobs(&mut registry, SeedJobsConfig::against("http://127.0.0.1:8002"))?;
//! assert_eq!(registry.names(), ["github_sync", "jira_sync"]);
//!
//! // … or each against its own API, with tokens (from the environment in practice).
//! let config = SeedJobsConfig::new(
//!     JiraConfig::new("http://jira.internal:8080").with_token("jira-pat"),
//!     GitHubConfig::new("http://ghe.internal/api/v3", "acme", "widgets").with_token("ghp"),
//! );
//! register_seed_jobs(&mut registry, config)?;
//! # Ok(())
//! # }
//! ```
//!
//! `https://` base URLs (Jira Cloud, `https://api.github.com`) need the `tls` feature
//! (rustls, trusting the PEM bundle named by `SSL_CERT_FILE`, else the system's);
//! without it they are refused with [`SourceConfigError::TlsUnsupported`].
//!
//! ## Environment
//!
//! [`SeedJobsConfig::from_env`] reads:
//!
//! | variable | meaning | default |
//! |----------|---------|---------|
//! | `PULSE_JIRA_URL` | Jira base URL | the given default |
//! | `PULSE_JIRA_TOKEN` | Jira bearer token | none |
//! | `PULSE_JIRA_JQL` | the JQL of a run without `jql` parameter | `order by key asc` |
//! | `PULSE_GITHUB_URL` | GitHub API base URL | the given default |
//! | `PULSE_GITHUB_TOKEN` | GitHub bearer token | none |
//! | `PULSE_GITHUB_REPO` | `owner/repo` | `pulse/demo` |

use crate::job::{JobContext, JobError, JobRegistry};

mod connector;
mod github;
mod http;
mod jira;
mod load;
mod url;

pub use github::{GITHUB_SYNC, GitHubConfig, GitHubParams, GitHubSync};
pub use http::{FetchPolicy, SourceToken};
pub use jira::{JIRA_SYNC, JiraConfig, JiraParams, JiraSync};
pub use load::{SourceItem, count_items, list_items};

/// A seed job's configuration is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceConfigError {
    /// The base URL does not parse or is not `http://host[:port][/prefix]`.
    #[error("{api}: invalid base URL `{url}`: {reason}")]
    InvalidUrl {
        /// `jira` or `github`.
        api: &'static str,
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The base URL is `https://` and the `tls` feature is off.
    #[error(
        "{api}: `{url}` needs TLS: enable pulse-etl's `tls` feature, or use http:// (e.g. behind a TLS-terminating proxy)"
    )]
    TlsUnsupported {
        /// `jira` or `github`.
        api: &'static str,
        /// The URL given.
        url: String,
    },
    /// The trusted roots for an `https` source could not be loaded (`tls` feature).
    #[error("{api}: cannot load TLS roots: {reason}")]
    TlsRoots {
        /// `jira` or `github`.
        api: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The token cannot be sent in a header (it is not shown).
    #[error("{api}: the token contains characters not allowed in a header")]
    InvalidToken {
        /// `jira` or `github`.
        api: &'static str,
    },
    /// The GitHub repository is not `owner/repo`.
    #[error("github: invalid repository `{0}`, expected owner/repo")]
    InvalidRepository(String),
}

/// The configuration of both seed jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedJobsConfig {
    /// `jira_sync`'s.
    pub jira: JiraConfig,
    /// `github_sync`'s.
    pub github: GitHubConfig,
}

impl SeedJobsConfig {
    /// Both jobs' configurations.
    #[must_use]
    pub fn new(jira: JiraConfig, github: GitHubConfig) -> Self {
        Self { jira, github }
    }

    /// Both jobs against one server that serves Jira's and GitHub's paths (the example
    /// fixture source), without tokens, GitHub repository `pulse/demo`.
    #[must_use]
    pub fn against(base_url: &str) -> Self {
        Self::new(
            JiraConfig::new(base_url),
            GitHubConfig::new(base_url, "pulse", "demo"),
        )
    }

    /// From the `PULSE_JIRA_*` and `PULSE_GITHUB_*` environment variables (see the
    /// [module docs](self)), with `default_base_url` for unset URLs.
    ///
    /// # Errors
    /// [`SourceConfigError::InvalidRepository`] for a bad `PULSE_GITHUB_REPO`.
    pub fn from_env(default_base_url: &str) -> Result<Self, SourceConfigError> {
        Self::from_lookup(default_base_url, |key| std::env::var(key).ok())
    }

    /// As [`from_env`](Self::from_env), reading variables through `lookup`.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_lookup(
        default_base_url: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SourceConfigError> {
        let get = |key: &str| lookup(key).filter(|value| !value.trim().is_empty());
        let mut jira =
            JiraConfig::new(get("PULSE_JIRA_URL").unwrap_or_else(|| default_base_url.to_owned()));
        if let Some(token) = get("PULSE_JIRA_TOKEN") {
            jira = jira.with_token(token);
        }
        if let Some(jql) = get("PULSE_JIRA_JQL") {
            jira = jira.with_jql(jql);
        }
        let repo = get("PULSE_GITHUB_REPO").unwrap_or_else(|| "pulse/demo".to_owned());
        let Some((owner, name)) = repo.split_once('/') else {
            return Err(SourceConfigError::InvalidRepository(repo));
        };
        let mut github = GitHubConfig::new(
            get("PULSE_GITHUB_URL").unwrap_or_else(|| default_base_url.to_owned()),
            owner,
            name,
        );
        if let Some(token) = get("PULSE_GITHUB_TOKEN") {
            github = github.with_token(token);
        }
        Ok(Self::new(jira, github))
    }

    /// Applies `f` to both jobs' fetch policies (e.g. shorter backoffs in tests).
    #[must_use]
    pub fn with_fetch_policy(mut self, fetch: FetchPolicy) -> Self {
        self.jira = self.jira.with_fetch_policy(fetch);
        self.github = self.github.with_fetch_policy(fetch);
        self
    }
}

/// Registers `jira_sync` and `github_sync` with their configuration.
///
/// # Errors
/// [`SourceConfigError`] when either configuration is invalid (nothing is registered).
pub fn register_seed_jobs(
    registry: &mut JobRegistry,
    config: SeedJobsConfig,
) -> Result<(), SourceConfigError> {
    let jira = JiraSync::new(config.jira)?;
    let github = GitHubSync::new(config.github)?;
    registry.register(jira).register(github);
    Ok(())
}

/// Loads one transformed page, saves the cursor that follows it, reports progress and
/// logs `message`. The fence is checked first, so an attempt that lost its run to
/// another worker stops before writing rows.
async fn load_page(
    ctx: &JobContext,
    items: &[SourceItem],
    cursor: &impl serde::Serialize,
    done: u64,
    total: Option<u64>,
    message: String,
) -> Result<(), JobError> {
    ctx.check_lease().await?;
    load::upsert_items(&ctx.pool(), ctx.run_id(), items, ctx.now()).await?;
    ctx.set_checkpoint(cursor).await?;
    ctx.progress(done, total.map(|total| total.max(done)), message.clone())
        .await?;
    ctx.info(message).await
}

/// Parses one page's JSON; a body that is not what the source should send is a fatal
/// error naming the source and the page (retrying would get the same answer).
fn parse_page<T: serde::de::DeserializeOwned>(
    source: &str,
    page: &str,
    body: &[u8],
) -> Result<T, JobError> {
    serde_json::from_slice(body).map_err(|err| {
        JobError::fatal(format!(
            "{source}: {page} is not a valid answer ({} bytes): {err}",
            body.len()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lookup_fills_both_configs() {
        let vars = |key: &str| match key {
            "PULSE_JIRA_URL" => Some("http://jira:1".to_owned()),
            "PULSE_JIRA_TOKEN" => Some("jt".to_owned()),
            "PULSE_GITHUB_REPO" => Some("acme/widgets".to_owned()),
            "PULSE_GITHUB_TOKEN" => Some(" ".to_owned()),
            _ => None,
        };
        let config = SeedJobsConfig::from_lookup("http://fixture:2", vars).unwrap();
        assert_eq!(config.jira.base_url, "http://jira:1");
        assert_eq!(config.jira.token, Some(SourceToken::new("jt")));
        assert_eq!(config.github.base_url, "http://fixture:2");
        assert_eq!(
            (config.github.owner.as_str(), config.github.repo.as_str()),
            ("acme", "widgets")
        );
        assert_eq!(config.github.token, None);
        assert!(!format!("{config:?}").contains("jt\""));

        let bad = SeedJobsConfig::from_lookup("http://f", |key| {
            (key == "PULSE_GITHUB_REPO").then(|| "nope".to_owned())
        });
        assert_eq!(
            bad,
            Err(SourceConfigError::InvalidRepository("nope".to_owned()))
        );
    }

    #[test]
    fn schedules_and_policies_reach_the_registry() {
        let every = crate::Schedule::every(std::time::Duration::from_secs(900)).unwrap();
        let mut config = SeedJobsConfig::against("http://fixture:1");
        config.jira = config
            .jira
            .with_schedule(every.clone())
            .with_retry_policy(crate::RetryPolicy::never());
        let mut registry = JobRegistry::new();
        register_seed_jobs(&mut registry, config).unwrap();
        let jira = registry.info(JIRA_SYNC).unwrap();
        assert_eq!(jira.schedule, Some(every));
        assert_eq!(jira.retry_policy.max_attempts, 1);
        assert_eq!(registry.info(GITHUB_SYNC).unwrap().schedule, None);
    }

    #[test]
    fn invalid_configs_register_nothing() {
        let mut registry = JobRegistry::new();
        let config = SeedJobsConfig::new(
            JiraConfig::new("http://ok:1"),
            GitHubConfig::new("http://ok:1", "a b", "c"),
        );
        assert!(register_seed_jobs(&mut registry, config).is_err());
        assert!(registry.is_empty());
        if !cfg!(feature = "tls") {
            let tls = SeedJobsConfig::against("https://api.github.com");
            let err = register_seed_jobs(&mut registry, tls).unwrap_err();
            assert!(err.to_string().contains("`tls` feature"), "{err}");
        }
        let token = SeedJobsConfig::new(
            JiraConfig::new("http://ok:1").with_token("bad\ntoken"),
            GitHubConfig::new("http://ok:1", "a", "b"),
        );
        let err = register_seed_jobs(&mut registry, token).unwrap_err();
        assert!(!err.to_string().contains("bad"), "{err}");
    }
}
