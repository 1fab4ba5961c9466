//! STARTTLS for the load generator: a rustls client session over the
//! runtime's socket, and the client configuration (`--tls`, `--tls-ca`).
//!
//! Why it exists: TLS costs CPU on both ends, and an edge node's real
//! load is mostly TLS; measuring only plaintext would flatter everyone.
//! rustls does no I/O, so this feeds it ciphertext read from the socket
//! and writes out what it produces.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

use crate::rt::TcpStream;

/// Ciphertext read at a time.
const CIPHERTEXT_READ: usize = 32 << 10;

/// A client configuration: trusting the PEM certificates in `ca`, or,
/// without it, any certificate (signatures are still checked; the chain
/// and name are not: a benchmark tool's choice, said in `--help`).
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("TLS: {e}"))?;
    let config = match ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| anyhow!("--tls-ca {}: {e}", path.display()))?
            {
                let cert = cert.map_err(|e| anyhow!("--tls-ca {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| anyhow!("--tls-ca {}: {e}", path.display()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Accepts any certificate chain; checks handshake signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS client session on a connected socket.
pub struct TlsWire {
    tcp: TcpStream,
    conn: ClientConnection,
    incoming: Vec<u8>,
    fed: usize,
    outgoing: Vec<u8>,
}

impl TlsWire {
    /// Runs the handshake (after the server's 220 to STARTTLS).
    pub async fn handshake(
        tcp: TcpStream,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<TlsWire> {
        let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut w = TlsWire {
            tcp,
            conn,
            incoming: Vec::new(),
            fed: 0,
            outgoing: Vec::new(),
        };
        w.flush().await?;
        while w.conn.is_handshaking() {
            if !w.feed().await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(w)
    }

    /// Reads plaintext; 0 at the end of the stream.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if !self.feed().await? {
                return Ok(0);
            }
        }
    }

    /// Encrypts and sends all of `buf`.
    pub async fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.conn.writer().write(buf)?;
            buf = &buf[n..];
            self.flush().await?;
        }
        Ok(())
    }

    /// One piece of ciphertext into rustls (reading when none is left);
    /// sends whatever it answers. `false` at the end of the stream.
    async fn feed(&mut self) -> io::Result<bool> {
        if self.fed == self.incoming.len() {
            self.incoming.resize(CIPHERTEXT_READ, 0);
            let n = self.tcp.read(&mut self.incoming).await;
            let n = n.inspect_err(|_| self.incoming.clear())?;
            self.incoming.truncate(n);
            self.fed = 0;
            if n == 0 {
                return Ok(false);
            }
        }
        let mut piece = &self.incoming[self.fed..];
        self.fed += self.conn.read_tls(&mut piece)?;
        self.conn
            .process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.flush().await?;
        Ok(true)
    }

    async fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.outgoing.clear();
            self.conn.write_tls(&mut self.outgoing)?;
            self.tcp.write_all(&self.outgoing).await?;
        }
        Ok(())
    }
}
