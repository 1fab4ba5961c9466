//! `--policy-service` against real policy servers from Debian, started on
//! loopback with private settings: postgrey (greylisting: 450 first, then
//! accepted with its X-Greylist header) and postfwd (REJECT, DEFER, a
//! numeric reply, PREPEND, DISCARD, at RCPT and at END-OF-MESSAGE); and
//! against services that misbehave (down, silent, answering nonsense),
//! which get `--policy-default`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

/// A peer process, stopped when dropped.
struct Peer {
    child: Option<Child>,
    /// For a daemon that forks away: its pid file.
    pid_file: Option<std::path::PathBuf>,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(pid) = self
            .pid_file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            // SAFETY: kill(2) with a pid we read and a signal number.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

/// A private directory any user may write (the daemons drop to nobody).
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

fn postgrey(delay: u32) -> Option<Peer> {
    let bin = peer_program("postgrey")?;
    let dir = open_dir();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(bin)
        .arg(format!("--inet={addr}"))
        .arg(format!("--dbdir={}", dir.path().display()))
        .arg(format!("--delay={delay}"))
        .args(["--user=nobody", "--group=nogroup", "--hostname=mx.test"])
        // No whitelists: every triplet is greylisted.
        .args([
            "--whitelist-clients=/dev/null",
            "--whitelist-recipients=/dev/null",
        ])
        .arg(format!("--pidfile={}", dir.path().join("pid").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start postgrey");
    wait_listening(addr);
    Some(Peer {
        child: Some(child),
        pid_file: None,
        addr,
        _dir: dir,
    })
}

const POSTFWD_RULES: &str = "\
id=REJ; recipient==reject@example.com; action=REJECT no thanks
id=DEF; recipient==defer@example.com; action=DEFER try again later
id=NUM; recipient==code@example.com; action=554 5.7.9 custom refusal
id=TAG; protocol_state==RCPT; recipient==tag@example.com; action=PREPEND X-Postfwd: tagged at rcpt
id=TRAP; protocol_state==RCPT; recipient==trap@example.com; action=DISCARD spam trap
id=WARN; recipient==warn@example.com; action=WARN looked odd
id=HOLD; recipient==hold@example.com; action=HOLD
id=BIG; protocol_state==END-OF-MESSAGE; size>=2000; action=REJECT too big for the policy
id=EOMTAG; protocol_state==END-OF-MESSAGE; recipient==eom@example.com; action=PREPEND X-Postfwd-Eom: yes
";

fn postfwd() -> Option<Peer> {
    let bin = peer_program("postfwd2")?;
    let dir = open_dir();
    let rules = dir.path().join("rules");
    std::fs::write(&rules, POSTFWD_RULES).unwrap();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let pid_file = dir.path().join("pid");
    // postfwd2 forks into the background; the pid file stops it.
    let status = Command::new(bin)
        .arg("--file")
        .arg(&rules)
        .args(["--interface", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--user",
            "nobody",
            "--group",
            "nogroup",
            "--nodns",
            "--cache=0",
        ])
        .arg("--pidfile")
        .arg(&pid_file)
        .arg("--cache_socket")
        .arg(format!("unix::{}", dir.path().join("cache.sock").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("start postfwd2");
    assert!(status.success());
    wait_listening(addr);
    Some(Peer {
        child: None,
        pid_file: Some(pid_file),
        addr,
        _dir: dir,
    })
}

pub fn service(addr: SocketAddr) -> String {
    format!("inet:{addr}")
}

/// EHLO and MAIL from `from`, on a connection from loopback address `ip`.
fn mail_from(server: &Server, ip: &str, from: &str) -> Client {
    let mut c = Client::over(connect_from(ip, server.addr));
    assert_eq!(c.code("EHLO client.test"), 250);
    assert_eq!(c.code(&format!("MAIL FROM:<{from}>")), 250);
    c
}

/// The stored message's lines right after the Received header.
fn headers_after_trace(data: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(without_trace(data))
        .split("\r\n")
        .take_while(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn postgrey_greylists_the_first_attempt_and_accepts_the_retry_with_its_header() {
    let Some(pg) = postgrey(2) else { return };
    let server = Server::start(&["--policy-service", &service(pg.addr)]);
    let mut first = mail_from(&server, "127.0.4.2", "sender@x.test");
    let reply = first.cmd("RCPT TO:<b@y.test>");
    assert!(
        reply.starts_with(
            "450 4.7.1 <b@y.test>: Recipient address rejected: Greylisted, see http://postgrey"
        ),
        "{reply}"
    );
    assert_eq!(first.code("QUIT"), 221);
    std::thread::sleep(Duration::from_secs(3));
    let mut retry = mail_from(&server, "127.0.4.2", "sender@x.test");
    assert_eq!(retry.code("RCPT TO:<b@y.test>"), 250);
    assert_eq!(retry.code("DATA"), 354);
    retry.send(b"Subject: greylisted once\r\n\r\nhello\r\n.\r\n");
    let id = queued_id(&retry.reply());
    let stored = exported(&server.spool);
    let headers = headers_after_trace(&stored[&id].1);
    assert!(
        headers[0].starts_with("X-Greylist: delayed ") && headers[0].contains("by postgrey-"),
        "{headers:?}"
    );
    assert_eq!(headers[1], "Subject: greylisted once");
}

#[test]
fn postfwd_rules_reject_defer_reply_prepend_and_discard_at_rcpt_and_at_the_end_of_data() {
    let Some(pf) = postfwd() else { return };
    let server = Server::start(&[
        "--policy-service",
        &service(pf.addr),
        "--policy-stages",
        "rcpt,data",
    ]);
    let mut c = mail_from(&server, "127.0.4.3", "sender@x.test");
    assert_eq!(
        c.cmd("RCPT TO:<reject@example.com>"),
        "550 5.7.1 <reject@example.com>: Recipient address rejected: no thanks\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<defer@example.com>"),
        "450 4.7.1 <defer@example.com>: Recipient address rejected: try again later\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<code@example.com>"),
        "554 5.7.9 <code@example.com>: Recipient address rejected: custom refusal\r\n"
    );
    assert_eq!(c.code("RCPT TO:<tag@example.com>"), 250);
    assert_eq!(c.code("RCPT TO:<warn@example.com>"), 250);
    assert_eq!(c.code("RCPT TO:<hold@example.com>"), 250);
    assert_eq!(c.code("DATA"), 354);
    c.send(b"Subject: tagged\r\n\r\nhello\r\n.\r\n");
    let tagged = queued_id(&c.reply());
    // END-OF-MESSAGE: a message of 2,000 octets or more is refused.
    assert_eq!(c.code("MAIL FROM:<sender@x.test>"), 250);
    assert_eq!(c.code("RCPT TO:<ok@example.com>"), 250);
    assert_eq!(c.code("DATA"), 354);
    c.send(
        &[
            &b"Subject: big\r\n\r\n"[..],
            &b"0123456789\r\n".repeat(300),
            b".\r\n",
        ]
        .concat(),
    );
    assert_eq!(
        c.reply(),
        "550 5.7.1 <END-OF-MESSAGE>: End-of-data rejected: too big for the policy\r\n"
    );
    // END-OF-MESSAGE PREPEND, by BDAT.
    assert_eq!(c.code("MAIL FROM:<sender@x.test>"), 250);
    assert_eq!(c.code("RCPT TO:<eom@example.com>"), 250);
    c.send(b"BDAT 20 LAST\r\nSubject: eom\r\n\r\nhi\r\n");
    let eom = queued_id(&c.reply());
    // DISCARD: answered as queued, not stored.
    assert_eq!(c.code("MAIL FROM:<sender@x.test>"), 250);
    assert_eq!(c.code("RCPT TO:<trap@example.com>"), 250);
    assert_eq!(c.code("DATA"), 354);
    c.send(b"Subject: spam\r\n\r\nbuy\r\n.\r\n");
    let discarded = queued_id(&c.reply());
    assert_eq!(c.code("QUIT"), 221);

    let stored = exported(&server.spool);
    assert_eq!(stored.len(), 2, "the tagged and the eom message only");
    let t = &stored[&tagged];
    assert_eq!(
        rcpt_to(&t.0),
        ["tag@example.com", "warn@example.com", "hold@example.com"]
    );
    assert_eq!(
        headers_after_trace(&t.1),
        ["X-Postfwd: tagged at rcpt", "Subject: tagged"]
    );
    assert_eq!(
        headers_after_trace(&stored[&eom].1),
        ["X-Postfwd-Eom: yes", "Subject: eom"]
    );
    assert!(!stored.contains_key(&discarded));
    // A core's log lines reach stderr in batches: wait for each.
    server.wait_for_log(&format!("discarded {discarded} from 127.0.4.3:"));
    server.wait_for_log("policy: warn: looked odd: client=127.0.4.3:");
    server.wait_for_log("policy: action HOLD is not supported by sluice, taken as DUNNO");
}

/// A policy service that misbehaves the way `answer` says, and records
/// what it was sent and how many connections it got.
pub struct FakeService {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<String>>>,
    connections: Arc<Mutex<usize>>,
}

#[derive(Clone, Copy)]
pub enum Behaviour {
    /// Answers every request with this.
    Answer(&'static str),
    /// Reads requests and never answers.
    Silent,
}

impl FakeService {
    pub fn start(behaviour: Behaviour) -> FakeService {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (r, n) = (requests.clone(), connections.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                *n.lock().unwrap() += 1;
                let r = r.clone();
                std::thread::spawn(move || serve_fake(stream, behaviour, r));
            }
        });
        FakeService {
            addr,
            requests,
            connections,
        }
    }
}

fn serve_fake(
    stream: std::net::TcpStream,
    behaviour: Behaviour,
    requests: Arc<Mutex<Vec<String>>>,
) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut request = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line != "\n" {
            request.push_str(&line);
            continue;
        }
        requests.lock().unwrap().push(std::mem::take(&mut request));
        match behaviour {
            Behaviour::Answer(a) => {
                if writer.write_all(a.as_bytes()).is_err() {
                    return;
                }
            }
            Behaviour::Silent => {
                let mut sink = [0u8; 1024];
                while reader.read(&mut sink).unwrap_or(0) > 0 {}
                return;
            }
        }
    }
}

#[test]
fn requests_carry_the_transaction_and_one_connection_serves_many() {
    let fake = FakeService::start(Behaviour::Answer("action=DUNNO\n\n"));
    let server = Server::start(&["--policy-service", &service(fake.addr)]);
    let mut c = mail_from(&server, "127.0.4.4", "sender@x.test");
    for to in ["a@y.test", "b@y.test", "c@y.test"] {
        assert_eq!(c.code(&format!("RCPT TO:<{to}>")), 250);
    }
    let mut other = mail_from(&server, "127.0.4.5", "");
    assert_eq!(other.code("RCPT TO:<d@y.test>"), 250);
    let requests = fake.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 4);
    let first: Vec<&str> = requests[0].lines().collect();
    for attr in [
        "request=smtpd_access_policy",
        "protocol_state=RCPT",
        "protocol_name=ESMTP",
        "client_address=127.0.4.4",
        "client_name=unknown",
        "helo_name=client.test",
        "sender=sender@x.test",
        "recipient=a@y.test",
        "recipient_count=0",
        "encryption_protocol=",
    ] {
        assert!(first.contains(&attr), "{attr} in {first:?}");
    }
    assert!(
        requests[3].lines().any(|l| l == "sender="),
        "{}",
        requests[3]
    );
    // One core, requests one after another: one connection, reused.
    assert_eq!(*fake.connections.lock().unwrap(), 1);
}

#[test]
fn a_service_that_is_down_silent_or_talking_nonsense_gets_the_policy_default() {
    let down: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let silent = FakeService::start(Behaviour::Silent);
    let nonsense = FakeService::start(Behaviour::Answer("hello there\n\n"));
    let unknown = FakeService::start(Behaviour::Answer("action=MAYBE\n\n"));
    const DEFERRED: &str =
        "451 4.3.5 <b@y.test>: Recipient address rejected: Server configuration problem\r\n";
    for (i, addr) in [down, silent.addr, nonsense.addr, unknown.addr]
        .into_iter()
        .enumerate()
    {
        for (default, want) in [("defer", 451), ("dunno", 250)] {
            let server = Server::start(&[
                "--policy-service",
                &service(addr),
                "--policy-timeout",
                "0.5",
                "--policy-default",
                default,
            ]);
            let mut c = mail_from(&server, &format!("127.0.4.{}", 10 + i), "a@x.test");
            let started = Instant::now();
            let reply = c.cmd("RCPT TO:<b@y.test>");
            assert_eq!(code_of(&reply), want, "{addr} {default}: {reply}");
            if want == 451 {
                assert_eq!(reply, DEFERRED);
            }
            assert!(started.elapsed() < Duration::from_secs(5));
            server.wait_for_log(&format!("policy: service inet:{addr} failed ("));
        }
    }
}

#[test]
fn a_slow_service_holds_up_only_the_session_that_asked() {
    let silent = FakeService::start(Behaviour::Silent);
    let server = Server::start(&[
        "--policy-service",
        &service(silent.addr),
        "--policy-timeout",
        "3",
    ]);
    let mut waiting = mail_from(&server, "127.0.4.20", "a@x.test");
    waiting.send(b"RCPT TO:<b@y.test>\r\n");
    std::thread::sleep(Duration::from_millis(200));
    // The same core serves another session at once meanwhile.
    let started = Instant::now();
    let mut other = server.connect();
    assert_eq!(other.code("NOOP"), 250);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(code_of(&waiting.reply()), 451);
}

#[test]
fn policy_settings_are_checked_at_start_up() {
    let e = start_error(&["--policy-timeout", "3"]);
    assert!(
        e.contains("--policy-timeout only makes sense with --policy-service"),
        "{e}"
    );
    let e = start_error(&["--policy-service", "127.0.0.1:10023"]);
    assert!(e.contains("expected inet:HOST:PORT or unix:PATH"), "{e}");
    let e = start_error(&[
        "--policy-service",
        "inet:127.0.0.1:1",
        "--policy-default",
        "open",
    ]);
    assert!(e.contains("expected dunno or defer"), "{e}");
    let e = start_error(&[
        "--policy-service",
        "inet:127.0.0.1:1",
        "--policy-stages",
        "mail",
    ]);
    assert!(e.contains("\"mail\" is not a stage"), "{e}");
}
