use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

/// A message body with a distinct first line, ending in CRLF.
fn body(tag: &str, lines: usize) -> Vec<u8> {
    let mut b = format!("Subject: {tag}\r\nMessage-ID: <{tag}@client.test>\r\n\r\n").into_bytes();
    for i in 0..lines {
        b.extend_from_slice(
            format!("line {i} of {tag} with some text to make it longer\r\n").as_bytes(),
        );
    }
    b
}

#[test]
fn data_is_stored_byte_exact_with_trace_header_and_envelope() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    c.code("EHLO client.test");
    c.code("MAIL FROM:<Sender@X.test>");
    c.code("RCPT TO:<@hop.test:rcpt@y.test>");
    c.code("DATA");
    c.send(b"Subject: dots\r\n\r\n..leading dot\r\n...two\r\n8-bit: \xc3\xa9\xff\r\n.\r\n");
    let id = queued_id(&c.reply());
    let msgs = exported(&s.spool);
    let (env, data) = &msgs[&id];
    assert_eq!(
        without_trace(data),
        b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n8-bit: \xc3\xa9\xff\r\n"
    );
    let trace =
        String::from_utf8_lossy(&data[..data.len() - without_trace(data).len()]).into_owned();
    assert!(
        trace.starts_with(
            "Received: from client.test ([127.0.0.1])\r\n\tby mx.test (sluice) with ESMTP id "
        ),
        "{trace}"
    );
    assert!(
        trace.contains(&id) && trace.contains("for <rcpt@y.test>;"),
        "{trace}"
    );
    assert_eq!(env["mail_from"], "Sender@X.test");
    assert_eq!(env["rcpt_to"], serde_json::json!(["rcpt@y.test"]));
    assert_eq!(env["helo"], "client.test");
    assert!(env["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(env["size"], data.len());
    let (code, out) = spool_tool(&s.spool, &["cat", &id]);
    assert_eq!(code, 0);
    assert_eq!(&out, data);
    let (code, out) = spool_tool(&s.spool, &["ls"]);
    assert_eq!(code, 0);
    let ls = String::from_utf8(out).unwrap();
    assert!(
        ls.starts_with(&id) && ls.contains(" Sender@X.test 1 "),
        "{ls}"
    );
}

#[test]
fn many_concurrent_connections_store_every_message_exactly_once() {
    let s = Server::start(&["--cores", "2"]);
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let threads: Vec<_> = (0..200)
        .map(|t| {
            let (addr, acked) = (s.addr, acked.clone());
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.code("EHLO client.test");
                for m in 0..5 {
                    let tag = format!("t{t}m{m}");
                    let b = body(&tag, 3);
                    c.code("MAIL FROM:<a@x.test>");
                    c.code("RCPT TO:<b@y.test>");
                    c.code("DATA");
                    c.send(&b);
                    c.send(b".\r\n");
                    let id = queued_id(&c.reply());
                    acked.lock().unwrap().insert(id, b);
                }
                c.code("QUIT");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap();
    assert_eq!(acked.len(), 1000, "ids are unique");
    let stored = exported(&s.spool);
    assert_eq!(stored.len(), 1000);
    for (id, b) in acked.iter() {
        assert_eq!(without_trace(&stored[id].1), &b[..], "{id}");
    }
}

/// Sends messages on `conns` connections until `stop`; returns acked
/// (id, body) pairs. Errors after the server dies end a connection.
fn load_until(addr: std::net::SocketAddr, conns: usize, stop: Instant) -> Vec<(String, Vec<u8>)> {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..conns)
        .map(|t| {
            let acked = acked.clone();
            thread::spawn(move || {
                let attempt = std::panic::catch_unwind(|| {
                    let mut c = Client::connect(addr);
                    c.code("EHLO client.test");
                    let mut m = 0;
                    while Instant::now() < stop {
                        let tag = format!("k{t}-{m}");
                        let b = body(&tag, 20);
                        c.code("MAIL FROM:<a@x.test>");
                        c.code("RCPT TO:<b@y.test>");
                        c.code("DATA");
                        c.send(&b);
                        c.send(b".\r\n");
                        let reply = c.reply();
                        if reply.is_empty() {
                            break;
                        }
                        acked.lock().unwrap().push((queued_id(&reply), b));
                        m += 1;
                    }
                });
                drop(attempt);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    Arc::try_unwrap(acked).unwrap().into_inner().unwrap()
}

#[test]
fn sigkill_mid_load_loses_no_acknowledged_message_and_restart_continues() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let mut s = Server::start_on(&spool, &["--cores", "2"]);
    let pid = s.child.id();
    let addr = s.addr;
    let killer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(1500));
        crate::support::signal(pid, libc::SIGKILL);
    });
    // Silence the panic messages of connections cut by the kill.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let acked = load_until(addr, 16, Instant::now() + Duration::from_secs(10));
    std::panic::set_hook(hook);
    killer.join().unwrap();
    s.wait(Duration::from_secs(10));
    assert!(
        acked.len() > 50,
        "only {} messages acknowledged before the kill",
        acked.len()
    );

    let stored = exported(&spool);
    for (id, b) in &acked {
        let (_, data) = stored
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged {id} lost"));
        assert_eq!(without_trace(data), &b[..]);
    }

    let s2 = Server::start_on(&spool, &["--cores", "2"]);
    s2.wait_for_log("recovered ");
    let mut c = s2.connect();
    let id = queued_id(&c.send_mail("a@x.test", "b@y.test", b"after restart\r\n"));
    assert!(
        !acked.iter().any(|(a, _)| *a == id),
        "ids unique across restarts"
    );
    let (code, out) = spool_tool(&spool, &["verify"]);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out));
    let stored = exported(&spool);
    // Messages committed whose 250 was lost with the kill may be there
    // too; every acknowledged one must be.
    assert!(stored.len() > acked.len());
    for (id, _) in &acked {
        assert!(stored.contains_key(id), "{id} lost after restart");
    }
    assert!(stored.contains_key(&id));
}

/// Where the records end: the writer keeps zeroes after them.
fn data_end(segment: &[u8]) -> usize {
    segment.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1)
}

#[test]
fn zeroes_after_the_records_are_clean_but_other_bytes_are_reported() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    queued_id(&c.send_mail("a@x.test", "b@y.test", b"one\r\n"));
    let seg = s.spool.join("core-0").join("00000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let end = data_end(&bytes);
    assert!(
        bytes.len() > end + 4096,
        "the writer prepared zeroes ahead of the records"
    );
    assert_eq!(spool_tool(&s.spool, &["verify"]).0, 0);
    bytes[end + 100] = 7;
    std::fs::write(&seg, &bytes).unwrap();
    let (code, out) = spool_tool(&s.spool, &["verify"]);
    assert_eq!(code, 1);
    let report = String::from_utf8(out).unwrap();
    assert!(
        report.contains(&format!("offset {end}: unexpected non-zero bytes")),
        "{report}"
    );
}

#[test]
fn torn_tail_is_reported_by_verify_and_cut_by_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let mut s = Server::start_on(&spool, &[]);
    let mut c = s.connect();
    let id = queued_id(&c.send_mail("a@x.test", "b@y.test", b"keep me\r\n"));
    c.code("QUIT");
    assert_eq!(s.terminate(), Some(0));
    // Simulate a crash in the middle of writing the next record: its bytes
    // land right after the last record, over the zeroes prepared there.
    let seg = spool.join("core-0").join("00000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let good = data_end(&bytes);
    let torn = b"SLR1\x02\0\0\0\xff\x00\x00\x00torn";
    if bytes.len() < good + torn.len() {
        bytes.resize(good + torn.len(), 0);
    }
    bytes[good..good + torn.len()].copy_from_slice(torn);
    std::fs::write(&seg, &bytes).unwrap();
    let (code, out) = spool_tool(&spool, &["verify"]);
    assert_eq!(code, 1);
    let report = String::from_utf8(out).unwrap();
    // Over prepared zeroes a torn record reads whole but fails its
    // checksum; at the very end of a file it is short ("torn").
    let at = format!("segment 1 offset {good}: ");
    assert!(
        report.contains(&format!("{at}checksum mismatch")) || report.contains(&format!("{at}torn")),
        "{report}"
    );

    let s2 = Server::start_on(&spool, &[]);
    s2.wait_for_log("recovered 1 messages");
    s2.wait_for_log(&format!("dropped {} bytes", torn.len()));
    assert_eq!(std::fs::metadata(&seg).unwrap().len() as usize, good);
    let (code, _) = spool_tool(&spool, &["verify"]);
    assert_eq!(code, 0);
    assert!(exported(&spool).contains_key(&id));
}

#[test]
fn damaged_record_is_reported_with_segment_and_offset() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    queued_id(&c.send_mail("a@x.test", "b@y.test", b"one\r\n"));
    let seg = s.spool.join("core-0").join("00000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let last = data_end(&bytes) - 3;
    bytes[last] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();
    let (code, out) = spool_tool(&s.spool, &["verify"]);
    assert_eq!(code, 1);
    assert!(String::from_utf8(out)
        .unwrap()
        .contains("segment 1 offset 0: checksum mismatch"));
}

#[test]
fn segments_roll_over_at_the_configured_size() {
    let s = Server::start(&["--segment-size", "64K"]);
    let mut c = s.connect();
    let mut ids = Vec::new();
    for i in 0..60 {
        ids.push(queued_id(&c.send_mail(
            "a@x.test",
            "b@y.test",
            &body(&format!("roll{i}"), 60),
        )));
        c.code("RSET");
    }
    let segs = std::fs::read_dir(s.spool.join("core-0")).unwrap().count();
    assert!(segs >= 3, "expected several segments, found {segs}");
    let stored = exported(&s.spool);
    assert!(ids.iter().all(|id| stored.contains_key(id)));
}

#[test]
fn large_message_streams_to_the_spool_with_bounded_memory() {
    let s = Server::start(&["--max-message-size", "200M"]);
    let mut c = s.connect();
    c.open_transaction();
    c.code("DATA");
    let before = proc_status_kib(s.child.id(), "VmHWM");
    let line = format!("{}\r\n", "z".repeat(998)).into_bytes();
    let block: Vec<u8> = line
        .iter()
        .copied()
        .cycle()
        .take(line.len() * 1024)
        .collect();
    let total = 100 * block.len(); // 100 MiB
    for _ in 0..100 {
        c.send(&block);
    }
    c.send(b".\r\n");
    let id = queued_id(&c.reply());
    let after = proc_status_kib(s.child.id(), "VmHWM");
    assert!(
        after - before < 32 * 1024,
        "peak RSS grew by {} KiB for a 100 MiB message",
        after - before
    );
    let (code, out) = spool_tool(&s.spool, &["verify"]);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out));
    let (_, ls) = spool_tool(&s.spool, &["ls"]);
    let ls = String::from_utf8(ls).unwrap();
    let size: usize = ls.split_whitespace().last().unwrap().parse().unwrap();
    assert!(ls.starts_with(&id));
    assert!(
        size > total && size < total + 400,
        "stored {size} of {total}"
    );
}

#[test]
fn disk_full_gets_452_nothing_partial_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let mut cmd = Server::command(&spool, &[]);
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls setrlimit, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 64 << 10,
                rlim_max: libc::RLIM_INFINITY,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let s = Server::spawn(cmd, &spool);
    let mut c = s.connect();
    let first = queued_id(&c.send_mail("a@x.test", "b@y.test", &body("fits", 600)));
    c.code("RSET");
    let reply = c.send_mail("a@x.test", "b@y.test", &body("too-big", 1000));
    assert!(reply.starts_with("452 4.3.1 "), "{reply}");
    assert_eq!(c.code("NOOP"), 250, "the server stays up");
    let seg = spool.join("core-0").join("00000001.seg");
    let len_after_failure = std::fs::metadata(&seg).unwrap().len();
    let (code, out) = spool_tool(&spool, &["verify"]);
    assert_eq!(
        code,
        0,
        "no partial record left: {}",
        String::from_utf8_lossy(&out)
    );
    // Space returns.
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    assert_eq!(
        // SAFETY: prlimit reads `lim`, which we own, and writes nothing
        // (the old limit pointer is null).
        unsafe {
            libc::prlimit(
                s.child.id() as i32,
                libc::RLIMIT_FSIZE,
                &lim,
                std::ptr::null_mut(),
            )
        },
        0
    );
    c.code("RSET");
    let later = queued_id(&c.send_mail("a@x.test", "b@y.test", &body("too-big", 1000)));
    assert!(std::fs::metadata(&seg).unwrap().len() > len_after_failure);
    let stored = exported(&spool);
    assert_eq!(stored.len(), 2);
    assert!(stored.contains_key(&first) && stored.contains_key(&later));
}

#[test]
fn export_to_mbox_and_maildir() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    let id = queued_id(&c.send_mail(
        "a@x.test",
        "b@y.test",
        b"Subject: m\r\n\r\nFrom the start\r\nbye\r\n",
    ));
    let out = tempfile::tempdir().unwrap();
    let mbox = out.path().join("out.mbox");
    assert_eq!(export_to(&s.spool, "mbox", &mbox), 0);
    let text = std::fs::read_to_string(&mbox).unwrap();
    assert!(text.starts_with("From a@x.test "), "{text}");
    assert!(
        text.contains("\nSubject: m\n\n>From the start\nbye\n\n"),
        "{text}"
    );
    let md = out.path().join("Maildir");
    assert_eq!(export_to(&s.spool, "maildir", &md), 0);
    let files: Vec<_> = std::fs::read_dir(md.join("new"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    assert!(files[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .contains(&id));
    let msg = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        msg.starts_with(
            "Return-Path: <a@x.test>\nDelivered-To: b@y.test\nReceived: from client.test"
        ),
        "{msg}"
    );
    assert!(md.join("cur").is_dir() && md.join("tmp").is_dir());
    let (code, _) = spool_tool(&s.spool, &["export", "--format", "maildir"]);
    assert_eq!(code, 2, "maildir without --out is an error");
}

#[test]
fn streamed_message_spanning_many_segments_is_read_back_and_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let flags = ["--segment-size", "64K", "--message-memory", "16K"];
    let mut s = Server::start_on(&spool, &flags);
    let mut c = s.connect();
    // ~600 KiB: dozens of 16 KiB chunks over about ten 64 KiB segments,
    // with a small message committed in between on another connection.
    let big = body("spanning", 11_000);
    c.open_data();
    c.send(&big[..big.len() / 2]);
    let mut other = s.connect();
    let small = queued_id(&other.send_mail("a@x.test", "b@y.test", b"between\r\n"));
    c.send(&big[big.len() / 2..]);
    c.send(b".\r\n");
    let id = queued_id(&c.reply());
    // The same through BDAT, in three chunks of ~200 KiB.
    c.code("MAIL FROM:<a@x.test>");
    c.code("RCPT TO:<b@y.test>");
    let chunks: Vec<&[u8]> = big.chunks(big.len() / 3 + 1).collect();
    for (k, chunk) in chunks.iter().enumerate() {
        let last = if k + 1 == chunks.len() { " LAST" } else { "" };
        c.send(format!("BDAT {}{last}\r\n", chunk.len()).as_bytes());
        c.send(chunk);
        if last.is_empty() {
            assert_eq!(code_of(&c.reply()), 250);
        }
    }
    let bdat_id = queued_id(&c.reply());
    c.code("QUIT");
    other.code("QUIT");
    assert_eq!(s.terminate(), Some(0));
    let segments = std::fs::read_dir(spool.join("core-0")).unwrap().count();
    assert!(segments >= 6, "only {segments} segments");
    let check = |spool: &std::path::Path| {
        let stored = exported(spool);
        assert_eq!(without_trace(&stored[&id].1), &big[..]);
        assert_eq!(without_trace(&stored[&bdat_id].1), &big[..]);
        assert_eq!(without_trace(&stored[&small].1), b"between\r\n");
        assert_eq!(spool_tool(spool, &["verify"]).0, 0);
    };
    check(&spool);
    let s2 = Server::start_on(&spool, &flags);
    s2.wait_for_log("recovered 3 messages");
    check(&spool);
}
