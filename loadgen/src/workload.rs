//! The workload: message sizes, bodies generated once, and the per-message
//! header that makes every message unique.
//!
//! Why it exists: a load generator must not spend its CPU building mail
//! while it measures a server. Bodies (valid RFC 5322 text, with some lines
//! that need dot-stuffing) are built and stuffed once at start; each
//! message only adds a few header lines with its own Message-ID.

use std::fmt::Write as _;

/// How message sizes are chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum SizeSpec {
    /// Every message about this many octets.
    Fixed(usize),
    /// Uniformly spread between the two sizes.
    Range(usize, usize),
    /// A named mix of sizes with weights.
    Mix(&'static str, &'static [(u32, usize)]),
}

/// The "realistic" mix: mostly small text mail, some attachments.
const REALISTIC: &[(u32, usize)] = &[
    (30, 2 << 10),
    (25, 6 << 10),
    (20, 16 << 10),
    (12, 48 << 10),
    (8, 128 << 10),
    (4, 512 << 10),
    (1, 2 << 20),
];

/// Parses `4k`, `1k-64k`, or `realistic`.
pub fn parse_size_spec(s: &str) -> Result<SizeSpec, String> {
    if s.eq_ignore_ascii_case("realistic") {
        return Ok(SizeSpec::Mix("realistic", REALISTIC));
    }
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (parse_size(a)?, parse_size(b)?);
            if a > b {
                return Err(format!("{s:?}: the range must go from small to large"));
            }
            Ok(SizeSpec::Range(a, b))
        }
        None => Ok(SizeSpec::Fixed(parse_size(s)?)),
    }
}

/// `512`, `4k`, `64K`, `1m` (powers of 1024).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: usize = t[..digits]
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 4k"))?;
    let shift = match t[digits..].to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        other => return Err(format!("{s:?}: unknown unit {other:?} (use k or m)")),
    };
    match n.checked_mul(1 << shift) {
        Some(v) if v > 0 && v <= 256 << 20 => Ok(v),
        _ => Err(format!("{s:?}: sizes go from 1 octet to 256m")),
    }
}

/// One prepared body.
pub struct Body {
    /// Body octets as they go on the wire for DATA (dot-stuffed).
    pub stuffed: Vec<u8>,
    /// Body octets as the server stores them (for BDAT, and checksums).
    pub plain: Vec<u8>,
    /// CRC32C of `plain`.
    pub crc: u32,
}

/// Bodies to pick from, in proportion to the size spec.
pub struct Workload {
    pub bodies: Vec<Body>,
    /// Indexes into `bodies`, repeated by weight; messages cycle through it.
    pub schedule: Vec<usize>,
}

/// Room for the per-message header, so "size" is about the whole message.
const HEADER_ESTIMATE: usize = 220;

impl Workload {
    /// Builds the bodies for `spec`.
    pub fn new(spec: &SizeSpec) -> Workload {
        let (sizes, weights): (Vec<usize>, Vec<u32>) = match spec {
            SizeSpec::Fixed(n) => (vec![*n], vec![1]),
            SizeSpec::Range(a, b) => {
                let steps = 16;
                let sizes = (0..steps).map(|k| a + (b - a) * k / (steps - 1)).collect();
                (sizes, vec![1; steps])
            }
            SizeSpec::Mix(_, table) => table.iter().map(|&(w, s)| (s, w)).unzip(),
        };
        let bodies: Vec<Body> = sizes
            .iter()
            .enumerate()
            .map(|(k, &s)| make_body(s.saturating_sub(HEADER_ESTIMATE).max(2), k as u64))
            .collect();
        // Interleave by weight so consecutive messages vary.
        let total: u32 = weights.iter().sum();
        let mut schedule = Vec::with_capacity(total as usize);
        let mut credit = vec![0i64; weights.len()];
        for _ in 0..total {
            for (c, &w) in credit.iter_mut().zip(&weights) {
                *c += i64::from(w);
            }
            let best = (0..credit.len())
                .max_by_key(|&k| credit[k])
                .expect("one size");
            credit[best] -= i64::from(total);
            schedule.push(best);
        }
        Workload { bodies, schedule }
    }
}

/// Text lines of 76 octets with CRLF, about 5 % starting with a dot,
/// `size` octets long (the last line is shortened to fit).
fn make_body(size: usize, seed: u64) -> Body {
    const WORDS: &[&str] = &[
        "mail", "ingest", "the", "sluice", "of", "a", "durable", "queue", "fast", "line",
        "message", "server", "to", "and", "core", "disk", "sync", "body", "text", "with",
    ];
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut plain = Vec::with_capacity(size + 80);
    while plain.len() < size {
        let mut line = String::with_capacity(78);
        if next() % 20 == 0 {
            line.push('.');
        }
        while line.len() < 76 {
            line.push_str(WORDS[(next() % WORDS.len() as u64) as usize]);
            line.push(' ');
        }
        line.truncate(76);
        let room = size - plain.len();
        if room < 3 {
            plain.extend_from_slice(&b"\r\n"[..room.min(2)]);
            break;
        }
        line.truncate(room - 2);
        plain.extend_from_slice(line.as_bytes());
        plain.extend_from_slice(b"\r\n");
    }
    if !plain.ends_with(b"\r\n") {
        plain.truncate(plain.len().saturating_sub(2));
        plain.extend_from_slice(b"\r\n");
    }
    let mut stuffed = Vec::with_capacity(plain.len() + plain.len() / 40);
    let mut at_line_start = true;
    for &b in &plain {
        if at_line_start && b == b'.' {
            stuffed.push(b'.');
        }
        stuffed.push(b);
        at_line_start = b == b'\n';
    }
    Body {
        crc: crc32c::crc32c(&plain),
        stuffed,
        plain,
    }
}

/// The per-message header: From, To, Subject, Date, a unique Message-ID,
/// and (with `verify`) the body checksum.
pub fn message_header(
    out: &mut Vec<u8>,
    from: &str,
    to: &str,
    id: &str,
    body: &Body,
    verify: bool,
) {
    let mut h = String::with_capacity(HEADER_ESTIMATE);
    let _ = write!(
        h,
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: sluice-loadgen {} octets\r\n\
         Date: Thu, 1 Jan 2026 00:00:00 +0000\r\nMessage-ID: <{id}@loadgen.invalid>\r\n",
        body.plain.len()
    );
    if verify {
        let _ = write!(h, "X-Loadgen-Checksum: {:08x}\r\n", body.crc);
    }
    h.push_str("\r\n");
    out.extend_from_slice(h.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_specs() {
        assert_eq!(parse_size_spec("4k"), Ok(SizeSpec::Fixed(4096)));
        assert_eq!(parse_size_spec("1k-64k"), Ok(SizeSpec::Range(1024, 65536)));
        assert!(matches!(
            parse_size_spec("realistic"),
            Ok(SizeSpec::Mix(..))
        ));
        assert!(parse_size_spec("64k-1k").is_err());
        assert!(parse_size_spec("4q").is_err());
        assert!(parse_size_spec("0").is_err());
    }

    #[test]
    fn bodies_have_the_size_crlf_lines_and_are_stuffed() {
        for size in [10, 100, 1000, 65536] {
            let b = make_body(size, 7);
            assert_eq!(b.plain.len(), size, "size {size}");
            assert!(b.plain.ends_with(b"\r\n"));
            // Unstuffing the stuffed body gives the plain one.
            let mut unstuffed = Vec::new();
            let mut at_line_start = true;
            let mut skip = false;
            for &c in &b.stuffed {
                if at_line_start && c == b'.' && !skip {
                    skip = true;
                    continue;
                }
                skip = false;
                unstuffed.push(c);
                at_line_start = c == b'\n';
            }
            assert_eq!(unstuffed, b.plain);
        }
    }

    #[test]
    fn mix_schedule_follows_weights() {
        let w = Workload::new(&parse_size_spec("realistic").unwrap());
        assert_eq!(w.schedule.len(), 100);
        assert_eq!(w.schedule.iter().filter(|&&k| k == 0).count(), 30);
        assert_eq!(w.schedule.iter().filter(|&&k| k == 6).count(), 1);
    }
}
