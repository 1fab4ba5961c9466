//! Where formatted log lines go: a thread that writes them to stderr.
//!
//! Why it exists: a line written to stderr from an executor would be a
//! system call per event, and a stalled journal would stall mail. Lines
//! from a thread that batches (each core's executor, after
//! [`batch_this_thread`]) are appended to that thread's own buffer (no
//! lock, no wake-up) and handed over whole every [`FLUSH_EVERY`] or at
//! [`BATCH_BYTES`]; lines from other threads are handed over one by one.
//! The writer thread writes each hand-over with one `write(2)`. If it
//! falls [`QUEUED`] hand-overs behind, further ones are dropped and
//! counted, and the count is written when it catches up: logging never
//! blocks a core.

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// A batching thread's buffer is handed over at this size.
pub const BATCH_BYTES: usize = 64 << 10;
/// How often a core hands its buffer over (its flush task's period).
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Hand-overs the writer thread may be behind before they are dropped.
const QUEUED: usize = 4096;

enum Handover {
    Lines(Vec<u8>),
    Stop,
}

/// The sending end, shared by every thread.
#[derive(Clone)]
pub struct Sink {
    tx: SyncSender<Handover>,
    dropped: Arc<AtomicU64>,
}

thread_local! {
    /// This thread's buffer, if it batches.
    static BATCH: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// The sink every thread's lines go to, once [`start`] ran.
static SINK: OnceLock<Sink> = OnceLock::new();

impl Sink {
    fn hand_over(&self, bytes: Vec<u8>) {
        match self.tx.try_send(Handover::Lines(bytes)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Takes one formatted line (or several) from the calling thread.
    pub fn write_line(&self, line: &[u8]) {
        let full = BATCH.with(|b| {
            let mut b = b.borrow_mut();
            let batch = b.as_mut()?;
            batch.extend_from_slice(line);
            (batch.len() >= BATCH_BYTES)
                .then(|| std::mem::replace(batch, Vec::with_capacity(BATCH_BYTES)))
        });
        match full {
            Some(batch) => self.hand_over(batch),
            None if BATCH.with(|b| b.borrow().is_none()) => self.hand_over(line.to_vec()),
            None => {}
        }
    }
}

/// From now on the calling thread's lines are batched; it must call
/// [`flush_this_thread`] every [`FLUSH_EVERY`] and before it ends.
pub fn batch_this_thread() {
    BATCH.with(|b| *b.borrow_mut() = Some(Vec::with_capacity(BATCH_BYTES)));
}

/// Hands the calling thread's batched lines to the writer thread.
pub fn flush_this_thread() {
    let Some(sink) = SINK.get() else {
        return;
    };
    let batch = BATCH.with(|b| {
        let mut b = b.borrow_mut();
        let batch = b.as_mut()?;
        (!batch.is_empty()).then(|| std::mem::replace(batch, Vec::with_capacity(BATCH_BYTES)))
    });
    if let Some(batch) = batch {
        sink.hand_over(batch);
    }
}

/// The running writer thread; [`Writer::stop`] writes what is queued.
pub struct Writer {
    thread: Option<JoinHandle<()>>,
    sink: Sink,
}

/// Starts the writer thread writing to `out`; the sink is process-wide.
pub fn start(out: Box<dyn Write + Send>) -> std::io::Result<Writer> {
    let (tx, rx) = sync_channel(QUEUED);
    let sink = Sink {
        tx,
        dropped: Arc::new(AtomicU64::new(0)),
    };
    let dropped = sink.dropped.clone();
    let thread = std::thread::Builder::new()
        .name("sluice-log".into())
        .spawn(move || write_until_stopped(rx, out, &dropped))?;
    let _ = SINK.set(sink.clone());
    Ok(Writer {
        thread: Some(thread),
        sink,
    })
}

/// The process-wide sink, once started.
pub fn sink() -> Option<&'static Sink> {
    SINK.get()
}

fn write_until_stopped(
    rx: Receiver<Handover>,
    mut out: Box<dyn Write + Send>,
    dropped: &AtomicU64,
) {
    let mut reported = 0;
    while let Ok(Handover::Lines(bytes)) = rx.recv() {
        let lost = dropped.load(Relaxed);
        if lost > reported {
            let _ = writeln!(
                out,
                "sluice: WARNING: {} batches of log lines were dropped (stderr could not keep up)",
                lost - reported
            );
            reported = lost;
        }
        let _ = out.write_all(&bytes);
        let _ = out.flush();
    }
}

impl Writer {
    /// Writes every line handed over so far (the calling thread's batch
    /// too), then ends the thread.
    pub fn stop(mut self) {
        flush_this_thread();
        // Blocks only if the queue is full: the last lines are worth it.
        let _ = self.sink.tx.send(Handover::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn batched_lines_go_out_in_one_write_at_a_flush_and_others_at_once() {
        let out = Shared::default();
        let (tx, rx) = sync_channel(QUEUED);
        let dropped = Arc::new(AtomicU64::new(0));
        let sink = Sink {
            tx: tx.clone(),
            dropped: dropped.clone(),
        };
        let o = out.clone();
        let d = dropped.clone();
        let thread = std::thread::spawn(move || write_until_stopped(rx, Box::new(o), &d));
        // An unbatched thread: one hand-over per line.
        sink.write_line(b"one\n");
        // A batching thread: nothing until its buffer is handed over.
        let s = sink.clone();
        std::thread::spawn(move || {
            batch_this_thread();
            s.write_line(b"two\n");
            s.write_line(b"three\n");
            let batch = BATCH.with(|b| std::mem::take(b.borrow_mut().as_mut().unwrap()));
            s.hand_over(batch);
        })
        .join()
        .unwrap();
        tx.send(Handover::Stop).unwrap();
        thread.join().unwrap();
        let writes = out.0.lock().unwrap().clone();
        assert_eq!(writes, [b"one\n".to_vec(), b"two\nthree\n".to_vec()]);
    }

    #[test]
    fn a_full_queue_drops_and_says_so_later() {
        let out = Shared::default();
        let (tx, rx) = sync_channel(1);
        let dropped = Arc::new(AtomicU64::new(0));
        let sink = Sink {
            tx: tx.clone(),
            dropped: dropped.clone(),
        };
        sink.write_line(b"kept\n");
        sink.write_line(b"lost\n");
        assert_eq!(dropped.load(Relaxed), 1);
        let o = out.clone();
        let d = dropped.clone();
        let thread = std::thread::spawn(move || write_until_stopped(rx, Box::new(o), &d));
        // Waits for room, as the next hand-over after a stall would find.
        tx.send(Handover::Lines(b"after\n".to_vec())).unwrap();
        tx.send(Handover::Stop).unwrap();
        thread.join().unwrap();
        let text: Vec<u8> = out.0.lock().unwrap().concat();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.starts_with("sluice: WARNING: 1 batches of log lines were dropped"),
            "{text}"
        );
        assert!(text.contains("kept\n") && text.contains("after\n") && !text.contains("lost"));
    }
}
