//! `--rspamd` against a real rspamd (Debian's, private config on a
//! loopback port): the client on its own (GTUBE rejected, Lua rules for
//! `add header`, `greylist` and `rewrite subject`, plain mail `no
//! action`, a stopped rspamd an error, not a hang), and the server's
//! stage: what is refused is not stored, what is tagged is stored with
//! the headers, fail open and fail closed, messages over the size limit
//! stored unscanned.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use sluice::policy::rspamd::{Action, Envelope, RspamdClient, RspamdError, Verdict};

use crate::support::*;

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/// A private rspamd; stopped when dropped.
pub struct Rspamd {
    /// rspamd forks its workers: the whole group is killed.
    _process: ProcessGroup,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Rspamd {
    /// Starts rspamd with actions at 4 (greylist), 6 (add header), 8
    /// (rewrite subject) and 15 (reject), and rules keyed on the Subject.
    pub fn start() -> Option<Rspamd> {
        let bin = peer_program("rspamd")?;
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("rspamd.conf"),
            format!(
                "options {{ pidfile = \"{d}/rspamd.pid\"; dbdir = \"{d}\"; filters = \"\"; }}\n\
                 logging {{ type = \"console\"; level = \"error\"; }}\n\
                 actions {{ reject = 15; rewrite_subject = 8; add_header = 6; greylist = 4; }}\n\
                 worker \"normal\" {{ bind_socket = \"{addr}\"; count = 1; }}\n\
                 lua = \"{d}/rules.lua\";\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("rules.lua"),
            "local function subject_is(s)\n\
               return function(task) return task:get_header('Subject') == s end\n\
             end\n\
             rspamd_config.SLUICE_ADD_HEADER = { callback = subject_is('please add a header'), score = 7.0 }\n\
             rspamd_config.SLUICE_GREYLIST = { callback = subject_is('please greylist'), score = 5.0 }\n\
             rspamd_config.SLUICE_REWRITE = { callback = subject_is('please rewrite'), score = 9.0 }\n",
        )
        .unwrap();
        use std::os::unix::process::CommandExt;
        let child = Command::new(bin)
            .process_group(0)
            .args(["-f", "-u", "nobody", "-g", "nogroup", "-c"])
            .arg(dir.path().join("rspamd.conf"))
            .env("TMPDIR", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rspamd");
        wait_listening_within(addr, Duration::from_secs(90));
        Some(Rspamd {
            _process: ProcessGroup {
                child,
                signal: libc::SIGKILL,
            },
            addr,
            _dir: dir,
        })
    }
}

/// Runs `messages` through one client on a glommio executor.
fn check_all(addr: SocketAddr, messages: Vec<String>) -> Vec<Result<Verdict, String>> {
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let client = RspamdClient::new(addr, Duration::from_secs(10));
            let env = Envelope {
                ip: "127.0.4.2".into(),
                helo: "client.test",
                from: "a@x.test",
                rcpt: vec!["b@y.test".into()],
                queue_id: "0123456789abcdef",
                user: None,
            };
            let mut out = Vec::new();
            for m in messages {
                let r = client.check(&env, Bytes::from(m)).await;
                out.push(r.map_err(|e: RspamdError| e.to_string()));
            }
            out
        })
        .unwrap()
        .join()
        .unwrap()
}

fn message(subject: &str, body: &str) -> String {
    format!("Received: from client.test\r\nSubject: {subject}\r\nFrom: a@x.test\r\n\r\n{body}\r\n")
}

#[test]
fn rspamd_verdicts_come_back_for_gtube_rules_and_plain_mail() {
    let Some(rspamd) = Rspamd::start() else {
        return;
    };
    let results = check_all(
        rspamd.addr,
        vec![
            message("gtube", GTUBE),
            message("please add a header", "hello"),
            message("please greylist", "hello"),
            message("hello", "a normal message"),
        ],
    );
    let actions: Vec<Action> = results
        .iter()
        .map(|r| r.as_ref().expect("a verdict").action)
        .collect();
    assert_eq!(
        actions,
        [
            Action::Reject,
            Action::AddHeader,
            Action::Greylist,
            Action::NoAction
        ]
    );
    let gtube = results[0].as_ref().unwrap();
    assert!(gtube.score >= 15.0, "{gtube:?}");
    assert_eq!(results[1].as_ref().unwrap().score, 7.0);
}

#[test]
fn a_stopped_rspamd_is_an_error_not_a_hang() {
    let Some(rspamd) = Rspamd::start() else {
        return;
    };
    let addr = rspamd.addr;
    drop(rspamd);
    // Its workers may take a moment to go.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_ok() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = std::time::Instant::now();
    let results = check_all(addr, vec![message("hello", "x")]);
    assert!(results[0].is_err(), "{results:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

fn server_with(rspamd: SocketAddr, extra: &[&str]) -> Server {
    let url = format!("http://{rspamd}");
    let mut args = vec!["--rspamd", url.as_str()];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Sends one message with `subject` and `body`; the final reply.
fn send(server: &Server, subject: &str, body: &str) -> String {
    let mut c = server.connect();
    let text = format!("Subject: {subject}\r\nFrom: a@x.test\r\n\r\n{body}\r\n");
    c.send_mail("a@x.test", "b@y.test", text.as_bytes())
}

#[test]
fn the_server_refuses_defers_tags_rewrites_and_stores_as_rspamd_says() {
    let Some(rspamd) = Rspamd::start() else {
        return;
    };
    let server = server_with(rspamd.addr, &[]);
    assert_eq!(send(&server, "gtube", GTUBE), "554 5.7.1 Gtube pattern\r\n");
    assert_eq!(
        send(&server, "please greylist", "hello"),
        "451 4.7.1 Try again later\r\n"
    );
    let tagged = queued_id(&send(&server, "please add a header", "hello"));
    let rewritten = queued_id(&send(&server, "please rewrite", "hello"));
    let plain = queued_id(&send(&server, "hello", "a normal message"));
    let stored = exported(&server.spool);
    assert_eq!(
        stored.len(),
        3,
        "the refused and deferred ones are not stored"
    );
    assert_eq!(
        without_trace(&stored[&tagged].1),
        b"X-Spam: Yes\r\nSubject: please add a header\r\nFrom: a@x.test\r\n\r\nhello\r\n"
    );
    let r = String::from_utf8_lossy(without_trace(&stored[&rewritten].1)).into_owned();
    assert!(
        r.starts_with("Subject: ") && r.contains("please rewrite"),
        "{r}"
    );
    assert_ne!(r.lines().next(), Some("Subject: please rewrite"), "{r}");
    assert_eq!(
        without_trace(&stored[&plain].1),
        b"Subject: hello\r\nFrom: a@x.test\r\n\r\na normal message\r\n"
    );
    server.wait_for_log(": reject (score ");
    server.wait_for_log(&format!("rspamd {plain} from 127.0.0.1:"));
}

#[test]
fn a_stopped_rspamd_stores_unscanned_when_open_and_defers_when_closed() {
    let Some(rspamd) = Rspamd::start() else {
        return;
    };
    let addr = rspamd.addr;
    drop(rspamd);
    let open = server_with(addr, &["--rspamd-timeout", "1"]);
    let id = queued_id(&send(&open, "gtube", GTUBE));
    assert!(exported(&open.spool).contains_key(&id));
    open.wait_for_log(&format!(
        "rspamd: {id} stored unscanned (--rspamd-fail open)"
    ));
    let closed = server_with(addr, &["--rspamd-timeout", "1", "--rspamd-fail", "closed"]);
    let reply = send(&closed, "hello", "x");
    assert!(reply.starts_with("451 4.7.1 Try again later"), "{reply}");
    assert!(exported(&closed.spool).is_empty());
}

#[test]
fn a_message_over_the_size_limit_is_stored_unscanned() {
    let Some(rspamd) = Rspamd::start() else {
        return;
    };
    let server = server_with(rspamd.addr, &["--rspamd-max-size", "4K"]);
    let big = format!("{GTUBE}\r\n{}", "0123456789abcdef\r\n".repeat(400));
    let id = queued_id(&send(&server, "big gtube", &big));
    assert!(exported(&server.spool).contains_key(&id));
    server.wait_for_log(&format!("rspamd: {id} not scanned: "));
}

#[test]
fn rspamd_settings_are_checked_at_start_up() {
    let e = start_error(&["--rspamd-fail", "closed"]);
    assert!(
        e.contains("--rspamd-fail only makes sense with --rspamd"),
        "{e}"
    );
    let e = start_error(&["--rspamd", "https://127.0.0.1:11333"]);
    assert!(e.contains("expected http://HOST:PORT"), "{e}");
    let e = start_error(&["--rspamd", "http://127.0.0.1:1", "--rspamd-fail", "maybe"]);
    assert!(e.contains("expected open or closed"), "{e}");
}

#[test]
fn the_verdict_is_in_the_spool_and_the_drain_carries_it_as_nats_headers() {
    let Some(rspamd) = Rspamd::start() else {
        return;
    };
    let Some(cluster) = crate::nats::Cluster::single() else {
        return;
    };
    let server = server_with(rspamd.addr, &[]);
    let tagged = queued_id(&send(&server, "please add a header", "hello"));
    let plain = queued_id(&send(&server, "hello", "a normal message"));
    let stored = exported(&server.spool);
    assert_eq!(
        stored[&tagged].0["spam"],
        serde_json::json!({"action": "add header", "score": "7.00"})
    );
    assert_eq!(stored[&plain].0["spam"]["action"], "no action");
    let urls = cluster.urls();
    let dir = tempfile::tempdir().unwrap();
    let _drain = crate::nats::Drain::start(&server.spool, &urls, &[], dir.path().join("d.log"));
    let messages = crate::nats::eventually(Duration::from_secs(60), "2 messages", || {
        crate::nats::read_stream(&urls, "MAIL").filter(|m| m.len() >= 2)
    });
    let by_id = |id: &str| {
        messages
            .iter()
            .find(|m| m.header("Sluice-Queue-Id") == id)
            .unwrap_or_else(|| panic!("{id} in the stream"))
    };
    assert_eq!(by_id(&tagged).header("Sluice-Spam-Action"), "add header");
    assert_eq!(by_id(&tagged).header("Sluice-Spam-Score"), "7.00");
    assert_eq!(by_id(&plain).header("Sluice-Spam-Action"), "no action");
}
