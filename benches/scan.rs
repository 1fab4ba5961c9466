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

/// A tiny deterministic generator so the corpora are the same every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Lines of `width` octets plus CRLF from `alphabet`, about `size` bytes,
/// `dot_pct` percent of them starting with a (stuffed) dot, then the
/// terminator.
fn corpus(size: usize, width: usize, dot_pct: u64, alphabet: &[u8]) -> Vec<u8> {
    let mut rng = Lcg(size as u64 ^ dot_pct);
    let mut out = Vec::with_capacity(size + 128);
    while out.len() < size {
        if rng.next() % 100 < dot_pct {
            out.extend_from_slice(b"..");
        }
        for _ in 0..width {
            out.push(alphabet[(rng.next() as usize) % alphabet.len()]);
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

const TEXT: &[u8] =
    b"the quick brown fox jumps over a lazy dog THE QUICK BROWN FOX 0123456789 ,;:!?'";
const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn corpora() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("text-1k", corpus(1 << 10, 76, 0, TEXT)),
        ("text-64k", corpus(64 << 10, 76, 0, TEXT)),
        ("text-1m", corpus(1 << 20, 76, 0, TEXT)),
        ("dots5pct-64k", corpus(64 << 10, 76, 5, TEXT)),
        ("base64-1m", corpus(1 << 20, 76, 0, BASE64)),
    ]
}

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
