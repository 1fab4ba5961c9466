//! Admission control against the real binary, with clients on distinct
//! loopback addresses (127.0.0.2, 127.0.0.3, …): per-client connection
//! limits and rates across two cores, trusted networks, PROXY-derived
//! clients, error limits and the tarpit, the greet pause, reloads.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;

/// A session from `from`, its greeting read (whatever it is).
fn open_from(server: &Server, from: &str) -> (Client, String) {
    let stream = connect_from(from, server.addr);
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut c = Client::without_greeting(stream);
    let greeting = c.reply();
    (c, greeting)
}

/// A greeted session from `from`.
fn greeted(server: &Server, from: &str) -> Client {
    let (c, greeting) = open_from(server, from);
    assert!(greeting.starts_with("220 "), "{from}: {greeting}");
    c
}

/// Asserts that a new session from `from` is refused with `reply` and
/// closed.
fn refused(server: &Server, from: &str, reply: &str) {
    let (mut c, greeting) = open_from(server, from);
    assert_eq!(greeting, reply, "{from}");
    assert!(c.closed(), "{from}: closed after the refusal");
}

const TOO_MANY: &str = "421 4.7.0 Too many connections from your address, try again later\r\n";
const TOO_FAST: &str = "421 4.7.0 Too many new connections from your address, try again later\r\n";

/// The node's total of `sluice_refusals_total` for `reason`.
fn refusals(server: &Server, reason: &str) -> f64 {
    let (_, page) = http(server.metrics_addr(), "GET", "/metrics");
    let labels = format!("reason=\"{reason}\"");
    node_total(&page, "sluice_refusals_total", &labels, 2)
}

/// Retries `check` for a few seconds: a client's close reaches the
/// server a moment after the client's side returns.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < until, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_connection_limit_counts_one_client_across_cores_and_no_other() {
    let server = Server::start(&[
        "--cores",
        "2",
        "--client-connection-limit",
        "3",
        "--metrics",
        "127.0.0.1:0",
    ]);
    // Enough connections that both cores (SO_REUSEPORT) get some.
    let mut held: Vec<Client> = (0..3).map(|_| greeted(&server, "127.0.0.2")).collect();
    refused(&server, "127.0.0.2", TOO_MANY);
    refused(&server, "127.0.0.2", TOO_MANY);
    // Another client, and the trusted host, are not affected.
    let others: Vec<Client> = (0..3).map(|_| greeted(&server, "127.0.0.3")).collect();
    let trusted: Vec<Client> = (0..5).map(|_| greeted(&server, "127.0.0.1")).collect();
    assert_eq!(refusals(&server, "client_connection_limit"), 2.0);
    // One closes: there is room for exactly one more.
    let mut leaving = held.pop().unwrap();
    assert_eq!(leaving.code("QUIT"), 221);
    drop(leaving);
    eventually("a slot frees up after QUIT", || {
        let (c, greeting) = open_from(&server, "127.0.0.2");
        if greeting.starts_with("220 ") {
            held.push(c);
            true
        } else {
            false
        }
    });
    refused(&server, "127.0.0.2", TOO_MANY);
    server.wait_for_log(
        "refused (client_connection_limit): 127.0.0.2: over --client-connection-limit 3",
    );
    drop((others, trusted));
}

#[test]
fn the_connection_rate_refuses_the_connection_over_the_burst() {
    let server = Server::start(&["--cores", "2", "--client-connection-rate", "3"]);
    for _ in 0..3 {
        let mut c = greeted(&server, "127.0.0.4");
        assert_eq!(c.code("QUIT"), 221);
    }
    refused(&server, "127.0.0.4", TOO_FAST);
    greeted(&server, "127.0.0.5");
    // Over the limit the client stays refused: a refused connection does
    // not take a token, but none has come back either (one per 20 s).
    refused(&server, "127.0.0.4", TOO_FAST);
}

#[test]
fn message_and_recipient_rates_hold_across_sessions_and_cores() {
    let server = Server::start(&[
        "--cores",
        "2",
        "--client-message-rate",
        "2",
        "--client-recipient-rate",
        "3",
    ]);
    let mut c = greeted(&server, "127.0.0.6");
    assert_eq!(c.code("EHLO client.test"), 250);
    assert_eq!(c.code("MAIL FROM:<a@x.test>"), 250);
    for n in 0..3 {
        assert_eq!(c.code(&format!("RCPT TO:<r{n}@y.test>")), 250);
    }
    assert_eq!(
        c.cmd("RCPT TO:<r3@y.test>"),
        "451 4.7.1 Too many recipients from your address, try again later\r\n"
    );
    assert_eq!(c.code("RSET"), 250);
    // The second message in another session (maybe on the other core).
    let mut d = greeted(&server, "127.0.0.6");
    assert_eq!(d.code("EHLO client.test"), 250);
    assert_eq!(d.code("MAIL FROM:<a@x.test>"), 250);
    assert_eq!(
        d.code("RCPT TO:<r@y.test>"),
        451,
        "the recipient rate is the client's"
    );
    assert_eq!(d.code("RSET"), 250);
    assert_eq!(
        d.cmd("MAIL FROM:<a@x.test>"),
        "451 4.7.1 Too many messages from your address, try again later\r\n"
    );
    // Another client is not affected.
    let mut e = greeted(&server, "127.0.0.7");
    let reply = e.send_mail("a@x.test", "b@y.test", b"Subject: x\r\n\r\nhi\r\n");
    assert!(reply.starts_with("250 "), "{reply}");
}

#[test]
fn trusted_networks_are_exempt_and_replace_the_default() {
    let server = Server::start(&[
        "--client-connection-limit",
        "1",
        "--client-message-rate",
        "1",
        "--trusted-network",
        "127.0.0.8/32",
    ]);
    let trusted: Vec<Client> = (0..3).map(|_| greeted(&server, "127.0.0.8")).collect();
    let mut c = greeted(&server, "127.0.0.8");
    for _ in 0..3 {
        let reply = c.send_mail("a@x.test", "b@y.test", b"Subject: x\r\n\r\nhi\r\n");
        assert!(reply.starts_with("250 "), "{reply}");
    }
    // 127.0.0.1 is no longer trusted once the flag is given.
    let _first = greeted(&server, "127.0.0.1");
    refused(&server, "127.0.0.1", TOO_MANY);
    drop(trusted);
}

#[test]
fn clients_behind_a_proxy_header_are_limited_by_the_address_it_names() {
    let server = Server::start(&["--proxy-protocol", "--client-connection-limit", "1"]);
    let via_proxy = |client: &str| {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(s, "PROXY TCP4 {client} 192.0.2.1 40000 25\r\n").unwrap();
        let mut c = Client::without_greeting(s);
        let greeting = c.reply();
        (c, greeting)
    };
    let (_first, greeting) = via_proxy("192.0.2.7");
    assert!(greeting.starts_with("220 "), "{greeting}");
    let (mut second, greeting) = via_proxy("192.0.2.7");
    assert_eq!(greeting, TOO_MANY);
    assert!(second.closed());
    let (_other, greeting) = via_proxy("192.0.2.8");
    assert!(greeting.starts_with("220 "), "another client: {greeting}");
}

/// Sends `line` and returns the reply and how long it took.
fn timed(c: &mut Client, line: &str) -> (String, Duration) {
    let t = Instant::now();
    let reply = c.cmd(line);
    (reply, t.elapsed())
}

#[test]
fn past_the_soft_limit_replies_wait_and_the_hard_limit_closes_with_421() {
    let server = Server::start(&[
        "--soft-error-limit",
        "2",
        "--hard-error-limit",
        "4",
        "--error-delay",
        "0.6",
    ]);
    let delay = Duration::from_millis(600);
    let mut c = greeted(&server, "127.0.0.9");
    for _ in 0..2 {
        let (reply, took) = timed(&mut c, "FOO");
        assert!(reply.starts_with("500 "), "{reply}");
        assert!(took < delay, "before the soft limit: {took:?}");
    }
    // Every reply now waits, a success too.
    let (reply, took) = timed(&mut c, "NOOP");
    assert!(
        reply.starts_with("250 ") && took >= delay,
        "{reply} after {took:?}"
    );
    let (reply, took) = timed(&mut c, "FOO");
    assert!(
        reply.starts_with("500 ") && took >= delay,
        "{reply} after {took:?}"
    );
    // The fourth error is the last.
    let (reply, _) = timed(&mut c, "BAR");
    assert_eq!(reply, "500 5.5.2 Syntax error, command unrecognized\r\n");
    assert_eq!(
        c.reply(),
        "421 4.7.0 Too many errors, closing connection\r\n"
    );
    assert!(c.closed());
    server.wait_for_log(r#"outcome="refused: hard_error_limit""#);
}

#[test]
fn an_accepted_message_resets_both_error_counts() {
    let server = Server::start(&[
        "--soft-error-limit",
        "2",
        "--hard-error-limit",
        "3",
        "--error-delay",
        "0.6",
    ]);
    let mut c = greeted(&server, "127.0.0.10");
    assert_eq!(c.code("FOO"), 500);
    assert_eq!(c.code("FOO"), 500);
    let reply = c.send_mail("a@x.test", "b@y.test", b"Subject: x\r\n\r\nhi\r\n");
    assert!(reply.starts_with("250 "), "{reply}");
    let (reply, took) = timed(&mut c, "FOO");
    assert!(reply.starts_with("500 "), "{reply}");
    assert!(
        took < Duration::from_millis(600),
        "no delay after a message: {took:?}"
    );
    assert_eq!(c.code("FOO"), 500);
    // Two errors since the message: the session goes on.
    assert_eq!(c.code("NOOP"), 250);
}

#[test]
fn an_early_talker_is_refused_and_its_pipelined_transaction_not_stored() {
    let server = Server::start(&["--greet-pause", "1"]);
    let mut s = connect_from("127.0.0.11", server.addr);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // A bot: the whole transaction at once, without waiting for the 220.
    s.write_all(
        b"EHLO bot.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n\
          Subject: spam\r\n\r\nbuy\r\n.\r\nQUIT\r\n",
    )
    .unwrap();
    let mut c = Client::without_greeting(s);
    assert_eq!(
        c.reply(),
        "554 5.5.1 Protocol error: you talked before the greeting\r\n"
    );
    assert_eq!(
        c.reply(),
        "421 4.7.0 Closing connection: commands sent before the greeting are not processed\r\n"
    );
    assert!(c.closed());
    // A polite client waits for the 220 and is served.
    let t = Instant::now();
    let mut polite = greeted(&server, "127.0.0.12");
    assert!(t.elapsed() >= Duration::from_secs(1), "the greeting waited");
    let reply = polite.send_mail("a@x.test", "b@y.test", b"Subject: ok\r\n\r\nhi\r\n");
    assert!(reply.starts_with("250 "), "{reply}");
    // The trusted host is not paused: it may even pipeline before the 220.
    let mut t = TcpStream::connect(server.addr).unwrap();
    t.write_all(b"NOOP\r\n").unwrap();
    let mut trusted = Client::over(t);
    assert_eq!(trusted.reply(), "250 2.0.0 Ok\r\n");
    let stored = exported(&server.spool);
    assert_eq!(stored.len(), 1, "only the polite client's message");
    server.wait_for_log("refused (early_talker): 127.0.0.11");
}

#[test]
fn limits_reload_on_sighup_for_new_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    std::fs::write(&file, "client-connection-limit = 1\n").unwrap();
    let server = Server::start(&["--config", file.to_str().unwrap()]);
    let _one = greeted(&server, "127.0.0.13");
    refused(&server, "127.0.0.13", TOO_MANY);
    std::fs::write(&file, "client-connection-limit = 2\nerror-delay = 0.5\n").unwrap();
    signal(server.child.id(), libc::SIGHUP);
    server.wait_for_log("new sessions use configuration generation 1");
    let _two = greeted(&server, "127.0.0.13");
    refused(&server, "127.0.0.13", TOO_MANY);
}

#[test]
fn admission_mistakes_stop_start_up() {
    for (args, says) in [
        (
            &["--trusted-network", "10.0.0.0/33"][..],
            "--trusted-network \"10.0.0.0/33\"",
        ),
        (
            &["--client-connection-limit", "x"][..],
            "--client-connection-limit",
        ),
        (
            &["--error-delay", "2m"][..],
            "--error-delay must be at most 60 seconds",
        ),
        (
            &["--dns-server", "127.0.0.1"][..],
            "--dns-server only makes sense with --dnsbl",
        ),
        (
            &[
                "--dnsbl",
                "bl.test",
                "--dnsbl-threshold",
                "0",
                "--dns-server",
                "127.0.0.1",
            ][..],
            "--dnsbl-threshold must be at least 1",
        ),
        (
            &["--dnsbl", "bl.test=1.2.3", "--dns-server", "127.0.0.1"][..],
            "the filter",
        ),
    ] {
        let err = start_error(args);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
