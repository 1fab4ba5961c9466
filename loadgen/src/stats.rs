//! Counting and timing: what each core saw, merged into one report.
//!
//! Why it exists: the numbers are the product. A message counts as sent
//! only after its 250; every other reply is counted by its code; every
//! connection error is counted. Latencies go into HDR histograms (µs):
//! end-of-data → final reply, and the whole transaction.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

/// Live counters shared with the progress printer (one set per core).
#[derive(Default)]
pub struct Live {
    pub sent: AtomicU64,
    pub errors: AtomicU64,
    pub p99_us: AtomicU64,
}

/// One core's results.
pub struct CoreStats {
    /// Messages acknowledged with 250, warm-up included.
    pub acknowledged: u64,
    /// Messages acknowledged inside the measured window.
    pub sent: u64,
    /// Message octets of `sent`.
    pub bytes: u64,
    /// Replies other than the expected ones, by code (measured window).
    pub bad_replies: BTreeMap<u16, u64>,
    /// Connection failures (refused, reset, timeout, protocol breakage).
    pub connection_errors: u64,
    /// End of data → final reply, µs.
    pub eod: Histogram<u64>,
    /// MAIL → final reply (open loop: intended start → final reply), µs.
    pub transaction: Histogram<u64>,
    /// First error text seen, for the report.
    pub first_error: Option<String>,
}

impl CoreStats {
    pub fn new() -> CoreStats {
        let h = || Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds");
        CoreStats {
            acknowledged: 0,
            sent: 0,
            bytes: 0,
            bad_replies: BTreeMap::new(),
            connection_errors: 0,
            eod: h(),
            transaction: h(),
            first_error: None,
        }
    }

    /// Adds another core's results.
    pub fn merge(&mut self, other: &CoreStats) {
        self.acknowledged += other.acknowledged;
        self.sent += other.sent;
        self.bytes += other.bytes;
        for (code, n) in &other.bad_replies {
            *self.bad_replies.entry(*code).or_default() += n;
        }
        self.connection_errors += other.connection_errors;
        let _ = self.eod.add(&other.eod);
        let _ = self.transaction.add(&other.transaction);
        if self.first_error.is_none() {
            self.first_error = other.first_error.clone();
        }
    }

    /// Errors of every kind.
    pub fn errors(&self) -> u64 {
        self.bad_replies.values().sum::<u64>() + self.connection_errors
    }

    pub fn note_error(&mut self, live: &Live, what: impl FnOnce() -> String) {
        live.errors.fetch_add(1, Ordering::Relaxed);
        if self.first_error.is_none() {
            self.first_error = Some(what());
        }
    }
}

/// The final report.
pub struct Report<'a> {
    pub target: &'a str,
    pub settings: String,
    pub stats: &'a CoreStats,
    pub window: Duration,
}

impl Report<'_> {
    fn rate(&self) -> f64 {
        self.stats.sent as f64 / self.window.as_secs_f64().max(1e-9)
    }

    fn error_rate(&self) -> f64 {
        let e = self.stats.errors() as f64;
        e / (e + self.stats.sent as f64).max(1.0)
    }

    /// Whether the error rate is within `max`.
    pub fn ok(&self, max: f64) -> bool {
        self.error_rate() <= max
    }

    fn percentiles(h: &Histogram<u64>) -> [(&'static str, f64); 5] {
        let ms = |v: u64| v as f64 / 1000.0;
        [
            ("p50", ms(h.value_at_quantile(0.50))),
            ("p90", ms(h.value_at_quantile(0.90))),
            ("p99", ms(h.value_at_quantile(0.99))),
            ("p99.9", ms(h.value_at_quantile(0.999))),
            ("max", ms(h.max())),
        ]
    }

    /// A readable table.
    pub fn text(&self) -> String {
        let s = self.stats;
        let mut out = format!("sluice-loadgen → {}: {}\n", self.target, self.settings);
        let mut row = |k: &str, v: String| out.push_str(&format!("  {k:<26} {v}\n"));
        row(
            "measured window",
            format!("{:.2} s", self.window.as_secs_f64()),
        );
        row("messages sent (250)", s.sent.to_string());
        row("messages/s", format!("{:.1}", self.rate()));
        row(
            "MB/s (message octets)",
            format!(
                "{:.2}",
                s.bytes as f64 / 1e6 / self.window.as_secs_f64().max(1e-9)
            ),
        );
        row("acknowledged incl. warm-up", s.acknowledged.to_string());
        let codes: Vec<String> = s
            .bad_replies
            .iter()
            .map(|(c, n)| format!("{c}×{n}"))
            .collect();
        row(
            "errors",
            format!(
                "{} (replies: {}; connection: {})",
                s.errors(),
                if codes.is_empty() {
                    "none".into()
                } else {
                    codes.join(", ")
                },
                s.connection_errors
            ),
        );
        for (name, h) in [
            ("end-of-data → reply", &s.eod),
            ("transaction", &s.transaction),
        ] {
            let p: Vec<String> = Self::percentiles(h)
                .iter()
                .map(|(k, v)| format!("{k} {v:.3}"))
                .collect();
            row(&format!("{name} (ms)"), p.join("  "));
        }
        if let Some(e) = &s.first_error {
            row("first error", e.clone());
        }
        out
    }

    /// One JSON object.
    pub fn json(&self) -> String {
        let s = self.stats;
        let lat = |h: &Histogram<u64>| {
            let mut m = serde_json::Map::new();
            for (k, v) in Self::percentiles(h) {
                m.insert(format!("{k}_ms"), serde_json::json!(v));
            }
            serde_json::Value::Object(m)
        };
        let codes: serde_json::Map<String, serde_json::Value> = s
            .bad_replies
            .iter()
            .map(|(c, n)| (c.to_string(), serde_json::json!(n)))
            .collect();
        serde_json::json!({
            "target": self.target,
            "settings": self.settings,
            "window_s": self.window.as_secs_f64(),
            "sent": s.sent,
            "acknowledged": s.acknowledged,
            "messages_per_s": self.rate(),
            "mb_per_s": s.bytes as f64 / 1e6 / self.window.as_secs_f64().max(1e-9),
            "errors": s.errors(),
            "error_replies": codes,
            "connection_errors": s.connection_errors,
            "error_rate": self.error_rate(),
            "latency_eod": lat(&s.eod),
            "latency_transaction": lat(&s.transaction),
            "first_error": s.first_error,
        })
        .to_string()
    }
}
