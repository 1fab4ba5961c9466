//! What one core's connections share: its settings, spool writer, arena
//! pool, counters and shutdown state.
//!
//! Why it exists: sluice is shared-nothing. Each pinned executor owns the
//! connections it accepts and writes them to its own spool directory, so
//! everything here is `Rc`/`Cell`: no locks, no atomics on the message
//! path. Stages reach the core only through the methods below, which say
//! what they may do (take an arena, start a message, count, log); the
//! fields stay private.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tracing::{info, warn};

use super::arena::{Arena, ArenaPool};
use super::log_budget::LogBudget;
use super::settings::{Published, Settings};
use super::shutdown::Shutdown;
use crate::client::ClientTable;
use crate::metrics::{CoreMetrics, Refusal};
use crate::spool::{MessageWriter, SpoolWriter};

/// Free arenas a core keeps for the next messages.
const ARENAS_KEPT: usize = 64;

/// One core's shared state.
pub struct Shard {
    /// The core's index (0..cores), naming its spool directory.
    core: usize,
    /// What new sessions get; replaced on reload.
    settings: RefCell<Rc<Settings>>,
    /// The reload generation `settings` came from.
    generation: Cell<u64>,
    /// This core's spool writer.
    writer: Rc<SpoolWriter>,
    /// Message buffers, sized for the start-up `--message-memory` (which
    /// a reload does not change).
    pool: Rc<ArenaPool>,
    /// Open connections.
    open: Cell<usize>,
    /// Shutdown state.
    shutdown: Rc<Shutdown>,
    /// Triggered when the shutdown grace period is over: sessions still
    /// inside a transaction get 421 and are closed.
    grace_over: Shutdown,
    /// Counters, read by the metrics endpoint and the stop line.
    metrics: Arc<CoreMetrics>,
    /// Set while the undrained spool is over --spool-max-bytes.
    spool_full: Arc<AtomicBool>,
    /// Per-client state, shared by every core.
    clients: Arc<ClientTable>,
    /// How many refusals may still be logged.
    refusal_log: LogBudget,
    policy_log: LogBudget,
    /// Repeated errors (accept failures, DNS lists without an answer).
    error_log: LogBudget,
    /// Refusals [`Shard::refused`] counted so far.
    refusals: Cell<u64>,
}

/// A refusal the session answered, for [`Shard::refused_command`].
pub struct CommandRefusal<'a> {
    /// The command's verb, lower case: `rcpt`.
    pub command: &'a str,
    /// The command line for MAIL and RCPT (`RCPT TO:<a@b>`), else empty.
    pub line: &'a str,
    /// The transaction's reverse-path, empty for none or `<>`.
    pub from: &'a str,
    /// The reply line: `550 5.7.1 …`.
    pub reply: &'a str,
}

/// What a shard is made of.
pub struct ShardParts {
    pub core: usize,
    pub settings: Rc<Settings>,
    pub generation: u64,
    pub writer: Rc<SpoolWriter>,
    pub metrics: Arc<CoreMetrics>,
    pub spool_full: Arc<AtomicBool>,
    pub clients: Arc<ClientTable>,
}

impl Shard {
    /// A core's shard; its arena pool is sized by the settings' message
    /// memory.
    pub fn new(parts: ShardParts) -> Rc<Shard> {
        let config = &parts.settings.config;
        let pool = ArenaPool::new(config.message_hold(), ARENAS_KEPT, config.memory_share());
        Rc::new(Shard {
            core: parts.core,
            pool,
            settings: RefCell::new(parts.settings),
            generation: Cell::new(parts.generation),
            writer: parts.writer,
            open: Cell::new(0),
            shutdown: Rc::new(Shutdown::default()),
            grace_over: Shutdown::default(),
            metrics: parts.metrics,
            spool_full: parts.spool_full,
            clients: parts.clients,
            refusal_log: LogBudget::default(),
            policy_log: LogBudget::default(),
            error_log: LogBudget::default(),
            refusals: Cell::new(0),
        })
    }

    /// The core's index.
    pub fn core(&self) -> usize {
        self.core
    }

    /// The settings a session starting now gets.
    pub fn settings(&self) -> Rc<Settings> {
        self.settings.borrow().clone()
    }

    /// The core's counters.
    pub fn metrics(&self) -> &CoreMetrics {
        &self.metrics
    }

    /// The core's shutdown state.
    pub fn shutdown(&self) -> &Rc<Shutdown> {
        &self.shutdown
    }

    /// Triggered once the shutdown grace period is over.
    pub fn grace_over(&self) -> &Shutdown {
        &self.grace_over
    }

    /// The table of clients every core shares.
    pub fn clients(&self) -> &Arc<ClientTable> {
        &self.clients
    }

    /// Counts a refusal of `client` and logs `what` (a sentence about
    /// it), within the core's log budget: the `refused` event.
    pub fn refused(&self, why: Refusal, client: IpAddr, what: std::fmt::Arguments<'_>) {
        self.metrics.refused(why);
        self.refusals.set(self.refusals.get() + 1);
        if self.within(&self.refusal_log, "refusal(s)") {
            info!(
                core = self.core,
                event = "refused",
                code = why.code(),
                reason = why.label(),
                client = %client,
                "refused ({}): {what}",
                why.label()
            );
        }
    }

    /// How many refusals [`Shard::refused`] has seen (a stage that refused
    /// and logged moves it).
    pub fn refusals_logged(&self) -> u64 {
        self.refusals.get()
    }

    /// Logs a refusal the session answered to a command of `client`,
    /// within the core's log budget: the `refused` event with `reason` the
    /// command.
    pub fn refused_command(&self, client: IpAddr, r: &CommandRefusal<'_>) {
        if self.within(&self.refusal_log, "refusal(s)") {
            let code: u16 = r.reply.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            info!(
                core = self.core,
                event = "refused",
                code,
                reason = r.command,
                client = %client,
                command = r.line,
                from = r.from,
                "refused ({}): {client}: {}",
                r.command,
                r.reply
            );
        }
    }

    /// Whether `budget` lets one more line of `kind` out now; first logs
    /// how many it held back since the last one.
    fn within(&self, budget: &LogBudget, kind: &str) -> bool {
        let allowance = budget.spend(std::time::Instant::now());
        if allowance.suppressed > 0 {
            info!(
                core = self.core,
                "{} more {kind} were not logged", allowance.suppressed
            );
        }
        allowance.log
    }

    /// Logs a line about the policy stages (a service failing, WARN, an
    /// action sluice does not have), within its own log budget: a service
    /// that is down would otherwise log every RCPT.
    pub fn policy_note(&self, what: std::fmt::Arguments<'_>) {
        if self.within(&self.policy_log, "policy line(s)") {
            info!(core = self.core, "policy: {what}");
        }
    }

    /// Logs an error that can repeat at the rate of connections (accept
    /// failing, DNS lists not answering), within its own log budget.
    pub fn repeated_error(&self, what: std::fmt::Arguments<'_>) {
        if self.within(&self.error_log, "error line(s)") {
            warn!(core = self.core, "{what}");
        }
    }

    /// Whether the undrained spool is over `--spool-max-bytes`.
    pub fn spool_full(&self) -> bool {
        self.spool_full.load(Relaxed)
    }

    /// How much of a message is held in memory before it spills (the
    /// start-up `Config::message_hold`, which the pool's arenas are sized
    /// for).
    pub fn message_hold(&self) -> usize {
        self.pool.message_memory()
    }

    /// A message buffer; it returns to the pool when dropped.
    pub fn arena(&self) -> Arena {
        self.pool.take()
    }

    /// Whether the core's arenas hold more than half its memory share.
    pub fn memory_pressed(&self) -> bool {
        self.pool.pressed()
    }

    /// A message found the core's share of `--memory-budget` used up.
    pub fn memory_wait(&self) {
        self.pool.note_wait();
        self.metrics.memory_waits.add(1);
    }

    /// A new message with a fresh queue id.
    pub fn message_writer(&self) -> MessageWriter {
        self.writer.message(self.writer.next_id())
    }

    /// The core's spool writer (for its task and the stop line).
    pub fn writer(&self) -> &Rc<SpoolWriter> {
        &self.writer
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.get()
    }

    /// Counts a connection in; [`Shard::closed`] counts it out.
    pub fn opened(&self) {
        self.metrics.accepted.add(1);
        self.metrics.open.add(1);
        self.open.set(self.open.get() + 1);
    }

    /// A connection counted by [`Shard::opened`] ended.
    pub fn closed(&self) {
        self.open.set(self.open.get() - 1);
        self.metrics.open.sub(1);
    }

    /// Takes a newly published configuration, if there is one.
    pub fn follow_reload(&self, published: &Published) {
        let generation = published.generation();
        if generation != self.generation.get() {
            self.generation.set(generation);
            *self.settings.borrow_mut() = Settings::new(published.latest());
            info!(
                core = self.core,
                "new sessions use configuration generation {generation}"
            );
        }
    }
}
