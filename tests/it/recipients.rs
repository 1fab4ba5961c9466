//! `--recipient-map` and `--recipient-delimiter` against the real binary:
//! unknown recipients refused at RCPT, a message stored for its known
//! recipients only, the map re-read on SIGHUP, dictionary attacks cut off
//! by the error limits.

use crate::support::*;

const UNKNOWN: &str =
    "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown\r\n";

fn map_file(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("recipients");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_message_to_a_known_and_an_unknown_recipient_is_stored_for_the_known_one_only() {
    let dir = tempfile::tempdir().unwrap();
    let map = map_file(
        dir.path(),
        "# who lives here\nalice@example.com\n@everyone.example\n",
    );
    let server = Server::start(&[
        "--recipient-map",
        map.to_str().unwrap(),
        "--recipient-delimiter",
        "+",
    ]);
    let mut c = server.connect();
    assert_eq!(c.code("EHLO client.test"), 250);
    assert_eq!(c.code("MAIL FROM:<sender@x.test>"), 250);
    assert_eq!(c.cmd("RCPT TO:<nobody@example.com>"), UNKNOWN);
    assert_eq!(c.code("RCPT TO:<Alice+Lists@EXAMPLE.com>"), 250);
    assert_eq!(c.code("RCPT TO:<anyone@everyone.example>"), 250);
    assert_eq!(c.code("RCPT TO:<Postmaster>"), 250, "RFC 5321 §4.5.1");
    assert_eq!(c.code("DATA"), 354);
    c.send(b"Subject: hi\r\n\r\nhello\r\n.\r\n");
    let id = queued_id(&c.reply());
    let stored = exported(&server.spool);
    assert_eq!(stored.len(), 1);
    assert_eq!(
        rcpt_to(&stored[&id].0),
        [
            "Alice+Lists@EXAMPLE.com",
            "anyone@everyone.example",
            "Postmaster"
        ]
    );
    server.wait_for_log(&format!("recipient map {}: 2 entries,", map.display()));
}

#[test]
fn sighup_rereads_the_map_and_a_broken_map_keeps_the_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let map = map_file(dir.path(), "alice@example.com\n");
    let server = Server::start(&["--recipient-map", map.to_str().unwrap()]);
    let rcpt = |to: &str| {
        let mut c = server.connect();
        assert_eq!(c.code("EHLO client.test"), 250);
        assert_eq!(c.code("MAIL FROM:<sender@x.test>"), 250);
        c.code(&format!("RCPT TO:<{to}>"))
    };
    assert_eq!(rcpt("bob@example.com"), 550);
    let mut before = server.connect();
    assert_eq!(before.code("EHLO client.test"), 250);
    std::fs::write(&map, "alice@example.com\nbob@example.com\n").unwrap();
    signal(server.child.id(), libc::SIGHUP);
    server.wait_for_log("core 0: new sessions use configuration generation 1");
    assert_eq!(rcpt("bob@example.com"), 250);
    // A session that began before the reload keeps the map it started with.
    assert_eq!(before.code("MAIL FROM:<sender@x.test>"), 250);
    assert_eq!(before.code("RCPT TO:<bob@example.com>"), 550);
    // A map with a bad line is refused; bob stays known.
    std::fs::write(&map, "alice@example.com\nthis is not an address\n").unwrap();
    signal(server.child.id(), libc::SIGHUP);
    let refused = server.wait_for_log("reload refused, the running configuration stays: ");
    assert!(refused.contains("line 2"), "{refused}");
    assert_eq!(rcpt("bob@example.com"), 250);
}

#[test]
fn guessing_recipients_is_tarpitted_and_cut_off_by_the_error_limits() {
    let dir = tempfile::tempdir().unwrap();
    let map = map_file(dir.path(), "alice@example.com\n");
    let server = Server::start(&[
        "--recipient-map",
        map.to_str().unwrap(),
        "--soft-error-limit",
        "2",
        "--error-delay",
        "0.2",
        "--hard-error-limit",
        "4",
    ]);
    let mut c = Client::over(connect_from("127.0.3.2", server.addr));
    assert_eq!(c.code("EHLO client.test"), 250);
    assert_eq!(c.code("MAIL FROM:<sender@x.test>"), 250);
    for guess in ["root", "admin", "info"] {
        assert_eq!(c.code(&format!("RCPT TO:<{guess}@example.com>")), 550);
    }
    let started = std::time::Instant::now();
    let last = c.cmd("RCPT TO:<sales@example.com>");
    assert!(started.elapsed() >= std::time::Duration::from_millis(200));
    assert!(last.starts_with("550 5.1.1 <sales@example.com>"), "{last}");
    assert_eq!(
        c.reply(),
        "421 4.7.0 Too many errors, closing connection\r\n"
    );
    assert!(c.closed());
}

#[test]
fn a_bad_map_or_delimiter_stops_the_server_at_start_up_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let bad = map_file(dir.path(), "ok@example.com\n<angle@example.com>\n");
    let e = start_error(&["--recipient-map", bad.to_str().unwrap()]);
    assert!(
        e.contains(&format!("--recipient-map: {} line 2", bad.display())),
        "{e}"
    );
    let e = start_error(&["--recipient-map", "/nonexistent/map"]);
    assert!(e.contains("/nonexistent/map: cannot read"), "{e}");
    let e = start_error(&["--recipient-delimiter", "+"]);
    assert!(
        e.contains("--recipient-delimiter only makes sense with --recipient-map"),
        "{e}"
    );
    let good = map_file(dir.path(), "a@example.com\n");
    let e = start_error(&[
        "--recipient-map",
        good.to_str().unwrap(),
        "--recipient-delimiter",
        "@",
    ]);
    assert!(e.contains("other than @ and spaces"), "{e}");
}
