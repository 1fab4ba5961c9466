//! `sluice drain` into a real NATS JetStream cluster: every acknowledged
//! message exactly once in the stream, byte-exact, through a NATS node
//! and a drain being killed; drained segments deleted; backpressure with
//! `--spool-max-bytes`; the object store for large messages; a stream
//! that does not fit is refused.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use crate::loadgen::{check_loadgen_checksum, loadgen};
use crate::nats::*;
use crate::support::*;

/// Checks one stream message against its envelope headers and returns
/// its queue id.
fn check_stored(m: &Stored) -> String {
    let id = m.header("Nats-Msg-Id").to_string();
    assert_eq!(m.header("Sluice-Queue-Id"), id);
    assert_eq!(m.header("Sluice-Size"), m.payload.len().to_string(), "{id}");
    assert_eq!(
        m.header("Sluice-Body-Crc32c"),
        format!("{:08x}", crc32c::crc32c(&m.payload)),
        "{id}"
    );
    id
}

/// About `n` octets of 78-letter lines, each ending CRLF.
fn text(n: usize) -> String {
    let line: String = (0..78).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    format!("{line}\r\n").repeat(n / 80)
}

fn segments(spool: &std::path::Path, core: usize) -> usize {
    std::fs::read_dir(spool.join(format!("core-{core}")))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count()
}

#[test]
fn every_message_exactly_once_through_a_dead_node_and_a_killed_drain() {
    let Some(bin) = peer_program("nats-server") else {
        return;
    };
    // Built first: on a fresh checkout this takes minutes, and the kills
    // below must come while the load runs.
    let loadgen = loadgen();
    let mut cluster = Cluster::start(&bin, 3);
    let urls = cluster.urls();
    let server = Server::start(&["--cores", "2", "--segment-size", "64K"]);
    let dir = tempfile::tempdir().unwrap();
    let drain_args = ["--replicas", "3", "--window", "64"];
    let mut drain = Drain::start(&server.spool, &urls, &drain_args, dir.path().join("d1.log"));
    // A fresh cluster elects its leaders before the stream can be made.
    eventually(Duration::from_secs(90), "the drain to be ready", || {
        drain.log().contains("sluice drain: ready").then_some(())
    });

    let target = server.addr.to_string();
    let load = std::thread::spawn(move || {
        Command::new(loadgen)
            .args(["--target", &target, "--json", "--quiet", "--cores", "1"])
            .args([
                "--messages",
                "4000",
                "--connections",
                "16",
                "--rate",
                "1000",
            ])
            .args(["--size", "1k-12k", "--verify", "--max-time", "120s"])
            .output()
            .unwrap()
    });
    // Mid-way: once the drain has saved cursors, a NATS node dies, and so
    // does the drain (SIGKILL: no chance to save what it did since).
    let saved = || -> u64 {
        (0..2)
            .filter_map(|core| {
                let path = server.spool.join(format!("core-{core}/drain.cursor"));
                let v: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
                v["messages"].as_u64()
            })
            .sum()
    };
    eventually(
        Duration::from_secs(90),
        "the drain to save a cursor",
        || (saved() > 0).then_some(()),
    );
    cluster.kill(0);
    std::thread::sleep(Duration::from_millis(300));
    drain.kill();
    // The second drain has work left: it resumes from the first one's
    // cursors (the load is paced at 1000/s, so it is usually still running).
    let at_kill = saved();
    assert!(at_kill < 4000, "{at_kill} messages behind the cursors");
    let mut drain = Drain::start(&server.spool, &urls, &drain_args, dir.path().join("d2.log"));

    let out = load.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["sent"], 4000);
    let sent = report["acknowledged"].as_u64().unwrap() as usize;

    let live = cluster
        .urls()
        .split(',')
        .skip(1)
        .collect::<Vec<_>>()
        .join(",");
    let stored = eventually(
        Duration::from_secs(90),
        "every message in the stream",
        || read_stream(&live, "MAIL").filter(|m| m.len() >= sent),
    );
    // Exactly once: as many messages as were acknowledged, no id twice.
    assert_eq!(stored.len(), sent, "{}", drain.log());
    let mut ids = BTreeSet::new();
    for m in &stored {
        let id = check_stored(m);
        check_loadgen_checksum(&id, &m.payload);
        assert!(ids.insert(id.clone()), "{id} is in the stream twice");
    }
    // Drained segments are deleted: each core keeps only its newest.
    eventually(Duration::from_secs(30), "drained segments deleted", || {
        (segments(&server.spool, 0) == 1 && segments(&server.spool, 1) == 1).then_some(())
    });
    drain.kill();
    // The spool still verifies (nothing half-deleted).
    assert_eq!(spool_tool(&server.spool, &["verify"]).0, 0);
}

#[test]
fn a_full_spool_answers_452_until_the_drain_catches_up_and_big_mail_goes_to_the_object_store() {
    let Some(cluster) = Cluster::single() else {
        return;
    };
    let urls = cluster.urls();
    let server = Server::start(&["--spool-max-bytes", "200K", "--segment-size", "64K"]);
    let body = format!("Subject: filler\r\n\r\n{}", text(16 << 10));
    let mut acked = Vec::new();
    let mut c = server.connect();
    assert_eq!(c.code("EHLO client.test"), 250);
    // No drain: the spool fills and MAIL starts getting 452.
    let refused = eventually(Duration::from_secs(30), "a 452", || {
        let reply = c.cmd("MAIL FROM:<a@x.test>");
        if reply.starts_with("452 4.3.1 ") {
            return Some(reply);
        }
        assert!(reply.starts_with("250 "), "{reply}");
        assert_eq!(c.code("RCPT TO:<b@y.test>"), 250);
        assert_eq!(c.code("DATA"), 354);
        c.send(body.as_bytes());
        acked.push(queued_id(&c.cmd(".")));
        None
    });
    assert!(refused.contains("spool is full"), "{refused}");
    assert!(
        acked.len() >= 8,
        "{} messages before the limit",
        acked.len()
    );
    server.wait_for_log("is over --spool-max-bytes");

    let dir = tempfile::tempdir().unwrap();
    let drain = Drain::start(
        &server.spool,
        &urls,
        &["--metrics", "127.0.0.1:0"],
        dir.path().join("d.log"),
    );
    eventually(Duration::from_secs(30), "MAIL accepted again", || {
        let reply = c.cmd("MAIL FROM:<a@x.test>");
        if reply.starts_with("250 ") {
            return Some(());
        }
        assert!(reply.starts_with("452 "), "{reply}");
        std::thread::sleep(Duration::from_millis(200));
        None
    });
    server.wait_for_log("back under --spool-max-bytes");
    // A message over NATS's 1 MiB max payload: object store + pointer.
    let big = text(1536 << 10);
    assert_eq!(c.code("RCPT TO:<b@y.test>"), 250);
    assert_eq!(c.code("DATA"), 354);
    c.send(format!("Subject: big\r\n\r\n{big}").as_bytes());
    let big_id = queued_id(&c.cmd("."));
    acked.push(big_id.clone());

    let stored = eventually(
        Duration::from_secs(60),
        "every message in the stream",
        || read_stream(&urls, "MAIL").filter(|m| m.len() >= acked.len()),
    );
    assert_eq!(stored.len(), acked.len());
    let mut found = BTreeSet::new();
    for m in &stored {
        let id = m.header("Nats-Msg-Id").to_string();
        if id == big_id {
            assert!(m.payload.is_empty(), "a pointer message carries no octets");
            let name = m.header("Sluice-Object");
            assert_eq!(name, format!("sluice-mail/{big_id}"));
            let data = read_object(&urls, "sluice-mail", &big_id);
            assert_eq!(m.header("Sluice-Size"), data.len().to_string());
            assert!(without_trace(&data).ends_with(big.as_bytes()));
        } else {
            check_stored(m);
            assert!(without_trace(&m.payload) == body.as_bytes());
        }
        assert!(found.insert(id));
    }
    assert_eq!(found, acked.iter().cloned().collect::<BTreeSet<_>>());

    // The drain's metrics: everything handed on, nothing lagging.
    let metrics = eventually(Duration::from_secs(10), "metrics line", || {
        metrics_addr_in(&drain.log())
    });
    eventually(Duration::from_secs(20), "lag 0", || {
        let page = http(metrics, "GET", "/metrics").1;
        (sample(&page, "sluice_drain_lag_messages{core=\"0\"}") == 0.0).then_some(())
    });
    let page = http(metrics, "GET", "/metrics").1;
    assert_eq!(
        sample(&page, "sluice_drain_messages_total{core=\"0\"}"),
        acked.len() as f64
    );
    assert_eq!(
        http(metrics, "GET", "/healthz"),
        (200, "nats: Connected\ncore 0: draining\n".to_string())
    );

    // The downstream side: the example worker consumes every message once.
    let out = Command::new(worker_example())
        .args(["--nats", &urls, "--idle-secs", "2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8(out.stdout).unwrap();
    let seen: BTreeSet<String> = lines
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(lines.lines().count(), acked.len(), "{lines}");
    assert_eq!(seen, acked.iter().cloned().collect::<BTreeSet<_>>());
    // The big one came from the object store, whole.
    let big_line = lines.lines().find(|l| l.starts_with(&big_id)).unwrap();
    let size: usize = big_line.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(size > big.len(), "{big_line}");
}

/// `examples/worker.rs`.
fn worker_example() -> std::path::PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    built_apart(
        &BUILD,
        "examples-it",
        &["--example", "worker"],
        "examples/worker",
    )
}

#[test]
fn a_stream_that_keeps_mail_in_memory_is_refused() {
    let Some(cluster) = Cluster::single() else {
        return;
    };
    let urls = cluster.urls();
    create_memory_stream(&urls, "MAIL", "mail.ingest");
    let server = Server::start(&[]);
    let out = Command::new(BIN)
        .arg("drain")
        .arg("--spool")
        .arg(&server.spool)
        .args(["--nats", &urls])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("the existing stream MAIL does not fit: it keeps messages in memory"),
        "{err}"
    );
    let err = start_error(&["--spool-max-bytes", "lots"]);
    assert!(err.contains("'lots' for '--spool-max-bytes"), "{err}");
}

#[test]
fn retain_keeps_drained_segments_until_they_are_old_enough() {
    let Some(cluster) = Cluster::single() else {
        return;
    };
    let urls = cluster.urls();
    let server = Server::start(&["--segment-size", "64K"]);
    let body = format!("Subject: r\r\n\r\n{}", text(20 << 10));
    for _ in 0..20 {
        let mut c = server.connect();
        queued_id(&c.send_mail("a@x.test", "b@y.test", body.as_bytes()));
    }
    let before = segments(&server.spool, 0);
    assert!(before >= 3, "{before} segments");
    let dir = tempfile::tempdir().unwrap();
    let drain = Drain::start(
        &server.spool,
        &urls,
        &["--retain", "1h"],
        dir.path().join("d.log"),
    );
    let stored = eventually(Duration::from_secs(60), "20 messages in the stream", || {
        read_stream(&urls, "MAIL").filter(|m| m.len() >= 20)
    });
    assert_eq!(stored.len(), 20);
    // Drained, but younger than an hour: every segment is still there.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(segments(&server.spool, 0), before, "{}", drain.log());
}

#[test]
fn sigterm_while_nats_is_down_saves_the_cursor_and_exits_cleanly() {
    let Some(mut cluster) = Cluster::single() else {
        return;
    };
    let urls = cluster.urls();
    let server = Server::start(&[]);
    let send = |n: usize| {
        for i in 0..n {
            let body = format!("Subject: {i}\r\n\r\nhello\r\n");
            queued_id(
                &server
                    .connect()
                    .send_mail("a@x.test", "b@y.test", body.as_bytes()),
            );
        }
    };
    send(5);
    let dir = tempfile::tempdir().unwrap();
    let mut drain = Drain::start(&server.spool, &urls, &[], dir.path().join("d.log"));
    eventually(Duration::from_secs(60), "5 messages in the stream", || {
        read_stream(&urls, "MAIL").filter(|m| m.len() >= 5)
    });
    cluster.kill(0);
    send(3);
    eventually(Duration::from_secs(30), "retries", || {
        drain.log().contains("retrying in").then_some(())
    });
    crate::support::signal(drain.child.id(), libc::SIGTERM);
    let status = eventually(Duration::from_secs(20), "the drain to exit", || {
        drain.child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(0), "{}", drain.log());
    let cursor: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(server.spool.join("core-0/drain.cursor")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        cursor["messages"], 5,
        "only acknowledged messages are behind it"
    );
}
