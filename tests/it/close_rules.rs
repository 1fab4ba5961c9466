//! RFC 5321 §3.8: a server closes a session only after QUIT or a 421
//! (or when the client went away). Every bad input a stranger can send is
//! listed here with what it must lead to: an error reply and a session
//! that goes on, or a 421 and the close. Each case runs from its own
//! loopback address, so the per-client limits of one do not touch another.
//!
//! Closes that are not in the table, and why they follow the rule too:
//! the end of the grace period at shutdown (421 4.3.2, `lifecycle`), a
//! DNS-listed client (554 greeting, then 503 to everything until QUIT,
//! `dnsbl`), a bad PROXY header and a failed TLS handshake (no SMTP was
//! spoken on that layer yet, so there is nothing a reply could go over:
//! `proxy`, `tls`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;

/// What a bad input must lead to.
#[derive(Clone, Copy, Debug)]
enum After {
    /// This error reply, then the session goes on: the QUIT sent after the
    /// input gets 221.
    Continues(&'static str),
    /// The session is closed, and the last reply before the close starts
    /// with this 421.
    Closed(&'static str),
}

struct Case {
    name: &'static str,
    /// Sent after the greeting (before it, for the early talker).
    input: Vec<u8>,
    after: After,
}

fn case(name: &'static str, input: impl Into<Vec<u8>>, after: After) -> Case {
    Case {
        name,
        input: input.into(),
        after,
    }
}

const TRANSACTION: &[u8] = b"EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n";

fn in_transaction(rest: &[u8]) -> Vec<u8> {
    [TRANSACTION, rest].concat()
}

fn table() -> Vec<Case> {
    use After::*;
    let long_line = [vec![b'A'; 600], b"\r\n".to_vec()].concat();
    let big_body = [
        &b"EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"[..],
        &vec![b'x'; 998],
        b"\r\n",
        &vec![b'y'; 998],
        b"\r\n.\r\n",
    ]
    .concat();
    vec![
        case(
            "binary garbage",
            &b"\x00\xff\xfe\x1b[2J\r\n"[..],
            Continues("501 5.5.4"),
        ),
        case(
            "unknown verb",
            &b"FROB nicate\r\n"[..],
            Continues("500 5.5.2"),
        ),
        case("line over 512 octets", long_line, Continues("500 5.5.2")),
        case(
            "command ending in a bare LF",
            &b"NOOP\n"[..],
            Continues("500 5.5.2"),
        ),
        case(
            "malformed BDAT and its chunk",
            in_transaction(b"BDAT many LAST\r\nhello\r\n"),
            Continues("501 5.5.4"),
        ),
        case(
            "BDAT without a transaction",
            &b"BDAT 5 LAST\r\nhello"[..],
            Continues("503 5.5.1"),
        ),
        case(
            "malformed path",
            &b"EHLO c\r\nMAIL FROM:<<a>>\r\n"[..],
            Continues("501 5.5.4"),
        ),
        case(
            "unknown MAIL parameter",
            &b"EHLO c\r\nMAIL FROM:<a@x.test> FROB=1\r\n"[..],
            Continues("555 5.5.4"),
        ),
        case(
            "SIZE over the limit",
            &b"EHLO c\r\nMAIL FROM:<a@x.test> SIZE=99999999999\r\n"[..],
            Continues("552 5.3.4"),
        ),
        case(
            "RCPT before MAIL",
            &b"EHLO c\r\nRCPT TO:<b@y.test>\r\n"[..],
            Continues("503 5.5.1"),
        ),
        case(
            "DATA before RCPT",
            &b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nDATA\r\n"[..],
            Continues("503 5.5.1"),
        ),
        case(
            "STARTTLS without TLS",
            &b"EHLO c\r\nSTARTTLS\r\n"[..],
            Continues("502 5.5.1"),
        ),
        case(
            "message over the size limit",
            big_body,
            Continues("552 5.3.4"),
        ),
        case(
            "bare LF inside DATA",
            in_transaction(b"DATA\r\nSubject: x\n\r\n.\r\n"),
            Continues("550 5.6.0"),
        ),
        case(
            "pipelining flood of errors",
            b"FROB\r\n".repeat(50),
            Closed("421 4.7.0 Too many errors"),
        ),
        case(
            "silence after the greeting",
            Vec::new(),
            Closed("421 4.4.2"),
        ),
        case(
            "silence after a command",
            &b"EHLO c\r\n"[..],
            Closed("421 4.4.2"),
        ),
        case(
            "half a body, then silence",
            in_transaction(b"DATA\r\nSubject: half\r\n\r\nand then noth"),
            Closed("421 4.4.2"),
        ),
        case(
            "a huge BDAT announcement, then silence",
            in_transaction(b"BDAT 99999999999 LAST\r\nshort"),
            Closed("421 4.4.2"),
        ),
        case(
            "half a BDAT chunk, then silence",
            in_transaction(b"BDAT 100 LAST\r\nonly a few"),
            Closed("421 4.4.2"),
        ),
    ]
}

const FLAGS: &[&str] = &[
    "--idle-timeout",
    "2",
    "--data-timeout",
    "2",
    "--max-message-size",
    "1K",
    "--soft-error-limit",
    "0",
    "--hard-error-limit",
    "10",
    "--client-connection-limit",
    "2",
];

/// Everything the server sends until it closes (or 30 s pass).
fn read_to_close(mut s: TcpStream) -> (String, bool) {
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            // A reset after the last reply still counts as the close.
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), false)
}

/// The last reply line before the close.
fn last_line(transcript: &str) -> &str {
    transcript.lines().last().unwrap_or("")
}

fn run(server: &Server, from: &str, c: &Case) {
    let mut s = connect_from(from, server.addr);
    s.write_all(&c.input).unwrap();
    if let After::Continues(_) = c.after {
        s.write_all(b"QUIT\r\n").unwrap();
    }
    let (transcript, closed) = read_to_close(s);
    let name = c.name;
    assert!(closed, "{name}: the server did not close: {transcript:?}");
    assert!(transcript.starts_with("220 "), "{name}: {transcript:?}");
    let last = last_line(&transcript);
    match c.after {
        After::Continues(error) => {
            assert!(
                transcript.lines().any(|l| l.starts_with(error)),
                "{name}: no {error} in {transcript:?}"
            );
            assert!(last.starts_with("221 "), "{name}: ended {last:?}");
        }
        After::Closed(goodbye) => {
            assert!(last.starts_with(goodbye), "{name}: ended {last:?}");
        }
    }
}

#[test]
fn every_bad_input_leads_to_a_reply_and_every_close_follows_quit_or_a_421() {
    let server = Server::start(FLAGS);
    let cases = table();
    std::thread::scope(|scope| {
        for (i, c) in cases.iter().enumerate() {
            let server = &server;
            scope.spawn(move || run(server, &format!("127.0.1.{}", i + 2), c));
        }
    });
    // Nothing in the table completes a message: nothing is stored.
    assert_eq!(exported(&server.spool).len(), 0);
    let log = server.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_client_over_its_connection_limit_gets_421_before_the_close() {
    let server = Server::start(FLAGS);
    let held: Vec<Client> = (0..2)
        .map(|_| Client::over(connect_from("127.0.2.2", server.addr)))
        .collect();
    let (transcript, closed) = read_to_close(connect_from("127.0.2.2", server.addr));
    assert!(closed);
    assert_eq!(
        transcript,
        "421 4.7.0 Too many connections from your address, try again later\r\n"
    );
    drop(held);
}

#[test]
fn an_early_talker_gets_554_then_421_and_nothing_it_sent_is_processed() {
    let server = Server::start(&["--greet-pause", "1"]);
    let mut s = connect_from("127.0.2.3", server.addr);
    s.write_all(
        b"EHLO bot.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nhi\r\n.\r\n",
    )
    .unwrap();
    let (transcript, closed) = read_to_close(s);
    assert!(closed);
    let lines: Vec<&str> = transcript.lines().collect();
    assert_eq!(lines.len(), 2, "{transcript:?}");
    assert!(lines[0].starts_with("554 5.5.1 "), "{transcript:?}");
    assert!(lines[1].starts_with("421 4.7.0 "), "{transcript:?}");
    assert_eq!(exported(&server.spool).len(), 0);
}

#[test]
fn a_client_that_leaves_mid_message_stores_nothing() {
    let server = Server::start(FLAGS);
    for (i, rest) in [
        &b"DATA\r\nSubject: gone\r\n\r\nhalf a bo"[..],
        b"BDAT 100 LAST\r\nhalf a chunk",
        b"BDAT 5\r\nfirstBDAT 100 LAST\r\nsecond",
    ]
    .into_iter()
    .enumerate()
    {
        let mut s = connect_from(&format!("127.0.2.{}", 10 + i), server.addr);
        s.write_all(&in_transaction(rest)).unwrap();
        let mut c = Client::over(s);
        for _ in 0..3 {
            assert_eq!(code_of(&c.reply()), 250);
        }
        if rest.starts_with(b"DATA") {
            assert!(c.reply().starts_with("354 "));
        }
        drop(c);
    }
    for i in 0..3 {
        let end = server.wait_for_log(&format!("peer=127.0.2.{}:", 10 + i));
        assert!(end.ends_with("outcome=disconnected"), "{end}");
    }
    assert_eq!(exported(&server.spool).len(), 0);
}

#[test]
fn a_client_that_never_reads_its_replies_is_let_go_after_the_idle_timeout() {
    let server = Server::start(FLAGS);
    let mut s = connect_from("127.0.2.20", server.addr);
    s.set_nonblocking(true).unwrap();
    // Commands until neither the server nor the socket buffers take more:
    // the server's replies pile up unread.
    let flood = b"NOOP\r\n".repeat(10_000);
    // Until the server lets go (a reset) or 10 s pass.
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        match s.write(&flood) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(_) => break,
        }
    }
    // The idle timeout (2 s) applies to the blocked write too.
    let end = server.wait_for_log("peer=127.0.2.20:");
    assert!(end.ends_with("outcome=write-timeout"), "{end}");
    // The slot is free again: the client limit (2) counts it no more.
    let a = Client::over(connect_from("127.0.2.20", server.addr));
    let b = Client::over(connect_from("127.0.2.20", server.addr));
    drop((a, b, s));
}
