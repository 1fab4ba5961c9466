//! Start-up recovery of one core's spool directory.
//!
//! Why it exists: after a crash the newest segment may end in a torn
//! record, or in chunk records of a message whose commit never made it.
//! Neither was acknowledged, so both are cut off; every committed message
//! stays. Recovery also finds the newest queue id (so new ids stay unique)
//! and the number for the next segment (old segments are never appended
//! to again).

use std::fs::OpenOptions;
use std::io;
use std::path::Path;

use super::id::QueueId;
use super::walk::{walk_core, Event, Problem};

/// What recovery found and did for one core.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Committed messages found.
    pub messages: u64,
    /// Their stored octets.
    pub bytes: u64,
    /// Octets cut off the end of the newest segment.
    pub dropped_bytes: u64,
    /// Problems found in older segments (left in place for `spool verify`).
    pub problems: Vec<Problem>,
    /// The newest queue id seen.
    pub last_id: Option<QueueId>,
    /// The number the next segment gets.
    pub next_segment: u64,
}

/// Recovers `dir` (creating it if missing).
pub fn recover_core(dir: &Path) -> io::Result<Recovery> {
    std::fs::create_dir_all(dir)?;
    let mut r = Recovery {
        next_segment: 1,
        ..Recovery::default()
    };
    let mut ends = Vec::new();
    walk_core(dir, |event| {
        match event {
            Event::Message(m) => {
                r.messages += 1;
                r.bytes += m.envelope.size;
                r.last_id = r.last_id.max(Some(m.envelope.id));
            }
            Event::Problem(p) => r.problems.push(p),
            Event::SegmentEnd {
                segment,
                path,
                file_len,
                data_end,
                last_commit_end,
            } => ends.push((segment, path, file_len, data_end, last_commit_end)),
        }
        Ok(())
    })?;
    // The drain may have deleted every segment holding the newest ids:
    // its cursor remembers the last one it handed on.
    if let Some(c) = super::cursor::read(dir)? {
        r.last_id = r.last_id.max(Some(c.last_id()));
    }
    if let Some((segment, path, file_len, data_end, last_commit_end)) = ends.pop() {
        r.next_segment = segment + 1;
        if file_len > last_commit_end {
            // Everything after the last commit in the newest segment was
            // never acknowledged: a torn record, orphaned chunks, or the
            // zeroes the writer had prepared (those are not counted).
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(last_commit_end)?;
            f.sync_all()?;
            r.dropped_bytes = data_end.saturating_sub(last_commit_end);
            // The problem (if any) was in the tail just cut; don't report it.
            r.problems.retain(|p| p.segment != segment);
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::fixtures::{append, chunk, commit};
    use crate::spool::record::Damage;
    use crate::spool::walk::{segment_path, Defect};

    #[test]
    fn a_torn_last_record_is_cut_at_every_offset() {
        let first = commit(1 << 8, 0, b"first message");
        let second = commit(2 << 8, 0, b"second message, torn");
        let whole = [first.clone(), second].concat();
        for cut in first.len() + 1..whole.len() {
            let dir = tempfile::tempdir().unwrap();
            append(dir.path(), 1, &whole[..cut]);
            let r = recover_core(dir.path()).unwrap();
            assert_eq!(r.messages, 1, "cut {cut}");
            assert_eq!(r.last_id, Some(QueueId(1 << 8)), "cut {cut}");
            // Dropped octets count up to the last non-zero one (zeroes the
            // writer prepared ahead are not data).
            let torn = &whole[first.len()..cut];
            let data = torn.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
            assert_eq!(r.dropped_bytes, data as u64, "cut {cut}");
            assert!(r.problems.is_empty(), "cut {cut}: {:?}", r.problems);
            assert_eq!(r.next_segment, 2);
            let len = std::fs::metadata(segment_path(dir.path(), 1))
                .unwrap()
                .len();
            assert_eq!(len, first.len() as u64, "cut {cut}: the tail is gone");
            // Recovering again finds the same and cuts nothing.
            let again = recover_core(dir.path()).unwrap();
            assert_eq!((again.messages, again.dropped_bytes), (1, 0));
        }
    }

    #[test]
    fn chunks_of_an_unacknowledged_message_and_zeroes_ahead_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let done = commit(1 << 8, 0, b"done");
        append(dir.path(), 1, &done);
        let orphan = chunk(2 << 8, &[b'x'; 300]);
        append(dir.path(), 1, &orphan);
        append(dir.path(), 1, &[0u8; 4096]);
        let r = recover_core(dir.path()).unwrap();
        assert_eq!(r.messages, 1);
        assert_eq!(
            r.dropped_bytes,
            orphan.len() as u64,
            "zeroes are not counted"
        );
        let len = std::fs::metadata(segment_path(dir.path(), 1))
            .unwrap()
            .len();
        assert_eq!(len, done.len() as u64);
    }

    #[test]
    fn damage_in_an_older_segment_is_reported_typed_and_left_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut bad = commit(1 << 8, 0, b"flipped");
        *bad.last_mut().unwrap() ^= 1;
        append(dir.path(), 1, &bad);
        append(dir.path(), 2, &commit(2 << 8, 0, b"fine"));
        let r = recover_core(dir.path()).unwrap();
        assert_eq!(r.messages, 1);
        assert_eq!(r.next_segment, 3);
        assert_eq!(
            r.problems,
            vec![Problem {
                segment: 1,
                offset: 0,
                defect: Defect::Damaged(Damage::BadChecksum)
            }]
        );
        assert_eq!(
            r.problems[0].to_string(),
            "segment 1 offset 0: checksum mismatch"
        );
        let len = std::fs::metadata(segment_path(dir.path(), 1))
            .unwrap()
            .len();
        assert_eq!(len, bad.len() as u64, "left for `spool verify`");
    }

    #[test]
    fn the_drain_cursor_keeps_new_ids_above_deleted_segments() {
        let dir = tempfile::tempdir().unwrap();
        let c = crate::spool::cursor::Cursor {
            segment: 7,
            offset: 0,
            last_id: 9 << 8,
            messages: 3,
        };
        crate::spool::cursor::write(dir.path(), &c).unwrap();
        let r = recover_core(dir.path()).unwrap();
        assert_eq!(r.last_id, Some(QueueId(9 << 8)));
        assert_eq!(r.messages, 0);
    }
}
