//! `full_stack users …` and `full_stack roles …`: every command and its errors, run in
//! process on a database of their own, and the real binary once (when it is built).

use crate::harness::*;
use crate::stack::accounts::AccountError;
use crate::stack::accounts::password::WeakPassword;

async fn store_in(dir: &std::path::Path) -> AccountStore {
    let url = format!("sqlite://{}", dir.join("pulse.db").display());
    AccountStore::open(&url, None)
        .await
        .expect("the store opens")
}

fn account_error(result: Result<String, CliError>) -> AccountError {
    match result {
        Err(CliError::Account(error)) => error,
        other => panic!("expected an account error, got {other:?}"),
    }
}

#[tokio::test]
async fn every_users_command_and_its_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store_in(dir.path()).await;

    let out = cli(
        &store,
        &[
            "users",
            "add",
            "ada@example.org",
            "--role",
            "admin",
            "operator",
        ],
        "",
    )
    .await
    .expect("add");
    assert!(out.starts_with("added ada@example.org (id "), "{out}");
    assert!(out.contains("with roles: admin, operator"), "{out}");
    let generated = out
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .expect("printed once");
    assert_eq!(generated.len(), 23, "{generated}");

    // Duplicate e-mail (in any case), unknown role, weak passwords (saying which rule).
    let duplicate = cli(
        &store,
        &["users", "add", "ADA@example.org", "--role", "viewer"],
        "",
    )
    .await;
    assert!(matches!(
        account_error(duplicate),
        AccountError::DuplicateEmail(_)
    ));
    let unknown_role = account_error(
        cli(
            &store,
            &["users", "add", "bob@example.org", "--role", "wizard"],
            "",
        )
        .await,
    );
    assert_eq!(
        unknown_role.to_string(),
        "no such role: wizard (roles: admin, operator, viewer)"
    );
    let short = account_error(
        cli(
            &store,
            &[
                "users",
                "add",
                "bob@example.org",
                "--role",
                "viewer",
                "--password-stdin",
            ],
            "short\n",
        )
        .await,
    );
    assert!(matches!(
        short,
        AccountError::WeakPassword(WeakPassword::Short)
    ));
    assert!(
        short.to_string().contains("at least 12 characters"),
        "{short}"
    );
    let common = account_error(
        cli(
            &store,
            &[
                "users",
                "add",
                "bob@example.org",
                "--role",
                "viewer",
                "--password-stdin",
            ],
            "Password1234\n",
        )
        .await,
    );
    assert!(common.to_string().contains("too common"), "{common}");
    let empty = cli(
        &store,
        &[
            "users",
            "add",
            "bob@example.org",
            "--role",
            "viewer",
            "--password-stdin",
        ],
        "",
    )
    .await;
    assert!(matches!(empty, Err(CliError::NoPassword)), "{empty:?}");
    let invalid = account_error(
        cli(
            &store,
            &["users", "add", "not-an-email", "--role", "viewer"],
            "",
        )
        .await,
    );
    assert!(matches!(invalid, AccountError::InvalidEmail(_)));

    cli(
        &store,
        &[
            "users",
            "add",
            "bob@example.org",
            "--role",
            "viewer",
            "--password-stdin",
        ],
        "bob builds bridges\r\n",
    )
    .await
    .expect("add with a password from stdin");
    let credentials = store
        .credentials("bob@example.org")
        .await
        .expect("read")
        .expect("bob");
    assert!(credentials.password_hash.starts_with("$argon2id$"));

    // The table, and JSON.
    let table = cli(&store, &["users", "list"], "").await.expect("list");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("EMAIL"), "{table}");
    assert!(
        lines[1].starts_with("ada@example.org  admin,operator  enabled  never"),
        "{table}"
    );
    assert!(lines[2].starts_with("bob@example.org  viewer"), "{table}");
    let json_out = cli(&store, &["users", "list", "--json"], "")
        .await
        .expect("list --json");
    let listed: Value = serde_json::from_str(&json_out).expect("JSON");
    assert_eq!(listed["users"][1]["email"], "bob@example.org");
    assert_eq!(listed["users"][1]["roles"], json!(["viewer"]));
    assert_eq!(listed["users"][1]["disabled"], false);
    assert!(
        listed["users"][1]["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert!(listed["users"][1]["last_login_at"].is_null());

    // passwd, roles, disable, enable, remove — and unknown users.
    let out = cli(&store, &["users", "passwd", "bob@example.org"], "")
        .await
        .expect("passwd");
    assert!(out.contains("password: "), "{out}");
    let weak = cli(
        &store,
        &["users", "passwd", "bob@example.org", "--password-stdin"],
        "bob\n",
    )
    .await;
    assert!(matches!(account_error(weak), AccountError::WeakPassword(_)));
    let out = cli(
        &store,
        &[
            "users",
            "roles",
            "bob@example.org",
            "--set",
            "operator",
            "viewer",
        ],
        "",
    )
    .await
    .expect("roles");
    assert_eq!(
        out.trim(),
        "roles of bob@example.org: operator, viewer (were: viewer)"
    );
    let unknown = cli(
        &store,
        &["users", "roles", "bob@example.org", "--set", "nope"],
        "",
    )
    .await;
    assert!(matches!(
        account_error(unknown),
        AccountError::UnknownRole { .. }
    ));
    assert!(
        cli(&store, &["users", "disable", "bob@example.org"], "")
            .await
            .expect("disable")
            .contains("disabled")
    );
    let listed = cli(&store, &["users", "list"], "").await.expect("list");
    assert!(listed.contains("disabled"), "{listed}");
    cli(&store, &["users", "enable", "bob@example.org"], "")
        .await
        .expect("enable");
    for command in [
        vec!["users", "passwd", "ghost@example.org"],
        vec!["users", "roles", "ghost@example.org", "--set", "viewer"],
        vec!["users", "disable", "ghost@example.org"],
        vec!["users", "enable", "ghost@example.org"],
        vec!["users", "remove", "ghost@example.org"],
    ] {
        let error = account_error(cli(&store, &command, "").await);
        assert_eq!(
            error.to_string(),
            "no such user: ghost@example.org",
            "{command:?}"
        );
    }
    assert_eq!(
        cli(&store, &["users", "remove", "bob@example.org"], "")
            .await
            .expect("remove")
            .trim(),
        "bob@example.org removed"
    );
    // Removing the last administrator works (the CLI is the way back in) and says so.
    let out = cli(&store, &["users", "remove", "ada@example.org"], "")
        .await
        .expect("remove");
    assert!(out.contains("no administrator yet"), "{out}");

    // Every change is audited with the CLI's actor.
    let page = store
        .audit_events(&AuditQuery {
            limit: 200,
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    let actions: Vec<&str> = page.events.iter().map(|e| e.action.as_str()).collect();
    for action in [
        "user_added",
        "password_changed",
        "user_roles_changed",
        "user_disabled",
        "user_enabled",
        "user_removed",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    assert!(
        page.events
            .iter()
            .all(|e| e.actor.as_deref().is_some_and(|a| a.starts_with("cli:")))
    );
}

#[tokio::test]
async fn every_roles_command_and_its_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store_in(dir.path()).await;
    let table = cli(&store, &["roles", "list"], "").await.expect("list");
    assert!(
        table.contains("operator  etl.access,etl.jobs.run  0"),
        "{table}"
    );
    let out = cli(
        &store,
        &[
            "roles",
            "add",
            "auditor",
            "--permission",
            "etl.access",
            "audit.*",
            "--description",
            "reads",
        ],
        "",
    )
    .await
    .expect("add");
    assert_eq!(
        out.trim(),
        "added role auditor granting: audit.*, etl.access"
    );
    let duplicate = cli(
        &store,
        &["roles", "add", "auditor", "--permission", "x"],
        "",
    )
    .await;
    assert!(matches!(
        account_error(duplicate),
        AccountError::DuplicateRole(_)
    ));
    let bad = cli(
        &store,
        &["roles", "add", "x", "--permission", "etl..run"],
        "",
    )
    .await;
    assert!(matches!(
        account_error(bad),
        AccountError::InvalidPermission(_)
    ));
    let bad = cli(
        &store,
        &["roles", "add", "Bad Name", "--permission", "x"],
        "",
    )
    .await;
    assert!(matches!(
        account_error(bad),
        AccountError::InvalidRoleName(_)
    ));

    cli(
        &store,
        &["users", "add", "a@b.org", "--role", "auditor"],
        "",
    )
    .await
    .expect("user");
    let json_out = cli(&store, &["roles", "list", "--json"], "")
        .await
        .expect("list --json");
    let roles: Value = serde_json::from_str(&json_out).expect("JSON");
    let auditor = roles["roles"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "auditor").cloned())
        .expect("auditor");
    assert_eq!(
        auditor,
        json!({"name": "auditor", "permissions": ["audit.*", "etl.access"], "description": "reads", "users": 1})
    );
    let in_use = account_error(cli(&store, &["roles", "remove", "auditor"], "").await);
    assert_eq!(
        in_use.to_string(),
        "the role auditor is held by 1 user(s); give them other roles first"
    );
    let unknown = cli(&store, &["roles", "remove", "nope"], "").await;
    assert!(matches!(
        account_error(unknown),
        AccountError::UnknownRole { .. }
    ));
    cli(&store, &["users", "remove", "a@b.org"], "")
        .await
        .expect("remove user");
    assert_eq!(
        cli(&store, &["roles", "remove", "auditor"], "")
            .await
            .expect("remove")
            .trim(),
        "removed role auditor"
    );
    let page = store
        .audit_events(&AuditQuery {
            action: Some(AuditAction::RoleAdded),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    assert_eq!(page.events[0].target.as_deref(), Some("auditor"));
}

#[tokio::test]
async fn an_unreachable_database_is_a_clear_error() {
    let refused = AccountStore::open("postgres://postgres@127.0.0.1:1/test", None)
        .await
        .expect_err("nothing listens on port 1");
    assert!(matches!(refused, AccountError::Unreachable(_)));
    let message = refused.to_string();
    assert!(
        message.starts_with("cannot reach the accounts database"),
        "{message}"
    );
    assert!(message.contains("refused"), "{message}");
    // A password in the URL is never repeated.
    let secret = AccountStore::open("postgres://pulse:s3cret@127.0.0.1:1/test", None)
        .await
        .expect_err("refused");
    assert!(!secret.to_string().contains("s3cret"), "{secret}");
    // A SQLite file where a folder cannot be created.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").expect("file");
    let url = format!("sqlite://{}/pulse.db", file.display());
    let blocked = AccountStore::open(&url, None)
        .await
        .expect_err("not a folder");
    assert!(matches!(blocked, AccountError::Unreachable(_)), "{blocked}");
}

/// Not a test: the example's `main` in a process of its own. The test below runs this
/// test binary again with only this "test" and the command line in
/// `PULSE_TEST_CLI_ARGS` (a JSON list): it runs `stack::run` as `main` does (the same
/// `error: …` line and exit code 1 on failure) and exits. (The example binary under the
/// shared target folder may be another checkout's build, so it is not used.)
#[test]
#[ignore = "a helper process of the_real_command_line_changes_a_running_stack"]
fn command_line_process() {
    let Ok(args) = std::env::var("PULSE_TEST_CLI_ARGS") else {
        return;
    };
    let args: Vec<String> = serde_json::from_str(&args).expect("a JSON list of arguments");
    let cli = <Cli as clap::Parser>::try_parse_from(args).expect("valid arguments");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let code = match runtime.block_on(crate::stack::run(cli)) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("error: {error:#}");
            1
        }
    };
    std::process::exit(code);
}

/// `full_stack <args>` in another process: its exit status, stdout (the lines after the
/// test harness's own) and stderr.
fn command_line(args: &[&str], data_dir: &std::path::Path) -> (Option<i32>, String, String) {
    let mut argv = vec!["full_stack".to_owned()];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    argv.extend(["--data-dir".to_owned(), data_dir.display().to_string()]);
    let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "cli::command_line_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            "PULSE_TEST_CLI_ARGS",
            serde_json::to_string(&argv).expect("JSON"),
        )
        .env("PULSE_ARGON2_MEMORY_KIB", "1024")
        .env("PULSE_ARGON2_ITERATIONS", "1")
        .env_remove("PULSE_DATABASE_URL")
        .output()
        .expect("the command line runs");
    // The harness writes "running 1 test" and "test <name> ... " before the command's output.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let marker = "cli::command_line_process ... ";
    let stdout = stdout
        .find(marker)
        .map_or(&*stdout, |at| &stdout[at + marker.len()..])
        .trim()
        .to_owned();
    (
        output.status.code(),
        stdout,
        String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    )
}

/// The command line, in another process, on a running stack's database: its exit codes
/// and messages, and the running gateway noticing its change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_command_line_changes_a_running_stack() {
    let t = start().await;
    let back = t.backend();
    let session = t.session(&back, "viewer@pulse.local", "viewer").await;
    let data_dir = t.stack.options.data_dir.clone();
    let (code, stdout, stderr) = command_line(&["users", "list", "--json"], &data_dir);
    assert_eq!(code, Some(0), "{stdout} {stderr}");
    let users: Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    assert_eq!(users["users"].as_array().map(Vec::len), Some(2));
    let (code, _, stderr) = command_line(
        &["users", "add", "viewer@pulse.local", "--role", "viewer"],
        &data_dir,
    );
    assert_eq!(code, Some(1));
    assert_eq!(
        stderr,
        "error: a user with the e-mail viewer@pulse.local already exists"
    );
    let (code, stdout, stderr) =
        command_line(&["users", "disable", "viewer@pulse.local"], &data_dir);
    assert_eq!(code, Some(0), "{stdout} {stderr}");
    assert_eq!(stdout, "viewer@pulse.local disabled; their sessions ended");
    t.until_revoked(&back, &session.token).await;
    t.stack.shutdown().await;
}
