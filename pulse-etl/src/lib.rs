//! # pulse-etl
//!
//! A job engine that never loses a run. Register jobs, start runs, and let a pool of
//! workers execute them with leases, heartbeats, fenced attempts, retries with
//! backoff, timeouts, cooperative cancels and schedules — over an embedded SQLite
//! file or, for many workers on many machines, one PostgreSQL database.
//!
//! - A **job** is registered code ([`Job`]) with a name, a parameters type, a timeout,
//!   a [`RetryPolicy`] and an optional [`Schedule`].
//! - A **run** ([`Run`]) is one execution request with its own id, state, progress and
//!   attempts. States: `pending → running → succeeded | failed | cancelled`, with
//!   `retrying` between attempts and `cancelling` while a cancel is under way.
//! - A **store** ([`JobStore`]: [`SqliteStore`], [`PgStore`]) holds every invariant
//!   that must survive a crash: one active run per job (a partial unique index),
//!   state changes written with their event rows in one transaction, every attempt's
//!   writes fenced by its attempt number.
//! - The **engine** ([`JobEngine`]) claims runs, heartbeats their leases, sweeps
//!   expired leases (a dead worker's run is retried by another), fires schedules once
//!   across instances and hands running attempts back on shutdown.
//! - The **HTTP API** ([`api`]: [`api::EtlApi`], an axum router) serves jobs, runs,
//!   logs and a server-sent event stream behind pulse-core's internal authentication;
//!   every error is the shared JSON shape.
//! - The **client** ([`client::EtlClient`]) calls that API with the internal credential
//!   and the correlation id, and follows the event stream across reconnects.
//! - The **seed jobs** ([`jobs`]): `jira_sync` and `github_sync` extract from the Jira
//!   and GitHub REST APIs (paginated, rate-limit aware), and load idempotently into the
//!   store's database with progress and a checkpoint cursor.
//!
//! The crate's README lists each guarantee with the test that checks it — among them
//! worker processes killed (SIGKILL), frozen (SIGSTOP) and resumed, on both stores.
//!
//! ## Example
//!
//! ```
//! use pulse_etl::{EngineConfig, Job, JobContext, JobEngine, JobError, JobOutput,
//!     JobRegistry, RunState, SqliteStore, StartRequest};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct CountParams {
//!     to: u64,
//! }
//!
//! struct Count;
//!
//! impl Job for Count {
//!     type Params = CountParams;
//!
//!     fn name(&self) -> &str {
//!         "count"
//!     }
//!
//!     async fn run(&self, ctx: JobContext) -> Result<JobOutput, JobError> {
//!         let params: CountParams = ctx.params()?;
//!         for i in 1..=params.to {
//!             ctx.check_cancelled()?;
//!             ctx.progress(i, Some(params.to), format!("counted {i}")).await?;
//!         }
//!         Ok(JobOutput::new(serde_json::json!({ "counted": params.to })))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SqliteStore::open_in_memory().await?; // or SqliteStore::open("jobs.db")
//! let registry = JobRegistry::new().with_job(Count);
//! let engine = JobEngine::launch(store.into_dyn(), registry, EngineConfig::default()).await?;
//!
//! let start = StartRequest::new("count")
//!     .with_params(serde_json::json!({ "to": 3 }))
//!     .with_requested_by("user-1");
//! let started = engine.start(start).await?;
//! assert!(started.created);
//!
//! let run = engine.wait_for_terminal(started.run.id).await?;
//! assert_eq!(run.state, RunState::Succeeded);
//! assert_eq!(run.progress.done, 3);
//! assert_eq!(run.result, Some(serde_json::json!({ "counted": 3 })));
//!
//! // Unknown jobs are refused with the allowed names (HTTP 422).
//! let err = engine.start(StartRequest::new("nope")).await.unwrap_err();
//! assert_eq!(err.status(), 422);
//! engine.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---------|---------|--------------|
//! | (core)  | always  | the engine, [`Job`], the [`JobStore`] trait, the model |
//! | `sqlite` | yes    | `SqliteStore`, the embedded store |
//! | `postgres` | no   | `PgStore`, for many workers on many machines |
//! | `api`   | no      | `api`: the HTTP API (axum) behind pulse-core's internal authentication |
//! | `client` | no     | `client`: the API's typed client (implies `api`) |
//! | `jobs`  | no      | `jobs`: the seed jobs `jira_sync` and `github_sync` (with `sqlite` or `postgres`) |
//! | `tls`   | no      | `https://` sources for the seed jobs (rustls; roots from `SSL_CERT_FILE` or the system's PEM bundle; implies `jobs`) |
//! | `full`  | no      | all of the above |
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "api")]
pub mod api;
#[cfg(feature = "client")]
pub mod client;
pub mod engine;
pub mod job;
#[cfg(feature = "jobs")]
pub mod jobs;
#[cfg(all(feature = "jobs", not(any(feature = "sqlite", feature = "postgres"))))]
compile_error!(
    "pulse-etl: the `jobs` feature loads into the store's database; enable `sqlite` or `postgres` too"
);
pub mod model;
pub mod store;

pub use engine::{
    Backoff, CatchUp, Due, EngineConfig, EngineError, JobEngine, ManualWallClock, Retention,
    RetryPolicy, Schedule, ScheduleError, StartOutcome, StartRequest, SystemWallClock,
    TokioWallClock, WallClock,
};
pub use job::{Job, JobContext, JobError, JobInfo, JobOutput, JobRegistry, NoParams};
pub use model::{
    Attempt, EngineHealth, InstanceId, JobStatus, JobSummary, LogLevel, LogLine, Progress, Run,
    RunEvent, RunEventKind, RunId, RunState, StateCounts, StatusSummary,
};
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
pub use store::{
    AttemptFence, AttemptOutcome, CancelOutcome, Claim, CreateOutcome, JobStore, LeaseStatus,
    MemoryStore, NewRun, PruneBatch, PruneReport, StoreError, StorePool, SweepReport,
};
#[cfg(feature = "postgres")]
pub use store::{PgStore, PgStoreOptions};

/// The README's Rust blocks, compiled and run as doctests (they use these features).
#[cfg(all(doctest, feature = "sqlite"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
