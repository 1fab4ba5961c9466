//! A cap on how many refusal lines a core logs.
//!
//! Why it exists: a refusal is worth a log line, but a flood of refused
//! clients must not become a flood of log lines (the disk and the log
//! shipper pay for it). Each core may log [`LINES`] refusals per
//! [`WINDOW`]; the rest are counted and reported as one line when the
//! next window opens. The counters in `/metrics` still count every one.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Refusal lines per window per core.
pub const LINES: u32 = 20;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(10);

/// One core's budget.
#[derive(Debug)]
pub struct LogBudget {
    opened: Cell<Instant>,
    used: Cell<u32>,
    suppressed: Cell<u64>,
}

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget {
            opened: Cell::new(Instant::now()),
            used: Cell::new(0),
            suppressed: Cell::new(0),
        }
    }
}

/// What the caller may log now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// Whether this line may be logged.
    pub log: bool,
    /// Lines suppressed in the window that just closed, to report first.
    pub suppressed: u64,
}

impl LogBudget {
    /// Spends one line at `now`.
    pub fn spend(&self, now: Instant) -> Allowance {
        let mut suppressed = 0;
        if now.duration_since(self.opened.get()) >= WINDOW {
            self.opened.set(now);
            self.used.set(0);
            suppressed = self.suppressed.replace(0);
        }
        let log = self.used.get() < LINES;
        if log {
            self.used.set(self.used.get() + 1);
        } else {
            self.suppressed.set(self.suppressed.get() + 1);
        }
        Allowance { log, suppressed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_logs_its_lines_then_counts_the_rest() {
        let b = LogBudget::default();
        let t0 = Instant::now();
        let logged = (0..100).filter(|_| b.spend(t0).log).count();
        assert_eq!(logged, LINES as usize);
        let next = b.spend(t0 + WINDOW);
        assert_eq!(
            next,
            Allowance {
                log: true,
                suppressed: 100 - u64::from(LINES)
            }
        );
        assert_eq!(b.spend(t0 + WINDOW).suppressed, 0);
    }
}
