//! The drain cursor: how far `sluice drain` has handed one core's spool to
//! JetStream, in `spool/core-<k>/drain.cursor`.
//!
//! Why it exists: it is the contract between three processes. The drain
//! resumes from it after a restart, `serve` counts the undrained bytes
//! after it for `--spool-max-bytes`, and `serve`'s recovery keeps new
//! queue ids above the last drained one even when every segment holding
//! older ids has been deleted. It is replaced atomically (write, fsync,
//! rename, fsync the directory), so a reader sees the old or the new one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::id::QueueId;

/// The file name inside a core's directory.
pub const CURSOR_FILE: &str = "drain.cursor";

/// Everything up to here is acknowledged by JetStream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Segment of the last acknowledged commit record.
    pub segment: u64,
    /// Offset just past that record.
    pub offset: u64,
    /// Its queue id.
    pub last_id: u64,
    /// Messages acknowledged since the cursor was first written.
    pub messages: u64,
}

impl Cursor {
    /// The last acknowledged queue id.
    pub fn last_id(&self) -> QueueId {
        QueueId(self.last_id)
    }
}

fn path(dir: &Path) -> PathBuf {
    dir.join(CURSOR_FILE)
}

/// The cursor of `dir`, if a drain ever wrote one.
pub fn read(dir: &Path) -> io::Result<Option<Cursor>> {
    match fs::read(path(dir)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a drain cursor: {e}", path(dir).display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces the cursor of `dir` durably.
pub fn write(dir: &Path, cursor: &Cursor) -> io::Result<()> {
    let tmp = dir.join(format!("{CURSOR_FILE}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(cursor).map_err(io::Error::other)?)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    fs::rename(&tmp, path(dir))?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_cursors_read_back_and_absent_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let c = Cursor {
            segment: 3,
            offset: 4096,
            last_id: 77,
            messages: 12,
        };
        write(dir.path(), &c).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(c));
        let newer = Cursor { offset: 8192, ..c };
        write(dir.path(), &newer).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(newer));
        fs::write(path(dir.path()), b"garbage").unwrap();
        assert!(read(dir.path()).is_err());
    }
}
