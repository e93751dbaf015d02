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
