use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn idle_timeout_gets_421_and_close() {
    let s = Server::start(&["--idle-timeout", "1"]);
    let mut c = s.connect();
    c.code("EHLO client.test");
    let t = Instant::now();
    let reply = c.reply();
    assert!(reply.starts_with("421 4.4.2 "), "{reply}");
    assert!(t.elapsed() >= Duration::from_millis(900));
    assert!(c.closed());
}

#[test]
fn graceful_shutdown_answers_idle_sessions_and_finishes_transactions() {
    let mut s = Server::start(&[]);
    let mut idle = s.connect();
    idle.code("EHLO client.test");
    let mut busy = s.connect();
    busy.open_data();
    busy.send(b"Subject: in flight\r\n\r\nhalf");
    crate::support::signal(s.child.id(), libc::SIGTERM);
    let reply = idle.reply();
    assert!(reply.starts_with("421 4.3.2 "), "{reply}");
    assert!(idle.closed());
    // The transaction in flight may finish and gets its 250.
    busy.send(b" and the rest\r\n.\r\n");
    let id = queued_id(&busy.reply());
    let after = busy.reply();
    assert!(after.starts_with("421 4.3.2 "), "{after}");
    assert_eq!(s.wait(Duration::from_secs(20)), Some(0));
    assert!(s.log().contains("sluice: stopped"));
    let stored = exported(&s.spool);
    assert_eq!(
        without_trace(&stored[&id].1),
        b"Subject: in flight\r\n\r\nhalf and the rest\r\n"
    );
    assert!(
        std::net::TcpStream::connect(s.addr).is_err(),
        "no longer accepting"
    );
}

#[test]
fn after_the_grace_period_a_transaction_still_open_gets_421_not_a_silent_close() {
    let mut s = Server::start(&["--shutdown-grace", "1"]);
    let mut in_data = s.connect();
    in_data.open_data();
    in_data.send(b"Subject: never finished\r\n\r\nhalf");
    let mut between_chunks = s.connect();
    assert_eq!(between_chunks.code("EHLO client.test"), 250);
    assert_eq!(between_chunks.code("MAIL FROM:<a@x.test>"), 250);
    assert_eq!(between_chunks.code("RCPT TO:<b@y.test>"), 250);
    between_chunks.send(b"BDAT 4\r\nhalf");
    assert!(between_chunks.reply().starts_with("250 "));
    crate::support::signal(s.child.id(), libc::SIGTERM);
    for c in [&mut in_data, &mut between_chunks] {
        let reply = c.reply();
        assert!(reply.starts_with("421 4.3.2 "), "{reply}");
        assert!(c.closed());
    }
    assert_eq!(s.wait(Duration::from_secs(20)), Some(0));
    assert!(s
        .log()
        .contains("grace period over, closing 2 connection(s) with 421"));
    assert!(exported(&s.spool).is_empty(), "nothing half-stored");
}

#[test]
fn connections_over_the_limit_get_421() {
    let s = Server::start(&["--max-connections", "2"]);
    let _a = s.connect();
    let _b = s.connect();
    let mut c = std::net::TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = String::new();
    use std::io::Read;
    c.read_to_string(&mut buf).unwrap();
    assert!(buf.starts_with("421 4.7.0 "), "{buf}");
}

#[test]
fn operator_mistakes_are_clear_errors_at_start_up() {
    assert!(start_error(&["--listen", "nonsense"]).contains("--listen \"nonsense\""));
    assert!(start_error(&["--listen", "0.0.0.0:0"]).contains("open relay"));
    assert!(start_error(&["--max-message-size", "12Q"]).contains("unknown unit"));
    assert!(start_error(&["--cores", "0-99"]).contains("not online"));
    assert!(start_error(&["--max-recipients", "0"]).contains("at least 1"));
    assert!(start_error(&["--config", "/nonexistent/sluice.toml"]).contains("cannot read"));
    assert!(start_error(&["--durability", "maybe"]).contains("maybe"));
}

#[test]
fn config_file_is_read_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    std::fs::write(&file, "max-recipients = 1\nhostname = \"from-file.test\"\n").unwrap();
    let s = Server::start(&["--config", file.to_str().unwrap()]);
    let mut c = s.connect();
    assert!(
        c.cmd("EHLO client.test").starts_with("250-mx.test"),
        "--hostname flag wins"
    );
    c.code("MAIL FROM:<a@x.test>");
    assert_eq!(c.code("RCPT TO:<b@y.test>"), 250);
    assert_eq!(
        c.code("RCPT TO:<c@y.test>"),
        452,
        "max-recipients from the file"
    );
}

#[test]
fn a_flag_switches_off_a_boolean_the_file_turns_on() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    std::fs::write(&file, "proxy-protocol = true\n").unwrap();
    let config = file.to_str().unwrap();
    // With the file alone, the server waits for a PROXY header: a client
    // that sends nothing gets no greeting.
    let with_proxy = Server::start(&["--config", config]);
    let mut silent = std::net::TcpStream::connect(with_proxy.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 64];
    use std::io::Read;
    assert!(
        silent.read(&mut buf).is_err(),
        "no greeting before a PROXY header"
    );
    // The flag wins: a plain SMTP client is greeted and served.
    let without = Server::start(&["--config", config, "--proxy-protocol=false"]);
    let mut c = without.connect();
    assert_eq!(c.code("EHLO client.test"), 250);
}

#[test]
fn a_bad_value_in_the_config_file_names_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    std::fs::write(&file, "max-recipients = \"x\"\n").unwrap();
    let err = start_error(&["--config", file.to_str().unwrap()]);
    let want = format!(
        "max-recipients in {}: expected a whole number",
        file.display()
    );
    assert!(err.contains(&want), "{err}");
}

#[test]
fn durability_none_warns_loudly() {
    let s = Server::start(&["--durability", "none"]);
    s.wait_for_log("WARNING: --durability none");
}

#[test]
fn data_phase_timeout_gets_421_and_nothing_is_stored() {
    let s = Server::start(&["--data-timeout", "1"]);
    let mut c = s.connect();
    c.open_data();
    c.send(b"Subject: stalled\r\n\r\nhalf a mess");
    let reply = c.reply();
    assert!(reply.starts_with("421 4.4.2 "), "{reply}");
    assert!(c.closed());
    assert!(exported(&s.spool).is_empty());
}

#[test]
fn a_client_that_never_reads_replies_gets_backpressure_not_memory() {
    use std::io::Write;
    let s = Server::start(&[]);
    let mut c = s.connect();
    c.stream.set_nonblocking(true).unwrap();
    let before = proc_status_kib(s.child.id(), "VmRSS");
    let noops = b"NOOP\r\n".repeat(10_000);
    let mut sent = 0usize;
    let until = Instant::now() + Duration::from_secs(5);
    // Keep writing without reading until the server stops reading too.
    while Instant::now() < until && sent < 200 << 20 {
        match c.stream.write(&noops) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("{e}"),
        }
    }
    let grown = proc_status_kib(s.child.id(), "VmRSS").saturating_sub(before);
    assert!(
        sent < 200 << 20,
        "the server kept reading {sent} bytes of commands whose replies nobody read"
    );
    assert!(grown < 16 * 1024, "server RSS grew by {grown} KiB");
    // The connection still works once the client reads.
    c.stream.set_nonblocking(false).unwrap();
    assert_eq!(c.reply(), "250 2.0.0 Ok\r\n");
}
