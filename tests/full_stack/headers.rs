//! Response hardening headers (issue 9, defect 11): HSTS on every answer served over
//! TLS, `X-Content-Type-Options: nosniff` on the API answers of the gateway and the ETL.

use crate::harness::*;
use crate::tls::https_get;

/// Extra request headers.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// The value of `name` in a raw HTTP/1.1 answer's head, if present.
fn header_of(answer: &str, name: &str) -> Option<String> {
    let head = answer.split("\r\n\r\n").next().unwrap_or_default();
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

/// `--self-signed`: every answer of the gateway and of the frontend carries
/// `Strict-Transport-Security`, errors and forwarded answers included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_on_every_answer_served_over_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let stack = start_service(Service::All, dir.path(), &["--self-signed"]).await;
    let cert = dir.path().join("tls/cert.pem");
    let backend = stack.backend.as_ref().expect("backend").server.addr;
    let frontend = stack.frontend.as_ref().expect("frontend").addr;
    for (addr, path) in [
        (backend, "/health"),
        (backend, "/api/etl/jobs"),
        (backend, "/nowhere"),
        (frontend, "/"),
        (frontend, "/health"),
        (frontend, "/api/etl/jobs"),
        (frontend, "/nowhere"),
    ] {
        let (status, answer) = https_get(addr, &cert, path).await;
        assert_eq!(
            header_of(&answer, "strict-transport-security").as_deref(),
            Some("max-age=31536000"),
            "{addr}{path}: {status}\n{answer}"
        );
        // One header, not the gateway's and the frontend's both.
        assert_eq!(
            answer
                .to_ascii_lowercase()
                .matches("strict-transport-security")
                .count(),
            1,
            "{answer}"
        );
    }
    stack.shutdown().await;
}

/// Plain HTTP: no HSTS (browsers ignore it there, and it would be a lie).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_hsts_over_plain_http() {
    let t = start().await;
    for url in [
        format!("{}/health", t.backend()),
        format!("{}/", t.frontend()),
    ] {
        let answer = t.call(Method::GET, &url, None, None, &[]).await;
        assert!(
            !answer.headers.contains_key("strict-transport-security"),
            "{url}"
        );
    }
    t.stack.shutdown().await;
}

/// `X-Content-Type-Options: nosniff` on the gateway's and the ETL's answers: success,
/// errors of every layer (401, 404, 403) and proxied answers alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_answers_are_nosniff() {
    let t = start().await;
    let back = t.backend();
    let token = t.login(&back, "viewer@pulse.local", "viewer").await;
    let secret = t
        .stack
        .secrets
        .primary_internal_secret()
        .expect("key")
        .to_owned();
    let internal = [("x-internal-auth", secret.as_str())];
    let cases: [(String, Option<&str>, Headers<'_>); 8] = [
        (format!("{back}/api/etl/jobs"), Some(&token), &[]),
        (format!("{back}/api/etl/jobs"), None, &[]),
        (format!("{back}/api/auth/me"), Some(&token), &[]),
        (format!("{back}/health"), None, &[]),
        (format!("{back}/nowhere"), None, &[]),
        (format!("{}/health", t.etl()), None, &[]),
        (format!("{}/api/v1/jobs", t.etl()), None, &[]),
        (format!("{}/api/v1/jobs", t.etl()), None, &internal),
    ];
    for (url, token, headers) in &cases {
        let answer = t.call(Method::GET, url, *token, None, headers).await;
        assert_eq!(
            answer
                .headers
                .get_all("x-content-type-options")
                .iter()
                .map(|v| v.to_str().unwrap_or_default())
                .collect::<Vec<_>>(),
            ["nosniff"],
            "{url} ({}): {:?}",
            answer.status,
            answer.headers
        );
    }
    t.stack.shutdown().await;
}
