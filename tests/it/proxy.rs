//! `--proxy-protocol` and `--proxy-from`: the client address comes from a
//! PROXY header; connections without one, with a broken one, or from an
//! address that is not a listed balancer are closed. Checked with raw
//! headers and with a real HAProxy (`send-proxy` and `send-proxy-v2`).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;

/// Sends one message over `c` and returns its stored (envelope, bytes).
fn deliver(server: &Server, mut c: Client, tag: &str) -> (serde_json::Value, Vec<u8>) {
    let body = format!("Subject: {tag}\r\n\r\n{tag}\r\n");
    let id = queued_id(&c.send_mail("a@x.test", "b@y.test", body.as_bytes()));
    assert_eq!(c.code("QUIT"), 221);
    exported(&server.spool).remove(&id).expect("stored")
}

/// The server closes `s` without sending anything.
fn closed_silently(mut s: std::net::TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert_eq!(String::from_utf8_lossy(&got), "", "nothing may be sent");
}

#[test]
fn a_v1_header_names_the_client_in_the_envelope_trace_and_log() {
    let server = Server::start(&["--proxy-protocol"]);
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    s.write_all(b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n")
        .unwrap();
    let (env, data) = deliver(&server, Client::over(s), "v1");
    assert_eq!(env["peer"], "192.0.2.7:40000");
    let text = String::from_utf8_lossy(&data);
    assert!(
        text.starts_with("Received: from client.test ([192.0.2.7])"),
        "{text}"
    );
    server.wait_for_log("peer=192.0.2.7:40000 via=127.0.0.1:");
}

#[test]
fn connections_without_a_valid_header_are_closed_unanswered() {
    let server = Server::start(&["--proxy-protocol"]);
    for first in [
        &b"EHLO client.test\r\n"[..],
        b"PROXY TCP4 192.0.2.7 198.51.100.1 40000\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x04\x01\x02\x03\x04",
    ] {
        let mut s = std::net::TcpStream::connect(server.addr).unwrap();
        s.write_all(first).unwrap();
        closed_silently(s);
    }
    server.wait_for_log(
        r#"outcome="closed: the connection did not start with a PROXY protocol header"#,
    );
    server.wait_for_log(
        r#"outcome="closed: PROXY v1 line is not TCP4, TCP6 or UNKNOWN with four fields"#,
    );
    server.wait_for_log(r#"outcome="closed: PROXY v2 header too short for its addresses"#);
}

#[test]
fn only_listed_balancers_may_connect() {
    let server = Server::start(&["--proxy-protocol", "--proxy-from", "127.0.0.2/32"]);
    closed_silently(connect_from("127.0.0.1", server.addr));
    server.wait_for_log("refused (not_a_balancer): 127.0.0.1:");
    let mut s = connect_from("127.0.0.2", server.addr);
    s.write_all(b"PROXY TCP6 2001:db8::5 2001:db8::1 1234 25\r\n")
        .unwrap();
    let (env, data) = deliver(&server, Client::over(s), "listed");
    assert_eq!(env["peer"], "[2001:db8::5]:1234");
    assert!(String::from_utf8_lossy(&data).contains("([IPv6:2001:db8::5])"));
}

#[test]
fn proxy_flag_mistakes_stop_start_up() {
    let err = start_error(&["--proxy-from", "10.0.0.0/8"]);
    assert!(
        err.contains("only makes sense with --proxy-protocol"),
        "{err}"
    );
    let err = start_error(&["--proxy-protocol", "--proxy-from", "10.0.0.0/40"]);
    assert!(err.contains("prefix length must be 0 to 32"), "{err}");
}

/// HAProxy in TCP mode in front of sluice: one frontend per PROXY
/// version. Killed on drop.
struct Haproxy {
    child: Child,
    v1: SocketAddr,
    v2: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    fn start(bin: &std::path::Path, backend: SocketAddr) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let v1: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let v2: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  maxconn 100\n\
                 defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
                 listen smtp_v1\n  bind {v1}\n  server sluice {backend} send-proxy\n\
                 listen smtp_v2\n  bind {v2}\n  server sluice {backend} send-proxy-v2\n"
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start haproxy");
        wait_listening(v1);
        wait_listening(v2);
        Haproxy {
            child,
            v1,
            v2,
            _dir: dir,
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn behind_haproxy_send_proxy_v1_and_v2() {
    let Some(bin) = peer_program("haproxy") else {
        return;
    };
    let server = Server::start(&["--proxy-protocol", "--proxy-from", "127.0.0.1"]);
    let haproxy = Haproxy::start(&bin, server.addr);
    // The clients come from addresses other than HAProxy's own 127.0.0.1,
    // so only a header can have told sluice who they are.
    for (client_ip, front, tag) in [
        ("127.0.0.2", haproxy.v2, "via-v2"),
        ("127.0.0.3", haproxy.v1, "via-v1"),
    ] {
        let s = connect_from(client_ip, front);
        let client_port = s.local_addr().unwrap().port();
        let (env, data) = deliver(&server, Client::over(s), tag);
        assert_eq!(env["peer"], format!("{client_ip}:{client_port}"), "{tag}");
        let text = String::from_utf8_lossy(&data);
        assert!(
            text.starts_with(&format!("Received: from client.test ([{client_ip}])")),
            "{text}"
        );
        assert!(text.ends_with(&format!("{tag}\r\n")), "{text}");
    }
    // A client that bypasses HAProxy (same address, no header) is refused.
    let mut direct = std::net::TcpStream::connect(server.addr).unwrap();
    direct.write_all(b"EHLO sneaky.test\r\n").unwrap();
    closed_silently(direct);
}
