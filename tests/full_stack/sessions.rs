//! Sessions at the gateway: short access tokens, the rotating refresh cookie with reuse
//! detection, logout, and the changes that end older tokens at once (password, roles).
//! Each flow is a function of a running stack, so `postgres.rs` runs it again on
//! PostgreSQL.

use crate::harness::*;

/// Login sets the refresh cookie; a refresh rotates it; the rotated one presented again
/// revokes the whole session (its access tokens too) and is audited.
pub(crate) async fn refresh_rotates_and_reuse_revokes_the_family(t: &TestStack) {
    let back = t.backend();
    let answer = t.sign_in(&back, "admin@pulse.local", "admin").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["expires_in"], 900);
    assert_eq!(
        refresh_cookie_line(&answer.headers),
        format!(
            "pulse_refresh={}; HttpOnly; SameSite=Strict; Path=/api/auth/; Max-Age=604800",
            set_refresh_cookie(&answer.headers).expect("cookie")
        )
    );
    let first = set_refresh_cookie(&answer.headers).expect("cookie");

    let rotated = t.refresh(&back, Some(&first)).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    assert_eq!(rotated.body["token_type"], "Bearer");
    assert_eq!(rotated.headers["cache-control"], "no-store");
    let second = set_refresh_cookie(&rotated.headers).expect("a new cookie");
    assert_ne!(second, first);
    let token = rotated.body["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(t.jobs_status(&back, &token).await.status, StatusCode::OK);

    // The first cookie again: someone kept a token they should have replaced.
    let reused = t.refresh(&back, Some(&first)).await;
    assert_eq!(reused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reused.body["code"], "session_expired", "{}", reused.body);
    assert!(refresh_cookie_line(&reused.headers).contains("Max-Age=0"));
    // The whole family ends: the newest cookie and the session's access token too.
    let after = t.refresh(&back, Some(&second)).await;
    assert_eq!(after.body["code"], "session_expired", "{}", after.body);
    let refused = t.jobs_status(&back, &token).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.body["code"], "token_revoked", "{}", refused.body);

    // No cookie, or a made-up one: the same answer.
    for cookie in [None, Some("x".repeat(43))] {
        let answer = t.refresh(&back, cookie.as_deref()).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.body["code"], "session_expired");
        assert!(answer.body["request_id"].is_string(), "{}", answer.body);
    }

    let admin = t
        .user_id(&back, &t.login(&back, "admin@pulse.local", "admin").await)
        .await;
    let reuse = t.audit(AuditAction::RefreshReuse).await;
    assert_eq!(reuse.len(), 1, "{reuse:?}");
    assert_eq!(reuse[0]["target"], admin.as_str());
    let refreshes = t.audit(AuditAction::Refresh).await;
    assert_eq!(refreshes.len(), 1, "{refreshes:?}");
    assert_eq!(refreshes[0]["actor"], admin.as_str());
    assert!(refreshes[0]["request_id"].is_string());
}

/// A logout revokes the access token and its session; other sessions of the user go on.
pub(crate) async fn logout_revokes_the_token_and_its_session(t: &TestStack) {
    let back = t.backend();
    let session = t.session(&back, "viewer@pulse.local", "viewer").await;
    let other = t.session(&back, "viewer@pulse.local", "viewer").await;

    let without = t.logout(&back, None, Some(&session.cookie)).await;
    assert_eq!(without.status, StatusCode::UNAUTHORIZED);
    assert_eq!(without.headers["www-authenticate"], "Bearer");

    let done = t
        .logout(&back, Some(&session.token), Some(&session.cookie))
        .await;
    assert_eq!(done.status, StatusCode::NO_CONTENT, "{}", done.body);
    assert!(refresh_cookie_line(&done.headers).contains("Max-Age=0"));
    let refused = t.jobs_status(&back, &session.token).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.body["code"], "token_revoked");
    assert_eq!(
        refused.headers["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    let me = t
        .call(
            Method::GET,
            &format!("{back}/api/auth/me"),
            Some(&session.token),
            None,
            &[],
        )
        .await;
    assert_eq!(me.body["code"], "token_revoked");
    assert_eq!(
        t.refresh(&back, Some(&session.cookie)).await.body["code"],
        "session_expired"
    );
    let twice = t.logout(&back, Some(&session.token), None).await;
    assert_eq!(twice.body["code"], "token_revoked");

    // The other session of the same user is untouched.
    assert_eq!(
        t.jobs_status(&back, &other.token).await.status,
        StatusCode::OK
    );
    assert_eq!(
        t.refresh(&back, Some(&other.cookie)).await.status,
        StatusCode::OK
    );

    let viewer = t.user_id(&back, &other.token).await;
    let logouts = t.audit(AuditAction::Logout).await;
    assert_eq!(logouts.len(), 1, "{logouts:?}");
    assert_eq!(logouts[0]["actor"], viewer.as_str());
    assert!(logouts[0]["client_addr"].is_string());
}

/// A password changed from another process (the CLI) ends the user's tokens and
/// sessions within seconds; the new password signs in at once, and its token works
/// although it was issued in the same second as the change.
pub(crate) async fn a_password_change_ends_older_tokens(t: &TestStack) {
    let back = t.backend();
    let old = t.session(&back, "viewer@pulse.local", "viewer").await;
    let cli_store = t.other_process_store().await;
    let out = cli(
        &cli_store,
        &["users", "passwd", "viewer@pulse.local", "--password-stdin"],
        "a much better passphrase\n",
    )
    .await
    .expect("passwd");
    assert!(
        out.contains("password of viewer@pulse.local changed"),
        "{out}"
    );
    t.until_revoked(&back, &old.token).await;
    assert_eq!(
        t.refresh(&back, Some(&old.cookie)).await.body["code"],
        "session_expired"
    );
    let wrong = t.sign_in(&back, "viewer@pulse.local", "viewer").await;
    assert_eq!(wrong.body["code"], "invalid_credentials");
    let new = t
        .session(&back, "viewer@pulse.local", "a much better passphrase")
        .await;
    assert_eq!(
        t.jobs_status(&back, &new.token).await.status,
        StatusCode::OK
    );
    let changed = t.audit(AuditAction::PasswordChanged).await;
    assert!(
        changed[0]["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("cli:")),
        "{changed:?}"
    );
    assert_eq!(changed[0]["detail"]["generated"], false);
}

/// New roles end the older tokens; the session goes on, and its next access token
/// carries the new roles.
pub(crate) async fn role_changes_take_effect(t: &TestStack) {
    let back = t.backend();
    let viewer = t.session(&back, "viewer@pulse.local", "viewer").await;
    let start_url = format!("{back}/api/etl/jobs/start");
    let start = |token: String| {
        let url = start_url.clone();
        async move {
            t.call(
                Method::POST,
                &url,
                Some(&token),
                Some(json!({"job_name": "github_sync"})),
                &[],
            )
            .await
        }
    };
    assert_eq!(
        start(viewer.token.clone()).await.status,
        StatusCode::FORBIDDEN
    );
    let out = cli(
        &t.other_process_store().await,
        &["users", "roles", "viewer@pulse.local", "--set", "operator"],
        "",
    )
    .await
    .expect("roles");
    assert!(
        out.contains("roles of viewer@pulse.local: operator (were: viewer)"),
        "{out}"
    );
    t.until_revoked(&back, &viewer.token).await;
    let refreshed = t.refresh(&back, Some(&viewer.cookie)).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    let token = refreshed.body["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let me = t
        .call(
            Method::GET,
            &format!("{back}/api/auth/me"),
            Some(&token),
            None,
            &[],
        )
        .await;
    assert_eq!(me.body["roles"], json!(["operator"]), "{}", me.body);
    let started = start(token.clone()).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let run_id = started.body["run_id"].as_str().expect("run id").to_owned();
    t.wait_terminal(&token, &run_id).await;
    let changed = t.audit(AuditAction::UserRolesChanged).await;
    assert_eq!(changed[0]["detail"]["from"], json!(["viewer"]));
    assert_eq!(changed[0]["detail"]["to"], json!(["operator"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotation_and_reuse_detection() {
    let t = start().await;
    refresh_rotates_and_reuse_revokes_the_family(&t).await;
    t.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes() {
    let t = start().await;
    logout_revokes_the_token_and_its_session(&t).await;
    t.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_kills_old_tokens() {
    let t = start().await;
    a_password_change_ends_older_tokens(&t).await;
    t.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_changes_take_effect_at_once() {
    let t = start().await;
    role_changes_take_effect(&t).await;
    t.stack.shutdown().await;
}

/// The lifetimes are settings: the login answer and the cookie say them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_lifetimes_are_configurable() {
    let t = start_overriding(&[
        ("--access-token-ttl-secs", "60"),
        ("--refresh-token-ttl-secs", "3600"),
    ])
    .await;
    let answer = t.sign_in(&t.backend(), "admin@pulse.local", "admin").await;
    assert_eq!(answer.body["expires_in"], 60);
    assert!(refresh_cookie_line(&answer.headers).contains("Max-Age=3600"));
    t.stack.shutdown().await;
}
