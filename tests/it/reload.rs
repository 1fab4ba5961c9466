//! SIGHUP: the config file and TLS material are re-read for new sessions;
//! sessions in progress keep what they started with; a config that does
//! not validate is refused and the running one stays.

use crate::support::*;
use crate::tls::Material;

fn hup(server: &Server) {
    crate::support::signal(server.child.id(), libc::SIGHUP);
}

/// Sends SIGHUP and waits for the `nth` reload line (1-based).
fn reload(server: &Server, nth: usize) {
    hup(server);
    // The one core of a test server takes it on its next housekeeping tick.
    server.wait_for_log(&format!(
        "core 0: new sessions use configuration generation {nth}"
    ));
}

/// Whether `domain` is accepted as a recipient domain by a new session.
fn accepts(server: &Server, domain: &str) -> bool {
    let mut c = server.connect();
    assert_eq!(c.code("EHLO client.test"), 250);
    assert_eq!(c.code("MAIL FROM:<a@x.test>"), 250);
    match c.code(&format!("RCPT TO:<b@{domain}>")) {
        250 => true,
        550 => false,
        other => panic!("RCPT to {domain}: {other}"),
    }
}

#[test]
fn sighup_reloads_domains_limits_and_certificates_for_new_sessions_only() {
    let dir = tempfile::tempdir().unwrap();
    let m = Material::new(dir.path(), "mx");
    let file = dir.path().join("sluice.toml");
    let write_config = |domain: &str, recipients: u32| {
        std::fs::write(
            &file,
            format!(
                "accept-domain = [\"{domain}\"]\nmax-recipients = {recipients}\n\
                 tls-cert = {:?}\ntls-key = {:?}\n",
                m.cert, m.key
            ),
        )
        .unwrap();
    };
    write_config("old.test", 1);
    let server = Server::start(&["--config", file.to_str().unwrap()]);
    assert!(accepts(&server, "old.test"));
    assert!(!accepts(&server, "new.test"));

    // A session that starts before the reload...
    let mut before = server.connect();
    assert_eq!(before.code("EHLO client.test"), 250);

    // New domain, a higher limit, and a new certificate in the same files.
    write_config("new.test", 2);
    let renewed = Material::new(dir.path(), "renewed");
    std::fs::rename(&renewed.cert, &m.cert).unwrap();
    std::fs::rename(&renewed.key, &m.key).unwrap();
    reload(&server, 1);

    assert!(accepts(&server, "new.test"));
    assert!(!accepts(&server, "old.test"));
    let mut c = server.connect();
    assert_eq!(c.code("EHLO client.test"), 250);
    assert_eq!(c.code("MAIL FROM:<a@x.test>"), 250);
    assert_eq!(c.code("RCPT TO:<one@new.test>"), 250);
    assert_eq!(
        c.code("RCPT TO:<two@new.test>"),
        250,
        "max-recipients is now 2"
    );
    // New handshakes present the renewed certificate: a client trusting
    // only it succeeds.
    let mut tls = server.connect().starttls(renewed.client());
    assert_eq!(tls.code("EHLO client.test"), 250);

    // ...keeps its old settings and is not dropped.
    assert_eq!(before.code("MAIL FROM:<a@x.test>"), 250);
    assert_eq!(before.code("RCPT TO:<b@old.test>"), 250);
    assert_eq!(
        before.code("RCPT TO:<c@old.test>"),
        452,
        "its limit is still 1"
    );
    assert_eq!(before.code("DATA"), 354);
    before.send(b"Subject: kept\r\n\r\nkept\r\n.\r\n");
    assert!(before.reply().starts_with("250 2.0.0 Ok: queued as "));
}

#[test]
fn a_config_that_does_not_validate_is_refused_and_the_old_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    std::fs::write(&file, "accept-domain = [\"old.test\"]\n").unwrap();
    let server = Server::start(&["--config", file.to_str().unwrap()]);

    std::fs::write(
        &file,
        "accept-domain = [\"new.test\"]\nmax-recipients = 0\n",
    )
    .unwrap();
    hup(&server);
    let why = server.wait_for_log("reload refused, the running configuration stays: ");
    // The value came from the file, and the error says so.
    let named = format!("max-recipients in {} must be at least 1", file.display());
    assert!(why.contains(&named), "{why}");
    std::fs::write(&file, "accept-domain = [\"new.test\"\n").unwrap();
    hup(&server);
    server.wait_for_log("not a valid sluice config");
    assert!(accepts(&server, "old.test"));

    // Settings of the running process are kept, and the log says so.
    std::fs::write(
        &file,
        "accept-domain = [\"new.test\"]\ndurability = \"none\"\nsegment-size = \"1M\"\n",
    )
    .unwrap();
    reload(&server, 1);
    server.wait_for_log(
        "reload: durability, segment-size changed, which takes effect only after a restart",
    );
    assert!(accepts(&server, "new.test"));
    assert!(!server.log().contains("WARNING: --durability none"));
    // Still alive and serving: a clean stop.
    let mut server = server;
    assert_eq!(server.terminate(), Some(0));
}
