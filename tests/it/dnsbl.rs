//! DNS lists against a real DNS server: dnsmasq from Debian, started on a
//! loopback port with a private configuration serving test zones. Clients
//! connect from distinct loopback addresses, each with its own entries:
//!
//! | client | bl.test | wl.test |
//! |---|---|---|
//! | 127.0.0.2 | 127.0.0.2 | — |
//! | 127.0.0.3 | 127.0.0.10 (outside the filter) | — |
//! | 127.0.0.4 | 127.0.0.2 | 127.0.0.2 (allow list, weight -5) |
//! | 127.0.0.5 | — | — |

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// dnsmasq on a loopback port, killed when dropped.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// Serves the zones of the table above, with `ttl` on every record.
    fn start(bin: &Path, ttl: u32) -> Dnsmasq {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("queries.log");
        let port = free_udp_port();
        let mut cmd = Command::new(bin);
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--pid-file=",
            "--log-queries",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--log-facility={}", log.display()))
        .arg(format!("--local-ttl={ttl}"))
        // Names in these zones that are not listed are NXDOMAIN.
        .args(["--local=/bl.test/", "--local=/wl.test/"])
        .args([
            "--host-record=2.0.0.127.bl.test,127.0.0.2",
            "--host-record=3.0.0.127.bl.test,127.0.0.10",
            "--host-record=4.0.0.127.bl.test,127.0.0.2",
            "--host-record=4.0.0.127.wl.test,127.0.0.2",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            cmd.arg("--user=root");
        }
        let child = cmd.spawn().expect("start dnsmasq");
        let d = Dnsmasq {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            _dir: dir,
        };
        let until = Instant::now() + Duration::from_secs(20);
        while !d
            .log_text()
            .contains("using only locally-known addresses for wl.test")
        {
            assert!(
                Instant::now() < until,
                "dnsmasq did not start: {}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many A queries dnsmasq received for `name`.
    fn queries(&self, name: &str) -> usize {
        let needle = format!("query[A] {name} from");
        self.log_text().matches(&needle).count()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The greeting a client from `from` gets, and the session.
fn greeting(server: &Server, from: &str) -> (Client, String) {
    let s = connect_from(from, server.addr);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut c = Client::without_greeting(s);
    let g = c.reply();
    (c, g)
}

fn serve_with(dns: SocketAddr, extra: &[&str]) -> Server {
    let server_arg = dns.to_string();
    let mut args = vec![
        "--cores",
        "2",
        "--dnsbl",
        "bl.test=127.0.0.[2..9]",
        "--dnsbl",
        "wl.test*-5",
        "--dns-server",
        &server_arg,
        "--metrics",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

#[test]
fn listed_clients_get_554_and_then_only_quit_others_are_greeted() {
    let Some(bin) = peer_program("dnsmasq") else {
        return;
    };
    let dns = Dnsmasq::start(&bin, 60);
    let server = serve_with(dns.addr, &[]);
    let (mut c, g) = greeting(&server, "127.0.0.2");
    assert_eq!(
        g,
        "554 5.7.1 Service unavailable; client [127.0.0.2] blocked using bl.test\r\n"
    );
    for line in ["EHLO bot.test", "MAIL FROM:<a@x.test>"] {
        let reply = c.cmd(line);
        assert!(reply.starts_with("503 5.5.1 "), "{line}: {reply}");
    }
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    assert!(c.closed());
    for (from, why) in [
        ("127.0.0.3", "its answer is outside the filter"),
        ("127.0.0.4", "the allow list outweighs the block list"),
        ("127.0.0.5", "no list names it"),
        ("127.0.0.1", "the trusted host is not looked up"),
    ] {
        let (mut c, g) = greeting(&server, from);
        assert!(g.starts_with("220 "), "{from}: {why}: {g}");
        let reply = c.send_mail("a@x.test", "b@y.test", b"Subject: x\r\n\r\nhi\r\n");
        assert!(reply.starts_with("250 "), "{from}: {reply}");
    }
    assert_eq!(dns.queries("1.0.0.127.bl.test"), 0, "trusted: no query");
    let (_, page) = http(server.metrics_addr(), "GET", "/metrics");
    let refused = node_total(&page, "sluice_refusals_total", "reason=\"dnsbl\"", 2);
    assert_eq!(refused, 1.0);
    server.wait_for_log("refused (dnsbl): 127.0.0.2: DNS list score 1 >= 1 (listed by bl.test)");
}

#[test]
fn log_only_scores_and_refuses_no_one() {
    let Some(bin) = peer_program("dnsmasq") else {
        return;
    };
    let dns = Dnsmasq::start(&bin, 60);
    let server = serve_with(dns.addr, &["--dnsbl-log-only"]);
    let (mut c, g) = greeting(&server, "127.0.0.2");
    assert!(g.starts_with("220 "), "{g}");
    assert_eq!(c.code("EHLO client.test"), 250);
    server.wait_for_log("would refuse (--dnsbl-log-only): 127.0.0.2: DNS list score 1 >= 1");
}

#[test]
fn one_query_per_client_per_ttl_across_cores() {
    let Some(bin) = peer_program("dnsmasq") else {
        return;
    };
    let ttl = 3;
    let dns = Dnsmasq::start(&bin, ttl);
    let server = serve_with(dns.addr, &[]);
    for _ in 0..4 {
        let (mut c, g) = greeting(&server, "127.0.0.4");
        assert!(g.starts_with("220 "), "{g}");
        assert_eq!(c.code("QUIT"), 221);
    }
    assert_eq!(dns.queries("4.0.0.127.bl.test"), 1);
    assert_eq!(dns.queries("4.0.0.127.wl.test"), 1);
    std::thread::sleep(Duration::from_secs(u64::from(ttl) + 1));
    let (_c, g) = greeting(&server, "127.0.0.4");
    assert!(g.starts_with("220 "), "{g}");
    assert_eq!(
        dns.queries("4.0.0.127.bl.test"),
        2,
        "asked again after the TTL"
    );
    // NXDOMAIN without an SOA may not be cached (RFC 2308 §5): asked each time.
    for _ in 0..2 {
        let _ = greeting(&server, "127.0.0.5");
    }
    assert_eq!(dns.queries("5.0.0.127.bl.test"), 2);
}

#[test]
fn a_server_that_does_not_answer_counts_as_not_listed_after_the_timeout() {
    // Something that takes the queries and never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = serve_with(silent.local_addr().unwrap(), &["--dns-timeout", "0.5"]);
    let t = Instant::now();
    let (mut c, g) = greeting(&server, "127.0.0.2");
    assert!(
        g.starts_with("220 "),
        "not listed when the lists are down: {g}"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "waited for the timeout"
    );
    assert_eq!(c.code("EHLO client.test"), 250);
    let mut buf = [0u8; 512];
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (n, _) = silent.recv_from(&mut buf).expect("the query arrived");
    assert!(n > 12, "a DNS query");
    let (_, page) = http(server.metrics_addr(), "GET", "/metrics");
    let failures: f64 = (0..2)
        .map(|core| {
            sample(
                &page,
                &format!("sluice_dnsbl_failures_total{{core=\"{core}\"}}"),
            )
        })
        .sum();
    assert_eq!(failures, 2.0, "both lists timed out");
    server.wait_for_log("DNS lists without an answer (counted as not listed): bl.test (no answer in time), wl.test (no answer in time)");
}
