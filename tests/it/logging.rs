//! The log as a reader sees it: every line of `--log-format json` parsed,
//! the `session`, `stored` and `refused` events with their fields; the
//! text format's lines; readiness, reload and stop told to a service
//! manager over `NOTIFY_SOCKET` (the sd_notify protocol systemd speaks).

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{queued_id, signal, Server, BIN};

/// One session: a recipient outside `--accept-domain` (refused), one
/// accepted, a message; returns its queue id and stored size.
fn a_session(server: &Server) -> String {
    let mut c = server.connect();
    assert_eq!(c.code("EHLO client.test"), 250);
    assert_eq!(c.code("MAIL FROM:<alice@example.org>"), 250);
    let refused = c.cmd("RCPT TO:<eve@elsewhere.test>");
    assert!(refused.starts_with("550 5.7.1 "), "{refused}");
    assert_eq!(c.code("RCPT TO:<bob@example.com>"), 250);
    assert_eq!(c.code("DATA"), 354);
    c.send(b"Subject: logged\r\n\r\nhello\r\n.\r\n");
    let id = queued_id(&c.reply());
    assert_eq!(c.code("QUIT"), 221);
    assert!(c.closed());
    id
}

#[test]
fn every_json_line_parses_and_the_events_carry_their_fields() {
    let mut server = Server::start(&["--log-format", "json", "--accept-domain", "example.com"]);
    let id = a_session(&server);
    server.wait_for_log("\"event\":\"session\"");
    assert_eq!(server.terminate(), Some(0));
    let log = server.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    for line in &lines {
        for key in ["timestamp", "level", "message", "target"] {
            assert!(line.get(key).is_some(), "no {key} in {line}");
        }
    }
    let event = |name: &str| -> &Value {
        let found: Vec<&Value> = lines.iter().filter(|l| l["event"] == name).collect();
        assert_eq!(found.len(), 1, "one {name} event in\n{log}");
        found[0]
    };

    let stored = event("stored");
    assert_eq!(stored["level"], "INFO");
    assert_eq!(stored["core"], 0);
    assert_eq!(stored["queue_id"], id.as_str());
    assert_eq!(stored["client"], "127.0.0.1");
    assert_eq!(stored["from"], "alice@example.org");
    assert_eq!(stored["rcpts"], 1);
    let size = stored["size"].as_u64().expect("size is a number");
    let exported = crate::support::exported(&server.spool);
    assert_eq!(
        exported[&id].1.len() as u64,
        size,
        "size is what was stored"
    );
    let latency = stored["latency_us"]
        .as_u64()
        .expect("latency_us is a number");
    assert!(latency < 20_000_000, "{latency}");

    let refused = event("refused");
    assert_eq!(refused["code"], 550);
    assert_eq!(refused["reason"], "rcpt");
    assert_eq!(refused["client"], "127.0.0.1");
    assert_eq!(refused["command"], "RCPT TO:<eve@elsewhere.test>");
    assert_eq!(refused["from"], "alice@example.org");
    let sentence = refused["message"].as_str().unwrap();
    assert!(
        sentence.starts_with("refused (rcpt): 127.0.0.1: 550 5.7.1 "),
        "{sentence}"
    );

    let session = event("session");
    assert!(
        session["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{session}"
    );
    assert_eq!(session["via"], "");
    assert_eq!(session["listener"], "smtp");
    assert_eq!(session["helo"], "client.test");
    assert_eq!(session["tls"], "");
    assert_eq!(session["auth"], "");
    assert_eq!(session["messages"], 1);
    assert_eq!(session["bytes"], size);
    assert_eq!(session["outcome"], "quit");

    assert!(lines.iter().any(|l| l["message"] == "stopped"), "{log}");
}

#[test]
fn text_lines_keep_the_sentence_and_add_the_fields() {
    let server = Server::start(&["--accept-domain", "example.com"]);
    let id = a_session(&server);
    let stored = server.wait_for_log(&format!("sluice: core 0: stored queue_id={id} "));
    assert!(
        stored.starts_with("client=127.0.0.1 from=alice@example.org rcpts=1 size="),
        "{stored}"
    );
    let refused = server.wait_for_log("sluice: core 0: refused (rcpt): 127.0.0.1: 550 5.7.1 ");
    assert!(
        refused.ends_with(
            r#"code=550 reason=rcpt client=127.0.0.1 command="RCPT TO:<eve@elsewhere.test>" from=alice@example.org"#
        ),
        "{refused}"
    );
    let session = server.wait_for_log("sluice: core 0: session peer=127.0.0.1:");
    assert!(
        session.contains(" listener=smtp helo=client.test messages=1 bytes=")
            && session.ends_with(" outcome=quit"),
        "{session}"
    );
}

#[test]
fn a_bad_rust_log_stops_start_up_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--spool"])
        .arg(dir.path().join("s"))
        .env("RUST_LOG", "sluice=[nonsense")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("sluice: error: RUST_LOG=\"sluice=[nonsense\": "),
        "{err}"
    );
}

#[test]
fn rust_log_overrides_the_level_for_one_module() {
    // The connection module's events are held back to warnings; the
    // rest of sluice::server still logs at info (its ready line, which
    // the harness waits for, and the core's stop line).
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let mut cmd = Server::command(&spool, &[]);
    cmd.env(
        "RUST_LOG",
        "warn,sluice::server=info,sluice::server::connection=warn",
    );
    let mut server = Server::spawn(cmd, &spool);
    let mut c = server.connect();
    let id = queued_id(&c.send_mail("a@x.test", "b@y.test", b"hi\r\n"));
    assert_eq!(c.code("QUIT"), 221);
    assert!(c.closed());
    // A stop writes every line the core held: the log is complete.
    assert_eq!(server.terminate(), Some(0));
    let log = server.log();
    assert!(log.contains("ready: listening on"), "{log}");
    assert!(
        log.contains("sluice: core 0: stopped: 1 connections, 1 messages"),
        "{log}"
    );
    assert!(
        !log.contains(&id) && !log.contains("session peer="),
        "{log}"
    );
}

/// A service manager's end of `NOTIFY_SOCKET`.
struct Manager {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Manager {
    fn new() -> Manager {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Manager {
            socket,
            _dir: dir,
            path,
        }
    }

    /// The next notification, as its lines.
    fn next(&self) -> Vec<String> {
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).expect("a notification in 20 s");
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

#[test]
fn readiness_reload_and_stop_are_told_over_notify_socket() {
    let manager = Manager::new();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let mut cmd = Server::command(&spool, &[]);
    cmd.env("NOTIFY_SOCKET", &manager.path);
    let mut server = Server::spawn(cmd, &spool);
    let ready = manager.next();
    assert_eq!(ready[0], "READY=1", "{ready:?}");
    // Ready means listening: a session works at once.
    let mut c = server.connect();
    assert_eq!(c.code("QUIT"), 221);

    signal(server.child.id(), libc::SIGHUP);
    let reloading = manager.next();
    assert_eq!(reloading[0], "RELOADING=1", "{reloading:?}");
    assert!(
        reloading.iter().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading:?}"
    );
    let reloaded = manager.next();
    assert_eq!(reloaded[0], "READY=1", "{reloaded:?}");
    server.wait_for_log("reloaded the configuration (generation 1)");

    signal(server.child.id(), libc::SIGTERM);
    let stopping = manager.next();
    assert_eq!(stopping[0], "STOPPING=1", "{stopping:?}");
    assert_eq!(server.wait(Duration::from_secs(30)), Some(0));
}
