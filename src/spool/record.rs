//! Record framing for spool segments: magic, kind, length, CRC32C,
//! payload.
//!
//! Why it exists: a segment is only trustworthy if every record in it can
//! prove it is whole. The 16-octet header lets a reader tell a complete
//! record from a torn one (short read) or a damaged one (bad checksum), so
//! recovery can cut a torn tail and the tools can say exactly where a
//! segment is broken.
//!
//! ```text
//! 0      4     5          8         12        16
//! | SLR1 | kind | reserved | len u32 | crc u32 | payload (len octets) ...
//! ```
//! The CRC32C covers kind, reserved, length and payload (all but magic and
//! the CRC itself). Integers are little-endian.

use std::io::{self, Read};

/// Marks the start of every record.
pub const MAGIC: [u8; 4] = *b"SLR1";
/// Size of the record header.
pub const HEADER_LEN: usize = 16;
/// No record is longer than this; a larger length field means damage.
pub const MAX_PAYLOAD: usize = 128 << 20;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A piece of a message streamed before its end: queue id + octets.
    Chunk = 1,
    /// A finished message: envelope + the octets not sent as chunks.
    /// Writing it is what makes the message exist.
    Commit = 2,
}

impl Kind {
    /// The kind a header byte names.
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Chunk),
            2 => Some(Kind::Commit),
            _ => None,
        }
    }
}

/// Appends one framed record whose payload is the concatenation of
/// `parts` to `out`.
pub fn encode(out: &mut Vec<u8>, kind: Kind, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    assert!(len <= MAX_PAYLOAD, "record payload too large");
    let mut head = [0u8; HEADER_LEN];
    head[..4].copy_from_slice(&MAGIC);
    head[4] = kind as u8;
    head[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    let mut crc = crc32c::crc32c(&head[4..12]);
    for p in parts {
        crc = crc32c::crc32c_append(crc, p);
    }
    head[12..16].copy_from_slice(&crc.to_le_bytes());
    out.reserve(HEADER_LEN + len);
    out.extend_from_slice(&head);
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// The encoded size of a record with `payload` octets.
pub fn framed_len(payload: usize) -> u64 {
    (HEADER_LEN + payload) as u64
}

/// Why reading stopped before a clean end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The file ends inside a record (a torn write).
    Torn,
    /// The header is not a record header.
    BadMagic,
    /// Unknown kind byte.
    BadKind(u8),
    /// Length field over the maximum.
    BadLength(u32),
    /// The checksum does not match.
    BadChecksum,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Torn => write!(f, "torn record (the file ends inside it)"),
            Damage::BadMagic => write!(f, "no record header (bad magic)"),
            Damage::BadKind(k) => write!(f, "unknown record kind {k}"),
            Damage::BadLength(n) => write!(f, "record length {n} is over the maximum"),
            Damage::BadChecksum => write!(f, "checksum mismatch"),
        }
    }
}

/// A record header's fields, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the record holds.
    pub kind: Kind,
    /// Payload octets after the header.
    pub len: u32,
    /// The CRC32C the payload (with kind, reserved and length) must have.
    pub crc: u32,
}

impl Header {
    /// Reads a header: `Ok(None)` where the records end (all zeroes, as
    /// the writer prepares them ahead), `Err` for anything that is not a
    /// header. Every reader of segments parses headers here.
    pub fn parse(head: &[u8; HEADER_LEN]) -> Result<Option<Header>, Damage> {
        if head.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        if head[..4] != MAGIC {
            return Err(Damage::BadMagic);
        }
        let kind = Kind::from_u8(head[4]).ok_or(Damage::BadKind(head[4]))?;
        let len = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
        if len as usize > MAX_PAYLOAD {
            return Err(Damage::BadLength(len));
        }
        let crc = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes"));
        Ok(Some(Header { kind, len, crc }))
    }

    /// Whether `payload` is what this header's checksum covers.
    pub fn checks(&self, head: &[u8; HEADER_LEN], payload: &[u8]) -> bool {
        crc32c::crc32c_append(crc32c::crc32c(&head[4..12]), payload) == self.crc
    }
}

/// One step of [`RecordReader::next`].
#[derive(Debug)]
pub enum Step {
    /// A whole, checked record starting at `offset`; the payload is in
    /// [`RecordReader::payload`].
    Record { kind: Kind, offset: u64 },
    /// Clean end of the records (end of file, or the zero-filled space
    /// the writer prepares ahead of them).
    End,
    /// Damage at `offset`: nothing from here on can be trusted.
    Damaged { offset: u64, damage: Damage },
}

/// Reads records one by one from a segment, reusing one payload buffer.
pub struct RecordReader<R> {
    input: R,
    offset: u64,
    payload: Vec<u8>,
}

impl<R: Read> RecordReader<R> {
    /// Reads from the start of `input`.
    pub fn new(input: R) -> Self {
        RecordReader::starting_at(input, 0)
    }

    /// Reads from `input` already positioned at `offset` of its segment.
    pub fn starting_at(input: R, offset: u64) -> Self {
        RecordReader {
            input,
            offset,
            payload: Vec::new(),
        }
    }

    /// The payload of the last record returned.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The payload of the last record returned, taken out (the next
    /// record is read into a fresh buffer): a commit's octets are handed
    /// on without a copy.
    pub fn take_payload(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.payload)
    }

    /// Offset just past the last whole record.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next record, the clean end, or damage.
    pub fn read_next(&mut self) -> io::Result<Step> {
        let at = self.offset;
        let mut head = [0u8; HEADER_LEN];
        let got = read_full(&mut self.input, &mut head)?;
        // The writer keeps zeroes ahead of the records: an all-zero header
        // (or the zero start of one the file cuts short) is where they end.
        if got == 0 || head[..got].iter().all(|&b| b == 0) {
            return Ok(Step::End);
        }
        let damaged = |damage| Ok(Step::Damaged { offset: at, damage });
        if got < HEADER_LEN {
            return damaged(Damage::Torn);
        }
        let header = match Header::parse(&head) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(Step::End),
            Err(damage) => return damaged(damage),
        };
        let len = header.len;
        self.payload.resize(len as usize, 0);
        if read_full(&mut self.input, &mut self.payload)? < len as usize {
            return damaged(Damage::Torn);
        }
        if !header.checks(&head, &self.payload) {
            return damaged(Damage::BadChecksum);
        }
        let kind = header.kind;
        self.offset += framed_len(len as usize);
        Ok(Step::Record { kind, offset: at })
    }
}

/// Reads until `buf` is full or the input ends; returns octets read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Read = Result<(Kind, Vec<u8>), (u64, Damage)>;

    fn read_all(bytes: &[u8]) -> Vec<Read> {
        let mut r = RecordReader::new(bytes);
        let mut v = Vec::new();
        loop {
            match r.read_next().unwrap() {
                Step::Record { kind, .. } => v.push(Ok((kind, r.payload().to_vec()))),
                Step::End => return v,
                Step::Damaged { offset, damage } => {
                    v.push(Err((offset, damage)));
                    return v;
                }
            }
        }
    }

    #[test]
    fn round_trip_of_parts() {
        let mut buf = Vec::new();
        encode(&mut buf, Kind::Chunk, &[b"ab", b"cd"]);
        encode(&mut buf, Kind::Commit, &[]);
        assert_eq!(
            read_all(&buf),
            vec![
                Ok((Kind::Chunk, b"abcd".to_vec())),
                Ok((Kind::Commit, vec![]))
            ]
        );
    }

    #[test]
    fn every_truncation_is_torn_at_the_last_record() {
        let mut buf = Vec::new();
        encode(&mut buf, Kind::Commit, &[b"first"]);
        let first = buf.len();
        encode(&mut buf, Kind::Commit, &[b"second record"]);
        for cut in first + 1..buf.len() {
            let got = read_all(&buf[..cut]);
            assert_eq!(got.len(), 2, "cut {cut}");
            assert_eq!(got[1], Err((first as u64, Damage::Torn)), "cut {cut}");
        }
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let mut buf = Vec::new();
        encode(&mut buf, Kind::Commit, &[b"payload"]);
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                let got = read_all(&bad);
                assert!(
                    matches!(got.last(), Some(Err(_))),
                    "flip at {byte}.{bit} undetected: {got:?}"
                );
            }
        }
    }
}
