//! `/healthz`: is every core's executor running and its spool writer
//! alive?
//!
//! Why it exists: a balancer should stop sending connections to a node
//! whose executor is stuck or whose spool writer died (it would answer
//! every message 451). Each core stamps a heartbeat from its own executor;
//! a stale stamp means the executor is not getting to run.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::CoreMetrics;

/// A core whose heartbeat is older than this is reported stuck.
pub const STALE_AFTER_MS: u64 = 5_000;

/// `Ok(text)` when every core is healthy, `Err(text)` naming each one that
/// is not; the text has one line per core.
pub fn check(cores: &[Arc<CoreMetrics>], now_ms: u64) -> Result<String, String> {
    let mut text = String::new();
    let mut healthy = true;
    for (core, m) in cores.iter().enumerate() {
        let beat = m.heartbeat_ms.load(Relaxed);
        let writer = m.writer_alive.load(Relaxed);
        let state = if beat == 0 {
            "starting".to_string()
        } else if now_ms.saturating_sub(beat) > STALE_AFTER_MS {
            format!(
                "executor stuck (no heartbeat for {} ms)",
                now_ms.saturating_sub(beat)
            )
        } else if !writer {
            "spool writer stopped (new mail gets 451)".to_string()
        } else {
            "ok".to_string()
        };
        healthy &= state == "ok";
        let _ = writeln!(text, "core {core}: {state}");
    }
    if healthy {
        Ok(text)
    } else {
        Err(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_core_must_beat_and_have_a_writer() {
        let cores: Vec<Arc<CoreMetrics>> = (0..2).map(|_| Arc::default()).collect();
        let now = 1_000_000;
        assert_eq!(
            check(&cores, now),
            Err("core 0: starting\ncore 1: starting\n".into())
        );
        for m in &cores {
            m.heartbeat_ms.store(now - 100, Relaxed);
            m.writer_alive.store(true, Relaxed);
        }
        assert_eq!(check(&cores, now), Ok("core 0: ok\ncore 1: ok\n".into()));
        cores[1].writer_alive.store(false, Relaxed);
        let e = check(&cores, now).unwrap_err();
        assert!(e.contains("core 1: spool writer stopped"), "{e}");
        cores[1].writer_alive.store(true, Relaxed);
        cores[0]
            .heartbeat_ms
            .store(now - STALE_AFTER_MS - 1, Relaxed);
        let e = check(&cores, now).unwrap_err();
        assert!(e.contains("core 0: executor stuck"), "{e}");
    }
}
