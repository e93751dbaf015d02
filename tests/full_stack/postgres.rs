//! The stack on PostgreSQL (`PULSE_DATABASE_URL=postgres://…`): the same end-to-end
//! flows as on SQLite — accounts, sessions, the admin API, the audit trail — each test
//! in a schema of its own (dropped at its end, failed or not), so they run in parallel.
//! Ignored without `PULSE_TEST_DATABASE_URL`.

use crate::harness::*;
use crate::{accounts, admin, sessions};

/// A fresh schema on the test server, dropped when this goes (even after a panic).
pub(crate) struct Schema {
    url: String,
    name: String,
}

impl Schema {
    pub(crate) fn new(test: &str) -> Self {
        let url = std::env::var("PULSE_TEST_DATABASE_URL").expect("PULSE_TEST_DATABASE_URL");
        let mut name = format!("fs_{}_{}", std::process::id(), test);
        name.truncate(63);
        Self { url, name }
    }

    /// The stack on this schema, with `overrides` of the test flags and `extra` ones.
    async fn start(&self, dir: &std::path::Path, overrides: &[(&str, &str)]) -> TestStack {
        let mut args = args_overriding(dir, overrides);
        args.extend(
            ["--database-url", &self.url, "--database-schema", &self.name].map(str::to_owned),
        );
        TestStack {
            stack: start_args(Service::All, args).await,
            _dir: None,
            http: client(),
        }
    }

    /// The schema's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The server's URL.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The flags that put a stack on this schema.
    pub(crate) fn flags(&self) -> [&str; 4] {
        ["--database-url", &self.url, "--database-schema", &self.name]
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // Dropped inside a runtime: a thread of its own with its own runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(pool) = sqlx::PgPool::connect(&url).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                        .execute(&pool)
                        .await;
                }
            });
        })
        .join();
    }
}

/// `#[tokio::test]`s running a flow of a running stack on a PostgreSQL schema of their own.
macro_rules! on_postgres {
    ($($test:ident: $flow:path $(, with $overrides:expr)?;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[ignore = "needs PostgreSQL (PULSE_TEST_DATABASE_URL)"]
        async fn $test() {
            let schema = Schema::new(stringify!($test));
            let dir = tempfile::tempdir().expect("temp dir");
            #[allow(unused_mut, unused_assignments)]
            let mut overrides: &[(&str, &str)] = &[];
            $(overrides = $overrides;)?
            let t = schema.start(dir.path(), overrides).await;
            $flow(&t).await;
            t.stack.shutdown().await;
        }
    )*};
}

on_postgres! {
    pg_a_database_user_signs_in_and_a_disabled_one_is_refused: accounts::a_disabled_user_is_refused;
    pg_refresh_rotation_and_reuse_detection: sessions::refresh_rotates_and_reuse_revokes_the_family;
    pg_logout_revokes: sessions::logout_revokes_the_token_and_its_session;
    pg_a_password_change_kills_old_tokens: sessions::a_password_change_ends_older_tokens;
    pg_role_changes_take_effect_at_once: sessions::role_changes_take_effect;
    pg_the_admin_api_refuses_a_viewer: admin::the_admin_api_is_refused_to_a_viewer;
    pg_admin_api_users: admin::admins_manage_users;
    pg_admin_api_errors: admin::admin_errors_are_json_with_the_right_status;
    pg_admin_api_lockout_guards: admin::administrators_cannot_lock_the_gateway_out;
    pg_admin_api_roles: admin::admins_manage_roles;
    pg_admin_api_audit_trail: admin::the_audit_trail_is_read_with_filters_and_paging;
    pg_audit_rows_for_sign_ins: admin::sign_in_events_are_audited;
    pg_audit_rows_for_job_starts_and_cancels: admin::job_starts_and_cancels_are_audited,
        with &[(admin::SLOW_FIXTURES[0], admin::SLOW_FIXTURES[1])];
    pg_first_admin_bootstrap: accounts::first_administrator_bootstrap,
        with &[("--demo", "false")];
}

/// Restarted on the same schema, the gateway keeps users, roles and revocations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (PULSE_TEST_DATABASE_URL)"]
async fn pg_a_restart_keeps_users_roles_and_revocations() {
    let schema = Schema::new("restart");
    let dir = tempfile::tempdir().expect("temp dir");
    accounts::a_restart_keeps_accounts(dir.path(), &schema.flags()).await;
}

/// The stack's jobs and health on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (PULSE_TEST_DATABASE_URL)"]
async fn the_stack_runs_on_postgresql() {
    let schema = Schema::new("stack");
    let dir = tempfile::tempdir().expect("temp dir");
    let t = schema.start(dir.path(), &[]).await;
    let back = t.backend();
    let token = t.login(&back, "admin@pulse.local", "admin").await;
    let started = t
        .call(
            Method::POST,
            &format!("{back}/api/etl/jobs/jira_sync/start"),
            Some(&token),
            None,
            &[],
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let run_id = started.body["run_id"].as_str().expect("run_id").to_owned();
    assert_eq!(t.wait_terminal(&token, &run_id).await["state"], "succeeded");
    let health = t
        .call(Method::GET, &format!("{back}/health"), None, None, &[])
        .await;
    assert_eq!(health.body["services"]["database"]["status"], "healthy");
    t.stack.shutdown().await;
}
