//! The gateway's metrics (issue 9, defects 5 and 11): on their own listener, with
//! label sets a client cannot grow.

use std::collections::BTreeSet;

use crate::harness::*;

/// Every value of `label` in the series of `metric` in Prometheus text.
fn label_values(text: &str, metric: &str, label: &str) -> BTreeSet<String> {
    let needle = format!("{label}=\"");
    text.lines()
        .filter(|line| line.starts_with(&format!("{metric}{{")))
        .filter_map(|line| {
            let start = line.find(&needle)? + needle.len();
            let end = start + line[start..].find('"')?;
            Some(line[start..end].to_owned())
        })
        .collect()
}

/// Made-up methods (`ZZ123`, 4,000 characters) and random paths add no series: the
/// method label is a standard method or `other`, the route label the matched route
/// pattern or `unmatched`. Every answer is still counted, 401s and 404s included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_chosen_methods_and_paths_do_not_become_labels() {
    let t = start().await;
    let back = t.backend();
    let token = t.login(&back, "admin@pulse.local", "admin").await;
    let long_method = "Z".repeat(4000);
    let random = stack::config::random_hex(8);
    let made_up = [
        ("ZZ123", format!("{back}/api/etl/jobs")),
        ("ZZ123", format!("{back}/health")),
        (long_method.as_str(), format!("{back}/api/etl/jobs")),
        (long_method.as_str(), format!("{back}/nowhere-{random}")),
        ("GET", format!("{back}/nowhere-{random}/{random}")),
        ("GET", format!("{back}/api/etl/nowhere-{random}")),
        ("PROPFIND", format!("{back}/api/auth/login")),
    ];
    for (method, url) in &made_up {
        let method = Method::from_bytes(method.as_bytes()).expect("a token");
        let answer = t.call(method, url, Some(&token), None, &[]).await;
        assert!(
            answer.status.is_client_error() || answer.status.is_server_error(),
            "{url}: {}",
            answer.status
        );
        assert!(answer.body["code"].is_string(), "{url}: {}", answer.body);
    }
    // Unauthenticated calls and unknown routes are counted too.
    let anonymous = t
        .call(
            Method::GET,
            &format!("{back}/api/etl/jobs"),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    let text = t.metrics_text().await;
    assert!(!text.contains("ZZ123"), "{text}");
    assert!(!text.contains(&long_method[..64]), "{text}");
    assert!(!text.contains(&random), "{text}");
    let methods = label_values(&text, "pulse_http_requests_total", "method");
    let standard = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "other",
    ];
    assert!(
        methods.iter().all(|m| standard.contains(&m.as_str())),
        "{methods:?}"
    );
    assert!(methods.contains("other"), "{methods:?}");
    let routes = label_values(&text, "pulse_http_requests_total", "route");
    let known = [
        "/api/auth/login",
        "/api/auth/me",
        "/api/auth/refresh",
        "/api/auth/logout",
        "/api/auth/setup",
        "/api/admin/users",
        "/api/admin/users/{id}",
        "/api/admin/users/{id}/password",
        "/api/admin/roles",
        "/api/admin/roles/{name}",
        "/api/admin/audit",
        "/api/admin/{*rest}",
        "/api/openapi.json",
        "/api/etl/jobs/status",
        "/api/etl/{*path}",
        "/ws/job-status",
        "/health",
        "unmatched",
    ];
    assert!(
        routes.iter().all(|r| known.contains(&r.as_str())),
        "{routes:?}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("pulse_http_requests_total")
                && l.contains(r#"route="unmatched""#)
                && l.contains(r#"status="404""#)),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("pulse_http_requests_total")
                && l.contains(r#"route="/api/etl/{*path}""#)
                && l.contains(r#"status="401""#)),
        "{text}"
    );
    t.stack.shutdown().await;
}

/// `/metrics` is served on the metrics listener only; the public port answers it with
/// the JSON 404 of any unknown route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_live_on_their_own_listener() {
    let t = start().await;
    let back = t.backend();
    let public = t
        .call(Method::GET, &format!("{back}/metrics"), None, None, &[])
        .await;
    assert_eq!(public.status, StatusCode::NOT_FOUND, "{}", public.body);
    assert_eq!(public.body["code"], "not_found");
    assert!(public.body["request_id"].is_string(), "{}", public.body);
    // Through the frontend too (it forwards only /api, /ws and /health).
    let via_frontend = t
        .call(
            Method::GET,
            &format!("{}/metrics", t.frontend()),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(via_frontend.status, StatusCode::NOT_FOUND);

    let metrics_addr = t.stack.backend.as_ref().expect("backend").metrics.addr;
    assert!(metrics_addr.ip().is_loopback());
    assert_ne!(
        metrics_addr,
        t.stack.backend.as_ref().expect("backend").server.addr
    );
    let answer = t
        .call(
            Method::GET,
            &format!("{}/metrics", t.metrics()),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.headers["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/plain"),
        "{:?}",
        answer.headers
    );
    let text = answer.body.as_str().unwrap_or_default();
    for series in [
        "pulse_breaker_state",
        "pulse_open_connections",
        "pulse_runtime_alive_tasks",
    ] {
        assert!(text.contains(series), "{series} missing: {text}");
    }
    let other = t
        .call(
            Method::GET,
            &format!("{}/api/etl/jobs", t.metrics()),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    assert!(
        t.stack
            .banner()
            .contains(&format!("{metrics_addr}/metrics"))
    );
    t.stack.shutdown().await;
}
