//! Accounts in the gateway's database: the first administrator's bootstrap, sign-in of
//! users added with the CLI, disabled users, and a restart that keeps users, roles and
//! revocations.

use crate::harness::*;

/// Without the demo nobody can sign in: the gateway says how to create the first
/// administrator (log, banner, `GET /api/auth/setup`); once created, they can.
pub(crate) async fn first_administrator_bootstrap(t: &TestStack) {
    let back = t.backend();
    let setup = t
        .call(
            Method::GET,
            &format!("{back}/api/auth/setup"),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(setup.status, StatusCode::OK);
    assert_eq!(
        setup.body,
        json!({
            "bootstrap_required": true,
            "hint": "full_stack users add EMAIL --role admin",
            "demo": false,
        })
    );
    assert!(
        t.stack.banner().contains(
            "no administrator yet: run  full_stack users add you@example.com --role admin"
        ),
        "{}",
        t.stack.banner()
    );
    assert!(!log_lines_with("no administrator yet").is_empty());
    let demo = t.sign_in(&back, "admin@pulse.local", "admin").await;
    assert_eq!(demo.body["code"], "invalid_credentials");

    let out = cli(
        &t.other_process_store().await,
        &["users", "add", "Root@Example.org", "--role", "admin"],
        "",
    )
    .await
    .expect("users add");
    let password = out
        .lines()
        .find_map(|line| line.strip_prefix("password: "))
        .expect("a generated password, printed once")
        .to_owned();
    let setup = t
        .call(
            Method::GET,
            &format!("{back}/api/auth/setup"),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(setup.body["bootstrap_required"], false);
    let token = t.login(&back, "root@example.org", &password).await;
    let me = t
        .call(
            Method::GET,
            &format!("{back}/api/auth/me"),
            Some(&token),
            None,
            &[],
        )
        .await;
    assert_eq!(me.body["email"], "root@example.org");
    assert_eq!(me.body["permissions"], json!(["*"]));
}

/// A user added with the CLI signs in; disabled, their token stops working and they are
/// refused exactly like a wrong password; enabled again, they sign in.
pub(crate) async fn a_disabled_user_is_refused(t: &TestStack) {
    let back = t.backend();
    let cli_store = t.other_process_store().await;
    cli(
        &cli_store,
        &[
            "users",
            "add",
            "ops@example.org",
            "--role",
            "operator",
            "--password-stdin",
        ],
        "operations at night\n",
    )
    .await
    .expect("users add");
    let session = t
        .session(&back, "ops@example.org", "operations at night")
        .await;
    assert_eq!(
        t.jobs_status(&back, &session.token).await.status,
        StatusCode::OK
    );
    let ops = t.user_id(&back, &session.token).await;

    cli(&cli_store, &["users", "disable", "ops@example.org"], "")
        .await
        .expect("disable");
    t.until_revoked(&back, &session.token).await;
    let refused = t
        .sign_in(&back, "ops@example.org", "operations at night")
        .await;
    let unknown = t
        .sign_in(&back, "nobody@example.org", "operations at night")
        .await;
    for answer in [&refused, &unknown] {
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.body["code"], "invalid_credentials");
        assert_eq!(answer.body["error"], "Invalid email or password");
    }
    assert_eq!(
        t.refresh(&back, Some(&session.cookie)).await.body["code"],
        "session_expired"
    );
    let failed = t.audit(AuditAction::LoginFailed).await;
    assert!(
        failed
            .iter()
            .any(|e| e["target"] == ops.as_str() && e["detail"]["reason"] == "disabled"),
        "{failed:?}"
    );
    assert!(
        failed
            .iter()
            .any(|e| e["target"].is_null() && e["detail"]["reason"] == "unknown_user")
    );
    cli(&cli_store, &["users", "enable", "ops@example.org"], "")
        .await
        .expect("enable");
    t.login(&back, "ops@example.org", "operations at night")
        .await;
    let succeeded = t.audit(AuditAction::LoginSucceeded).await;
    assert_eq!(succeeded[0]["actor"], ops.as_str());
    assert_eq!(succeeded[0]["detail"]["email"], "ops@example.org");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_admin_bootstrap() {
    let dir = tempfile::tempdir().expect("temp dir");
    let t = TestStack {
        stack: start_service(Service::All, dir.path(), &["--no-demo"]).await,
        _dir: None,
        http: client(),
    };
    first_administrator_bootstrap(&t).await;
    t.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_user_signs_in_and_a_disabled_one_is_refused() {
    let t = start().await;
    a_disabled_user_is_refused(&t).await;
    t.stack.shutdown().await;
}

/// Restarted on the same database, the gateway keeps users, roles and revocations, and
/// the demo seeding adds nothing twice.
pub(crate) async fn a_restart_keeps_accounts(dir: &std::path::Path, extra: &[&str]) {
    let t = TestStack {
        stack: start_service(Service::All, dir, extra).await,
        _dir: None,
        http: client(),
    };
    let back = t.backend();
    let store = t.other_process_store().await;
    cli(
        &store,
        &["roles", "add", "auditor", "--permission", "etl.access"],
        "",
    )
    .await
    .expect("roles add");
    cli(
        &store,
        &[
            "users",
            "add",
            "eve@example.org",
            "--role",
            "auditor",
            "--password-stdin",
        ],
        "eve keeps the books\n",
    )
    .await
    .expect("users add");
    let revoked = t
        .session(&back, "eve@example.org", "eve keeps the books")
        .await;
    let kept = t
        .session(&back, "eve@example.org", "eve keeps the books")
        .await;
    assert_eq!(
        t.logout(&back, Some(&revoked.token), None).await.status,
        StatusCode::NO_CONTENT
    );
    t.stack.shutdown().await;

    let t = TestStack {
        stack: start_service(Service::All, dir, extra).await,
        _dir: None,
        http: client(),
    };
    let back = t.backend();
    let refused = t.jobs_status(&back, &revoked.token).await;
    assert_eq!(refused.body["code"], "token_revoked", "{}", refused.body);
    assert_eq!(
        t.jobs_status(&back, &kept.token).await.status,
        StatusCode::OK
    );
    assert_eq!(
        t.refresh(&back, Some(&kept.cookie)).await.status,
        StatusCode::OK
    );
    t.login(&back, "eve@example.org", "eve keeps the books")
        .await;
    let users = t.accounts().list_users().await.expect("users");
    assert_eq!(users.len(), 3, "{users:?}");
    let roles = t.accounts().list_roles().await.expect("roles");
    assert!(roles.iter().any(|r| r.name == "auditor" && r.users == 1));
    t.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_users_roles_and_revocations() {
    let dir = tempfile::tempdir().expect("temp dir");
    a_restart_keeps_accounts(dir.path(), &[]).await;
}
