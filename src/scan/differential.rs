//! The DATA scanner against the naive reference, as one function the
//! unit tests and the fuzzer share.
//!
//! Why it exists: the scanner's SIMD paths must produce exactly what the
//! byte-at-a-time reference does, at every read boundary and every SIMD
//! level the CPU has. [`check`] streams an input cut at given places,
//! with and without sliding the buffer between reads, at three line
//! limits, and panics on the first difference.

use super::blocks::Simd;
use super::naive::{self, Reference};
use super::DataScanner;

/// The smallest line limit checked.
pub const MAX_LINE: usize = 20;
/// Line limits the checks run with: under one block (every line end is
/// looked at), over one block (only each block's first and last are), and
/// the RFC default.
const LIMITS: [usize; 3] = [MAX_LINE, 70, 1000];

/// Streams with every SIMD level this CPU has, and demands they agree.
pub fn stream_with(
    input: &[u8],
    cuts: &[usize],
    flush_every: Option<usize>,
    max_line: usize,
) -> Reference {
    let mut results = Simd::available().into_iter().map(|simd| {
        (
            simd,
            stream_at(
                DataScanner::with_simd(max_line, simd),
                input,
                cuts,
                flush_every,
            ),
        )
    });
    let (first_simd, first) = results.next().expect("the baseline is always there");
    for (simd, result) in results {
        assert_eq!(result, first, "{simd:?} differs from {first_simd:?}");
    }
    first
}

/// One scanner fed `input` in pieces ending at `cuts`, the way a
/// connection does: appending to one buffer and, when `flush_every` says
/// so, taking the body out and sliding the rest of the buffer left.
fn stream_at(
    mut scanner: DataScanner,
    input: &[u8],
    cuts: &[usize],
    flush_every: Option<usize>,
) -> Reference {
    let mut buf = Vec::new();
    let mut body = Vec::new();
    let (mut out, mut pos, mut base) = (0, 0, 0);
    let mut bounds: Vec<usize> = cuts.iter().copied().filter(|&c| c < input.len()).collect();
    bounds.sort_unstable();
    bounds.push(input.len());
    let mut from = 0;
    for (n, &to) in bounds.iter().enumerate() {
        buf.extend_from_slice(&input[from..to]);
        from = to;
        let p = scanner.scan(&mut buf, out, pos);
        assert!(p.out <= p.consumed, "output overtook input");
        out = p.out;
        pos = p.consumed;
        if p.done {
            body.extend_from_slice(&buf[..out]);
            return Reference {
                body,
                flags: scanner.flags(),
                end: Some(base + pos),
            };
        }
        assert_eq!(pos, buf.len(), "input left unconsumed without terminator");
        if flush_every.is_some_and(|k| n % k == 0) {
            body.extend_from_slice(&buf[..out]);
            buf.drain(..out);
            base += out;
            pos -= out;
            out = 0;
        }
    }
    body.extend_from_slice(&buf[..out]);
    Reference {
        body,
        flags: scanner.flags(),
        end: None,
    }
}

/// Streams `input` with and without flushing between reads and demands
/// the reference's body, flags and end position. (Sliding the buffer left
/// by `out` bytes shifts input indices by the same amount, which `base`
/// adds back, so end positions are comparable in both runs.)
pub fn check(input: &[u8], cuts: &[usize]) {
    for max_line in LIMITS {
        let want = naive::scan(input, max_line);
        for flush in [None, Some(1), Some(2)] {
            let got = stream_with(input, cuts, flush, max_line);
            assert_eq!(
                got,
                want,
                "input {:?} cut at {:?}, flush {:?}, max line {}",
                String::from_utf8_lossy(input),
                cuts,
                flush,
                max_line
            );
        }
    }
}
