//! DATA scanner throughput: the sluice scanner against the floor (a raw
//! `memmem` pass for `\r\n.`) and the naive byte loop, in bytes/s.
//!
//! Every measured run also checks its result against the expected body
//! length, so a fast wrong scanner cannot win. The scanner and the floor
//! both get a fresh copy of the corpus per run (the scanner rewrites its
//! input in place), made outside the timed part.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sluice::scan::{naive, DataScanner};
use std::hint::black_box;

#[path = "corpora/mod.rs"]
mod corpora;
use corpora::corpora;

fn bench_scan(c: &mut Criterion) {
    for (name, input) in corpora() {
        let expected = naive::scan(&input, 1000);
        let body_len = expected.body.len();
        assert_eq!(expected.end, Some(input.len()));
        let mut group = c.benchmark_group(format!("scan/{name}"));
        group.throughput(Throughput::Bytes(input.len() as u64));

        group.bench_function("sluice", |b| {
            let mut scanner = DataScanner::new(1000);
            b.iter_batched_ref(
                || input.clone(),
                |buf| {
                    scanner.reset();
                    let p = scanner.scan(buf, 0, 0);
                    assert!(p.done && p.out == body_len);
                    black_box(scanner.flags())
                },
                BatchSize::LargeInput,
            )
        });

        // Same setup as the scanner's (a fresh copy per run), so both
        // read bytes in the same state of the caches.
        group.bench_function("memmem-floor", |b| {
            let finder = memchr::memmem::Finder::new(b"\r\n.");
            b.iter_batched_ref(
                || input.clone(),
                |buf| {
                    let n = finder.find_iter(buf.as_slice()).count();
                    assert!(n > 0);
                    n
                },
                BatchSize::LargeInput,
            )
        });

        group.bench_function("naive", |b| {
            b.iter(|| {
                let r = naive::scan(black_box(&input), 1000);
                assert_eq!(r.body.len(), body_len);
                r.flags
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench_scan);
criterion_main!(benches);
