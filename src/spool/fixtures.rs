//! Hand-built records for the spool's tests.
//!
//! Why it exists: the readers (walk, recovery, tail) are tested on exact
//! bytes, written here the way the writer frames them, so a test can cut,
//! flip or reorder them at will.

use std::io::Write;
use std::path::Path;

use super::envelope::StoredEnvelope;
use super::id::QueueId;
use super::record::{encode, Kind};
use super::walk::segment_path;

/// A commit record for message `id` with `chunks` chunks before it and
/// `inline` octets in it (size and checksum are not filled in).
pub fn commit(id: u64, chunks: u32, inline: &[u8]) -> Vec<u8> {
    let env = StoredEnvelope {
        id: QueueId(id),
        received_at_micros: id >> 8,
        size: 0,
        body_crc: 0,
        chunks,
        peer: "127.0.0.1:1".into(),
        helo: "h".into(),
        mail_from: "a@b".into(),
        rcpt_to: vec!["c@d".into()],
        spam: None,
        auth: None,
        dsn: None,
    };
    let mut payload = Vec::new();
    env.encode(&mut payload);
    let mut out = Vec::new();
    encode(&mut out, Kind::Commit, &[&payload, inline]);
    out
}

/// A chunk record of message `id`.
pub fn chunk(id: u64, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode(&mut out, Kind::Chunk, &[&id.to_le_bytes(), data]);
    out
}

/// Appends `bytes` to segment `segment` of `dir` (creating it).
pub fn append(dir: &Path, segment: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, segment))
        .unwrap();
    f.write_all(bytes).unwrap();
}
