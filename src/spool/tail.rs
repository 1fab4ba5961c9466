//! Following one core's spool while `serve` appends to it: committed
//! messages in spool order, from a position on, as they appear.
//!
//! Why it exists: `sluice drain` runs beside `serve` and must hand on every
//! committed message exactly in the order the core wrote them, without
//! ever reading a record the writer is still writing. The rules:
//!
//! - A clean end (end of file, or the zeroes the writer keeps ahead) means
//!   "nothing more yet". A broken record at the end of the newest segment
//!   is a write in progress (or a torn tail `serve`'s recovery will cut):
//!   wait and read it again.
//! - A segment is finished once a newer one exists (the writer rolls only
//!   after its last write to the old one). It is read to its end once more
//!   after the newer one was seen, then left. Damage inside a finished
//!   segment is reported and the rest of that segment skipped (`spool
//!   verify` says more).
//! - Chunk records are remembered by queue id until their commit arrives,
//!   which can be segments later. Their octets, read and checked against
//!   the record's CRC32C on the way, are kept too (up to [`HOLD_LIMIT`]
//!   per core, the oldest messages' let go first), so the drain hands a
//!   chunked message on without reading and checking its octets a second
//!   time; a message whose chunks were let go is read back from the
//!   segments.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::record::{Kind, RecordReader, Step};
use super::walk::{
    chunk_loc, committed, list_segments, segment_path, ChunkLoc, Defect, Found, Problem,
};

/// Chunks whose message started this long before the newest commit seen
/// are orphans of a crash (their commit will never come); they no longer
/// hold their segment back.
pub const ORPHAN_AFTER_MICROS: u64 = 24 * 3600 * 1_000_000;

/// Chunk octets a tail keeps in memory for messages not yet committed.
/// The drain holds its in-flight messages whole anyway; this bounds what
/// the messages still arriving (or abandoned mid-way) add.
pub const HOLD_LIMIT: usize = 32 << 20;

/// A committed message and where its commit record ends.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The message.
    pub found: Found,
    /// Segment and offset just past its commit record.
    pub end: (u64, u64),
    /// The octets of every chunk of the message, in order, already checked
    /// against their records' CRC32C, if the tail kept them all (none for a
    /// message without chunks).
    pub held: Option<Vec<Bytes>>,
}

/// A position in one core's spool and what is needed to go on from it.
pub struct Tail {
    dir: PathBuf,
    segment: u64,
    offset: u64,
    pending: HashMap<u64, Vec<ChunkLoc>>,
    /// The octets of pending chunks, by queue id (ids grow with time: the
    /// first is the oldest), for ids whose every chunk so far is kept.
    held: BTreeMap<u64, Vec<Bytes>>,
    held_octets: usize,
    newest_commit_micros: u64,
    /// Damage found in finished segments.
    pub problems: Vec<Problem>,
    /// The position asked for at open was past the end of the records.
    pub cursor_ahead: Option<(u64, u64)>,
}

impl Tail {
    /// A tail positioned just after `after` (segment, offset), or at the
    /// start of the spool. The retained segments before it are read for
    /// chunk records of messages committed later.
    ///
    /// If the spool's records end before `after` (possible only after a
    /// power loss: the drain handed on records `serve` had written but not
    /// yet synced, so no client got a 250 for them), the tail starts where
    /// the records end and [`Tail::cursor_ahead`] says so.
    pub fn open(dir: &Path, after: Option<(u64, u64)>) -> io::Result<Tail> {
        let first = list_segments(dir)?.first().map_or(1, |(n, _)| *n);
        let mut t = Tail {
            dir: dir.to_path_buf(),
            segment: first,
            offset: 0,
            pending: HashMap::new(),
            held: BTreeMap::new(),
            held_octets: 0,
            newest_commit_micros: 0,
            problems: Vec::new(),
            cursor_ahead: None,
        };
        if let Some(target) = after {
            while (t.segment, t.offset) < target {
                let before = (t.segment, t.offset);
                drop(t.read(usize::MAX, Some(target))?);
                if (t.segment, t.offset) == before {
                    t.cursor_ahead = Some(target);
                    break;
                }
            }
        }
        Ok(t)
    }

    /// Where the next record is read from.
    pub fn position(&self) -> (u64, u64) {
        (self.segment, self.offset)
    }

    /// Up to `max` messages committed after the position (none when the
    /// writer has not committed more yet).
    pub fn poll(&mut self, max: usize) -> io::Result<Vec<Committed>> {
        self.read(max, None)
    }

    /// The oldest segment still needed for messages not yet returned
    /// (their chunks), ignoring orphaned chunks.
    pub fn oldest_needed(&self) -> u64 {
        let horizon = self
            .newest_commit_micros
            .saturating_sub(ORPHAN_AFTER_MICROS);
        self.pending
            .iter()
            .filter(|(id, _)| (**id >> 8) >= horizon)
            .flat_map(|(_, locs)| locs.iter().map(|l| l.segment))
            .min()
            .unwrap_or(self.segment)
            .min(self.segment)
    }

    /// Reads records; stops after `max` messages, at `stop` (a position
    /// not to read past), or where there is nothing more yet.
    fn read(&mut self, max: usize, stop: Option<(u64, u64)>) -> io::Result<Vec<Committed>> {
        let mut out = Vec::new();
        loop {
            // Look for a newer segment before reading: if one exists now,
            // everything in this one was written before we read it.
            let newer = list_segments(&self.dir)?
                .into_iter()
                .map(|(n, _)| n)
                .find(|&n| n > self.segment);
            let path = segment_path(&self.dir, self.segment);
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => match newer {
                    Some(n) => {
                        self.move_to(n);
                        continue;
                    }
                    None => return Ok(out),
                },
                Err(e) => return Err(e),
            };
            let mut input = BufReader::with_capacity(256 << 10, file);
            input.seek(SeekFrom::Start(self.offset))?;
            let mut reader = RecordReader::starting_at(input, self.offset);
            let finished = loop {
                if out.len() >= max || stop.is_some_and(|s| (self.segment, self.offset) >= s) {
                    return Ok(out);
                }
                match reader.read_next()? {
                    Step::End => break true,
                    Step::Damaged { offset, damage } => {
                        if newer.is_none() {
                            return Ok(out);
                        }
                        self.problem(offset, Defect::Damaged(damage));
                        break true;
                    }
                    Step::Record { kind, offset } => {
                        match kind {
                            Kind::Chunk => {
                                match chunk_loc(self.segment, offset, reader.payload()) {
                                    Some((id, loc)) => {
                                        let from = reader.payload().len() - loc.len as usize;
                                        let chunks = self.pending.entry(id).or_default();
                                        chunks.push(loc);
                                        let nth = chunks.len();
                                        let octets = Bytes::from(reader.take_payload());
                                        self.hold(id, nth, octets.slice(from..));
                                    }
                                    None => self.problem(offset, Defect::ChunkWithoutId),
                                }
                            }
                            Kind::Commit => {
                                let payload = reader.take_payload();
                                match committed(self.segment, offset, payload, &mut self.pending) {
                                    Ok(found) => {
                                        self.newest_commit_micros = self
                                            .newest_commit_micros
                                            .max(found.envelope.received_at_micros);
                                        let held = self
                                            .let_go(found.envelope.id.0)
                                            .filter(|h| h.len() == found.chunks.len());
                                        out.push(Committed {
                                            found,
                                            end: (self.segment, reader.offset()),
                                            held,
                                        });
                                    }
                                    Err(defect) => {
                                        if let Defect::MissingChunks { id, .. } = &defect {
                                            self.let_go(id.0);
                                        }
                                        self.problem(offset, defect)
                                    }
                                }
                            }
                        }
                        self.offset = reader.offset();
                    }
                }
            };
            match (finished, newer) {
                (true, Some(n)) => self.move_to(n),
                _ => return Ok(out),
            }
        }
    }

    /// Keeps `octets`, the `nth` chunk of message `id`, if every earlier
    /// one is kept and room can be made by letting older messages' go.
    fn hold(&mut self, id: u64, nth: usize, octets: Bytes) {
        if self.held.get(&id).map_or(0, Vec::len) + 1 != nth || octets.len() > HOLD_LIMIT {
            self.let_go(id);
            return;
        }
        while self.held_octets + octets.len() > HOLD_LIMIT {
            let oldest = *self.held.keys().next().expect("octets are held");
            self.let_go(oldest);
        }
        if nth > 1 && !self.held.contains_key(&id) {
            return; // its own earlier chunks were the oldest
        }
        self.held_octets += octets.len();
        self.held.entry(id).or_default().push(octets);
    }

    /// Stops keeping the chunks of `id`; returns them.
    fn let_go(&mut self, id: u64) -> Option<Vec<Bytes>> {
        let chunks = self.held.remove(&id)?;
        self.held_octets -= chunks.iter().map(Bytes::len).sum::<usize>();
        Some(chunks)
    }

    fn problem(&mut self, offset: u64, defect: Defect) {
        self.problems.push(Problem {
            segment: self.segment,
            offset,
            defect,
        });
    }

    fn move_to(&mut self, segment: u64) {
        self.segment = segment;
        self.offset = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::fixtures::{append, chunk, commit};

    fn ids(v: &[Committed]) -> Vec<u64> {
        v.iter().map(|c| c.found.envelope.id.0).collect()
    }

    #[test]
    fn follows_appends_rolls_and_chunks_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        append(d, 1, &commit(1 << 8, 0, b"one"));
        let mut t = Tail::open(d, None).unwrap();
        assert_eq!(ids(&t.poll(10).unwrap()), vec![1 << 8]);
        assert!(t.poll(10).unwrap().is_empty());

        // A half-written record at the tail of the newest segment: wait.
        let second = commit(2 << 8, 0, b"two");
        append(d, 1, &second[..10]);
        assert!(t.poll(10).unwrap().is_empty());
        append(d, 1, &second[10..]);
        // Chunks of message 3 in segment 1, its commit in segment 2.
        append(d, 1, &chunk(3 << 8, b"big-"));
        append(d, 2, &commit(3 << 8, 1, b"end"));
        let got = t.poll(10).unwrap();
        assert_eq!(ids(&got), vec![2 << 8, 3 << 8]);
        assert_eq!(got[1].found.chunks[0].segment, 1);
        assert_eq!(got[1].end.0, 2);
        assert_eq!(t.oldest_needed(), 2);

        // Zeroes ahead (the writer's preallocation) are a clean end.
        append(d, 2, &[0u8; 64]);
        assert!(t.poll(10).unwrap().is_empty());
        assert!(t.problems.is_empty());
    }

    fn held(c: &Committed) -> Option<Vec<Vec<u8>>> {
        c.held
            .as_ref()
            .map(|h| h.iter().map(|b| b.to_vec()).collect())
    }

    #[test]
    fn chunk_octets_are_kept_for_their_commit() {
        // The commit in a later segment than its chunks.
        let (t, got) = read_segments(&[
            (1, chunk(3 << 8, b"first ")),
            (1, commit(1 << 8, 0, b"inline")),
            (1, chunk(3 << 8, b"second ")),
            (2, commit(3 << 8, 2, b"end")),
        ]);
        assert_eq!(ids(&got), vec![1 << 8, 3 << 8]);
        assert_eq!(held(&got[0]), None, "no chunks, nothing held");
        assert_eq!(
            held(&got[1]),
            Some(vec![b"first ".to_vec(), b"second ".to_vec()])
        );
        assert_eq!(t.held_octets, 0, "given to the commit");
    }

    /// A tail over `(segment, record)`s appended in order, and what it
    /// returns.
    fn read_segments(records: &[(u64, Vec<u8>)]) -> (Tail, Vec<Committed>) {
        let dir = tempfile::tempdir().unwrap();
        for (segment, r) in records {
            append(dir.path(), *segment, r);
        }
        let mut t = Tail::open(dir.path(), None).unwrap();
        let got = t.poll(10).unwrap();
        (t, got)
    }

    #[test]
    fn the_oldest_messages_chunks_are_let_go_beyond_the_limit() {
        let half = vec![b'x'; HOLD_LIMIT / 2 + 1];
        // Message 2 (older) has one chunk; message 5 (newer) needs room.
        let (t, got) = read_segments(&[
            (1, chunk(2 << 8, &half)),
            (1, chunk(5 << 8, &half)),
            (1, chunk(5 << 8, b"tail")),
            (1, commit(5 << 8, 2, b"")),
            (1, commit(2 << 8, 1, b"")),
        ]);
        assert_eq!(ids(&got), vec![5 << 8, 2 << 8]);
        assert_eq!(held(&got[0]), Some(vec![half.clone(), b"tail".to_vec()]));
        // Let go: the drain reads it back from its place in the segment.
        assert_eq!(held(&got[1]), None);
        assert_eq!(got[1].found.chunks.len(), 1);
        assert_eq!(t.held_octets, 0);
        assert!(t.held.is_empty());
    }

    #[test]
    fn a_message_whose_first_chunk_was_let_go_keeps_none() {
        let big = vec![b'y'; HOLD_LIMIT / 2 + 1];
        // Message 2's first chunk is let go for message 5's; its second
        // alone would be a partial message: not kept either.
        let (t, got) = read_segments(&[
            (1, chunk(2 << 8, &big)),
            (1, chunk(5 << 8, &big)),
            (1, chunk(2 << 8, b"more")),
            (1, commit(2 << 8, 2, b"")),
        ]);
        assert_eq!(ids(&got), vec![2 << 8]);
        assert_eq!(held(&got[0]), None);
        assert_eq!(t.held_octets, big.len(), "message 5's chunk is still kept");
    }

    #[test]
    fn reopening_after_a_cursor_skips_what_was_handed_on_but_keeps_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        append(d, 1, &commit(1 << 8, 0, b"a"));
        append(d, 1, &chunk(5 << 8, b"x"));
        append(d, 1, &commit(2 << 8, 0, b"b"));
        append(d, 2, &commit(5 << 8, 1, b"y"));
        let mut first = Tail::open(d, None).unwrap();
        let all = first.poll(2).unwrap();
        assert_eq!(ids(&all), vec![1 << 8, 2 << 8]);
        // The pending chunk of 5 holds segment 1.
        assert_eq!(first.oldest_needed(), 1);

        let mut again = Tail::open(d, Some(all[1].end)).unwrap();
        let rest = again.poll(10).unwrap();
        assert_eq!(ids(&rest), vec![5 << 8]);
        assert_eq!(rest[0].found.chunks.len(), 1);
        assert_eq!(again.cursor_ahead, None);
        // A cursor past the records (a power loss took unsynced records
        // the drain had already handed on): start at the end, say so.
        let ahead = Tail::open(d, Some((2, 1 << 20))).unwrap();
        assert_eq!(ahead.cursor_ahead, Some((2, 1 << 20)));
        assert_eq!(ahead.position().0, 2);
        assert!(ahead.position().1 < 1 << 20);
    }

    #[test]
    fn damage_in_a_finished_segment_is_reported_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut bad = commit(1 << 8, 0, b"a");
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        append(d, 1, &bad);
        let mut t = Tail::open(d, None).unwrap();
        // Newest segment: maybe a write in progress; nothing yet.
        assert!(t.poll(10).unwrap().is_empty());
        append(d, 2, &commit(2 << 8, 0, b"b"));
        assert_eq!(ids(&t.poll(10).unwrap()), vec![2 << 8]);
        assert_eq!(t.problems.len(), 1);
        assert_eq!(t.problems[0].segment, 1);
    }
}
