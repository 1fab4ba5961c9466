//! sluice-loadgen against a tiny in-test SMTP sink that answers with
//! chosen errors: every one must be counted, none hidden.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

const BIN: &str = env!("CARGO_BIN_EXE_sluice-loadgen");

/// What the sink does with the n-th message (counting from 1).
fn verdict(n: u64) -> &'static str {
    if n % 10 == 3 {
        "451 4.3.0 try later\r\n"
    } else if n % 10 == 5 {
        "554 5.7.1 no\r\n"
    } else if n % 10 == 7 {
        "DROP"
    } else {
        "250 2.0.0 Ok: queued\r\n"
    }
}

/// Serves SMTP (DATA only) until the process ends; counts messages.
fn sink(counter: Arc<AtomicU64>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counter = counter.clone();
            thread::spawn(move || serve(stream, &counter));
        }
    });
    addr
}

fn serve(stream: TcpStream, counter: &AtomicU64) {
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let _ = w.write_all(b"220 sink ready\r\n");
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply = match verb.as_str() {
            "EHLO" => "250-sink\r\n250 PIPELINING\r\n".to_string(),
            "DATA" => {
                let _ = w.write_all(b"354 go\r\n");
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == ".\r\n" {
                        break;
                    }
                }
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                match verdict(n) {
                    "DROP" => return,
                    v => v.to_string(),
                }
            }
            "QUIT" => {
                let _ = w.write_all(b"221 bye\r\n");
                return;
            }
            _ => "250 ok\r\n".to_string(),
        };
        if w.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn errors_from_the_server_are_counted_by_code_and_connection_drops_too() {
    let counter = Arc::new(AtomicU64::new(0));
    let addr = sink(counter.clone());
    let out = Command::new(BIN)
        .args([
            "--target",
            &addr.to_string(),
            "--messages",
            "100",
            "--connections",
            "1",
            "--cores",
            "1",
            "--json",
            "--quiet",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // 100 transactions attempted: per 10, one 451, one 554, one dropped.
    assert_eq!(v["sent"], 70, "{v}");
    assert_eq!(v["error_replies"]["451"], 10, "{v}");
    assert_eq!(v["error_replies"]["554"], 10, "{v}");
    assert_eq!(v["connection_errors"], 10, "{v}");
    assert_eq!(v["errors"], 30);
    assert_eq!(
        counter.load(Ordering::SeqCst),
        100,
        "every message reached the sink"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "error rate over the default 0 fails the run"
    );
}

#[test]
fn a_tolerated_error_rate_passes() {
    let addr = sink(Arc::new(AtomicU64::new(0)));
    let status = Command::new(BIN)
        .args([
            "--target",
            &addr.to_string(),
            "--messages",
            "50",
            "--connections",
            "2",
            "--cores",
            "1",
            "--quiet",
            "--max-error-rate",
            "0.5",
        ])
        .output()
        .unwrap()
        .status;
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_refusing_target_is_a_clear_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(BIN)
        .args([
            "--target",
            &format!("127.0.0.1:{port}"),
            "--messages",
            "1",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to 127.0.0.1:") && err.contains("refused"),
        "{err}"
    );
}

#[test]
fn a_target_that_is_not_smtp_is_a_clear_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let out = Command::new(BIN)
        .args(["--target", &addr.to_string(), "--messages", "1", "--quiet"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not look like an SMTP server"), "{err}");
}

#[test]
fn bad_flags_are_clear_errors() {
    for (args, want) in [
        (&["--size", "4q"][..], "unknown unit"),
        (&["--messages", "0"], "at least 1"),
        (&["--duration", "soon"], "not a duration"),
        (&["--target", "127.0.0.1:1"], "--messages N or --duration"),
    ] {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        if !args.contains(&"--target") && !args.contains(&"--messages") {
            cmd.args(["--messages", "1"]);
        }
        let out = cmd.output().unwrap();
        assert_ne!(out.status.code(), Some(0));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
