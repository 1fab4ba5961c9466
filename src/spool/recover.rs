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
use super::walk::{walk_core, Event};

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
    pub problems: Vec<String>,
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
            Event::Problem {
                segment,
                offset,
                what,
            } => r
                .problems
                .push(format!("segment {segment} offset {offset}: {what}")),
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
            let tail = format!("segment {segment} ");
            r.problems.retain(|p| !p.starts_with(&tail));
        }
    }
    Ok(r)
}
