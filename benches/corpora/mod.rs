//! The generated message bodies the scanner benchmarks run on.
//!
//! Why it exists: `scan` (criterion) and `scan_pairs` (paired runs for
//! noisy machines) must measure the same bytes.

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

/// The named corpora of issue #3's goal, each ending with the terminator.
pub fn corpora() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("text-1k", corpus(1 << 10, 76, 0, TEXT)),
        ("text-64k", corpus(64 << 10, 76, 0, TEXT)),
        ("text-1m", corpus(1 << 20, 76, 0, TEXT)),
        ("dots5pct-64k", corpus(64 << 10, 76, 5, TEXT)),
        ("base64-1m", corpus(1 << 20, 76, 0, BASE64)),
    ]
}

/// Text bodies of other sizes: what a message's last part-block costs
/// shows at some sizes and not at others (`scan_pairs` runs these too).
#[allow(dead_code, reason = "only scan_pairs runs these")]
pub fn sizes() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("text-159", corpus(100, 76, 0, TEXT)),
        ("text-315", corpus(300, 76, 0, TEXT)),
        ("text-2k", corpus(2 << 10, 76, 0, TEXT)),
        ("text-4k", corpus(4 << 10, 76, 0, TEXT)),
    ]
}
