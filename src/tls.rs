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
pub fn server_config(
    cert: &Path,
    cert_name: &str,
    key: &Path,
    key_name: &str,
) -> Result<Arc<ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| anyhow!("{cert_name}: cannot read: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{cert_name}: not a PEM certificate chain: {e}"))?;
    if chain.is_empty() {
        bail!("{cert_name}: no CERTIFICATE block in the file");
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow!("{key_name}: no usable private key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS provider supports no safe protocol version")?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| anyhow!("{cert_name} and {key_name} do not work together: {e}"))?;
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
