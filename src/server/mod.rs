//! The server: recovery, one pinned glommio executor per core, signals,
//! and the stages every connection goes through.
//!
//! Why it exists: it turns a validated [`Config`](crate::config::Config)
//! into running shards and reports clearly at start-up whether they came
//! up: recovery results per core, the addresses bound, and any reason a
//! core could not start.
//!
//! # The stages of a connection
//!
//! Each is a module with one job; a stage lets the connection go on or
//! answers it. Later features (client limits, DNS lists, policy services,
//! AUTH) are new stages between these, not branches inside the pump.
//!
//! ```text
//!  accept ─► PROXY header ─► admission ─► screening ─► greeting ─► commands
//!  accept.rs connection.rs   admission.rs screening.rs  smtp::Session (sans-I/O)
//!        ─► body intake ─► verdict ──────► commit ──────► reply
//!           intake.rs      smtp::Session   message.rs     smtp::Session
//!           (sans-I/O)     (data_done,     (spool writer, (250 after fsync)
//!                           chunk_done)     group commit)
//! ```
//!
//! - [`core`]: one core's main: listeners, writer task, housekeeping, stop.
//! - [`accept`]: the accept loop (`--proxy-from`, `--max-connections`).
//! - [`admission`]: trusted networks, per-client connection limit and
//!   rate, and the session's MAIL/RCPT [`Quota`](crate::smtp::Quota).
//! - [`screening`]: DNS list lookups during the greet pause.
//! - [`log_budget`]: how many refusals a core logs.
//! - [`connection`]: the I/O pump of one client (read, write, timeouts,
//!   shutdown, PROXY, STARTTLS) driving the session and the message.
//! - [`message`]: a message in flight: queue id, trace header, intake,
//!   spills and commit.
//! - [`intake`]: the DATA/BDAT body receiver, sans-I/O.
//! - [`arena`]: message buffers that return to their core's pool on drop.
//! - [`shard`]: what one core's connections share, behind methods.
//! - [`transport`]: plain TCP or TLS under a session; reads with timeouts.
//! - [`settings`], [`reload`]: what sessions run with; swapped on SIGHUP.
//! - [`backlog`]: --spool-max-bytes, undrained spool per core.
//! - [`shutdown`]: SIGTERM/SIGINT to every core.
//!
//! Imports go one way: `core` → `accept` → `connection` → `admission`,
//! `screening`, `message` → `intake` → `arena`, each of them → `shard` →
//! `settings`/`shutdown`.

pub mod accept;
pub mod admission;
pub mod arena;
pub mod backlog;
pub mod connection;
pub mod core;
pub mod end_of_message;
pub mod intake;
pub mod log_budget;
pub mod message;
pub mod policy_stage;
pub mod reload;
pub mod rspamd_stage;
pub mod screening;
pub mod settings;
pub mod shard;
pub mod shutdown;
pub mod transport;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::{mpsc, Arc};

use anyhow::{bail, Context, Result};
use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};
use tracing::{info, warn};

use crate::client::table::DEFAULT_CAPACITY;
use crate::client::ClientTable;
use crate::config::{ListenerKind, ServeArgs};
use crate::metrics::CoreMetrics;
use crate::spool::recover::recover_core;
use crate::spool::walk::core_dir;
use crate::spool::Durability;
use settings::Published;

/// Memory io_uring may lock per executor (glommio's registered buffers).
const IO_MEMORY: usize = 512 << 10;

/// Resolves `args` (flags over the config file), runs the server until
/// SIGTERM/SIGINT, re-reads `args` on SIGHUP; returns once every core
/// stopped.
pub fn serve(args: ServeArgs) -> Result<()> {
    let mut config = args.clone().resolve()?;
    let parsed_at_start = config.clone();
    if config.durability == Durability::None {
        warn!(
            "--durability none: messages are acknowledged without fsync; \
             a crash or power loss loses acknowledged mail. Use this for benchmarks only."
        );
    }
    std::fs::create_dir_all(&config.spool).with_context(|| {
        format!(
            "cannot create the spool directory {}",
            config.spool.display()
        )
    })?;
    // glommio opens directories by absolute path only.
    config.spool = config.spool.canonicalize().with_context(|| {
        format!(
            "cannot resolve the spool directory {}",
            config.spool.display()
        )
    })?;
    config.listen = resolve_ephemeral_ports(&config.listen)?;
    config.submission = resolve_ephemeral_ports(&config.submission)?;
    config.submissions = resolve_ephemeral_ports(&config.submissions)?;
    let flag = shutdown::install_signal_flag().context("cannot install signal handlers")?;
    // SAFETY: ignoring SIGXFSZ makes writes past a file size limit fail
    // with EFBIG (answered 452) instead of killing the process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }

    let metrics: Vec<Arc<CoreMetrics>> = config.cpus.iter().map(|_| Arc::default()).collect();
    let metrics_addr = match config.metrics {
        Some(addr) => Some(
            crate::metrics::http::spawn(addr, crate::metrics::http::CorePages(metrics.clone()))
                .with_context(|| format!("--metrics {addr}: cannot serve metrics there"))?,
        ),
        None => None,
    };
    let config = Arc::new(config);
    let published = Arc::new(Published::new(config.clone()));
    reload::spawn(args, parsed_at_start, published.clone())
        .context("cannot install the SIGHUP handler")?;
    let spool_full = Arc::new(std::sync::atomic::AtomicBool::new(false));
    backlog::spawn(
        config.spool.clone(),
        published.clone(),
        metrics.clone(),
        spool_full.clone(),
    )
    .context("cannot start the spool backlog watcher")?;
    let clients = ClientTable::new(DEFAULT_CAPACITY);
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut handles = Vec::new();
    for (core, &cpu) in config.cpus.iter().enumerate() {
        let dir = core_dir(&config.spool, core);
        let recovery = recover_core(&dir)
            .with_context(|| format!("cannot recover the spool in {}", dir.display()))?;
        info!(
            core,
            cpu,
            "recovered {} messages ({} bytes), dropped {} bytes of unacknowledged tail",
            recovery.messages,
            recovery.bytes,
            recovery.dropped_bytes
        );
        for p in &recovery.problems {
            warn!(
                core,
                "damaged spool record left in place: {p} (see `sluice spool verify`)"
            );
        }
        let start = self::core::CoreStart {
            core,
            metrics: metrics[core].clone(),
            recovery,
            flag: flag.clone(),
            published: published.clone(),
            spool_full: spool_full.clone(),
            clients: clients.clone(),
            ready: ready_tx.clone(),
        };
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("sluice-core-{core}"))
            .io_memory(IO_MEMORY)
            // Password hashes (AUTH) run on the blocking thread: let it
            // run on any CPU rather than beside its executor.
            .blocking_thread_pool_placement(PoolPlacement::Unbound(1))
            .spawn(move || self::core::run(start))
            .map_err(std::io::Error::from)
            .with_context(|| {
                format!("cannot start the executor for core {core} on cpu {cpu} (is io_uring allowed, and RLIMIT_MEMLOCK at least 1 MiB? see tuning/)")
            })?;
        handles.push(handle);
    }
    drop(ready_tx);
    for _ in 0..handles.len() {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
                bail!("{why}");
            }
            Err(_) => bail!("a core stopped during start-up"),
        }
    }
    let addrs: Vec<String> = config.listen.iter().map(|a| a.to_string()).collect();
    info!(
        "ready: listening on {} with {} core(s), spool {}",
        addrs.join(", "),
        config.cpus.len(),
        config.spool.display()
    );
    for (addr, kind) in config.listeners() {
        if kind != ListenerKind::Smtp {
            info!("{kind:?} (AUTH) on {addr}");
        }
    }
    if let Some(map) = &config.recipient_map {
        info!("{}", map.summary());
    }
    if let Some(addr) = metrics_addr {
        info!("metrics at http://{addr}/metrics, health at http://{addr}/healthz");
    }
    crate::service::notify_ready();
    for h in handles {
        if h.join().is_err() {
            bail!("a core's executor panicked");
        }
    }
    info!("stopped");
    Ok(())
}

/// Port 0 means "any free port"; every core must bind the same one, so
/// pick it once here.
fn resolve_ephemeral_ports(listen: &[SocketAddr]) -> Result<Vec<SocketAddr>> {
    listen
        .iter()
        .map(|&addr| {
            if addr.port() != 0 {
                return Ok(addr);
            }
            let probe =
                StdListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
            Ok(probe.local_addr()?)
        })
        .collect()
}
