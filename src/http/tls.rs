//! Native HTTPS: a rustls acceptor built from PEM files, HTTP/2 offered through ALPN. The
//! acceptor lives behind an `ArcSwap` so SIGHUP can swap in renewed certificates while open
//! connections keep the one they started with.

use std::sync::Arc;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsSettings;

/// Loads the certificate chain and key and builds an acceptor.
pub fn load(settings: &TlsSettings) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&settings.cert)
        .map_err(|e| {
            format!(
                "cannot read TLS certificate {}: {e}",
                settings.cert.display()
            )
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid PEM in {}: {e}", settings.cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "no certificate found in {}",
            settings.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&settings.key)
        .map_err(|e| format!("cannot read TLS key {}: {e}", settings.key.display()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate and key do not fit together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The acceptor for the configuration's `[tls]` section, if it has one.
pub fn from_config(config: &crate::config::Config) -> Result<Option<TlsAcceptor>, String> {
    config.tls.as_ref().map(load).transpose()
}
