//! The segment file a core's writer appends to: small batches with direct
//! I/O, large ones through the page cache.
//!
//! Why it exists: a buffered append costs the executor's core a copy into
//! the page cache and, at `fdatasync`, a walk of the dirty pages, and
//! io_uring hands both to a kernel worker thread (ext4 cannot take a
//! buffered write without blocking), which wakes and switches twice per
//! batch. An `O_DIRECT` write of an aligned buffer goes from our memory to
//! the device in the executor's own `io_uring_enter`, and the direct
//! handle is opened `O_DSYNC`, so the write completes only once it is
//! durable: no `fdatasync` (and no hand-off to a worker thread) for a
//! small batch. On a device with FUA or without a volatile write cache the
//! kernel makes that one write; on one without (this VM's virtio disk) it
//! flushes from its own workqueue when the write is done. Direct I/O took
//! a fifth off the CPU per small message; `O_DSYNC` then took 4–10 % off
//! the server's threads (but not off the machine: the flush moved to the
//! kernel's workqueue) and a seventh off the latency (BENCHMARKS.md). For
//! batches of large messages direct I/O went the other way (1.1–1.3× the
//! CPU, measured while every large buffer was fresh memory), so those
//! still go through the page cache and are synced with `fdatasync`.
//!
//! A direct write is whole pages at page offsets, so the octets of the
//! last, partial page are kept in memory ([`Segment::tail`]) and written
//! again, followed by the new records and zeroes up to the next page
//! boundary. Readers already treat an all-zero header as the end of the
//! records (the zeroes written ahead end the file the same way). The page
//! rewritten holds the same octets as before in its acknowledged part, so a
//! torn write of it can only lose records nobody was told about. A
//! page-cache write simply starts where the records end; records left in
//! the page cache are synced before a direct write, so records become
//! durable in the order they were written.
//!
//! Ahead of the data the file holds zeroes that were written and synced
//! before any record lands there: an `fdatasync` after an append that
//! grows the file must also commit the new size (and on ext4 and xfs the
//! journal); overwriting blocks that exist does not. Zeroing is only ever
//! done by the writer task, between batches, so it never races a record.
//! On a file system without direct I/O (tmpfs) glommio writes the same
//! aligned buffers through the page cache; `--durability none` uses only
//! the page cache (it never syncs, and is cheaper with the page cache
//! taking its small writes).

use std::io;
use std::path::{Path, PathBuf};

use glommio::io::{BufferedFile, Directory, DmaFile, OpenOptions};

use super::walk::segment_path;
use super::writer::{Durability, WriterConfig};

/// Zeroes are written this far ahead of the data at a time (a short
/// stall of the writer each step; smaller steps, shorter stalls).
const ZERO_STEP: u64 = 2 << 20;
/// Batches this large are appended without zeroes ahead. Zeroing saves
/// one journal commit per sync (~0.15 ms here) but writes every octet
/// twice (~1 ns per octet at ~1 GB/s): it pays below ~150 KB per batch.
/// (Measured: with no limit, 64 KiB messages lost a quarter of their rate.)
const ZERO_BATCH_LIMIT: u64 = 128 << 10;

/// Batches written with direct I/O are smaller than this (the range that
/// lands on zeroes written ahead: a pure overwrite, which io_uring issues
/// inline); larger ones go through the page cache. Measured
/// (BENCHMARKS.md): a 1 KiB-message batch costs 0.8× the CPU written
/// direct, a batch of 64 KiB messages 1.1–1.3×.
const DIRECT_LIMIT: usize = ZERO_BATCH_LIMIT as usize;
/// Direct writes are whole pages at page offsets (or the device's logical
/// block, if larger).
const BLOCK: u64 = 4096;

/// Two handles on the segment file: the page cache, and under `fsync`
/// direct I/O (`O_DSYNC`) for the small writes. `fdatasync` on either
/// syncs the file.
/// Linux keeps the two coherent (a direct write drops the cached pages it
/// covers); the writer never has both kinds in flight at once.
struct SegmentFile {
    buffered: BufferedFile,
    direct: Option<DmaFile>,
}

impl SegmentFile {
    async fn create(path: &Path, durability: Durability) -> io::Result<SegmentFile> {
        let buffered = OpenOptions::new()
            .write(true)
            .create_new(true)
            .buffered_open(path)
            .await?;
        let direct = match durability {
            Durability::Fsync => Some(
                OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_DSYNC)
                    .dma_open(path)
                    .await?,
            ),
            Durability::None => None,
        };
        Ok(SegmentFile { buffered, direct })
    }

    /// Direct writes are whole blocks of this many octets at offsets it
    /// divides.
    fn alignment(&self) -> u64 {
        self.direct
            .as_ref()
            .map_or(BLOCK, |d| d.alignment().max(BLOCK))
    }

    fn align_up(&self, v: u64) -> u64 {
        v.div_ceil(self.alignment()) * self.alignment()
    }

    fn align_down(&self, v: u64) -> u64 {
        v / self.alignment() * self.alignment()
    }

    /// The direct handle, if a write of `len` octets should take it.
    fn direct_for(&self, len: usize) -> Option<&DmaFile> {
        self.direct.as_ref().filter(|_| len < DIRECT_LIMIT)
    }

    async fn fdatasync(&self) -> io::Result<()> {
        Ok(self.buffered.fdatasync().await?)
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        Ok(self.buffered.truncate(len).await?)
    }

    async fn close(self) -> io::Result<()> {
        if let Some(d) = self.direct {
            d.close().await?;
        }
        Ok(self.buffered.close().await?)
    }
}

/// The segment being appended to.
pub(super) struct Segment {
    number: u64,
    pub(super) path: PathBuf,
    file: SegmentFile,
    /// Where the records end (the next append goes here).
    pub(super) len: u64,
    /// The file holds synced zeroes up to here.
    zeroed: u64,
    /// Records were written through the page cache since the last sync.
    cached: bool,
    /// The octets from the last page boundary up to `len`: written again
    /// in front of the next direct append.
    tail: Vec<u8>,
}

/// Writes `len` octets at `pos` with direct I/O, from a fresh DMA buffer
/// that `fill` fills. Returns how many were written.
async fn write_direct(
    file: &DmaFile,
    len: usize,
    pos: u64,
    fill: impl FnOnce(&mut [u8]),
) -> io::Result<usize> {
    let mut buf = file.alloc_dma_buffer(len);
    fill(buf.as_bytes_mut());
    Ok(file.write_at(buf, pos).await?)
}

/// The octets at `range` of `a` followed by `b`.
fn joined_range(a: &[u8], b: &[u8], range: std::ops::Range<usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(range.len());
    if range.start < a.len() {
        out.extend_from_slice(&a[range.start..]);
        out.extend_from_slice(&b[..range.end - a.len()]);
    } else {
        out.extend_from_slice(&b[range.start - a.len()..range.end - a.len()]);
    }
    out
}

impl Segment {
    /// Creates segment `number` and makes its directory entry durable.
    pub(super) async fn create(
        dir: &Path,
        number: u64,
        durability: Durability,
    ) -> io::Result<Segment> {
        let path = segment_path(dir, number);
        let file = SegmentFile::create(&path, durability).await?;
        let d = Directory::open(dir).await?;
        d.sync().await?;
        d.close().await?;
        Ok(Segment {
            number,
            path,
            file,
            len: 0,
            zeroed: 0,
            cached: false,
            tail: Vec::new(),
        })
    }

    /// Makes sure the next `incoming` octets land on pre-zeroed blocks,
    /// extending the zeroes by a step when needed (never past the segment
    /// size). Best effort: if the zeroes cannot be written (no space), they
    /// are cut back and the batch is simply appended.
    pub(super) async fn zero_ahead(&mut self, incoming: u64, config: &WriterConfig) {
        // No direct handle: `--durability none`, which never syncs.
        let Some(direct) = &self.file.direct else {
            return;
        };
        if incoming >= ZERO_BATCH_LIMIT || self.len + incoming <= self.zeroed {
            return;
        }
        // Whole blocks only: the partial one at `len` is the next append's.
        let from = self.file.align_up(self.zeroed.max(self.len));
        let to = self.file.align_up(
            (self.len + incoming)
                .max(from + ZERO_STEP)
                .min(config.segment_size.max(self.len + incoming)),
        );
        if to <= from {
            return;
        }
        // Zeroes go direct at any size: no copy, nothing cached, and
        // (`O_DSYNC`) synced, file size included, when the write completes.
        let zeroes = write_direct(direct, (to - from) as usize, from, |b| b.fill(0));
        if matches!(zeroes.await, Ok(n) if n as u64 == to - from) {
            self.zeroed = to;
        } else if self.cut_back(self.len).await.is_ok() {
            self.zeroed = self.len;
        }
    }

    /// Appends `records`. A small batch goes direct: the kept partial
    /// page, then the records, padded with zeroes to a page boundary, in
    /// one aligned write that is durable when it completes (records still
    /// in the page cache are synced first). A large one (or any without a
    /// direct handle) goes to the page cache at `len`, in the batch's own
    /// buffer, with no copy, and waits for [`Segment::sync`]. Either way
    /// the buffer is handed to the kernel, so a short write (on a regular
    /// file that means no space or a file size limit) cannot be resumed
    /// and is reported as an error; the caller cuts the file back with
    /// [`Segment::cut_back`].
    pub(super) async fn append(&mut self, records: Vec<u8>) -> io::Result<()> {
        let total = self.tail.len() + records.len();
        let padded = self.file.align_up(total as u64) as usize;
        let kept_from = self.file.align_down(total as u64) as usize;
        let appended = records.len() as u64;
        let next_tail = joined_range(&self.tail, &records, kept_from..total);
        if self.cached && self.file.direct_for(padded).is_some() {
            self.sync().await?;
        }
        if let Some(direct) = self.file.direct_for(padded) {
            let start = self.len - self.tail.len() as u64;
            let tail = &self.tail;
            // `records` goes into the fill and is dropped there: the
            // batch's memory is given back once copied, before the wait.
            let fill = move |bytes: &mut [u8]| {
                bytes[..tail.len()].copy_from_slice(tail);
                bytes[tail.len()..total].copy_from_slice(&records);
                bytes[total..].fill(0);
            };
            if write_direct(direct, padded, start, fill).await? < padded {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.zeroed = self.zeroed.max(start + padded as u64);
        } else {
            self.cached = true;
            let n = self.file.buffered.write_at(records, self.len).await?;
            if (n as u64) < appended {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
        }
        self.len += appended;
        self.tail = next_tail;
        Ok(())
    }

    /// Cuts the file back to the end of the records, `len`, after a failed
    /// append. The zeroes of the last block go too: a short write may have
    /// put part of a record there. (The kept partial block still matches
    /// the file up to `len`, and the next append writes that block whole.)
    pub(super) async fn cut_back(&mut self, len: u64) -> io::Result<()> {
        self.zeroed = len;
        self.file.truncate(len).await
    }

    /// Whether records written are waiting for [`Segment::sync`] (the
    /// page cache took them); direct writes are durable already.
    pub(super) fn needs_sync(&self) -> bool {
        self.cached
    }

    /// Syncs what was written.
    pub(super) async fn sync(&mut self) -> io::Result<()> {
        self.file.fdatasync().await?;
        self.cached = false;
        Ok(())
    }

    /// Syncs (unless durability is off) and closes.
    pub(super) async fn finish(mut self, config: &WriterConfig) -> io::Result<()> {
        if config.durability == Durability::Fsync {
            self.sync().await?;
        }
        self.file.close().await
    }

    /// Syncs and closes this segment, then starts the next one.
    pub(super) async fn roll(self, config: &WriterConfig) -> io::Result<Segment> {
        let (dir, next) = (config.dir.clone(), self.number + 1);
        self.finish(config).await?;
        Segment::create(&dir, next, config.durability).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::{LocalExecutorBuilder, Placement};

    fn config(dir: &Path) -> WriterConfig {
        WriterConfig {
            dir: dir.to_path_buf(),
            core: 0,
            segment_size: 64 << 20,
            durability: Durability::Fsync,
            batch_limit: 1 << 20,
        }
    }

    /// Runs `f` with a fresh segment 1 in `dir` on an executor.
    fn with_segment<T: Send + 'static>(
        dir: &Path,
        f: impl FnOnce(Segment, WriterConfig) -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>>
            + Send
            + 'static,
    ) -> T {
        let dir = dir.canonicalize().unwrap();
        LocalExecutorBuilder::new(Placement::Unbound)
            .spawn(move || async move {
                let seg = Segment::create(&dir, 1, Durability::Fsync)
                    .await
                    .expect("a segment");
                f(seg, config(&dir)).await
            })
            .expect("an executor")
            .join()
            .expect("no panic")
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| seed.wrapping_add(i as u8) | 1).collect()
    }

    #[test]
    fn appends_of_any_length_read_back_exactly_and_end_in_zeroes() {
        appends_read_back_in(tempfile::tempdir().unwrap());
    }

    /// tmpfs has no direct I/O: glommio writes the same blocks buffered.
    #[test]
    fn appends_read_back_on_tmpfs_too() {
        match tempfile::tempdir_in("/dev/shm") {
            Ok(dir) => appends_read_back_in(dir),
            Err(e) => eprintln!("SKIPPED: no /dev/shm here: {e}"),
        }
    }

    fn appends_read_back_in(dir: tempfile::TempDir) {
        let path = segment_path(&dir.path().canonicalize().unwrap(), 1);
        // Small batches go direct, large ones (200 KB, 300 KB) through the
        // page cache: the two kinds follow each other.
        let lens = [
            1usize, 4095, 4096, 5000, 200_000, 3, 8192, 300_001, 511, 513,
        ];
        let files = with_segment(dir.path(), move |mut seg, cfg| {
            Box::pin(async move {
                let mut seen = Vec::new();
                for (i, &n) in lens.iter().enumerate() {
                    seg.append(pattern(n, i as u8)).await.unwrap();
                    seg.sync().await.unwrap();
                    seen.push((seg.len, std::fs::read(&path).unwrap()));
                }
                seg.finish(&cfg).await.unwrap();
                seen
            })
        });
        let mut want = Vec::new();
        for (i, ((len, file), &n)) in files.iter().zip(&lens).enumerate() {
            want.extend(pattern(n, i as u8));
            assert_eq!(*len as usize, want.len());
            assert_eq!(&file[..want.len()], &want[..], "append {i}");
            assert!(file[want.len()..].iter().all(|&b| b == 0), "append {i}");
            assert!(file.len() - want.len() < 4096, "padding within a page");
        }
    }

    /// The open flags of this process's descriptors on `path`.
    fn open_flags(path: &Path) -> Vec<i32> {
        let mut flags = Vec::new();
        for fd in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            if std::fs::read_link(fd.path()).ok().as_deref() == Some(path) {
                let name = fd.file_name().into_string().unwrap();
                let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{name}")).unwrap();
                let octal = info.lines().find_map(|l| l.strip_prefix("flags:")).unwrap();
                flags.push(i32::from_str_radix(octal.trim(), 8).unwrap());
            }
        }
        flags
    }

    #[test]
    fn direct_writes_are_durable_and_cached_ones_wait_for_a_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(&dir.path().canonicalize().unwrap(), 1);
        let (flags, states) = with_segment(dir.path(), move |mut seg, cfg| {
            Box::pin(async move {
                let flags = open_flags(&path);
                let mut states = Vec::new();
                for n in [1000, 300_000, 1000, 300_000] {
                    seg.append(pattern(n, 7)).await.unwrap();
                    states.push(seg.needs_sync());
                }
                seg.sync().await.unwrap();
                states.push(seg.needs_sync());
                seg.finish(&cfg).await.unwrap();
                (flags, states)
            })
        });
        // One handle through the page cache, one O_DSYNC (and direct,
        // where the file system takes O_DIRECT).
        assert_eq!(flags.len(), 2, "flags {flags:?}");
        let dsync = |f: &&i32| *f & libc::O_DSYNC == libc::O_DSYNC;
        assert_eq!(flags.iter().filter(dsync).count(), 1, "flags {flags:?}");
        let direct = |f: &&i32| *f & libc::O_DIRECT != 0;
        assert!(
            flags.iter().filter(direct).all(|f| dsync(&f)),
            "flags {flags:?}"
        );
        // A small batch is durable when written; a large one waits for the
        // sync, and a small one after it syncs it first.
        assert_eq!(states, [false, true, false, true, false]);
    }

    #[test]
    fn zeroes_ahead_leave_the_records_and_lengthen_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(&dir.path().canonicalize().unwrap(), 1);
        let (before, after, last) = with_segment(dir.path(), move |mut seg, cfg| {
            Box::pin(async move {
                seg.append(pattern(700, 1)).await.unwrap();
                let before = std::fs::read(&path).unwrap();
                seg.zero_ahead(5000, &cfg).await;
                let after = std::fs::read(&path).unwrap();
                seg.append(pattern(1000, 2)).await.unwrap();
                seg.finish(&cfg).await.unwrap();
                (before, after, std::fs::read(&path).unwrap())
            })
        });
        assert_eq!(&after[..700], &before[..700]);
        // The first append's block, then a step of zeroes.
        assert_eq!(after.len() as u64, before.len() as u64 + ZERO_STEP);
        assert!(after[700..].iter().all(|&b| b == 0));
        assert_eq!(last.len(), after.len(), "the next append lands inside them");
        assert_eq!(&last[..700], &pattern(700, 1)[..]);
        assert_eq!(&last[700..1700], &pattern(1000, 2)[..]);
        assert!(last[1700..].iter().all(|&b| b == 0));
    }
}
