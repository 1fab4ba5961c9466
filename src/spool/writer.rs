//! The per-core spool writer: one task per executor that appends framed
//! records to the core's current segment with group commit.
//!
//! Why it exists: durability costs one `fdatasync` per write batch, not per
//! message. Connection tasks on the same executor hand records over by
//! appending them to a shared batch buffer (an `Rc<RefCell<..>>`: same
//! thread, so no lock and no atomics) and then wait. The writer task takes
//! the whole batch, writes it with one `write`, syncs once, and releases
//! every waiter. While it waits for the disk, the executor keeps serving
//! other connections, which fill the next batch.
//!
//! The batch buffer holds copies of octets the connections still hold in
//! their arenas until the write completes, so it is bounded
//! ([`WriterConfig::batch_limit`]): an appender that would take it past
//! the limit waits until the writer has taken the batch in hand. Without
//! that, thousands of messages finishing at once double the memory the
//! budget allows (issue 18's memory test caught it).
//!
//! Nothing is acknowledged that was not written and synced: a failed write
//! is cut off again (truncate to the last good offset) and every waiter of
//! the batch gets the error.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::envelope::{Dsn, Origin, StoredEnvelope};
use super::id::{now_micros, IdGenerator, QueueId};
use super::record::{self, Kind};
use super::segment::Segment;
use crate::metrics::CoreMetrics;

/// Whether a 250 waits for `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Sync before acknowledging (the only safe choice).
    Fsync,
    /// Never sync: for benchmarks only; a crash loses acknowledged mail.
    None,
}

impl std::str::FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> Result<Durability, String> {
        match s {
            "fsync" => Ok(Durability::Fsync),
            "none" => Ok(Durability::None),
            other => Err(format!("{other:?} is not a durability: use fsync or none")),
        }
    }
}

/// Why a record was not stored. Every message of a failed batch gets the
/// same error, so the `io::Error` is shared.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The disk (or a quota or file size limit) is full.
    #[error("no space for the spool: {0}")]
    NoSpace(#[source] Arc<io::Error>),
    /// Any other I/O error.
    #[error("spool I/O error: {0}")]
    Io(#[source] Arc<io::Error>),
    /// The writer is closing or has stopped.
    #[error("the spool writer has stopped")]
    Stopped,
}

impl From<io::Error> for StoreError {
    fn from(e: io::Error) -> StoreError {
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => {
                StoreError::NoSpace(Arc::new(e))
            }
            _ => StoreError::Io(Arc::new(e)),
        }
    }
}

/// Settings of one core's writer.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// `spool/core-<k>`.
    pub dir: PathBuf,
    /// The core number (goes into queue ids).
    pub core: u8,
    /// Roll to a new segment once the current one reaches this size.
    pub segment_size: u64,
    /// Sync or not.
    pub durability: Durability,
    /// A batch stops taking records once it holds this many octets (a
    /// record larger than this still goes, alone).
    pub batch_limit: usize,
}

impl WriterConfig {
    /// The batch limit for a core whose share of `--memory-budget` is
    /// `share`: an eighth of it, between 1 MiB and 16 MiB. The writer holds
    /// at most two batches (one being written, one filling).
    pub fn batch_limit_for(share: usize) -> usize {
        (share / 8).clamp(1 << 20, 16 << 20)
    }
}

/// Counters for the group-commit report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Batches written.
    pub batches: u64,
    /// `fdatasync` calls.
    pub syncs: u64,
    /// Commit records written (messages).
    pub commits: u64,
    /// Octets written.
    pub bytes: u64,
    /// Batches that failed.
    pub failures: u64,
}

/// One waiting appender.
#[derive(Default)]
struct Waiter {
    result: Cell<Option<Result<(), StoreError>>>,
    waker: RefCell<Option<Waker>>,
}

impl Waiter {
    fn complete(&self, r: Result<(), StoreError>) {
        self.result.set(Some(r));
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// Records waiting to be written together.
#[derive(Default)]
struct Batch {
    buf: Vec<u8>,
    waiters: Vec<Rc<Waiter>>,
    commits: u64,
    /// Some record in it needs a sync before its waiter may go on.
    sync: bool,
}

/// The writer of one core. Shared by `Rc` between the writer task and the
/// connection tasks of the same executor.
pub struct SpoolWriter {
    config: WriterConfig,
    metrics: Arc<CoreMetrics>,
    batch: RefCell<Batch>,
    wake_writer: RefCell<Option<Waker>>,
    /// Appenders waiting for room in the batch.
    wake_appenders: RefCell<Vec<Waker>>,
    ids: RefCell<IdGenerator>,
    closing: Cell<bool>,
    stats: Cell<WriterStats>,
}

impl SpoolWriter {
    /// A writer whose ids start above `last_id`.
    pub fn new(
        config: WriterConfig,
        last_id: Option<QueueId>,
        metrics: Arc<CoreMetrics>,
    ) -> Rc<SpoolWriter> {
        Rc::new(SpoolWriter {
            metrics,
            ids: RefCell::new(IdGenerator::new(config.core, last_id)),
            config,
            batch: RefCell::default(),
            wake_writer: RefCell::default(),
            wake_appenders: RefCell::default(),
            closing: Cell::new(false),
            stats: Cell::default(),
        })
    }

    /// A fresh queue id.
    pub fn next_id(&self) -> QueueId {
        self.ids.borrow_mut().assign()
    }

    /// Counters so far.
    pub fn stats(&self) -> WriterStats {
        self.stats.get()
    }

    /// Asks the writer task to finish the batch in hand, sync and stop.
    pub fn close(&self) {
        self.closing.set(true);
        self.wake();
        self.wake_appenders();
    }

    fn wake(&self) {
        if let Some(w) = self.wake_writer.borrow_mut().take() {
            w.wake();
        }
    }

    /// Queues one record once the batch has room for it, and waits until
    /// it is written (and, with `durable`, synced per the configured
    /// durability).
    async fn append(&self, kind: Kind, parts: &[&[u8]], durable: bool) -> Result<(), StoreError> {
        let len = parts.iter().map(|p| p.len()).sum();
        self.room(len).await;
        let waiter = Rc::new(Waiter::default());
        if self.closing.get() {
            return Err(StoreError::Stopped);
        }
        {
            let mut b = self.batch.borrow_mut();
            record::encode(&mut b.buf, kind, parts);
            b.waiters.push(waiter.clone());
            b.sync |= durable;
            b.commits += u64::from(kind == Kind::Commit);
        }
        self.wake();
        Appended(waiter).await
    }

    /// Waits until the batch can take `len` more octets: it is empty, or
    /// stays within the limit with them, or the writer is stopping.
    fn room(&self, len: usize) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let held = self.batch.borrow().buf.len();
            if held == 0 || held + len <= self.config.batch_limit || self.closing.get() {
                Poll::Ready(())
            } else {
                self.wake_appenders.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
    }

    /// The batch was taken in hand (or the writer stops): every appender
    /// waiting for room tries again.
    fn wake_appenders(&self) {
        for w in self.wake_appenders.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Starts a message: streams chunks, then commits.
    pub fn message(self: &Rc<Self>, id: QueueId) -> MessageWriter {
        MessageWriter {
            writer: self.clone(),
            id,
            chunks: 0,
            size: 0,
            crc: 0,
        }
    }

    /// The writer task: runs until [`SpoolWriter::close`], writing batches
    /// into segments numbered from `first_segment`. If it fails (it cannot
    /// create a segment), every waiting and later append gets an error
    /// instead of hanging.
    pub async fn run(self: Rc<Self>, first_segment: u64) -> io::Result<()> {
        let result = self.clone().write_loop(first_segment).await;
        if result.is_err() {
            self.closing.set(true);
            self.wake_appenders();
            let batch = std::mem::take(&mut *self.batch.borrow_mut());
            for w in batch.waiters {
                w.complete(Err(StoreError::Stopped));
            }
        }
        result
    }

    async fn write_loop(self: Rc<Self>, first_segment: u64) -> io::Result<()> {
        let mut seg =
            Segment::create(&self.config.dir, first_segment, self.config.durability).await?;
        loop {
            self.work_ready().await;
            let mut batch = std::mem::take(&mut *self.batch.borrow_mut());
            self.wake_appenders();
            if batch.waiters.is_empty() {
                if self.closing.get() {
                    break;
                }
                continue;
            }
            if seg.len >= self.config.segment_size {
                seg = seg.roll(&self.config).await?;
            }
            let bytes = batch.buf.len() as u64;
            seg.zero_ahead(bytes, &self.config).await;
            let result = self.write_batch(&mut seg, &mut batch).await;
            let mut stats = self.stats.get();
            stats.batches += 1;
            match result {
                Ok(synced) => {
                    self.metrics.batch(batch.commits, bytes, synced);
                    stats.syncs += u64::from(synced.is_some());
                    stats.commits += batch.commits;
                    stats.bytes += bytes;
                }
                Err(_) => {
                    self.metrics.spool_failures.add(1);
                    stats.failures += 1;
                }
            }
            self.stats.set(stats);
            let result = result.map(|_| ());
            for w in &batch.waiters {
                w.complete(result.clone());
            }
        }
        seg.finish(&self.config).await
    }

    /// Waits until there is a batch to write or the writer should stop.
    fn work_ready(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if !self.batch.borrow().waiters.is_empty() || self.closing.get() {
                Poll::Ready(())
            } else {
                *self.wake_writer.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }

    /// Writes (and maybe syncs) one batch. On failure the segment is cut
    /// back so no partial record stays behind the last good one.
    /// Returns how long it took to make the batch durable (its write and
    /// sync), if it had to be.
    async fn write_batch(
        &self,
        seg: &mut Segment,
        batch: &mut Batch,
    ) -> Result<Option<Duration>, StoreError> {
        let start = seg.len;
        let started = Instant::now();
        if let Err(e) = seg.append(std::mem::take(&mut batch.buf)).await {
            tracing::error!(
                core = self.config.core,
                "spool write to {} failed: {e}; {} message(s) refused",
                seg.path.display(),
                batch.commits
            );
            if let Err(t) = seg.cut_back(start).await {
                tracing::error!(
                    core = self.config.core,
                    "could not cut back {}: {t}",
                    seg.path.display()
                );
            }
            return Err(e.into());
        }
        if !batch.sync || self.config.durability != Durability::Fsync {
            return Ok(None);
        }
        if seg.needs_sync() {
            if let Err(e) = seg.sync().await {
                tracing::error!(
                    core = self.config.core,
                    "fdatasync of {} failed: {e}",
                    seg.path.display()
                );
                return Err(e.into());
            }
        }
        Ok(Some(started.elapsed()))
    }
}

/// Resolves when an appended record is written (and synced if asked).
pub struct Appended(Rc<Waiter>);

impl Future for Appended {
    type Output = Result<(), StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.0.result.take() {
            Some(r) => Poll::Ready(r),
            None => {
                *self.0.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Writes one message: any number of chunks, then the commit.
pub struct MessageWriter {
    writer: Rc<SpoolWriter>,
    id: QueueId,
    chunks: u32,
    size: u64,
    crc: u32,
}

impl MessageWriter {
    /// The message's queue id.
    pub fn id(&self) -> QueueId {
        self.id
    }

    /// Octets handed over so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Streams `data` as a chunk record and waits until it is written.
    pub async fn chunk(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.crc = crc32c::crc32c_append(self.crc, data);
        self.size += data.len() as u64;
        self.chunks += 1;
        let id = self.id.0.to_le_bytes();
        self.writer.append(Kind::Chunk, &[&id, data], false).await
    }

    /// Writes the commit record (the envelope of `origin`, the last
    /// octets `tail`) and waits until it is durable.
    pub async fn commit(mut self, origin: &Origin<'_>, tail: &[u8]) -> Result<QueueId, StoreError> {
        self.crc = crc32c::crc32c_append(self.crc, tail);
        let envelope = StoredEnvelope {
            id: self.id,
            received_at_micros: now_micros(),
            size: self.size + tail.len() as u64,
            body_crc: self.crc,
            chunks: self.chunks,
            peer: origin.peer.to_string(),
            helo: origin.helo.to_string(),
            mail_from: origin.envelope.reverse_path(),
            rcpt_to: origin
                .envelope
                .rcpt_to
                .iter()
                .map(|r| r.to_string())
                .collect(),
            spam: origin.spam.cloned(),
            auth: origin.auth.map(str::to_string),
            dsn: Dsn::of(origin.envelope),
        };
        let mut head = Vec::with_capacity(128);
        envelope.encode(&mut head);
        self.writer
            .append(Kind::Commit, &[&head, tail], true)
            .await?;
        Ok(self.id)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;

    use glommio::{LocalExecutorBuilder, Placement};

    use super::*;
    use crate::smtp::path::Mailbox;
    use crate::smtp::Envelope;
    use crate::spool::walk::{check_message, list_segments, read_message, walk_core, Event, Found};

    /// Runs `writes` on a glommio executor against a writer on `dir`
    /// (started at segment 1, closed after), and returns its results.
    fn with_writer<T: Send + 'static>(
        dir: &Path,
        segment_size: u64,
        writes: impl FnOnce(Rc<SpoolWriter>) -> Pin<Box<dyn Future<Output = T>>> + Send + 'static,
    ) -> T {
        with_limited_writer(dir, segment_size, 16 << 20, writes)
    }

    /// [`with_writer`] with batches of at most `batch_limit` octets.
    fn with_limited_writer<T: Send + 'static>(
        dir: &Path,
        segment_size: u64,
        batch_limit: usize,
        writes: impl FnOnce(Rc<SpoolWriter>) -> Pin<Box<dyn Future<Output = T>>> + Send + 'static,
    ) -> T {
        let dir = dir.canonicalize().unwrap();
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(512 << 10)
            .spawn(move || async move {
                let config = WriterConfig {
                    dir,
                    core: 3,
                    segment_size,
                    durability: Durability::Fsync,
                    batch_limit,
                };
                let w = SpoolWriter::new(config, None, Arc::default());
                let task = glommio::spawn_local(w.clone().run(1));
                let out = writes(w.clone()).await;
                w.close();
                task.await.expect("the writer task ends cleanly");
                out
            })
            .expect("an executor")
            .join()
            .expect("no panic")
    }

    fn envelope() -> Envelope {
        let mailbox = |local: &str, domain: &str| Mailbox {
            local: local.into(),
            domain: domain.into(),
        };
        Envelope {
            mail_from: Some(mailbox("from", "client.test")),
            rcpt_to: vec![mailbox("a", "x.test"), mailbox("b", "x.test")],
            ..Envelope::default()
        }
    }

    /// Commits a message of `chunks` then `tail`; its id or the error.
    async fn store(
        w: &Rc<SpoolWriter>,
        chunks: &[&[u8]],
        tail: &[u8],
    ) -> Result<QueueId, StoreError> {
        let env = envelope();
        let origin = Origin {
            peer: "192.0.2.7:2525".parse::<SocketAddr>().unwrap(),
            helo: "client.test",
            envelope: &env,
            spam: None,
            auth: None,
        };
        let mut m = w.message(w.next_id());
        for c in chunks {
            m.chunk(c).await?;
        }
        m.commit(&origin, tail).await
    }

    fn messages(dir: &Path) -> Vec<(Found, Vec<u8>)> {
        let mut out = Vec::new();
        walk_core(dir, |e| {
            match e {
                Event::Message(m) => {
                    let data = read_message(dir, &m)?;
                    check_message(&m, &data).expect("size and checksum match");
                    out.push((m, data));
                }
                Event::Problem(p) => panic!("{p}"),
                Event::SegmentEnd { .. } => {}
            }
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn chunks_and_commit_read_back_with_the_envelope_the_session_knew() {
        let dir = tempfile::tempdir().unwrap();
        let ids = with_writer(dir.path(), 256 << 20, |w| {
            Box::pin(async move {
                let a = store(&w, &[b"part one, ", b"part two, "], b"the end").await;
                let b = store(&w, &[], b"short").await;
                (a.unwrap(), b.unwrap())
            })
        });
        let found = messages(dir.path());
        assert_eq!(found.len(), 2);
        let (m, data) = &found[0];
        assert_eq!(data, b"part one, part two, the end");
        let e = &m.envelope;
        assert_eq!((e.id, e.chunks, e.size), (ids.0, 2, data.len() as u64));
        assert_eq!(e.id.core(), 3);
        assert_eq!(e.peer, "192.0.2.7:2525");
        assert_eq!(e.helo, "client.test");
        assert_eq!(e.mail_from, "from@client.test");
        assert_eq!(e.rcpt_to, ["a@x.test", "b@x.test"]);
        assert_eq!(found[1].1, b"short");
        assert!(ids.1 > ids.0);
    }

    #[test]
    fn segments_roll_at_their_size_and_keep_every_message_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let expected = body.clone();
        let ids = with_writer(dir.path(), 64 << 10, move |w| {
            Box::pin(async move {
                let mut ids = Vec::new();
                for _ in 0..40 {
                    ids.push(store(&w, &[&body[..1000]], &body[1000..]).await.unwrap());
                }
                ids
            })
        });
        let segments = list_segments(dir.path()).unwrap();
        assert!(segments.len() >= 3, "{} segments", segments.len());
        for (_, path) in &segments[..segments.len() - 1] {
            let len = std::fs::metadata(path).unwrap().len();
            assert!(len >= 64 << 10, "a segment rolled early at {len}");
            assert!(
                len < (64 << 10) + 2 * 5200,
                "a segment rolled late at {len}"
            );
        }
        let found = messages(dir.path());
        let got: Vec<QueueId> = found.iter().map(|(m, _)| m.envelope.id).collect();
        assert_eq!(got, ids);
        assert!(found.iter().all(|(_, data)| *data == expected));
    }

    #[test]
    fn a_full_batch_makes_appenders_wait_for_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let (stats, ids) = with_limited_writer(dir.path(), 256 << 20, 64 << 10, |w| {
            Box::pin(async move {
                let tasks: Vec<_> = (0..8u8)
                    .map(|n| {
                        let w = w.clone();
                        glommio::spawn_local(async move {
                            let part = vec![b'a' + n; 40 << 10];
                            store(&w, &[&part], b"end").await.unwrap()
                        })
                    })
                    .collect();
                let mut ids = Vec::new();
                for t in tasks {
                    ids.push(t.await);
                }
                (w.stats(), ids)
            })
        });
        // Two 40 KiB chunks never share a 64 KiB batch: eight chunks take
        // at least eight batches (all eight would fit in one otherwise).
        assert!(stats.batches >= 8, "{stats:?}");
        let found = messages(dir.path());
        assert_eq!(found.len(), 8);
        for (m, data) in &found {
            let n = ids.iter().position(|id| *id == m.envelope.id).unwrap() as u8;
            let mut want = vec![b'a' + n; 40 << 10];
            want.extend_from_slice(b"end");
            assert!(*data == want, "message {n} read back whole");
        }
    }

    #[test]
    fn the_batch_limit_is_an_eighth_of_the_share_within_bounds() {
        assert_eq!(WriterConfig::batch_limit_for(64 << 20), 8 << 20);
        assert_eq!(WriterConfig::batch_limit_for(1 << 20), 1 << 20);
        assert_eq!(WriterConfig::batch_limit_for(4 << 30), 16 << 20);
    }

    /// Set in the child process the failed-write test runs itself in: a
    /// file size limit is process-wide, so it must not reach other tests.
    const FSIZE_CHILD: &str = "SLUICE_TEST_FSIZE_CHILD";

    #[test]
    fn a_failed_write_is_cut_back_and_refused_and_later_writes_go_on() {
        let name =
            "spool::writer::tests::a_failed_write_is_cut_back_and_refused_and_later_writes_go_on";
        if std::env::var_os(FSIZE_CHILD).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", name, "--nocapture", "--test-threads=1"])
                .env(FSIZE_CHILD, "1")
                .output()
                .unwrap();
            let log = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{log}");
            assert!(log.contains("1 passed"), "the child ran the test: {log}");
            return;
        }
        // SAFETY: plain libc calls on this (child) process: ignoring
        // SIGXFSZ makes writes past the limit fail instead of killing us.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: 256 << 10,
                rlim_max: libc::RLIM_INFINITY,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
        }
        let dir = tempfile::tempdir().unwrap();
        let segment = crate::spool::walk::segment_path(&dir.path().canonicalize().unwrap(), 1);
        let big = vec![b'b'; 400 << 10];
        let (results, lens) = with_writer(dir.path(), 256 << 20, move |w| {
            Box::pin(async move {
                let len = || std::fs::metadata(&segment).unwrap().len();
                let a = store(&w, &[], b"fits").await;
                let after_a = len();
                let b = store(&w, &[], &big).await;
                let after_b = len();
                let c = store(&w, &[], b"fits again").await;
                let results = [a, b, c].map(|r| r.map_err(|e| e.to_string()));
                (results, (after_a, after_b))
            })
        });
        // Cut back at once to the end of the first record (its block's
        // zeroes go too: the short write may have filled them).
        assert!(lens.1 <= lens.0, "the failed write is cut back: {lens:?}");
        assert!(lens.0 - lens.1 < 4096, "and no further: {lens:?}");
        assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
        let refused = results[1].as_ref().unwrap_err();
        assert!(refused.starts_with("no space for the spool"), "{refused}");
        let found = messages(dir.path());
        let data: Vec<&[u8]> = found.iter().map(|(_, d)| &d[..]).collect();
        assert_eq!(
            data,
            [&b"fits"[..], b"fits again"],
            "nothing of the refused one"
        );
    }
}
