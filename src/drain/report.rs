//! What the drain tells an operator: a progress line per core, and the
//! `/metrics` and `/healthz` pages.
//!
//! Why it exists: "is the drain keeping up?" is the question a node's
//! operator asks; lag (messages and bytes after the cursor) answers it,
//! measured from the files like `serve --spool-max-bytes` measures it.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::DrainStats;
use crate::metrics::http::{Page, Pages};
use crate::metrics::render::per_core_family;
use crate::spool::backlog::{undrained_bytes, undrained_messages};
use crate::spool::cursor;

/// One progress line per core every `every`: rate and lag.
pub async fn progress(
    dirs: Vec<PathBuf>,
    stats: Vec<Arc<DrainStats>>,
    every: Duration,
    stop: Arc<AtomicBool>,
) {
    let mut last: Vec<u64> = stats.iter().map(|s| s.messages.get()).collect();
    let mut at = Instant::now();
    while !stop.load(Relaxed) {
        tokio::time::sleep(every).await;
        let secs = at.elapsed().as_secs_f64();
        at = Instant::now();
        for (core, (dir, s)) in dirs.iter().zip(&stats).enumerate() {
            let now = s.messages.get();
            let rate = (now - last[core]) as f64 / secs;
            last[core] = now;
            let (msgs, bytes) = lag(dir);
            tracing::info!(
                core,
                "{now} handed on ({rate:.0}/s), lag {msgs} messages / {bytes} bytes"
            );
        }
    }
}

/// Messages and bytes after a core's cursor.
fn lag(dir: &std::path::Path) -> (u64, u64) {
    let c = cursor::read(dir).ok().flatten();
    (
        undrained_messages(dir, c.as_ref()).unwrap_or(0),
        undrained_bytes(dir).unwrap_or(0),
    )
}

/// The drain's `/metrics` and `/healthz`.
pub struct DrainPages {
    pub dirs: Vec<PathBuf>,
    pub stats: Vec<Arc<DrainStats>>,
    pub client: async_nats::Client,
}

impl Pages for DrainPages {
    fn metrics(&self) -> String {
        let mut s = String::new();
        type Pick = fn(&DrainStats) -> u64;
        let rows: [(&str, &str, &str, Pick); 6] = [
            (
                "sluice_drain_messages_total",
                "counter",
                "Messages acknowledged by JetStream.",
                |d| d.messages.get(),
            ),
            (
                "sluice_drain_bytes_total",
                "counter",
                "Octets of those messages.",
                |d| d.bytes.get(),
            ),
            (
                "sluice_drain_duplicates_total",
                "counter",
                "PubAcks marked duplicate (handed on again after a restart or retry).",
                |d| d.duplicates.get(),
            ),
            (
                "sluice_drain_retries_total",
                "counter",
                "Publishes retried.",
                |d| d.retries.get(),
            ),
            (
                "sluice_drain_corrupt_total",
                "counter",
                "Messages whose stored copy failed its checksum (not handed on).",
                |d| d.corrupt.get(),
            ),
            (
                "sluice_drain_segments_deleted_total",
                "counter",
                "Spool segments deleted after draining.",
                |d| d.segments_deleted.get(),
            ),
        ];
        for (name, kind, help, pick) in rows {
            per_core_family(&mut s, name, kind, help, self.stats.iter().map(|d| pick(d)));
        }
        let lags: Vec<(u64, u64)> = self.dirs.iter().map(|d| lag(d)).collect();
        per_core_family(
            &mut s,
            "sluice_drain_lag_messages",
            "gauge",
            "Committed messages not yet acknowledged by JetStream.",
            lags.iter().map(|l| l.0),
        );
        per_core_family(
            &mut s,
            "sluice_drain_lag_bytes",
            "gauge",
            "Spool octets after the drain cursor.",
            lags.iter().map(|l| l.1),
        );
        s
    }

    fn health(&self) -> Page {
        let mut text = String::new();
        let mut ok = true;
        let state = self.client.connection_state();
        let connected = state == async_nats::connection::State::Connected;
        ok &= connected;
        let _ = writeln!(text, "nats: {state:?}");
        for (core, st) in self.stats.iter().enumerate() {
            let alive = st.alive.load(Relaxed);
            ok &= alive;
            let _ = writeln!(
                text,
                "core {core}: {}",
                if alive { "draining" } else { "stopped" }
            );
        }
        if ok {
            Ok(text)
        } else {
            Err(text)
        }
    }
}
