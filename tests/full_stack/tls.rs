//! HTTPS with a generated certificate.

use crate::harness::*;

/// GET `path` over HTTPS, trusting only `cert`; the status line and body.
pub(crate) async fn https_get(
    addr: std::net::SocketAddr,
    cert: &std::path::Path,
    path: &str,
) -> (String, String) {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut roots = rustls::RootCertStore::empty();
    for der in rustls::pki_types::CertificateDer::pem_file_iter(cert).expect("cert file") {
        roots.add(der.expect("PEM")).expect("trusted");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = tokio::time::timeout(DEADLINE, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("TLS handshake with the generated certificate");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, tls.read_to_end(&mut answer))
        .await
        .expect("answer in time");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.lines().next().unwrap_or_default().to_owned();
    (status, text)
}

/// `--self-signed`: the backend and the frontend serve HTTPS with a generated
/// certificate, and the frontend reaches the backend over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_https_for_frontend_and_backend() {
    let dir = tempfile::tempdir().expect("temp dir");
    let stack = start_service(Service::All, dir.path(), &["--self-signed"]).await;
    let cert = dir.path().join("tls/cert.pem");
    assert!(cert.is_file());
    let backend = stack.backend.as_ref().expect("backend").server.addr;
    let frontend = stack.frontend.as_ref().expect("frontend").addr;
    let (status, body) = https_get(backend, &cert, "/health").await;
    assert!(status.contains(" 200"), "{body}");
    // Through the frontend: browser → TLS → frontend → TLS → backend → ETL.
    let (status, body) = https_get(frontend, &cert, "/health").await;
    assert!(status.contains(" 200"), "{body}");
    assert!(body.contains("\"healthy\""), "{body}");
    let (status, body) = https_get(frontend, &cert, "/").await;
    assert!(
        status.contains(" 200") && body.contains("<html"),
        "{status}"
    );
    stack.shutdown().await;
}

/// A test CA, and a certificate it signed for `names`, as PEM files in `dir`: the
/// CA's certificate, the leaf's certificate and the leaf's key.
fn ca_and_leaf(
    dir: &std::path::Path,
    prefix: &str,
    names: &[&str],
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("{prefix} test CA"));
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("leaf key");
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let leaf = CertificateParams::new(names)
        .expect("leaf params")
        .signed_by(&key, &issuer)
        .expect("leaf certificate");
    let paths = (
        dir.join(format!("{prefix}-ca.pem")),
        dir.join(format!("{prefix}-cert.pem")),
        dir.join(format!("{prefix}-key.pem")),
    );
    std::fs::write(&paths.0, ca_cert.pem()).expect("write");
    std::fs::write(&paths.1, leaf.pem()).expect("write");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write");
    paths
}

/// PULSE_ETL_TLS_CERT / _KEY: the ETL service serves HTTPS only; a gateway with
/// PULSE_ETL_URL=https://… and PULSE_ETL_CA_FILE proxies, subscribes and checks health
/// over TLS; one trusting another CA gets 503s, never an answer from an unverified ETL;
/// and an https:// URL with nothing to trust is refused at start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_reaches_the_etl_over_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ca, cert, key) = ca_and_leaf(dir.path(), "etl", &["localhost", "127.0.0.1"]);
    let (other_ca, _, _) = ca_and_leaf(dir.path(), "other", &["localhost"]);
    let path = |p: &std::path::Path| p.to_str().expect("utf-8 path").to_owned();
    let etl = start_service(
        Service::Etl,
        dir.path(),
        &["--etl-tls-cert", &path(&cert), "--etl-tls-key", &path(&key)],
    )
    .await;
    let etl_addr = etl.options.etl_addr;

    // The ETL listener speaks TLS (with the CA's certificate), not plain HTTP.
    let (status, body) = https_get(etl_addr, &ca, "/health").await;
    assert!(status.contains(" 200"), "{body}");
    let plain = Request::get(format!("http://{etl_addr}/health"))
        .body(Full::default())
        .expect("request");
    let plain = tokio::time::timeout(DEADLINE, client().request(plain))
        .await
        .expect("an answer or an error in time");
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");

    let etl_url = format!("https://127.0.0.1:{}", etl_addr.port());
    let gateway = start_service(
        Service::Backend,
        dir.path(),
        &["--etl-url", &etl_url, "--etl-ca-file", &path(&ca)],
    )
    .await;
    let t = TestStack {
        stack: gateway,
        _dir: None,
        http: client(),
    };
    let base = t.backend();
    let token = t.login(&base, "admin@pulse.local", "admin").await;
    let started = t
        .call(
            Method::POST,
            &format!("{base}/api/etl/jobs/start"),
            Some(&token),
            Some(json!({"job_name": "github_sync"})),
            &[],
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let run = t
        .wait_terminal(&token, started.body["run_id"].as_str().expect("run_id"))
        .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let health = t
        .call(Method::GET, &format!("{base}/health"), None, None, &[])
        .await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    assert_eq!(health.body["services"]["etl_service"]["status"], "healthy");
    // The job-status subscription runs over the same TLS hop (the gauge is set from
    // this gateway's hub when its metrics are scraped).
    eventually("the gateway subscribed to the ETL's events", || async {
        t.metrics_text()
            .await
            .lines()
            .any(|line| line == "pulse_etl_events_connected 1")
    })
    .await;

    // A gateway trusting another CA never takes the ETL's answers.
    let doubting = start_service(
        Service::Backend,
        dir.path(),
        &["--etl-url", &etl_url, "--etl-ca-file", &path(&other_ca)],
    )
    .await;
    let d = TestStack {
        stack: doubting,
        _dir: None,
        http: client(),
    };
    let doubting_base = d.backend();
    let token = d.login(&doubting_base, "admin@pulse.local", "admin").await;
    let jobs = d
        .call(
            Method::GET,
            &format!("{doubting_base}/api/etl/jobs"),
            Some(&token),
            None,
            &[],
        )
        .await;
    assert_eq!(
        jobs.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        jobs.body
    );
    let health = d
        .call(
            Method::GET,
            &format!("{doubting_base}/health"),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(
        health.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        health.body
    );

    // https:// with nothing to trust: refused at start-up, with the setting to fix.
    let args = args_overriding(dir.path(), &[("--etl-url", &etl_url)]);
    let cli = <Cli as clap::Parser>::try_parse_from(args).expect("valid arguments");
    let refused = Stack::start(Service::Backend, cli.options).await;
    let message = format!("{:#}", refused.expect_err("refused"));
    assert!(message.contains("PULSE_ETL_CA_FILE"), "{message}");

    d.stack.shutdown().await;
    t.stack.shutdown().await;
    etl.shutdown().await;
}

/// PULSE_ETL_CLIENT_CA_FILE: the ETL accepts only clients with a certificate from that
/// CA; a gateway presenting one (PULSE_ETL_CLIENT_CERT / _KEY) gets through, one
/// without, or with a certificate from another CA, never does (502/503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_between_the_gateway_and_the_etl() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ca, cert, key) = ca_and_leaf(dir.path(), "etl", &["localhost", "127.0.0.1"]);
    let (client_ca, client_cert, client_key) = ca_and_leaf(dir.path(), "gw", &["pulse-gateway"]);
    let (_, stranger_cert, stranger_key) = ca_and_leaf(dir.path(), "stranger", &["pulse-gateway"]);
    let path = |p: &std::path::Path| p.to_str().expect("utf-8 path").to_owned();
    let etl = start_service(
        Service::Etl,
        dir.path(),
        &[
            "--etl-tls-cert",
            &path(&cert),
            "--etl-tls-key",
            &path(&key),
            "--etl-client-ca-file",
            &path(&client_ca),
        ],
    )
    .await;
    let etl_url = format!("https://127.0.0.1:{}", etl.options.etl_addr.port());

    let mut answers = Vec::new();
    for presented in [
        Some((&client_cert, &client_key)),
        None,
        Some((&stranger_cert, &stranger_key)),
    ] {
        let mut extra = vec![
            "--etl-url".to_owned(),
            etl_url.clone(),
            "--etl-ca-file".to_owned(),
            path(&ca),
        ];
        if let Some((cert, key)) = presented {
            extra.extend([
                "--etl-client-cert".to_owned(),
                path(cert),
                "--etl-client-key".to_owned(),
                path(key),
            ]);
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let gateway = start_service(Service::Backend, dir.path(), &extra).await;
        let t = TestStack {
            stack: gateway,
            _dir: None,
            http: client(),
        };
        let base = t.backend();
        let token = t.login(&base, "viewer@pulse.local", "viewer").await;
        let jobs = t
            .call(
                Method::GET,
                &format!("{base}/api/etl/jobs"),
                Some(&token),
                None,
                &[],
            )
            .await;
        let health = t
            .call(Method::GET, &format!("{base}/health"), None, None, &[])
            .await;
        answers.push((jobs.status, health.status));
        t.stack.shutdown().await;
    }
    assert_eq!(answers[0], (StatusCode::OK, StatusCode::OK));
    // Without a certificate, or with a stranger's: never a success. (With TLS 1.3 the
    // gateway learns of the refusal only from the ETL's alert after its side of the
    // handshake, so the proxied call is a 502; a TLS 1.2 refusal would be a 503.)
    for (jobs, health) in &answers[1..] {
        assert!(
            [StatusCode::BAD_GATEWAY, StatusCode::SERVICE_UNAVAILABLE].contains(jobs),
            "{answers:?}"
        );
        assert_eq!(*health, StatusCode::SERVICE_UNAVAILABLE, "{answers:?}");
    }
    etl.shutdown().await;
}
