//! One core's share of the server: its listeners, its spool writer, its
//! buffer pool and its connections.
//!
//! Why it exists: sluice is shared-nothing. Each pinned executor binds its
//! own SO_REUSEPORT listener on every address (the kernel spreads
//! connections between them), owns the connections it accepts, and writes
//! them to its own spool directory. Everything here is `Rc`/`Cell`: no
//! locks, no atomics, because nothing leaves the core.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use std::panic::AssertUnwindSafe;

use futures_lite::future;
use futures_lite::AsyncWriteExt;
use futures_lite::FutureExt;
use glommio::net::{TcpListener, TcpStream};

use super::connection;
use super::settings::{Published, Settings};
use super::shutdown::Shutdown;
use crate::metrics::CoreMetrics;
use crate::smtp::reply;
use crate::spool::recover::Recovery;
use crate::spool::walk::core_dir;
use crate::spool::{SpoolWriter, WriterConfig};

/// Reads from a socket go into buffers this big.
pub const READ_CHUNK: usize = 64 << 10;

/// Preallocated message buffers, reused across messages and connections.
pub struct ArenaPool {
    size: usize,
    free: RefCell<Vec<Box<[u8]>>>,
    keep: usize,
}

impl ArenaPool {
    fn new(size: usize, keep: usize) -> ArenaPool {
        ArenaPool {
            size,
            free: RefCell::new(
                (0..keep.min(4))
                    .map(|_| vec![0u8; size].into_boxed_slice())
                    .collect(),
            ),
            keep,
        }
    }

    /// A buffer, from the pool if one is free.
    pub fn take(&self) -> Box<[u8]> {
        self.free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| vec![0u8; self.size].into_boxed_slice())
    }

    /// Returns a buffer; beyond `keep` free buffers it is released.
    pub fn give(&self, arena: Box<[u8]>) {
        let mut free = self.free.borrow_mut();
        if free.len() < self.keep {
            free.push(arena);
        }
    }
}

/// Everything one core's connections share.
pub struct Shard {
    /// The core's index (0..cores), naming its spool directory.
    pub core: usize,
    /// What new sessions get; replaced on reload.
    settings: RefCell<Rc<Settings>>,
    /// The reload generation `settings` came from.
    generation: Cell<u64>,
    /// This core's spool writer.
    pub writer: Rc<SpoolWriter>,
    /// Message buffers.
    pub pool: ArenaPool,
    /// Open connections.
    pub open: Cell<usize>,
    /// Shutdown state.
    pub shutdown: Rc<Shutdown>,
    /// -1 quiet, 0 normal, 1+ verbose.
    pub verbosity: i8,
    /// Counters, read by the metrics endpoint and the stop line.
    pub metrics: Arc<CoreMetrics>,
    /// Set while the undrained spool is over --spool-max-bytes.
    pub spool_full: Arc<AtomicBool>,
}

impl Shard {
    /// The settings a session starting now gets.
    pub fn settings(&self) -> Rc<Settings> {
        self.settings.borrow().clone()
    }

    /// With `--proxy-from`, only the listed balancers may connect.
    fn may_connect(&self, peer: SocketAddr) -> bool {
        let allowed = &self.settings.borrow().config.proxy_from;
        allowed.is_empty() || allowed.iter().any(|c| c.contains(peer.ip()))
    }

    /// Takes a newly published configuration, if there is one.
    fn follow_reload(&self, published: &Published) {
        let generation = published.generation();
        if generation != self.generation.get() {
            self.generation.set(generation);
            *self.settings.borrow_mut() = Settings::new(published.latest());
            if self.verbosity >= 0 {
                eprintln!(
                    "sluice: core {}: new sessions use configuration generation {generation}",
                    self.core
                );
            }
        }
    }
}

/// What a core starts with.
pub struct CoreStart {
    /// The core's index.
    pub core: usize,
    /// Its counters.
    pub metrics: Arc<CoreMetrics>,
    /// What recovery found in its spool directory.
    pub recovery: Recovery,
    /// The process-wide shutdown flag.
    pub flag: Arc<AtomicBool>,
    /// The configuration, now and after reloads.
    pub published: Arc<Published>,
    /// Set while the undrained spool is over --spool-max-bytes.
    pub spool_full: Arc<AtomicBool>,
    /// -1 quiet, 0 normal, 1+ verbose.
    pub verbosity: i8,
    /// Gets `Ok` once every listener is bound, or why one could not be.
    pub ready: mpsc::Sender<Result<(), String>>,
}

/// Runs one core until shutdown.
pub async fn run(start: CoreStart) {
    let CoreStart {
        core,
        metrics,
        recovery,
        flag,
        published,
        spool_full,
        verbosity,
        ready,
    } = start;
    let generation = published.generation();
    let config = published.latest();
    let mut listeners = Vec::new();
    for addr in &config.listen {
        match TcpListener::bind(addr) {
            Ok(l) => listeners.push(l),
            Err(e) => {
                let _ = ready.send(Err(format!("cannot listen on {addr}: {e}")));
                return;
            }
        }
    }
    let writer = SpoolWriter::new(
        WriterConfig {
            dir: core_dir(&config.spool, core),
            core: core as u8,
            segment_size: config.segment_size,
            durability: config.durability,
        },
        recovery.last_id,
        metrics.clone(),
    );
    let writer_task = glommio::spawn_local({
        let w = writer.clone();
        let metrics = metrics.clone();
        async move {
            metrics.writer_alive.store(true, Relaxed);
            let r = w.run(recovery.next_segment).await;
            metrics.writer_alive.store(false, Relaxed);
            if let Err(e) = &r {
                eprintln!("sluice: core {core}: spool writer stopped: {e}; new mail gets 451");
            }
            r
        }
    });
    let shard = Rc::new(Shard {
        core,
        writer,
        pool: ArenaPool::new(config.message_memory + 2 * READ_CHUNK, 64),
        open: Cell::new(0),
        shutdown: Rc::new(Shutdown::default()),
        verbosity,
        metrics,
        spool_full,
        settings: RefCell::new(Settings::new(config.clone())),
        generation: Cell::new(generation),
    });
    glommio::spawn_local(shard.shutdown.clone().watch(flag)).detach();
    glommio::spawn_local(housekeeping(shard.clone(), published)).detach();
    let _ = ready.send(Ok(()));

    let accepting: Vec<_> = listeners
        .into_iter()
        .map(|l| glommio::spawn_local(accept_loop(shard.clone(), l)))
        .collect();
    for task in accepting {
        task.await;
    }

    // Shutdown: let transactions in flight finish, within the grace period.
    let deadline = Instant::now() + shard.settings().config.shutdown_grace;
    while shard.open.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    if shard.open.get() > 0 {
        eprintln!(
            "sluice: core {core}: grace period over, closing {} connection(s)",
            shard.open.get()
        );
    }
    shard.writer.close();
    let _ = writer_task.await;
    if verbosity >= 0 {
        let w = shard.writer.stats();
        eprintln!(
            "sluice: core {core} stopped: {} connections, {} messages, {} bytes, {} spool syncs ({:.1} messages per sync)",
            shard.metrics.accepted.get(),
            shard.metrics.messages.get(),
            shard.metrics.bytes.get(),
            w.syncs,
            w.commits as f64 / w.syncs.max(1) as f64
        );
    }
}

/// How often a core stamps its heartbeat for `/healthz` and looks for a
/// reloaded configuration.
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(250);

/// Until shutdown: heartbeat, and follow reloads.
async fn housekeeping(shard: Rc<Shard>, published: Arc<Published>) {
    while !shard.shutdown.is_triggered() {
        shard.metrics.beat();
        shard.follow_reload(&published);
        glommio::timer::sleep(HOUSEKEEPING_EVERY).await;
    }
}

/// Accepts connections until shutdown.
async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            shard.shutdown.wait().await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                // EMFILE and friends: say so, back off briefly, go on.
                eprintln!("sluice: core {}: accept failed: {e}", shard.core);
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        if !shard.may_connect(peer) {
            shard.metrics.rejected.add(1);
            eprintln!(
                "sluice: core {}: closed a connection from {peer}: not in --proxy-from",
                shard.core
            );
            drop(stream);
            continue;
        }
        if shard.open.get() >= shard.settings().config.max_connections {
            shard.metrics.rejected.add(1);
            glommio::spawn_local(refuse(shard.clone(), stream)).detach();
            continue;
        }
        shard.metrics.accepted.add(1);
        shard.metrics.open.add(1);
        shard.open.set(shard.open.get() + 1);
        let s = shard.clone();
        glommio::spawn_local(async move {
            // A bug must cost one connection, not the core.
            let served = AssertUnwindSafe(connection::serve(s.clone(), stream, peer))
                .catch_unwind()
                .await;
            if served.is_err() {
                eprintln!(
                    "sluice: core {}: BUG: the session with {peer} panicked; connection dropped",
                    s.core
                );
            }
            s.open.set(s.open.get() - 1);
            s.metrics.open.sub(1);
        })
        .detach();
    }
}

/// Over the connection limit: 421 and close.
async fn refuse(shard: Rc<Shard>, mut stream: TcpStream) {
    let mut out = Vec::new();
    reply::TOO_MANY_CONNECTIONS.write(&mut out);
    shard.metrics.count_replies(&out);
    let _ = stream.write_all(&out).await;
    let _ = stream.close().await;
}
