//! The DATA scanner against the memmem floor, measured in pairs.
//!
//! Why it exists: on a shared machine the speed of a core drifts by tens
//! of percent over seconds, and criterion measures the scanner and the
//! floor seconds apart, so their ratio wanders from run to run. Here each
//! round times both, back to back (alternating which goes first), on the
//! same freshly written buffers; the median of the per-round ratios is the
//! figure to quote.
//!
//!     cargo bench --bench scan_pairs [-- ROUNDS [CORPUS]]

use sluice::scan::{naive, DataScanner};
use std::hint::black_box;
use std::time::{Duration, Instant};

#[path = "corpora/mod.rs"]
mod corpora;

/// Input octets per timed slice: enough copies of a corpus that a slice
/// takes microseconds, few enough that they stay in L2 as a socket read's
/// bytes would (one copy of the 1 MiB corpora).
const SLICE_OCTETS: usize = 256 << 10;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let rounds: usize = args
        .first()
        .map(|a| a.parse().expect("ROUNDS must be a number"))
        .unwrap_or(201);
    let only = args.get(1).map_or("", String::as_str);
    println!("{rounds} rounds; medians");
    println!("| corpus | sluice | memmem floor | sluice / floor (median of rounds) |");
    println!("|---|---:|---:|---:|");
    for (name, input) in corpora::corpora()
        .into_iter()
        .chain(corpora::sizes())
        .filter(|(n, _)| n.contains(only))
    {
        let copies = (SLICE_OCTETS / input.len()).max(1);
        let mut bufs = vec![input.clone(); copies];
        // The expected length comes from the naive reference, not from
        // the scanner under test.
        let body_len = naive::scan(&input, 1000).body.len();
        let finder = memchr::memmem::Finder::new(b"\r\n.");
        let mut scanner = DataScanner::new(1000);
        let mut sluice = |bufs: &mut [Vec<u8>]| {
            for buf in bufs {
                scanner.reset();
                let p = scanner.scan(buf, 0, 0);
                assert!(p.done && p.out == body_len);
                black_box(scanner.flags());
            }
        };
        let floor = |bufs: &mut [Vec<u8>]| {
            for buf in bufs {
                assert!(black_box(finder.find_iter(buf.as_slice()).count()) > 0);
            }
        };
        let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let mut timed = |f: &mut dyn FnMut(&mut [Vec<u8>])| {
                for buf in bufs.iter_mut() {
                    buf.copy_from_slice(&input);
                }
                let start = Instant::now();
                f(&mut bufs);
                start.elapsed()
            };
            let (s, f) = if round % 2 == 0 {
                let s = timed(&mut sluice);
                (s, timed(&mut { floor }))
            } else {
                let f = timed(&mut { floor });
                (timed(&mut sluice), f)
            };
            ours.push(s);
            theirs.push(f);
            ratios.push(f.as_secs_f64() / s.as_secs_f64());
        }
        let octets = (input.len() * copies) as f64;
        let rate = |times: &mut Vec<Duration>| {
            times.sort_unstable();
            octets / times[times.len() / 2].as_secs_f64() / f64::from(1 << 30)
        };
        ratios.sort_by(f64::total_cmp);
        println!(
            "| {name} | {:.2} GiB/s | {:.2} GiB/s | {:.0}% |",
            rate(&mut ours),
            rate(&mut theirs),
            ratios[ratios.len() / 2] * 100.0
        );
    }
}
