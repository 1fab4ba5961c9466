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
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

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
    /// -1 quiet, 0 normal, 1+ verbose.
    verbosity: i8,
    /// Counters, read by the metrics endpoint and the stop line.
    metrics: Arc<CoreMetrics>,
    /// Set while the undrained spool is over --spool-max-bytes.
    spool_full: Arc<AtomicBool>,
    /// Per-client state, shared by every core.
    clients: Arc<ClientTable>,
    /// How many refusals may still be logged.
    refusal_log: LogBudget,
    policy_log: LogBudget,
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
    pub verbosity: i8,
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
            verbosity: parts.verbosity,
            metrics: parts.metrics,
            spool_full: parts.spool_full,
            clients: parts.clients,
            refusal_log: LogBudget::default(),
            policy_log: LogBudget::default(),
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

    /// Counts a refusal and logs `what` (a sentence about the client),
    /// within the core's log budget.
    pub fn refused(&self, why: Refusal, what: std::fmt::Arguments<'_>) {
        self.metrics.refused(why);
        if !self.logs(0) {
            return;
        }
        self.log_within(
            &self.refusal_log,
            "refusal(s)",
            format_args!("refused ({}): {what}", why.label()),
        );
    }

    /// Logs `line` if `budget` allows, first saying how many lines of
    /// `kind` it held back since the last one.
    fn log_within(&self, budget: &LogBudget, kind: &str, line: std::fmt::Arguments<'_>) {
        let allowance = budget.spend(std::time::Instant::now());
        if allowance.suppressed > 0 {
            eprintln!(
                "sluice: core {}: {} more {kind} were not logged",
                self.core, allowance.suppressed
            );
        }
        if allowance.log {
            eprintln!("sluice: core {}: {line}", self.core);
        }
    }

    /// Logs a line about the policy stages (a service failing, WARN, an
    /// action sluice does not have), within its own log budget: a service
    /// that is down would otherwise log every RCPT.
    pub fn policy_note(&self, what: std::fmt::Arguments<'_>) {
        if !self.logs(0) {
            return;
        }
        self.log_within(
            &self.policy_log,
            "policy line(s)",
            format_args!("policy: {what}"),
        );
    }

    /// Whether the undrained spool is over `--spool-max-bytes`.
    pub fn spool_full(&self) -> bool {
        self.spool_full.load(Relaxed)
    }

    /// Whether log lines of `level` are wanted (0 normal, 1 verbose).
    pub fn logs(&self, level: i8) -> bool {
        self.verbosity >= level
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
            if self.logs(0) {
                eprintln!(
                    "sluice: core {}: new sessions use configuration generation {generation}",
                    self.core
                );
            }
        }
    }
}
