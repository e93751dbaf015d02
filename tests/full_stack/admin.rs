//! The admin API, `/api/admin/*`: users, roles and the audit trail for holders of
//! `users.manage`, refused to everybody else; its errors; the changes that end a user's
//! tokens at once; the guards that keep somebody able to administer. Each flow is a
//! function of a running stack, so `postgres.rs` runs it again on PostgreSQL.

use crate::harness::*;

impl TestStack {
    /// `method` on `{backend}/api/admin{path}` with `token` and a JSON `body`.
    pub(crate) async fn admin(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Answer {
        let url = format!("{}/api/admin{path}", self.backend());
        self.call(method, &url, Some(token), body, &[]).await
    }

    /// The user `email` as `GET /api/admin/users` lists it.
    pub(crate) async fn listed_user(&self, token: &str, email: &str) -> Option<Value> {
        let list = self.admin(Method::GET, "/users", token, None).await;
        assert_eq!(list.status, StatusCode::OK, "{}", list.body);
        list.body["users"]
            .as_array()
            .expect("users")
            .iter()
            .find(|u| u["email"] == email)
            .cloned()
    }
}

/// An error answer: its status, its code, the shared JSON shape.
#[track_caller]
pub(crate) fn assert_error(answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.body["code"], code, "{}", answer.body);
    assert!(answer.body["error"].is_string(), "{}", answer.body);
    assert!(answer.body["request_id"].is_string(), "{}", answer.body);
}

/// Deny by default: a viewer (no `users.manage`) gets 403 on every admin route and
/// method, nobody signed in gets 401; nothing changes.
pub(crate) async fn the_admin_api_is_refused_to_a_viewer(t: &TestStack) {
    let back = t.backend();
    let viewer = t.login(&back, "viewer@pulse.local", "viewer").await;
    let admin = t.login(&back, "admin@pulse.local", "admin").await;
    let admin_id = t.user_id(&back, &admin).await;
    let calls = [
        (Method::GET, "/users".to_owned(), None),
        (
            Method::POST,
            "/users".to_owned(),
            Some(json!({"email": "mallory@example.org", "roles": ["admin"]})),
        ),
        (
            Method::PATCH,
            format!("/users/{admin_id}"),
            Some(json!({"disabled": true})),
        ),
        (
            Method::POST,
            format!("/users/{admin_id}/password"),
            Some(json!({"password": "mallory was here"})),
        ),
        (Method::DELETE, format!("/users/{admin_id}"), None),
        (Method::GET, "/roles".to_owned(), None),
        (
            Method::POST,
            "/roles".to_owned(),
            Some(json!({"name": "root", "permissions": ["*"]})),
        ),
        (Method::DELETE, "/roles/admin".to_owned(), None),
        (Method::GET, "/audit".to_owned(), None),
        (Method::GET, "/made-up".to_owned(), None),
    ];
    for (method, path, body) in calls {
        let refused = t.admin(method.clone(), &path, &viewer, body.clone()).await;
        assert_error(&refused, StatusCode::FORBIDDEN, "forbidden");
        let url = format!("{back}/api/admin{path}");
        let anonymous = t.call(method, &url, None, body, &[]).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(anonymous.headers["www-authenticate"], "Bearer");
    }
    // Nothing happened: the admin still signs in, nobody was added.
    assert!(t.listed_user(&admin, "mallory@example.org").await.is_none());
    t.login(&back, "admin@pulse.local", "admin").await;
}

/// Add a user (a generated password, shown once), reset the password, change roles,
/// disable, enable, remove: each through the API, each ending the user's older tokens
/// at once, each audited with who, whom and what.
pub(crate) async fn admins_manage_users(t: &TestStack) {
    let back = t.backend();
    let admin = t.login(&back, "admin@pulse.local", "admin").await;
    let admin_id = t.user_id(&back, &admin).await;

    let listed = t
        .listed_user(&admin, "admin@pulse.local")
        .await
        .expect("the admin is listed");
    assert_eq!(listed["roles"], json!(["admin"]));
    assert_eq!(listed["disabled"], false);
    assert!(listed["last_login_at"].is_string(), "{listed}");
    assert!(listed["created_at"].is_string(), "{listed}");
    assert!(listed.get("password_hash").is_none());

    // Add: the e-mail is normalised, the generated password is returned once.
    let added = t
        .admin(
            Method::POST,
            "/users",
            &admin,
            Some(json!({"email": " Carol@Example.org ", "roles": ["operator"]})),
        )
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    assert_eq!(added.body["user"]["email"], "carol@example.org");
    assert_eq!(added.body["user"]["roles"], json!(["operator"]));
    assert_eq!(added.body["user"]["last_login_at"], Value::Null);
    let carol_id = added.body["user"]["id"].as_str().expect("id").to_owned();
    let generated = added.body["password"]
        .as_str()
        .expect("a generated password");
    let carol = t.session(&back, "carol@example.org", generated).await;
    assert_eq!(
        t.jobs_status(&back, &carol.token).await.status,
        StatusCode::OK
    );
    let listed = t
        .listed_user(&admin, "carol@example.org")
        .await
        .expect("listed");
    assert!(listed["last_login_at"].is_string(), "{listed}");

    // Reset the password: the old token and the session end at once (no poll).
    let reset = t
        .admin(
            Method::POST,
            &format!("/users/{carol_id}/password"),
            &admin,
            Some(json!({"password": "carol's new passphrase"})),
        )
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.body);
    assert_eq!(reset.body, json!({}));
    let refused = t.jobs_status(&back, &carol.token).await;
    assert_error(&refused, StatusCode::UNAUTHORIZED, "token_revoked");
    assert_eq!(
        t.refresh(&back, Some(&carol.cookie)).await.body["code"],
        "session_expired"
    );
    assert_eq!(
        t.sign_in(&back, "carol@example.org", generated)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // Without a body: a generated one.
    let url = format!("{back}/api/admin/users/{carol_id}/password");
    let generated = t.call(Method::POST, &url, Some(&admin), None, &[]).await;
    assert_eq!(generated.status, StatusCode::OK, "{}", generated.body);
    let password = generated.body["password"]
        .as_str()
        .expect("generated")
        .to_owned();
    let carol = t.session(&back, "carol@example.org", &password).await;

    // New roles: the older token ends at once; the next one carries them.
    let changed = t
        .admin(
            Method::PATCH,
            &format!("/users/{carol_id}"),
            &admin,
            Some(json!({"roles": ["viewer"]})),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(changed.body["user"]["roles"], json!(["viewer"]));
    assert_error(
        &t.jobs_status(&back, &carol.token).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    );
    let renewed = t.refresh(&back, Some(&carol.cookie)).await;
    assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.body);
    let token = renewed.body["access_token"].as_str().expect("token");
    let start = t
        .call(
            Method::POST,
            &format!("{back}/api/etl/jobs/start"),
            Some(token),
            Some(json!({"job_name": "github_sync"})),
            &[],
        )
        .await;
    assert_error(&start, StatusCode::FORBIDDEN, "forbidden");

    // Disable: signed out at once, refused like a wrong password; enable again.
    let disabled = t
        .admin(
            Method::PATCH,
            &format!("/users/{carol_id}"),
            &admin,
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(disabled.status, StatusCode::OK, "{}", disabled.body);
    assert_eq!(disabled.body["user"]["disabled"], true);
    assert_error(
        &t.jobs_status(&back, token).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    );
    let refused = t.sign_in(&back, "carol@example.org", &password).await;
    assert_error(&refused, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let enabled = t
        .admin(
            Method::PATCH,
            &format!("/users/{carol_id}"),
            &admin,
            Some(json!({"disabled": false})),
        )
        .await;
    assert_eq!(enabled.body["user"]["disabled"], false, "{}", enabled.body);
    let carol = t.session(&back, "carol@example.org", &password).await;

    // Remove: gone, signed out, and a second removal is a 404.
    let removed = t
        .admin(Method::DELETE, &format!("/users/{carol_id}"), &admin, None)
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{}", removed.body);
    assert_error(
        &t.jobs_status(&back, &carol.token).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    );
    assert_error(
        &t.sign_in(&back, "carol@example.org", &password).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    assert!(t.listed_user(&admin, "carol@example.org").await.is_none());
    let again = t
        .admin(Method::DELETE, &format!("/users/{carol_id}"), &admin, None)
        .await;
    assert_error(&again, StatusCode::NOT_FOUND, "user_not_found");

    // Each change is in the trail: the admin did it, to Carol, and what.
    for (action, detail) in [
        (AuditAction::UserAdded, json!(["operator"])),
        (AuditAction::PasswordChanged, json!(false)),
        (AuditAction::UserRolesChanged, json!(["viewer"])),
        (AuditAction::UserDisabled, Value::Null),
        (AuditAction::UserEnabled, Value::Null),
        (AuditAction::UserRemoved, json!(["viewer"])),
    ] {
        let events = t.audit(action).await;
        let event = events
            .iter()
            .find(|e| e["target"] == carol_id.as_str())
            .unwrap_or_else(|| panic!("no {} event: {events:?}", action.as_str()));
        assert_eq!(event["actor"], admin_id.as_str(), "{event}");
        assert_eq!(event["detail"]["email"], "carol@example.org", "{event}");
        assert!(event["request_id"].is_string(), "{event}");
        assert!(event["client_addr"].is_string(), "{event}");
        match action {
            AuditAction::UserAdded | AuditAction::UserRemoved => {
                assert_eq!(event["detail"]["roles"], detail)
            }
            AuditAction::UserRolesChanged => {
                assert_eq!(event["detail"]["from"], json!(["operator"]));
                assert_eq!(event["detail"]["to"], detail);
            }
            AuditAction::PasswordChanged => {
                // The newest reset was generated, the first one given.
                assert!(events.iter().any(|e| e["detail"]["generated"] == detail));
                assert!(events.iter().any(|e| e["detail"]["generated"] == true));
            }
            _ => {}
        }
    }
}

/// Bad requests get JSON errors with the right status and a stable code, and change
/// nothing.
pub(crate) async fn admin_errors_are_json_with_the_right_status(t: &TestStack) {
    let back = t.backend();
    let admin = t.login(&back, "admin@pulse.local", "admin").await;
    let viewer_id = t
        .listed_user(&admin, "viewer@pulse.local")
        .await
        .expect("viewer")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let add = |body: Value| t.admin(Method::POST, "/users", &admin, Some(body));
    for (body, status, code) in [
        (
            json!({"email": "VIEWER@pulse.local", "roles": ["viewer"]}),
            StatusCode::CONFLICT,
            "user_exists",
        ),
        (
            json!({"email": "dan@example.org", "roles": ["wizard"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_role",
        ),
        (
            json!({"email": "dan@example.org", "roles": [], "password": "short"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "weak_password",
        ),
        (
            json!({"email": "dan@example.org", "roles": [], "password": "password1234"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "weak_password",
        ),
        (
            json!({"email": "not an address", "roles": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_email",
        ),
        (
            json!({"email": "dan@example.org"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"email": "dan@example.org", "roles": [], "admin": true}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"email": "dan@example.org", "roles": vec!["viewer"; 65]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
    ] {
        let answer = add(body.clone()).await;
        assert_error(&answer, status, code);
        if code == "weak_password" {
            let message = answer.body["error"].as_str().unwrap_or_default();
            assert!(
                message.contains("12 characters") || message.contains("common"),
                "{message}"
            );
        }
    }
    let url = format!("{back}/api/admin/users");
    let broken = t
        .call(
            Method::POST,
            &url,
            Some(&admin),
            None,
            &[("content-type", "application/json")],
        )
        .await;
    assert_error(&broken, StatusCode::BAD_REQUEST, "bad_request");
    let plain = t.call(Method::POST, &url, Some(&admin), None, &[]).await;
    assert_error(
        &plain,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let huge = json!({"email": "dan@example.org", "roles": [], "password": "p".repeat(20_000)});
    assert_error(
        &add(huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );

    let patch = |id: &str, body: Value| {
        let path = format!("/users/{id}");
        let admin = &admin;
        async move { t.admin(Method::PATCH, &path, admin, Some(body)).await }
    };
    assert_error(
        &patch("no-such-id", json!({"disabled": true})).await,
        StatusCode::NOT_FOUND,
        "user_not_found",
    );
    assert_error(
        &patch(&viewer_id, json!({})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_error(
        &patch(&viewer_id, json!({"roles": ["wizard"], "disabled": true})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_role",
    );
    assert_error(
        &t.admin(
            Method::POST,
            "/users/no-such-id/password",
            &admin,
            Some(json!({})),
        )
        .await,
        StatusCode::NOT_FOUND,
        "user_not_found",
    );
    assert_error(
        &t.admin(
            Method::POST,
            &format!("/users/{viewer_id}/password"),
            &admin,
            Some(json!({"password": "viewer"})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "weak_password",
    );
    assert_error(
        &t.admin(Method::PUT, "/users", &admin, None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    // Nothing changed: the viewer (whose change failed half-way) is as before.
    let viewer = t
        .listed_user(&admin, "viewer@pulse.local")
        .await
        .expect("viewer");
    assert_eq!(viewer["roles"], json!(["viewer"]));
    assert_eq!(viewer["disabled"], false);
    t.login(&back, "viewer@pulse.local", "viewer").await;
    assert!(t.listed_user(&admin, "dan@example.org").await.is_none());
}

/// An administrator cannot lock themself out (disable, remove, take `users.manage`
/// away: 409 `self_lockout`); two administrators disabling each other at once leave one
/// of them able to administer.
pub(crate) async fn administrators_cannot_lock_the_gateway_out(t: &TestStack) {
    let back = t.backend();
    let admin = t.login(&back, "admin@pulse.local", "admin").await;
    let admin_id = t.user_id(&back, &admin).await;
    for (method, path, body, says) in [
        (
            Method::PATCH,
            format!("/users/{admin_id}"),
            Some(json!({"disabled": true})),
            "disable",
        ),
        (
            Method::PATCH,
            format!("/users/{admin_id}"),
            Some(json!({"roles": ["operator"]})),
            "users.manage",
        ),
        (Method::DELETE, format!("/users/{admin_id}"), None, "remove"),
    ] {
        let refused = t.admin(method, &path, &admin, body).await;
        assert_error(&refused, StatusCode::CONFLICT, "self_lockout");
        assert!(
            refused.body["error"]
                .as_str()
                .unwrap_or_default()
                .contains(says),
            "{}",
            refused.body
        );
    }
    // Another role granting users.manage keeps it: allowed.
    let roles = t
        .admin(
            Method::POST,
            "/roles",
            &admin,
            Some(json!({"name": "user-admin", "permissions": ["users.*", "etl.access"]})),
        )
        .await;
    assert_eq!(roles.status, StatusCode::CREATED, "{}", roles.body);
    let second = t
        .admin(
            Method::POST,
            "/users",
            &admin,
            Some(json!({"email": "second@example.org", "roles": ["user-admin"], "password": "second in command"})),
        )
        .await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.body);
    let second_id = second.body["user"]["id"].as_str().expect("id").to_owned();
    let other = t
        .login(&back, "second@example.org", "second in command")
        .await;

    // Each disables the other, at the same moment.
    let (second_path, admin_path) = (format!("/users/{second_id}"), format!("/users/{admin_id}"));
    let (a, b) = tokio::join!(
        t.admin(
            Method::PATCH,
            &second_path,
            &admin,
            Some(json!({"disabled": true}))
        ),
        t.admin(
            Method::PATCH,
            &admin_path,
            &other,
            Some(json!({"disabled": true}))
        ),
    );
    let statuses = [a.status, b.status];
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{} / {}",
        a.body,
        b.body
    );
    for answer in [&a, &b].into_iter().filter(|a| a.status != StatusCode::OK) {
        // The loser was refused by the guard, or (when the winner's change was applied
        // first) was signed out by it.
        let code = answer.body["code"].as_str().unwrap_or_default();
        assert!(
            code == "last_administrator" || code == "token_revoked",
            "{}",
            answer.body
        );
    }
    assert!(
        !t.accounts()
            .bootstrap_required()
            .await
            .expect("accounts readable"),
        "somebody can still administer"
    );
}

/// Roles: list (permissions, holders), add, the errors, remove once nobody holds it.
pub(crate) async fn admins_manage_roles(t: &TestStack) {
    let back = t.backend();
    let admin = t.login(&back, "admin@pulse.local", "admin").await;
    let admin_id = t.user_id(&back, &admin).await;
    let list = t.admin(Method::GET, "/roles", &admin, None).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let viewer = list.body["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .find(|r| r["name"] == "viewer")
        .cloned()
        .expect("viewer role");
    assert_eq!(viewer["permissions"], json!(["etl.access"]));
    assert_eq!(viewer["users"], 1);

    let add = |body: Value| t.admin(Method::POST, "/roles", &admin, Some(body));
    let added = add(json!({
        "name": "auditor",
        "permissions": ["etl.access", "audit.read"],
        "description": "reads the trail"
    }))
    .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    assert_eq!(
        added.body["role"]["permissions"],
        json!(["audit.read", "etl.access"])
    );
    for (body, status, code) in [
        (
            json!({"name": "auditor", "permissions": []}),
            StatusCode::CONFLICT,
            "role_exists",
        ),
        (
            json!({"name": "Bad Name", "permissions": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_role_name",
        ),
        (
            json!({"name": "x", "permissions": ["etl..run"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_permission",
        ),
        (
            json!({"name": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
    ] {
        assert_error(&add(body).await, status, code);
    }
    let user = t
        .admin(
            Method::POST,
            "/users",
            &admin,
            Some(json!({"email": "aud@example.org", "roles": ["auditor"]})),
        )
        .await;
    let user_id = user.body["user"]["id"].as_str().expect("id").to_owned();
    let in_use = t
        .admin(Method::DELETE, "/roles/auditor", &admin, None)
        .await;
    assert_error(&in_use, StatusCode::CONFLICT, "role_in_use");
    let unknown = t.admin(Method::DELETE, "/roles/nope", &admin, None).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "role_not_found");
    t.admin(Method::DELETE, &format!("/users/{user_id}"), &admin, None)
        .await;
    let removed = t
        .admin(Method::DELETE, "/roles/auditor", &admin, None)
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{}", removed.body);
    let list = t.admin(Method::GET, "/roles", &admin, None).await;
    assert!(
        list.body["roles"]
            .as_array()
            .expect("roles")
            .iter()
            .all(|r| r["name"] != "auditor")
    );
    for action in [AuditAction::RoleAdded, AuditAction::RoleRemoved] {
        let events = t.audit(action).await;
        let event = events
            .iter()
            .find(|e| e["target"] == "auditor")
            .unwrap_or_else(|| panic!("{events:?}"));
        assert_eq!(event["actor"], admin_id.as_str());
        assert_eq!(
            event["detail"]["permissions"],
            json!(["audit.read", "etl.access"])
        );
    }
}

/// `GET /api/admin/audit`: newest first, filtered by action, actor, target and time,
/// paged with `before`; bad filters are 422 (400 for an unknown parameter).
pub(crate) async fn the_audit_trail_is_read_with_filters_and_paging(t: &TestStack) {
    let back = t.backend();
    for _ in 0..3 {
        t.login(&back, "viewer@pulse.local", "viewer").await;
    }
    let admin = t.login(&back, "admin@pulse.local", "admin").await;
    let viewer = t
        .user_id(&back, &t.login(&back, "viewer@pulse.local", "viewer").await)
        .await;
    let read = |query: String| {
        let path = format!("/audit{query}");
        let admin = &admin;
        async move { t.admin(Method::GET, &path, admin, None).await }
    };

    let first = read(format!("?action=login_succeeded&actor={viewer}&limit=3")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let events = first.body["events"].as_array().expect("events").clone();
    assert_eq!(events.len(), 3);
    for event in &events {
        assert_eq!(event["action"], "login_succeeded");
        assert_eq!(event["actor"], viewer.as_str());
        assert!(event["at"].is_string());
    }
    let ids: Vec<i64> = events.iter().filter_map(|e| e["id"].as_i64()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let next = first.body["next_before"].as_i64().expect("another page");
    assert_eq!(next, ids[2]);
    let second = read(format!(
        "?action=login_succeeded&actor={viewer}&limit=3&before={next}"
    ))
    .await;
    let older = second.body["events"].as_array().expect("events");
    assert_eq!(older.len(), 1, "{}", second.body);
    assert!(older[0]["id"].as_i64().expect("id") < next);
    assert_eq!(second.body["next_before"], Value::Null);

    let by_target = read(format!("?target={viewer}&action=login_succeeded")).await;
    assert_eq!(
        by_target.body["events"].as_array().expect("events").len(),
        4
    );
    let future = read("?since=2999-01-01T00:00:00Z".to_owned()).await;
    assert_eq!(future.body["events"], json!([]));
    let past = read("?until=2000-01-01T00:00:00Z".to_owned()).await;
    assert_eq!(past.body["events"], json!([]));

    for query in [
        "?action=nap",
        "?limit=0",
        "?limit=1000",
        "?before=-1",
        "?since=yesterday",
    ] {
        assert_error(
            &read(query.to_owned()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_filter",
        );
    }
    assert_error(
        &read("?colour=red".to_owned()).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
}

/// The sign-in events: failed (unknown user, wrong password), throttled (once per
/// account, client and minute however many refusals), succeeded.
pub(crate) async fn sign_in_events_are_audited(t: &TestStack) {
    let back = t.backend();
    let unknown = t.sign_in(&back, "ghost@pulse.local", "boo").await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    let mut throttled = 0;
    for _ in 0..8 {
        let answer = t.sign_in(&back, "viewer@pulse.local", "wrong").await;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            throttled += 1;
        } else {
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
        }
    }
    assert_eq!(throttled, 3, "five failures, then refusals");
    let failed = t.audit(AuditAction::LoginFailed).await;
    assert_eq!(
        failed
            .iter()
            .filter(|e| e["detail"]["reason"] == "wrong_password")
            .count(),
        5,
        "{failed:?}"
    );
    assert!(
        failed
            .iter()
            .any(|e| e["detail"]["reason"] == "unknown_user"
                && e["detail"]["email"] == "ghost@pulse.local"
                && e["target"].is_null())
    );
    let throttle = t.audit(AuditAction::LoginThrottled).await;
    assert_eq!(throttle.len(), 1, "{throttle:?}");
    assert_eq!(throttle[0]["detail"]["email"], "viewer@pulse.local");
    assert!(throttle[0]["client_addr"].is_string());
    assert!(throttle[0]["request_id"].is_string());
    t.login(&back, "admin@pulse.local", "admin").await;
    let succeeded = t.audit(AuditAction::LoginSucceeded).await;
    assert_eq!(succeeded[0]["detail"]["email"], "admin@pulse.local");
    assert!(succeeded[0]["detail"]["session"].is_string());
}

/// A job started and a run cancelled through the gateway are audited with the user,
/// the job, the run id and the request id the client was answered with; a refused
/// start is not a start.
pub(crate) async fn job_starts_and_cancels_are_audited(t: &TestStack) {
    let back = t.backend();
    let viewer = t.login(&back, "viewer@pulse.local", "viewer").await;
    let refused = t
        .call(
            Method::POST,
            &format!("{back}/api/etl/jobs/jira_sync/start"),
            Some(&viewer),
            None,
            &[],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let admin = t.login(&back, "admin@pulse.local", "admin").await;
    let admin_id = t.user_id(&back, &admin).await;
    let started = t
        .call(
            Method::POST,
            &format!("{back}/api/etl/jobs/start"),
            Some(&admin),
            Some(json!({"job_name": "jira_sync"})),
            &[],
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let run_id = started.body["run_id"].as_str().expect("run id").to_owned();
    let cancelled = t
        .call(
            Method::POST,
            &format!("{back}/api/etl/runs/{run_id}/cancel"),
            Some(&admin),
            None,
            &[],
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::ACCEPTED, "{}", cancelled.body);
    assert_eq!(t.wait_terminal(&admin, &run_id).await["state"], "cancelled");

    for (action, answer) in [
        (AuditAction::JobStarted, &started),
        (AuditAction::RunCancelled, &cancelled),
    ] {
        let events = t.audit(action).await;
        assert_eq!(events.len(), 1, "{events:?}");
        let event = &events[0];
        assert_eq!(event["actor"], admin_id.as_str());
        assert_eq!(event["target"], run_id.as_str());
        assert_eq!(event["detail"]["job"], "jira_sync");
        assert_eq!(event["detail"]["run_id"], run_id.as_str());
        assert_eq!(event["detail"]["status"], 202);
        assert_eq!(
            event["request_id"].as_str(),
            answer.headers["x-request-id"].to_str().ok(),
            "{event}"
        );
    }
}

// ------------------------------------------------------------------ on SQLite

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_a_viewer() {
    let t = start().await;
    the_admin_api_is_refused_to_a_viewer(&t).await;
    t.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_users() {
    let t = start().await;
    admins_manage_users(&t).await;
    t.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_errors() {
    let t = start().await;
    admin_errors_are_json_with_the_right_status(&t).await;
    t.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_lockout_guards() {
    let t = start().await;
    administrators_cannot_lock_the_gateway_out(&t).await;
    t.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_roles() {
    let t = start().await;
    admins_manage_roles(&t).await;
    t.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_audit_trail() {
    let t = start().await;
    the_audit_trail_is_read_with_filters_and_paging(&t).await;
    t.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_rows_for_sign_ins() {
    let t = start().await;
    sign_in_events_are_audited(&t).await;
    t.stack.shutdown().await;
}

/// Slow fixtures: the run is still going when it is cancelled.
pub(crate) const SLOW_FIXTURES: [&str; 2] = ["--fixture-latency-ms", "1000"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_rows_for_job_starts_and_cancels() {
    let t = start_overriding(&[(SLOW_FIXTURES[0], SLOW_FIXTURES[1])]).await;
    job_starts_and_cancels_are_audited(&t).await;
    t.stack.shutdown().await;
}

/// Audit events past `PULSE_AUDIT_RETENTION_DAYS` are deleted (at start, then hourly);
/// younger ones stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_retention_prunes_old_events() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = Cli::try_parse_from_args(args(dir.path())).options;
    let day = 86_400_000;
    let old = AccountStore::open(&options.database_url(), None)
        .await
        .expect("store")
        .with_clock(move || crate::stack::accounts::now_millis() - 3 * day);
    let event = |email: &str| {
        crate::stack::accounts::audit::AuditEvent::new(
            AuditAction::Logout,
            &Origin::actor("test"),
            None,
            json!({"email": email}),
        )
    };
    old.record(&event("three days ago"))
        .await
        .expect("recorded");
    let recent = old
        .clone()
        .with_clock(move || crate::stack::accounts::now_millis() - day / 2);
    recent
        .record(&event("half a day ago"))
        .await
        .expect("recorded");
    let t = TestStack {
        stack: start_service(Service::All, dir.path(), &["--audit-retention-days", "2"]).await,
        _dir: None,
        http: client(),
    };
    eventually("the old event is pruned", || async {
        t.audit(AuditAction::Logout).await.len() == 1
    })
    .await;
    assert_eq!(
        t.audit(AuditAction::Logout).await[0]["detail"]["email"],
        "half a day ago"
    );
    t.stack.shutdown().await;
}
