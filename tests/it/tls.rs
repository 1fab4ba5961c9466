//! STARTTLS (RFC 3207) with a real TLS client (rustls) and a certificate
//! generated for the test: a transaction over TLS, the trace header,
//! command injection, --require-tls, bad material at start-up, a broken
//! handshake. (SIGHUP re-reading certificates: `reload.rs`.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::support::*;

/// A self-signed certificate for `mx.test` and 127.0.0.1, as PEM files.
pub struct Material {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: rustls::pki_types::CertificateDer<'static>,
}

impl Material {
    pub fn new(dir: &Path, name: &str) -> Material {
        let names = vec!["mx.test".to_string(), "127.0.0.1".to_string()];
        let made = rcgen::generate_simple_self_signed(names).unwrap();
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
        Material {
            cert,
            key,
            der: made.cert.der().clone(),
        }
    }

    /// The flags that configure it.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.to_str().unwrap().into(),
            "--tls-key".into(),
            self.key.to_str().unwrap().into(),
        ]
    }

    /// A client configuration that trusts only this certificate.
    pub fn client(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

fn start_with(m: &Material, extra: &[&str]) -> Server {
    let flags = m.flags();
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    Server::start(&args)
}

#[test]
fn a_transaction_over_starttls_is_stored_with_esmtps_and_the_cipher() {
    let dir = tempfile::tempdir().unwrap();
    let m = Material::new(dir.path(), "mx");
    let server = start_with(&m, &["--metrics", "127.0.0.1:0"]);
    let mut c = server.connect();
    let ehlo = c.cmd("EHLO client.test");
    assert!(ehlo.contains("250 STARTTLS\r\n"), "{ehlo}");
    let mut c = c.starttls(m.client());
    let version = c.stream.conn.protocol_version().unwrap();
    assert_eq!(version, rustls::ProtocolVersion::TLSv1_3);
    let suite = format!(
        "{:?}",
        c.stream.conn.negotiated_cipher_suite().unwrap().suite()
    );
    let ehlo = c.cmd("EHLO client.test");
    assert!(ehlo.starts_with("250-mx.test greets client.test"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert_eq!(c.code("STARTTLS"), 503);
    let body = b"Subject: secret\r\n\r\n..leading dot\r\nover TLS\r\n";
    let id = queued_id(&c.send_mail("a@x.test", "b@y.test", body));
    assert_eq!(c.code("QUIT"), 221);

    let (_, data) = exported(&server.spool).remove(&id).unwrap();
    assert_eq!(
        without_trace(&data),
        b"Subject: secret\r\n\r\n.leading dot\r\nover TLS\r\n"
    );
    let trace = String::from_utf8_lossy(&data[..data.len() - body.len()]).to_string();
    assert!(
        trace.contains(&format!("with ESMTPS (TLS1.3 {suite}) id {id}")),
        "{trace}"
    );
    let page = http(server.metrics_addr(), "GET", "/metrics").1;
    assert_eq!(
        sample(&page, "sluice_tls_handshakes_total{core=\"0\"}"),
        1.0
    );
}

#[test]
fn commands_pipelined_after_starttls_are_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let m = Material::new(dir.path(), "mx");
    let server = start_with(&m, &[]);
    let mut c = server.connect();
    assert_eq!(c.code("EHLO client.test"), 250);
    // The CVE-2011-0411 shape: plaintext commands in the same packet as
    // STARTTLS must not be executed inside the TLS session.
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\n");
    let reply = c.reply();
    assert_eq!(reply, "220 2.0.0 Ready to start TLS\r\n");
    let name = rustls::pki_types::ServerName::try_from("mx.test").unwrap();
    let conn = rustls::ClientConnection::new(m.client(), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, c.stream);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("handshake");
    }
    tls.write_all(b"NOOP\r\n").unwrap();
    let mut c = crate::support::Client::without_greeting(tls);
    // The first reply inside TLS answers our NOOP, not the injected MAIL.
    assert_eq!(c.reply(), "250 2.0.0 Ok\r\n");
    // And no transaction was opened: MAIL needs EHLO again (RFC 3207).
    assert_eq!(c.code("MAIL FROM:<a@x.test>"), 503);
}

#[test]
fn require_tls_answers_mail_in_clear_with_530() {
    let dir = tempfile::tempdir().unwrap();
    let m = Material::new(dir.path(), "mx");
    let server = start_with(&m, &["--require-tls"]);
    let mut c = server.connect();
    assert_eq!(c.code("EHLO client.test"), 250);
    assert_eq!(
        c.cmd("MAIL FROM:<a@x.test>"),
        "530 5.7.0 Must issue a STARTTLS command first\r\n"
    );
    let mut c = c.starttls(m.client());
    assert_eq!(c.code("EHLO client.test"), 250);
    let reply = c.send_mail("a@x.test", "b@y.test", b"Subject: ok\r\n\r\nok\r\n");
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
}

#[test]
fn a_failed_handshake_costs_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let m = Material::new(dir.path(), "mx");
    let server = start_with(&m, &[]);
    let mut c = server.connect();
    assert_eq!(c.code("EHLO client.test"), 250);
    assert_eq!(c.code("STARTTLS"), 220);
    c.send(b"this is not a TLS ClientHello\r\n\r\n");
    // A TLS alert record (content type 21), then the end of the stream.
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut c.stream, &mut rest).unwrap();
    assert_eq!(rest.first(), Some(&21), "{rest:?}");
    server.wait_for_log(r#"outcome="tls-failed: "#);
    // The server goes on serving.
    let mut c = server.connect().starttls(m.client());
    assert_eq!(c.code("EHLO client.test"), 250);
}

#[test]
fn bad_tls_material_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let a = Material::new(dir.path(), "a");
    let b = Material::new(dir.path(), "b");
    let (cert_a, key_a, key_b) = (
        a.cert.to_str().unwrap(),
        a.key.to_str().unwrap(),
        b.key.to_str().unwrap(),
    );
    let err = start_error(&["--tls-cert", cert_a]);
    assert!(
        err.contains("--tls-cert and --tls-key go together"),
        "{err}"
    );
    let err = start_error(&["--tls-cert", cert_a, "--tls-key", key_b]);
    assert!(err.contains("do not work together"), "{err}");
    let err = start_error(&["--tls-cert", "/nonexistent/x.crt", "--tls-key", key_a]);
    assert!(
        err.contains("--tls-cert /nonexistent/x.crt: cannot read"),
        "{err}"
    );
    let err = start_error(&["--tls-cert", key_a, "--tls-key", key_a]);
    assert!(err.contains("no CERTIFICATE block"), "{err}");
    let err = start_error(&["--tls-cert", cert_a, "--tls-key", cert_a]);
    assert!(err.contains("no usable private key"), "{err}");
    let err = start_error(&["--require-tls"]);
    assert!(err.contains("--require-tls needs --tls-cert"), "{err}");
}
