//! Walking a spool on disk: the segments of each core in order, their
//! records, and the messages their commit records make visible.
//!
//! Why it exists: start-up recovery, `sluice spool verify|ls|cat|export`
//! and (later) the drain all need the same reading of a spool: which
//! messages exist, where their octets are, where a segment is damaged.
//! This is the one place that reads segments; it uses plain blocking file
//! I/O because none of its users is on the serving path.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::envelope::{DecodeError, StoredEnvelope};
use super::id::QueueId;
use super::record::{framed_len, Damage, Kind, RecordReader, Step, HEADER_LEN};

/// `spool/core-<k>`.
pub fn core_dir(spool: &Path, core: usize) -> PathBuf {
    spool.join(format!("core-{core}"))
}

/// `core-<k>/<n>.seg`, zero-padded so names sort like numbers.
pub fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:08}.seg"))
}

/// The cores present in a spool, sorted: `(core, dir)`.
pub fn list_cores(spool: &Path) -> io::Result<Vec<(usize, PathBuf)>> {
    let mut cores = Vec::new();
    for entry in fs::read_dir(spool)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(k) = name
            .to_str()
            .and_then(|n| n.strip_prefix("core-"))
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        if entry.file_type()?.is_dir() {
            cores.push((k, entry.path()));
        }
    }
    cores.sort();
    Ok(cores)
}

/// The segments of one core, sorted: `(number, path)`.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse().ok())
        {
            segs.push((n, entry.path()));
        }
    }
    segs.sort();
    Ok(segs)
}

/// Where a chunk's octets are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLoc {
    /// Segment number.
    pub segment: u64,
    /// Offset of the chunk's octets in that segment.
    pub offset: u64,
    /// Number of octets.
    pub len: u64,
}

/// A committed message found by a walk.
#[derive(Debug, Clone)]
pub struct Found {
    /// The envelope from the commit record.
    pub envelope: StoredEnvelope,
    /// Segment holding the commit record.
    pub segment: u64,
    /// Offset of the commit record.
    pub offset: u64,
    /// Chunks streamed before the commit, in order.
    pub chunks: Vec<ChunkLoc>,
    /// The octets carried in the commit record itself (after the chunks):
    /// a slice of the record's payload as read, not a copy.
    pub inline: Bytes,
}

/// What is wrong at a place in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Defect {
    /// The record there is torn or damaged; nothing after it in the
    /// segment can be trusted.
    Damaged(Damage),
    /// A chunk record too short to hold its queue id.
    ChunkWithoutId,
    /// A commit record whose envelope does not decode.
    BadEnvelope(DecodeError),
    /// A commit record whose chunks are not all there.
    MissingChunks {
        id: QueueId,
        expected: u32,
        found: usize,
    },
    /// Non-zero octets after the last record, up to this offset.
    TrailingBytes { up_to: u64 },
}

impl std::fmt::Display for Defect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Defect::Damaged(d) => d.fmt(f),
            Defect::ChunkWithoutId => f.write_str("chunk record without a queue id"),
            Defect::BadEnvelope(e) => e.fmt(f),
            Defect::MissingChunks {
                id,
                expected,
                found,
            } => write!(f, "message {id} expects {expected} chunks, found {found}"),
            Defect::TrailingBytes { up_to } => write!(
                f,
                "unexpected non-zero bytes after the last record, up to offset {up_to}"
            ),
        }
    }
}

/// A defect and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub segment: u64,
    pub offset: u64,
    pub defect: Defect,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "segment {} offset {}: {}",
            self.segment, self.offset, self.defect
        )
    }
}

/// What a walk reports, in segment order. Events go to a callback one at
/// a time and are never stored in bulk, so the large variant stays
/// unboxed.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Event {
    /// A committed message.
    Message(Found),
    /// A problem at a place; after damage, records after it in that
    /// segment are not read.
    Problem(Problem),
    /// A segment ended. `data_end` is where its last non-zero octet ends
    /// (the records, plus any damaged or torn bytes after them; zeroes the
    /// writer prepared ahead do not count) and `last_commit_end` where its
    /// last commit record ends (0 if none).
    SegmentEnd {
        segment: u64,
        path: PathBuf,
        file_len: u64,
        data_end: u64,
        last_commit_end: u64,
    },
}

/// Walks one core's segments in order, calling `f` for every event.
pub fn walk_core(dir: &Path, mut f: impl FnMut(Event) -> io::Result<()>) -> io::Result<()> {
    let mut pending: HashMap<u64, Vec<ChunkLoc>> = HashMap::new();
    for (segment, path) in list_segments(dir)? {
        let file = File::open(&path)?;
        let file_len = file.metadata()?.len();
        let mut reader = RecordReader::new(BufReader::with_capacity(1 << 20, file));
        let mut last_commit_end = 0;
        let mut damaged = false;
        loop {
            match reader.read_next()? {
                Step::End => break,
                Step::Damaged { offset, damage } => {
                    damaged = true;
                    f(problem(segment, offset, Defect::Damaged(damage)))?;
                    break;
                }
                Step::Record { kind, offset } => match kind {
                    Kind::Chunk => match chunk_loc(segment, offset, reader.payload()) {
                        Some((id, loc)) => pending.entry(id).or_default().push(loc),
                        None => f(problem(segment, offset, Defect::ChunkWithoutId))?,
                    },
                    Kind::Commit => {
                        let payload = reader.take_payload();
                        last_commit_end = offset + framed_len(payload.len());
                        match committed(segment, offset, payload, &mut pending) {
                            Ok(found) => f(Event::Message(found))?,
                            Err(defect) => f(problem(segment, offset, defect))?,
                        }
                    }
                },
            }
        }
        let records_end = reader.offset();
        let data_end = nonzero_end(&path, records_end)?;
        if !damaged && data_end > records_end {
            f(problem(
                segment,
                records_end,
                Defect::TrailingBytes { up_to: data_end },
            ))?;
        }
        f(Event::SegmentEnd {
            segment,
            path,
            file_len,
            data_end,
            last_commit_end,
        })?;
    }
    Ok(())
}

/// A chunk record's queue id and where its octets are; `None` when the
/// payload is too short to hold an id.
pub fn chunk_loc(segment: u64, offset: u64, payload: &[u8]) -> Option<(u64, ChunkLoc)> {
    let id = u64::from_le_bytes(payload.get(..8)?.try_into().expect("8 bytes"));
    Some((
        id,
        ChunkLoc {
            segment,
            offset: offset + HEADER_LEN as u64 + 8,
            len: payload.len() as u64 - 8,
        },
    ))
}

/// The message a commit record at `segment`/`offset` makes visible, with
/// its chunks taken from `pending`; or what is wrong with it.
pub fn committed(
    segment: u64,
    offset: u64,
    payload: Vec<u8>,
    pending: &mut HashMap<u64, Vec<ChunkLoc>>,
) -> Result<Found, Defect> {
    let (envelope, inline) = StoredEnvelope::decode(&payload).map_err(Defect::BadEnvelope)?;
    let inline_from = payload.len() - inline.len();
    let chunks = pending.remove(&envelope.id.0).unwrap_or_default();
    if chunks.len() != envelope.chunks as usize {
        return Err(Defect::MissingChunks {
            id: envelope.id,
            expected: envelope.chunks,
            found: chunks.len(),
        });
    }
    Ok(Found {
        inline: Bytes::from(payload).slice(inline_from..),
        envelope,
        segment,
        offset,
        chunks,
    })
}

/// The end of the last non-zero octet in `path` at or after `from`
/// (`from` itself when everything after it is zero).
fn nonzero_end(path: &Path, from: u64) -> io::Result<u64> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut end = from;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = from;
    while at < len {
        let n = ((len - at) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], at)?;
        if let Some(last) = buf[..n].iter().rposition(|&b| b != 0) {
            end = at + last as u64 + 1;
        }
        at += n as u64;
    }
    Ok(end)
}

fn problem(segment: u64, offset: u64, defect: Defect) -> Event {
    Event::Problem(Problem {
        segment,
        offset,
        defect,
    })
}

/// Reads a found message's stored octets (trace header + body).
pub fn read_message(dir: &Path, m: &Found) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(m.envelope.size as usize);
    let mut open: Option<(u64, File)> = None;
    for c in &m.chunks {
        if open.as_ref().map(|(n, _)| *n) != Some(c.segment) {
            open = Some((c.segment, File::open(segment_path(dir, c.segment))?));
        }
        let (_, file) = open.as_ref().expect("opened above");
        let start = out.len();
        out.resize(start + c.len as usize, 0);
        file.read_exact_at(&mut out[start..], c.offset)?;
    }
    out.extend_from_slice(&m.inline);
    Ok(out)
}

/// Checks that `len` octets is the size the message's envelope gives.
pub fn check_size(m: &Found, len: usize) -> Result<(), String> {
    if len as u64 != m.envelope.size {
        return Err(format!(
            "message {}: size {len} but envelope says {}",
            m.envelope.id, m.envelope.size
        ));
    }
    Ok(())
}

/// Checks a message's octets against its envelope's size and CRC.
pub fn check_message(m: &Found, data: &[u8]) -> Result<(), String> {
    check_size(m, data.len())?;
    if crc32c::crc32c(data) != m.envelope.body_crc {
        return Err(format!("message {}: body checksum mismatch", m.envelope.id));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::fixtures::{append, chunk, commit};

    fn events(dir: &Path) -> (Vec<Found>, Vec<Problem>) {
        let (mut found, mut problems) = (Vec::new(), Vec::new());
        walk_core(dir, |e| {
            match e {
                Event::Message(m) => found.push(m),
                Event::Problem(p) => problems.push(p),
                Event::SegmentEnd { .. } => {}
            }
            Ok(())
        })
        .unwrap();
        (found, problems)
    }

    #[test]
    fn chunks_in_earlier_segments_join_their_commit() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        append(d, 1, &chunk(5 << 8, b"one "));
        append(d, 1, &commit(4 << 8, 0, b"other"));
        append(d, 2, &chunk(5 << 8, b"two "));
        append(d, 3, &commit(5 << 8, 2, b"three"));
        let (found, problems) = events(d);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(found.len(), 2);
        assert_eq!(read_message(d, &found[0]).unwrap(), b"other");
        let m = &found[1];
        assert_eq!((m.segment, m.offset), (3, 0));
        assert_eq!(
            m.chunks.iter().map(|c| c.segment).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(read_message(d, m).unwrap(), b"one two three");
    }

    #[test]
    fn each_kind_of_defect_is_reported_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let short = {
            let mut out = Vec::new();
            crate::spool::record::encode(&mut out, Kind::Chunk, &[b"1234"]);
            out
        };
        append(d, 1, &short);
        let missing = commit(6 << 8, 1, b"lost its chunk");
        append(d, 1, &missing);
        let end = (short.len() + missing.len()) as u64;
        append(d, 1, &[0, 0, 0, 0, 7, 0]);
        let (found, problems) = events(d);
        assert!(found.is_empty());
        assert_eq!(
            problems,
            vec![
                Problem {
                    segment: 1,
                    offset: 0,
                    defect: Defect::ChunkWithoutId
                },
                Problem {
                    segment: 1,
                    offset: short.len() as u64,
                    defect: Defect::MissingChunks {
                        id: QueueId(6 << 8),
                        expected: 1,
                        found: 0
                    }
                },
                Problem {
                    segment: 1,
                    offset: end,
                    defect: Defect::Damaged(crate::spool::record::Damage::Torn)
                },
            ]
        );
    }

    #[test]
    fn zeroes_after_the_records_are_clean_and_other_octets_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let one = commit(1 << 8, 0, b"x");
        append(d, 1, &one);
        append(d, 1, &[0u8; 64]);
        assert!(events(d).1.is_empty());
        let mut tail = vec![0u8; 64];
        tail[40] = 9;
        append(d, 2, &commit(2 << 8, 0, b"y"));
        append(d, 2, &tail);
        let (found, problems) = events(d);
        assert_eq!(found.len(), 2);
        let records_end = one.len() as u64;
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].segment, 2);
        assert_eq!(
            problems[0].defect,
            Defect::TrailingBytes {
                up_to: records_end + 41
            }
        );
    }
}
