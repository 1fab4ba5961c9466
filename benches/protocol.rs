//! The protocol without sockets: command parsing (commands/s) and whole
//! SMTP transactions through the session state machine (transactions/s).
//!
//! Each measured iteration checks its result (the parsed verb, the final
//! verdict), so a broken parser cannot look fast.

use std::rc::Rc;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice::policy::RecipientMap;
use sluice::scan::BodyFlags;
use sluice::smtp::command::parse;
use sluice::smtp::{Action, Session, SessionConfig, Verdict};
use std::hint::black_box;

const LINES: &[&[u8]] = &[
    b"EHLO client.example.com",
    b"MAIL FROM:<sender.name@example.com> SIZE=12345 BODY=8BITMIME",
    b"RCPT TO:<recipient@example.org>",
    b"RCPT TO:<@relay.example:user@[IPv6:2001:db8::1]>",
    b"DATA",
    b"RSET",
    b"NOOP",
    b"QUIT",
];

fn bench_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("protocol");
    group.throughput(Throughput::Elements(LINES.len() as u64));
    group.bench_function("parse-commands", |b| {
        b.iter(|| {
            let mut ok = 0;
            for line in LINES {
                if parse(black_box(line)).is_ok() {
                    ok += 1;
                }
            }
            assert_eq!(ok, LINES.len());
            ok
        })
    });
    group.finish();
}

fn session_config(recipient_map: Option<Arc<RecipientMap>>) -> Rc<SessionConfig> {
    // The server's defaults where they differ from the test limits.
    Rc::new(SessionConfig {
        hostname: "mx.example.com".into(),
        max_message_size: 35 << 20,
        max_recipients: 100,
        accept_domains: None,
        recipient_map,
        ..SessionConfig::small()
    })
}

/// A `--recipient-map` of 1,000,000 addresses over 1,000 domains, with
/// the benchmark's recipient among them.
fn million_map() -> Arc<RecipientMap> {
    let mut text: String = (0..999_999)
        .map(|i| format!("user{i}@domain{}.example\n", i % 1000))
        .collect();
    text.push_str("rcpt@example.org\n");
    Arc::new(RecipientMap::parse(&text, "bench", "+").unwrap())
}

fn bench_session(c: &mut Criterion) {
    let mut group = c.benchmark_group("protocol");
    group.throughput(Throughput::Elements(1));
    for (name, map) in [
        ("session-transaction", None),
        ("session-transaction-1m-recipient-map", Some(million_map())),
    ] {
        let config = session_config(map);
        group.bench_function(name, |b| {
            let mut session = Session::new(config.clone());
            let mut out = Vec::with_capacity(4096);
            session.command(b"EHLO client.example.com", false, &mut out);
            b.iter(|| {
                out.clear();
                session.command(b"MAIL FROM:<sender@example.com>", false, &mut out);
                session.command(b"RCPT TO:<Rcpt+tag@example.org>", false, &mut out);
                let action = session.command(b"DATA", false, &mut out);
                assert_eq!(
                    action,
                    Action::ReceiveData,
                    "{}",
                    String::from_utf8_lossy(&out)
                );
                let verdict = session.data_done(1024, BodyFlags::default(), &mut out);
                assert_eq!(verdict, Verdict::Store);
                session.stored(Ok("0123456789abcdef"), &mut out);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_parse, bench_session);
criterion_main!(benches);
