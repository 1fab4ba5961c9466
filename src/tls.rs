//! TLS material: the certificate chain and private key for STARTTLS,
//! loaded from PEM files into a rustls server configuration.
//!
//! Why it exists: a bad certificate must stop start-up (or be refused by a
//! reload) with a sentence naming the file and the problem, never surface
//! as failed handshakes under load. rustls with the `ring` provider: no
//! OpenSSL.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// Reads `cert` (PEM chain, leaf first) and `key` (PEM PKCS#8, PKCS#1 or
/// SEC1) and checks that they belong together.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| anyhow!("--tls-cert {}: cannot read: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            anyhow!(
                "--tls-cert {}: not a PEM certificate chain: {e}",
                cert.display()
            )
        })?;
    if chain.is_empty() {
        bail!(
            "--tls-cert {}: no CERTIFICATE block in the file",
            cert.display()
        );
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow!("--tls-key {}: no usable private key: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS provider supports no safe protocol version")?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            anyhow!(
                "--tls-cert {} and --tls-key {} do not work together: {e}",
                cert.display(),
                key.display()
            )
        })?;
    Ok(Arc::new(config))
}

/// "TLS1.3" style name of a negotiated version.
pub fn version_name(v: rustls::ProtocolVersion) -> &'static str {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLS1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLS1.2",
        _ => "TLS",
    }
}
