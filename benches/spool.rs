//! Spool writer throughput: messages/s and bytes/s for 1 KiB and 64 KiB
//! messages, with and without fsync, and the average group-commit batch.
//!
//! Each measured round runs `CONNECTIONS` tasks on one glommio executor
//! (like connection tasks on one core), each committing messages one after
//! another, so the writer sees the same concurrency it sees in the server.
//! Every round checks that all its commits succeeded and the batch count
//! is plausible; the batch sizes are printed after the run.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use glommio::{LocalExecutorBuilder, Placement};
use sluice::smtp::path::Mailbox;
use sluice::smtp::Envelope;
use sluice::spool::{Durability, Origin, SpoolWriter, WriterConfig};

const CONNECTIONS: usize = 50;

/// One sender, one recipient.
fn envelope() -> Envelope {
    Envelope {
        mail_from: Some(Mailbox {
            local: "sender".into(),
            domain: "client.test".into(),
        }),
        rcpt_to: vec![Mailbox {
            local: "rcpt".into(),
            domain: "example.test".into(),
        }],
        ..Envelope::default()
    }
}

/// Commits `iters` messages of `size` octets over `CONNECTIONS` tasks;
/// returns the elapsed time and (commits, syncs).
fn run_round(durability: Durability, size: usize, iters: u64) -> (Duration, (u64, u64)) {
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
            let path = dir.path().canonicalize().expect("absolute");
            let writer = SpoolWriter::new(
                WriterConfig {
                    dir: path,
                    core: 0,
                    segment_size: 256 << 20,
                    durability,
                    batch_limit: 16 << 20,
                },
                None,
                Default::default(),
            );
            let task = glommio::spawn_local(writer.clone().run(1));
            let body = Rc::new(vec![b'x'; size]);
            let envelope = Rc::new(envelope());
            let left = Rc::new(Cell::new(iters));
            let start = Instant::now();
            let tasks: Vec<_> = (0..CONNECTIONS)
                .map(|_| {
                    let (w, body, left) = (writer.clone(), body.clone(), left.clone());
                    let envelope = envelope.clone();
                    glommio::spawn_local(async move {
                        while left.get() > 0 {
                            left.set(left.get() - 1);
                            let msg = w.message(w.next_id());
                            let origin = Origin {
                                peer: ([127, 0, 0, 1], 40000).into(),
                                helo: "client.test",
                                envelope: &envelope,
                                spam: None,
                                auth: None,
                            };
                            msg.commit(&origin, &body).await.expect("commit");
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await;
            }
            let elapsed = start.elapsed();
            let stats = writer.stats();
            writer.close();
            task.await.expect("writer");
            assert_eq!(stats.commits, iters);
            (elapsed, (stats.commits, stats.batches))
        })
        .expect("executor");
    handle.join().expect("join")
}

fn bench_writer(c: &mut Criterion) {
    let mut report = Vec::new();
    for (durability, dname) in [(Durability::None, "none"), (Durability::Fsync, "fsync")] {
        for (size, sname) in [(1 << 10, "1k"), (64 << 10, "64k")] {
            let mut group = c.benchmark_group(format!("spool/{sname}/{dname}"));
            group.sample_size(10);
            group.measurement_time(Duration::from_secs(4));
            group.throughput(Throughput::Elements(1));
            let (mut commits, mut batches) = (0, 0);
            group.bench_function("messages", |b| {
                b.iter_custom(|iters| {
                    let (t, (c, s)) = run_round(durability, size, iters.max(1));
                    commits += c;
                    batches += s;
                    t
                })
            });
            group.finish();
            report.push((sname, dname, commits as f64 / batches.max(1) as f64));
        }
    }
    for (s, d, avg) in report {
        println!("spool/{s}/{d}: average group-commit batch {avg:.1} messages");
    }
}

criterion_group!(benches, bench_writer);
criterion_main!(benches);
