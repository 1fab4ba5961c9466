//! How much of a core's spool the drain has not handed on yet.
//!
//! Why it exists: `serve --spool-max-bytes` refuses new mail (452) when
//! the undrained spool grows past a limit, and the drain reports its lag;
//! both measure it the same way, from the files and the drain cursor
//! alone. Bytes are file sizes after the cursor, so the zeroes a writer
//! keeps ahead of its records (at most 2 MiB per core) count as
//! undrained: a small, safe overestimate.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::cursor::{self, Cursor};
use super::record::{Header, Kind, HEADER_LEN};
use super::walk::list_segments;

/// Octets in `dir`'s segments after its drain cursor (all of them when no
/// drain has run; 0 when the directory does not exist yet).
pub fn undrained_bytes(dir: &Path) -> io::Result<u64> {
    if !dir.exists() {
        return Ok(0);
    }
    let cursor = cursor::read(dir)?;
    let mut total = 0;
    for (n, path) in list_segments(dir)? {
        let len = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            // Deleted by the drain between listing and looking.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        total += match cursor {
            None => len,
            Some(c) if n > c.segment => len,
            Some(c) if n == c.segment => len.saturating_sub(c.offset),
            Some(_) => 0,
        };
    }
    Ok(total)
}

/// Commit records (messages) after the cursor, counted from record
/// headers only (no checksums: an estimate for progress reports).
pub fn undrained_messages(dir: &Path, cursor: Option<&Cursor>) -> io::Result<u64> {
    let mut count = 0;
    for (n, path) in list_segments(dir)? {
        let start = match cursor {
            Some(c) if n < c.segment => continue,
            Some(c) if n == c.segment => c.offset,
            _ => 0,
        };
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut r = BufReader::with_capacity(64 << 10, file);
        r.seek(SeekFrom::Start(start))?;
        let mut head = [0u8; HEADER_LEN];
        while r.read_exact(&mut head).is_ok() {
            let Ok(Some(header)) = Header::parse(&head) else {
                break;
            };
            count += u64::from(header.kind == Kind::Commit);
            r.seek_relative(i64::from(header.len))?;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::walk::segment_path;

    #[test]
    fn bytes_after_the_cursor_count() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(segment_path(d, 1), vec![1u8; 1000]).unwrap();
        std::fs::write(segment_path(d, 2), vec![1u8; 500]).unwrap();
        assert_eq!(undrained_bytes(d).unwrap(), 1500);
        let c = Cursor {
            segment: 1,
            offset: 600,
            last_id: 1,
            messages: 1,
        };
        cursor::write(d, &c).unwrap();
        assert_eq!(undrained_bytes(d).unwrap(), 900);
        cursor::write(
            d,
            &Cursor {
                segment: 2,
                offset: 500,
                ..c
            },
        )
        .unwrap();
        assert_eq!(undrained_bytes(d).unwrap(), 0);
        assert_eq!(undrained_bytes(&d.join("core-9")).unwrap(), 0);
    }
}
