//! `sluice drain`: hands every committed message in a spool to a NATS
//! JetStream stream, beside a running `sluice serve`.
//!
//! Why it exists: an edge node that only fills its own disk is half a
//! product. The drain is a separate process (it never slows ingest): one
//! task per core follows that core's segments in order, publishes each
//! message with its envelope in headers and waits for JetStream's PubAck
//! before its durable cursor moves on; segments behind the cursor are
//! deleted. JetStream (replicated, with a duplicate window keyed on the
//! queue id) is the log; sluice invents none.
//!
//! - [`headers`]: the envelope as NATS headers (a published interface).
//! - [`jetstream`]: connect, create or check the stream, publish.
//! - [`core`]: one core's loop: window of acks, cursor, retention.
//! - [`report`]: progress lines, `/metrics` and `/healthz`.

pub mod core;
pub mod headers;
pub mod jetstream;
pub mod report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::metrics::Counter;
use crate::spool::walk::list_cores;
use jetstream::{Link, Target};

/// The flags of `sluice drain`.
#[derive(Debug, Clone, Args)]
pub struct DrainArgs {
    /// The spool `sluice serve` writes.
    #[arg(long, value_name = "DIR", default_value = crate::config::DEFAULT_SPOOL)]
    pub spool: PathBuf,
    /// NATS servers, comma-separated (nats://host:4222,...).
    #[arg(long, value_name = "URL[,URL...]")]
    pub nats: String,
    /// JetStream stream; created (file storage) when missing.
    #[arg(long, default_value = "MAIL")]
    pub stream: String,
    /// Subject every message is published on.
    #[arg(long, default_value = "mail.ingest")]
    pub subject: String,
    /// Replicas for a stream or bucket the drain creates.
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Object store bucket for messages larger than the server's max
    /// payload (a pointer message goes in the stream).
    #[arg(long, default_value = "sluice-mail")]
    pub object_bucket: String,
    /// Keep drained segments at least this long after their last write,
    /// like 24h (default: delete once drained).
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration, default_value = "0s")]
    pub retain: Duration,
    /// PubAcks outstanding per core.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// Serve /metrics and /healthz here.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Seconds between progress lines.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub progress_every: u64,
}

/// Counters of one core's drain (written by its task).
#[derive(Debug, Default)]
pub struct DrainStats {
    /// Messages acknowledged by JetStream.
    pub messages: Counter,
    /// Their stored octets.
    pub bytes: Counter,
    /// PubAcks that said "duplicate" (handed on before, e.g. before a crash).
    pub duplicates: Counter,
    /// Publishes retried.
    pub retries: Counter,
    /// Messages whose stored copy failed its checksum (not handed on).
    pub corrupt: Counter,
    /// Segments deleted after draining.
    pub segments_deleted: Counter,
    /// The task is running.
    pub alive: AtomicBool,
}

/// Runs the drain until SIGTERM/SIGINT.
pub fn run(args: DrainArgs) -> Result<()> {
    if args.window == 0 || args.replicas == 0 {
        bail!("--window and --replicas must be at least 1");
    }
    if !args.spool.is_dir() {
        bail!(
            "--spool {}: no such directory (start `sluice serve` on it first)",
            args.spool.display()
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("cannot install signal handlers")?;
    }
    let cores = list_cores(&args.spool)
        .with_context(|| format!("cannot read the spool {}", args.spool.display()))?;
    if cores.is_empty() {
        bail!(
            "--spool {}: no core directories (is it a sluice spool?)",
            args.spool.display()
        );
    }
    // One worker thread per core's stream (reading, checking and handing
    // to the NATS client run in parallel), no more than the CPUs we have.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.len().min(cpus).max(1))
        .thread_name("sluice-drain")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(drain(args, cores, stop))
}

async fn drain(args: DrainArgs, cores: Vec<(usize, PathBuf)>, stop: Arc<AtomicBool>) -> Result<()> {
    let link = Arc::new(
        Link::connect(Target {
            urls: args.nats.clone(),
            stream: args.stream.clone(),
            subject: args.subject.clone(),
            replicas: args.replicas,
            bucket: args.object_bucket.clone(),
        })
        .await?,
    );
    let stats: Vec<Arc<DrainStats>> = cores.iter().map(|_| Arc::default()).collect();
    let dirs: Vec<PathBuf> = cores.iter().map(|(_, d)| d.clone()).collect();
    if let Some(addr) = args.metrics {
        let bound = crate::metrics::http::spawn(
            addr,
            report::DrainPages {
                dirs: dirs.clone(),
                stats: stats.clone(),
                client: link.client.clone(),
            },
        )
        .with_context(|| format!("--metrics {addr}: cannot serve metrics there"))?;
        tracing::info!("metrics at http://{bound}/metrics, health at http://{bound}/healthz");
    }
    tracing::info!(
        "ready: {} core(s) of {} into stream {} (subject {}) at {}",
        cores.len(),
        args.spool.display(),
        args.stream,
        args.subject,
        args.nats
    );
    crate::service::notify_ready();
    let mut tasks = tokio::task::JoinSet::new();
    for ((core, dir), s) in cores.iter().zip(&stats) {
        let core = *core;
        let d = core::CoreDrain {
            core,
            dir: dir.clone(),
            link: link.clone(),
            stats: s.clone(),
            window: args.window,
            retain: args.retain,
            stop: stop.clone(),
        };
        let s = s.clone();
        tasks.spawn(async move {
            s.alive.store(true, Relaxed);
            let r = d.run().await;
            s.alive.store(false, Relaxed);
            (core, r)
        });
    }
    let progress = tokio::spawn(report::progress(
        dirs,
        stats.clone(),
        Duration::from_secs(args.progress_every.max(1)),
        stop.clone(),
    ));
    let mut failed = None;
    while let Some(joined) = tasks.join_next().await {
        let (core, result) = joined.context("a drain task panicked")?;
        if let Err(e) = result {
            tracing::error!(core, "stopped: {e:#}");
            stop.store(true, Relaxed);
            failed.get_or_insert(e);
        }
    }
    progress.abort();
    let total: u64 = stats.iter().map(|s| s.messages.get()).sum();
    tracing::info!("stopped after handing on {total} messages");
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
