//! Per-core counters and histograms, and the `/metrics` + `/healthz`
//! endpoint that reads them.
//!
//! Why it exists: an operator needs to see what every core is doing
//! without the cores paying for it. Each core owns one [`CoreMetrics`]
//! (cache-line aligned) and is its only writer: an increment is a relaxed
//! load and store, no locked read-modify-write and no shared cache line.
//! The endpoint, on its own thread, loads every core's values and sums
//! them when it renders.
//!
//! - [`render`]: Prometheus text format.
//! - [`health`]: is every core's executor and spool writer alive?
//! - [`http`]: the tiny HTTP/1.1 server on `--metrics ADDR`.

pub mod health;
pub mod http;
pub mod render;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A count written by one thread and read by any.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning core may call this (single writer).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Subtracts `n` (for gauges).
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    /// Sets the value (for gauges; single writer).
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A histogram with fixed upper bounds; the last bucket is `+Inf`.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    buckets: Box<[Counter]>,
    sum: Counter,
}

impl Histogram {
    /// A histogram with these (increasing) upper bounds.
    pub fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| Counter::default()).collect(),
            sum: Counter::default(),
        }
    }

    /// Records one observation.
    #[inline]
    pub fn observe(&self, v: u64) {
        let i = self.bounds.partition_point(|&b| b < v);
        self.buckets[i].add(1);
        self.sum.add(v);
    }

    /// The upper bounds (without `+Inf`).
    pub fn bounds(&self) -> &'static [u64] {
        self.bounds
    }

    /// Per-bucket counts (not cumulative), `+Inf` last, and the sum.
    pub fn snapshot(&self) -> (Vec<u64>, u64) {
        (
            self.buckets.iter().map(Counter::get).collect(),
            self.sum.get(),
        )
    }
}

/// Messages per group-commit batch.
pub const BATCH_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512];
/// `fdatasync` latency, microseconds.
pub const SYNC_MICROS_BOUNDS: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// Reply classes counted: 2xx, 3xx, 4xx, 5xx.
pub const REPLY_CLASSES: [u8; 4] = [b'2', b'3', b'4', b'5'];

/// Why a connection, command or session was refused, for
/// `sluice_refusals_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The core is at `--max-connections` (421).
    CoreFull,
    /// `--proxy-from` does not list the peer (closed).
    NotABalancer,
    /// A missing or malformed PROXY header (closed).
    BadProxyHeader,
    /// `--client-connection-limit` (421).
    ClientConnections,
    /// `--client-connection-rate` (421).
    ClientConnectionRate,
    /// `--client-message-rate` (MAIL 451).
    ClientMessageRate,
    /// `--client-recipient-rate` (RCPT 451).
    ClientRecipientRate,
    /// `--hard-error-limit` (421).
    HardErrorLimit,
    /// Talked before the greeting (554).
    EarlyTalker,
    /// A DNS list score at `--dnsbl-threshold` (554).
    Dnsbl,
    /// AUTH with wrong credentials (535).
    AuthFailed,
    /// AUTH that could not be checked (454).
    AuthUnavailable,
}

impl Refusal {
    /// The reply code the client gets; 0 where the connection is closed
    /// without a reply.
    pub fn code(self) -> u16 {
        match self {
            Refusal::NotABalancer | Refusal::BadProxyHeader => 0,
            Refusal::CoreFull
            | Refusal::ClientConnections
            | Refusal::ClientConnectionRate
            | Refusal::HardErrorLimit => 421,
            Refusal::ClientMessageRate | Refusal::ClientRecipientRate => 451,
            Refusal::EarlyTalker | Refusal::Dnsbl => 554,
            Refusal::AuthFailed => 535,
            Refusal::AuthUnavailable => 454,
        }
    }

    /// Every reason, in the order of [`CoreMetrics::refusals`].
    pub const ALL: [Refusal; 12] = [
        Refusal::CoreFull,
        Refusal::NotABalancer,
        Refusal::BadProxyHeader,
        Refusal::ClientConnections,
        Refusal::ClientConnectionRate,
        Refusal::ClientMessageRate,
        Refusal::ClientRecipientRate,
        Refusal::HardErrorLimit,
        Refusal::EarlyTalker,
        Refusal::Dnsbl,
        Refusal::AuthFailed,
        Refusal::AuthUnavailable,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::CoreFull => "core_connection_limit",
            Refusal::NotABalancer => "not_a_balancer",
            Refusal::BadProxyHeader => "bad_proxy_header",
            Refusal::ClientConnections => "client_connection_limit",
            Refusal::ClientConnectionRate => "client_connection_rate",
            Refusal::ClientMessageRate => "client_message_rate",
            Refusal::ClientRecipientRate => "client_recipient_rate",
            Refusal::HardErrorLimit => "hard_error_limit",
            Refusal::EarlyTalker => "early_talker",
            Refusal::Dnsbl => "dnsbl",
            Refusal::AuthFailed => "auth_failed",
            Refusal::AuthUnavailable => "auth_unavailable",
        }
    }
}

/// Everything one core counts. Written only by that core.
#[derive(Debug)]
#[repr(align(128))]
pub struct CoreMetrics {
    /// Connections accepted.
    pub accepted: Counter,
    /// Connections refused (over the limit, or a missing or untrusted
    /// PROXY header).
    pub rejected: Counter,
    /// Connections open now (a gauge).
    pub open: Counter,
    /// Refusals by reason (index into [`Refusal::ALL`]).
    pub refusals: [Counter; Refusal::ALL.len()],
    /// Untrusted clients admitted without a slot in the client table
    /// (every slot of their window had connections).
    pub clients_untracked: Counter,
    /// DNS list lookups made (not answered from the cache).
    pub dnsbl_lookups: Counter,
    /// DNS list queries that failed or timed out.
    pub dnsbl_failures: Counter,
    /// Messages stored and acknowledged.
    pub messages: Counter,
    /// Octets of those messages.
    pub bytes: Counter,
    /// Replies sent, by class (index into [`REPLY_CLASSES`]).
    pub replies: [Counter; 4],
    /// TLS handshakes completed.
    pub tls_handshakes: Counter,
    /// TLS handshakes that failed.
    pub tls_failures: Counter,
    /// Pauses of messages that found their core's memory budget used up.
    pub memory_waits: Counter,
    /// Group-commit batches written.
    pub batches: Counter,
    /// `fdatasync` calls for batches.
    pub syncs: Counter,
    /// Octets appended to the spool.
    pub spooled_bytes: Counter,
    /// Batches whose write or sync failed.
    pub spool_failures: Counter,
    /// Spool octets the drain has not handed on (a gauge, written by the
    /// backlog thread).
    pub undrained_bytes: Counter,
    /// Messages per batch.
    pub batch_messages: Histogram,
    /// Batch `fdatasync` latency in microseconds.
    pub sync_micros: Histogram,
    /// Unix milliseconds of the executor's last heartbeat.
    pub heartbeat_ms: AtomicU64,
    /// The spool writer task is running.
    pub writer_alive: AtomicBool,
}

impl Default for CoreMetrics {
    fn default() -> Self {
        CoreMetrics {
            accepted: Counter::default(),
            rejected: Counter::default(),
            open: Counter::default(),
            refusals: Default::default(),
            clients_untracked: Counter::default(),
            dnsbl_lookups: Counter::default(),
            dnsbl_failures: Counter::default(),
            messages: Counter::default(),
            bytes: Counter::default(),
            replies: Default::default(),
            tls_handshakes: Counter::default(),
            tls_failures: Counter::default(),
            memory_waits: Counter::default(),
            batches: Counter::default(),
            syncs: Counter::default(),
            spooled_bytes: Counter::default(),
            spool_failures: Counter::default(),
            undrained_bytes: Counter::default(),
            batch_messages: Histogram::new(BATCH_BOUNDS),
            sync_micros: Histogram::new(SYNC_MICROS_BOUNDS),
            heartbeat_ms: AtomicU64::new(0),
            writer_alive: AtomicBool::new(false),
        }
    }
}

impl CoreMetrics {
    /// Counts the replies in `out`: every line whose fourth octet is a
    /// space ends a reply (RFC 5321 §4.2.1); its first digit is the class.
    pub fn count_replies(&self, out: &[u8]) {
        for line in out.split(|&b| b == b'\n') {
            if line.len() >= 4 && line[3] == b' ' {
                if let Some(i) = REPLY_CLASSES.iter().position(|&c| c == line[0]) {
                    self.replies[i].add(1);
                }
            }
        }
    }

    /// Counts one refusal.
    pub fn refused(&self, why: Refusal) {
        let i = Refusal::ALL.iter().position(|&r| r == why).unwrap_or(0);
        self.refusals[i].add(1);
    }

    /// Notes that the executor is alive now.
    pub fn beat(&self) {
        self.heartbeat_ms.store(unix_millis(), Relaxed);
    }

    /// Records one written batch.
    pub fn batch(&self, messages: u64, bytes: u64, sync: Option<Duration>) {
        self.batches.add(1);
        self.batch_messages.observe(messages);
        self.spooled_bytes.add(bytes);
        if let Some(d) = sync {
            self.syncs.add(1);
            self.sync_micros.observe(d.as_micros() as u64);
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_upper_bounds_inclusive() {
        let h = Histogram::new(&[1, 10]);
        for v in [0, 1, 2, 10, 11, 1000] {
            h.observe(v);
        }
        let (buckets, sum) = h.snapshot();
        assert_eq!(buckets, vec![2, 2, 2]);
        assert_eq!(sum, 1024);
    }

    #[test]
    fn replies_are_counted_once_per_reply_by_class() {
        let m = CoreMetrics::default();
        m.count_replies(
            b"250-sluice\r\n250-PIPELINING\r\n250 SIZE 10\r\n354 go\r\n452 4.3.1 full\r\n550 no\r\n221 bye\r\n",
        );
        let got: Vec<u64> = m.replies.iter().map(Counter::get).collect();
        assert_eq!(got, vec![2, 1, 1, 1]);
    }

    #[test]
    fn a_gauge_goes_up_and_down() {
        let c = Counter::default();
        c.add(3);
        c.sub(1);
        assert_eq!(c.get(), 2);
    }
}
