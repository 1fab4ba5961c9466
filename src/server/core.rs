//! Running one core: its listeners, its spool writer task, housekeeping,
//! and an orderly stop.
//!
//! Why it exists: each pinned executor is a small server of its own. This
//! is its `main`: bind every `--listen` address (SO_REUSEPORT lets every
//! core bind the same ones), start the writer, hand each listener to the
//! accept stage, and at shutdown let the transactions in flight finish
//! before the writer's final sync.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use glommio::net::TcpListener;
use tracing::{error, info, warn};

use super::accept;
use super::settings::{Published, Settings};
use super::shard::{Shard, ShardParts};
use crate::client::ClientTable;
use crate::config::ListenerKind;
use crate::metrics::CoreMetrics;
use crate::spool::recover::Recovery;
use crate::spool::walk::core_dir;
use crate::spool::{SpoolWriter, WriterConfig};

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
    /// Per-client state, shared by every core.
    pub clients: Arc<ClientTable>,
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
        clients,
        ready,
    } = start;
    crate::log::batch_this_thread();
    glommio::spawn_local(flush_log()).detach();
    let generation = published.generation();
    let config = published.latest();
    let listeners = match bind_all(&config.listeners()) {
        Ok(l) => l,
        Err(why) => {
            let _ = ready.send(Err(why));
            return;
        }
    };
    let writer = SpoolWriter::new(
        WriterConfig {
            dir: core_dir(&config.spool, core),
            core: core as u8,
            segment_size: config.segment_size,
            durability: config.durability,
            batch_limit: WriterConfig::batch_limit_for(config.memory_share()),
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
                error!(core, "spool writer stopped: {e}; new mail gets 451");
            }
            r
        }
    });
    let shard = Shard::new(ShardParts {
        core,
        settings: Settings::new(config),
        generation,
        writer,
        metrics,
        spool_full,
        clients,
    });
    glommio::spawn_local(shard.shutdown().clone().watch(flag)).detach();
    glommio::spawn_local(housekeeping(shard.clone(), published)).detach();
    let _ = ready.send(Ok(()));

    let accepting: Vec<_> = listeners
        .into_iter()
        .map(|(l, kind)| glommio::spawn_local(accept::accept_loop(shard.clone(), l, kind)))
        .collect();
    for task in accepting {
        task.await;
    }
    if core == 0 {
        crate::service::notify_stopping();
    }
    drain_connections(&shard).await;
    shard.writer().close();
    let _ = writer_task.await;
    let w = shard.writer().stats();
    let m = shard.metrics();
    info!(
        core,
        "stopped: {} connections, {} messages, {} bytes, {} spool syncs ({:.1} messages per sync)",
        m.accepted.get(),
        m.messages.get(),
        m.bytes.get(),
        w.syncs,
        w.commits as f64 / w.syncs.max(1) as f64
    );
    crate::log::flush_this_thread();
}

/// Hands the core's log lines to the writer thread every
/// [`crate::log::FLUSH_EVERY`] (the core's events only fill its buffer).
async fn flush_log() {
    loop {
        glommio::timer::sleep(crate::log::FLUSH_EVERY).await;
        crate::log::flush_this_thread();
    }
}

/// A listener per address, or why one could not be bound.
fn bind_all(
    addrs: &[(SocketAddr, ListenerKind)],
) -> Result<Vec<(TcpListener, ListenerKind)>, String> {
    addrs
        .iter()
        .map(|(addr, kind)| {
            TcpListener::bind(addr)
                .map(|l| (l, *kind))
                .map_err(|e| format!("cannot listen on {addr}: {e}"))
        })
        .collect()
}

/// Shutdown: lets transactions in flight finish, within the grace period;
/// after it, the sessions still open are told 421 and closed (RFC 5321
/// §3.8: never a close without one).
async fn drain_connections(shard: &Shard) {
    let deadline = Instant::now() + shard.settings().config.shutdown_grace;
    wait_for_connections(shard, deadline).await;
    if shard.open() > 0 {
        warn!(
            core = shard.core(),
            "grace period over, closing {} connection(s) with 421",
            shard.open()
        );
        shard.grace_over().trigger();
        wait_for_connections(shard, Instant::now() + GOODBYE_TIME).await;
    }
}

/// How long sessions get to write their last 421 after the grace period.
const GOODBYE_TIME: Duration = Duration::from_secs(2);

/// Until every connection ended, or `deadline`.
async fn wait_for_connections(shard: &Shard, deadline: Instant) {
    while shard.open() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
}

/// How often a core stamps its heartbeat for `/healthz` and looks for a
/// reloaded configuration.
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(250);

/// Until shutdown: heartbeat, follow reloads, and give the core's freed
/// memory back.
async fn housekeeping(shard: Rc<Shard>, published: Arc<Published>) {
    let mut memory = crate::memory::Nudge::default();
    while !shard.shutdown().is_triggered() {
        shard.metrics().beat();
        shard.follow_reload(&published);
        memory.round(shard.memory_pressed());
        glommio::timer::sleep(HOUSEKEEPING_EVERY).await;
    }
}
