//! A smooth rate limit on one atomic word: the generic cell rate
//! algorithm (GCRA).
//!
//! Why it exists: a fixed window ("N per minute, counted from :00") lets
//! a client send 2N across a window edge. GCRA keeps one number, the
//! theoretical arrival time (TAT) of the next event, and allows an event
//! when it is not more than the burst ahead of now. It needs no timer and
//! no cleanup, and an idle client's state decays by itself: once the TAT
//! is in the past, the state is the same as a fresh one.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

/// Nanoseconds over which a rate is given (`N per 60 s`).
pub const PERIOD_NS: u64 = 60_000_000_000;

/// Takes one event of a rate of `per_period` events per [`PERIOD_NS`]
/// at time `now` (ns), if the rate allows it: `true` and the TAT moves
/// on, or `false` and nothing changes. A burst of `per_period` is allowed
/// from a fresh state, then one per `PERIOD_NS / per_period`.
pub fn take(tat: &AtomicU64, now: u64, per_period: u32) -> bool {
    if per_period == 0 {
        return true;
    }
    let interval = PERIOD_NS / u64::from(per_period);
    let burst = PERIOD_NS - interval;
    let mut current = tat.load(SeqCst);
    loop {
        let base = current.max(now);
        if base - now > burst {
            return false;
        }
        match tat.compare_exchange_weak(current, base + interval, SeqCst, SeqCst) {
            Ok(_) => return true,
            Err(seen) => current = seen,
        }
    }
}

/// Whether a rate's state at `now` is the same as a fresh one.
pub fn is_idle(tat: &AtomicU64, now: u64) -> bool {
    tat.load(SeqCst) <= now
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn a_fresh_client_gets_the_whole_burst_and_no_more() {
        let tat = AtomicU64::new(0);
        let now = 1000 * SEC;
        assert!((0..6).all(|_| take(&tat, now, 6)));
        assert!(!take(&tat, now, 6));
        assert!(!take(&tat, now + 9 * SEC, 6), "one every 10 s");
        assert!(take(&tat, now + 10 * SEC, 6));
        assert!(!take(&tat, now + 10 * SEC, 6));
    }

    #[test]
    fn the_rate_is_smooth_across_any_window_edge() {
        let tat = AtomicU64::new(0);
        let start = 1000 * SEC;
        // One attempt per second for five minutes: the burst, then one per
        // interval, wherever a window starts: a token bucket of 6 that
        // fills at 6 a minute, not a count reset on the minute.
        let allowed: Vec<u64> = (0..300)
            .map(|s| start + s * SEC)
            .filter(|&t| take(&tat, t, 6))
            .collect();
        assert_eq!(allowed.len(), 6 + 299 / 10);
        for w in allowed.windows(16) {
            assert!(w[15] - w[0] >= 100 * SEC, "16 events: burst + 10 intervals");
        }
    }

    #[test]
    fn zero_means_no_limit_and_state_decays_to_idle() {
        let tat = AtomicU64::new(0);
        assert!((0..1000).all(|_| take(&tat, 5, 0)));
        assert!(take(&tat, 100 * SEC, 60));
        assert!(!is_idle(&tat, 100 * SEC));
        assert!(is_idle(&tat, 101 * SEC));
    }

    #[test]
    fn threads_together_get_exactly_the_burst() {
        let tat = AtomicU64::new(0);
        let now = 1000 * SEC;
        let taken = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..100 {
                        if take(&tat, now, 50) {
                            taken.fetch_add(1, SeqCst);
                        }
                    }
                });
            }
        });
        assert_eq!(taken.into_inner(), 50);
    }
}
