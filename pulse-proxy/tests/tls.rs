//! `HttpTransport::https` end to end against a real rustls upstream, with a test CA
//! made here (rcgen): a trusted certificate works (HTTP/1.1 and HTTP/2 by ALPN); a
//! certificate from another CA, for another name, or expired is refused before any
//! request reaches the upstream (503 `service_unavailable`, as a connect failure); mutual TLS
//! with a client certificate the upstream requires.
#![cfg(feature = "tls")]

mod common;

use std::sync::{Arc, Mutex};

use common::{ClientBody, Seen, TestProxy, boxed, empty, get, upstream};
use http::{Request, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use pulse_proxy::{
    Proxy, ProxyConfig,
    transport::{HttpTransport, TransportConfig},
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};
use rustls::{
    RootCertStore,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::WebPkiClientVerifier,
};
use tower::ServiceExt;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate authority made for one test.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap().der().clone();
        Self {
            issuer: Issuer::new(params, key),
            cert,
        }
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        roots
    }

    /// A leaf certificate for `names`, valid now unless `expired`.
    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose, expired: bool) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, "leaf");
        params.extended_key_usages = vec![usage];
        if expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            chain: vec![cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }

    fn server_leaf(&self, names: &[&str]) -> Leaf {
        self.leaf(names, ExtendedKeyUsagePurpose::ServerAuth, false)
    }
}

struct Leaf {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// The common upstream app served over TLS on loopback with `leaf`; with `client_ca`,
/// only clients with a certificate from that CA get through the handshake.
async fn tls_upstream(leaf: Leaf, client_ca: Option<&TestCa>) -> (String, Seen, Versions) {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(Arc::new(ca.roots()), provider())
                .build()
                .unwrap(),
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(leaf.chain, leaf.key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let seen = Seen::default();
    let versions = Versions::default();
    let app = upstream(seen.clone());
    let seen_versions = Arc::clone(&versions);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let app = app.clone();
            let versions = Arc::clone(&seen_versions);
            tokio::spawn(async move {
                // A refused handshake just ends this connection.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req: Request<Incoming>| {
                    versions.lock().unwrap().push(req.version());
                    app.clone().oneshot(req)
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (authority, seen, versions)
}

/// The HTTP version of each request the upstream saw.
type Versions = Arc<Mutex<Vec<Version>>>;

/// The client's TLS: trust `ca`, optionally present `client` (mutual TLS).
fn client_tls(ca: &TestCa, client: Option<Leaf>) -> rustls::ClientConfig {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots());
    match client {
        Some(leaf) => builder.with_client_auth_cert(leaf.chain, leaf.key).unwrap(),
        None => builder.with_no_client_auth(),
    }
}

/// The proxy over the TLS transport to `https://{host}:{port of authority}`.
fn https_proxy(authority: &str, host: &str, tls: rustls::ClientConfig) -> TestProxy {
    let port = authority.rsplit(':').next().unwrap();
    let upstream = format!("https://{host}:{port}").parse().unwrap();
    let config = ProxyConfig::new(upstream)
        .unwrap()
        .with_prefix_rewrite("/api/etl/", "/api/v1/");
    boxed(Proxy::new(
        HttpTransport::https(TransportConfig::new(), tls),
        config,
    ))
}

async fn send(proxy: &TestProxy, path: &str) -> (StatusCode, String) {
    let req: Request<ClientBody> = get(path).body(empty()).unwrap();
    let res = proxy.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The answer to a refused handshake: the connect failed, nothing reached the upstream.
fn assert_refused_before_the_upstream((status, body): (StatusCode, String), seen: &Seen) {
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains(r#""code":"service_unavailable""#), "{body}");
    assert_eq!(seen.calls(), 0);
}

#[tokio::test]
async fn a_certificate_from_the_trusted_ca_works_over_http1_and_http2() {
    let ca = TestCa::new("Pulse test CA");
    let (authority, seen, versions) =
        tls_upstream(ca.server_leaf(&["localhost", "127.0.0.1"]), None).await;
    for host in ["127.0.0.1", "localhost"] {
        let proxy = https_proxy(&authority, host, client_tls(&ca, None));
        let (status, body) = send(&proxy, "/api/etl/echo?q=1").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains(r#""uri":"/api/v1/echo?q=1""#), "{body}");
    }
    // HTTP/1.1 only (no h2 in ALPN) works as well.
    let proxy = boxed(Proxy::new(
        HttpTransport::with_connector(
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(client_tls(&ca, None))
                .https_only()
                .enable_http1()
                .build(),
            TransportConfig::new(),
        ),
        ProxyConfig::new(format!("https://{authority}").parse().unwrap())
            .unwrap()
            .with_prefix_rewrite("/api/etl/", "/api/v1/"),
    ));
    assert_eq!(send(&proxy, "/api/etl/echo").await.0, StatusCode::OK);
    assert_eq!(seen.calls(), 3);
    assert_eq!(
        *versions.lock().unwrap(),
        [Version::HTTP_2, Version::HTTP_2, Version::HTTP_11]
    );
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let trusted = TestCa::new("Pulse test CA");
    let other = TestCa::new("Someone else's CA");
    let (authority, seen, _) = tls_upstream(other.server_leaf(&["127.0.0.1"]), None).await;
    let proxy = https_proxy(&authority, "127.0.0.1", client_tls(&trusted, None));
    assert_refused_before_the_upstream(send(&proxy, "/api/etl/echo").await, &seen);
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let ca = TestCa::new("Pulse test CA");
    let (authority, seen, _) = tls_upstream(ca.server_leaf(&["etl.other.test"]), None).await;
    let proxy = https_proxy(&authority, "127.0.0.1", client_tls(&ca, None));
    assert_refused_before_the_upstream(send(&proxy, "/api/etl/echo").await, &seen);
    let proxy = https_proxy(&authority, "localhost", client_tls(&ca, None));
    assert_refused_before_the_upstream(send(&proxy, "/api/etl/echo").await, &seen);
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let ca = TestCa::new("Pulse test CA");
    let expired = ca.leaf(&["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth, true);
    let (authority, seen, _) = tls_upstream(expired, None).await;
    let proxy = https_proxy(&authority, "127.0.0.1", client_tls(&ca, None));
    assert_refused_before_the_upstream(send(&proxy, "/api/etl/echo").await, &seen);
}

#[tokio::test]
async fn plain_http_to_a_tls_upstream_is_not_a_success() {
    let ca = TestCa::new("Pulse test CA");
    let (authority, seen, _) = tls_upstream(ca.server_leaf(&["127.0.0.1"]), None).await;
    let proxy = boxed(Proxy::new(
        HttpTransport::https(TransportConfig::new(), client_tls(&ca, None)),
        common::base_config(&authority),
    ));
    let (status, _) = send(&proxy, "/api/etl/echo").await;
    assert!(status.is_server_error(), "{status}");
    assert_eq!(seen.calls(), 0);
}

#[tokio::test]
async fn mutual_tls_needs_a_client_certificate_from_the_upstreams_ca() {
    let server_ca = TestCa::new("Pulse test CA");
    let client_ca = TestCa::new("Pulse clients CA");
    let (authority, seen, _) =
        tls_upstream(server_ca.server_leaf(&["127.0.0.1"]), Some(&client_ca)).await;
    let client_leaf = |ca: &TestCa| {
        ca.leaf(
            &["pulse-gateway"],
            ExtendedKeyUsagePurpose::ClientAuth,
            false,
        )
    };

    // With the gateway's client certificate: through.
    let proxy = https_proxy(
        &authority,
        "127.0.0.1",
        client_tls(&server_ca, Some(client_leaf(&client_ca))),
    );
    let (status, body) = send(&proxy, "/api/etl/echo").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(seen.calls(), 1);

    // Without one, or with one from another CA: the upstream ends the handshake, and
    // no request reaches it. (With TLS 1.3 the client learns it when it reads, so the
    // answer is a 502 or a 503, never a success.)
    for client in [None, Some(client_leaf(&server_ca))] {
        let proxy = https_proxy(&authority, "127.0.0.1", client_tls(&server_ca, client));
        let (status, body) = send(&proxy, "/api/etl/echo").await;
        assert!(
            status == StatusCode::BAD_GATEWAY || status == StatusCode::SERVICE_UNAVAILABLE,
            "{status} {body}"
        );
        assert_eq!(seen.calls(), 1);
    }
}
