//! The connector of the seed jobs' HTTP client: plain TCP, or with the `tls` feature
//! rustls for `https` sources.

use hyper_util::client::legacy::connect::HttpConnector;

use super::SourceConfigError;
use super::url::BaseUrl;

#[cfg(not(feature = "tls"))]
pub(crate) type Connector = HttpConnector;

#[cfg(feature = "tls")]
pub(crate) type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

#[cfg(not(feature = "tls"))]
pub(crate) fn connector(
    _api: &'static str,
    _base: &BaseUrl,
) -> Result<Connector, SourceConfigError> {
    Ok(HttpConnector::new())
}

/// Where the system keeps its PEM bundle of trusted roots (Debian, Fedora, macOS/Alpine).
#[cfg(feature = "tls")]
const CA_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// An HTTP-or-HTTPS connector; for an `https` base the roots come from the PEM bundle
/// named by `SSL_CERT_FILE`, else the system's.
#[cfg(feature = "tls")]
pub(crate) fn connector(api: &'static str, base: &BaseUrl) -> Result<Connector, SourceConfigError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let roots_error = |reason: String| SourceConfigError::TlsRoots { api, reason };
    let mut roots = rustls::RootCertStore::empty();
    if base.is_https() {
        let bundle = std::env::var_os("SSL_CERT_FILE")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                CA_BUNDLES
                    .iter()
                    .map(std::path::PathBuf::from)
                    .find(|path| path.exists())
            })
            .ok_or_else(|| roots_error("no CA bundle found; set SSL_CERT_FILE".to_owned()))?;
        let certs = CertificateDer::pem_file_iter(&bundle)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|err| roots_error(format!("reading {}: {err}", bundle.display())))?;
        let (added, _unparsable) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(roots_error(format!(
                "no usable certificate in {}",
                bundle.display()
            )));
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| roots_error(err.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .build())
}
