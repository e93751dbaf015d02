//! HTTPS for the backend and the frontend: a PEM certificate and key, or a
//! self-signed pair generated into the data folder (rustls with the ring provider).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::config::Options;

/// The certificate and key files to serve with, if any (generating a self-signed pair
/// when asked).
pub fn files(options: &Options) -> anyhow::Result<Option<(PathBuf, PathBuf)>> {
    if let (Some(cert), Some(key)) = (&options.tls_cert, &options.tls_key) {
        return Ok(Some((cert.clone(), key.clone())));
    }
    if !options.self_signed {
        return Ok(None);
    }
    let dir = options.data_dir.join("tls");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if !(cert.exists() && key.exists()) {
        generate_self_signed(&cert, &key)?;
        tracing::info!(cert = %cert.display(), "generated a self-signed certificate for localhost");
    }
    Ok(Some((cert, key)))
}

/// Write a self-signed certificate for `localhost`, `127.0.0.1` and `::1`.
pub fn generate_self_signed(cert_path: &Path, key_path: &Path) -> anyhow::Result<()> {
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let certified =
        rcgen::generate_simple_self_signed(names).context("generating a certificate")?;
    if let Some(dir) = cert_path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(cert_path, certified.cert.pem())?;
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(key_path)?
        .write_all(certified.signing_key.serialize_pem().as_bytes())?;
    Ok(())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS acceptor serving `cert` (PEM chain) with `key` (PEM), over HTTP/1.1 (so
/// WebSocket upgrades work everywhere).
pub fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    acceptor_for_clients(cert, key, None)
}

/// The certificates of a PEM file.
fn pem_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", path.display()))
}

/// [`acceptor`], and with `client_ca` only clients presenting a certificate signed
/// by it get through the handshake (mutual TLS).
fn acceptor_for_clients(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> anyhow::Result<TlsAcceptor> {
    let certs = pem_certs(cert)?;
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for der in pem_certs(path)? {
                roots.add(der).context("trusting the client CA")?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .context("client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A client configuration trusting the certificates in `cert` (for the frontend's hop
/// to a backend serving that certificate), or nothing (plain HTTP only).
pub fn client_config(cert: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(cert) = cert {
        for der in CertificateDer::pem_file_iter(cert)? {
            roots.add(der?).context("trusting the certificate")?;
        }
    }
    // ALPN is left to the transport (hyper-rustls sets it); the backend offers only
    // HTTP/1.1, so WebSocket upgrades work on this hop.
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The gateway's TLS to the ETL service: trusting PULSE_ETL_CA_FILE (or the ETL's own
/// certificate, when this process serves it), presenting PULSE_ETL_CLIENT_CERT when
/// given (mutual TLS). An https:// PULSE_ETL_URL without
/// anything to trust is refused at start-up rather than failing every request.
pub fn etl_client_config(options: &Options) -> anyhow::Result<rustls::ClientConfig> {
    let trusted = options
        .etl_ca_file
        .as_deref()
        .or(options.etl_tls_cert.as_deref());
    if trusted.is_none() && options.etl_url().starts_with("https:") {
        anyhow::bail!(
            "PULSE_ETL_URL is https://: set PULSE_ETL_CA_FILE to the CA of the ETL's certificate"
        );
    }
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = trusted {
        for der in pem_certs(path).context("PULSE_ETL_CA_FILE")? {
            roots.add(der).context("PULSE_ETL_CA_FILE")?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    match (&options.etl_client_cert, &options.etl_client_key) {
        (Some(cert), Some(key)) => {
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("reading {}", key.display()))?;
            builder
                .with_client_auth_cert(pem_certs(cert)?, key)
                .context("PULSE_ETL_CLIENT_CERT and PULSE_ETL_CLIENT_KEY do not match")
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// The ETL service's TLS listener, when it has a certificate (PULSE_ETL_TLS_CERT);
/// with PULSE_ETL_CLIENT_CA_FILE, for clients with a certificate from that CA only.
pub fn etl_acceptor(options: &Options) -> anyhow::Result<Option<TlsAcceptor>> {
    match (&options.etl_tls_cert, &options.etl_tls_key) {
        (Some(cert), Some(key)) => Ok(Some(acceptor_for_clients(
            cert,
            key,
            options.etl_client_ca_file.as_deref(),
        )?)),
        _ => Ok(None),
    }
}
