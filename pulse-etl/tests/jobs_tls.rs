//! With the `tls` feature, `https://` sources are accepted and spoken to over rustls:
//! a server that does not speak TLS fails the handshake, as a retryable error that
//! shows no token.
#![cfg(feature = "tls")]

mod jobs_support;

use jobs_support::{Harness, config, exposed_text};
use pulse_etl::RunState;
use pulse_etl::jobs::JIRA_SYNC;
use serde_json::json;
use wiremock::MockServer;

const TOKEN: &str = "tls-s3cret-token";

fn roots_available() -> bool {
    std::env::var_os("SSL_CERT_FILE").is_some()
        || [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
            "/etc/ssl/cert.pem",
        ]
        .iter()
        .any(|path| std::path::Path::new(path).exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_source_that_does_not_speak_tls_fails_retryably() {
    if !roots_available() {
        eprintln!("skipped: no CA bundle on this machine");
        return;
    }
    let server = MockServer::start().await;
    let https = server.uri().replacen("http://", "https://", 1);
    let mut config = config(&https, 2);
    config.jira = config.jira.with_token(TOKEN);
    let harness = Harness::start(config).await;

    let run = harness.run(JIRA_SYNC, json!({})).await;

    assert_eq!(run.state, RunState::Failed);
    assert_eq!(run.attempts, 2, "a failed handshake is retryable");
    let error = run.error.clone().unwrap_or_default();
    assert!(error.contains("request failed"), "{error}");
    assert!(!exposed_text(&harness, &run).await.contains("s3cret"));
    assert!(
        server
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty()
    );
}
