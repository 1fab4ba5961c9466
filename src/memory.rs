//! When freed memory goes back to the OS: mimalloc's settings for the
//! process, and the nudge each core gives it.
//!
//! Why it exists: a mail server's memory has two enemies. Kept too long,
//! a burst of hostile connections leaves RSS high for good (issue 18's
//! budget must hold whatever clients send). Given back too soon, every
//! large buffer (a 64 KiB message's batch, a drain's reads) faults its
//! pages in again on each reuse, which cost 64 KiB messages 1.5–1.9×
//! their CPU. So freed memory waits [`PURGE_DELAY_MS`] before it goes,
//! except while some core's share of the memory budget is under pressure,
//! when it goes at once; and each core tells mimalloc once per
//! housekeeping round to give back what may go.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

/// mimalloc (v3) option numbers from its `mimalloc.h`; libmimalloc-sys
/// does not name these three.
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DECOMMITS: libmimalloc_sys::mi_option_t = 5;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with the process before mimalloc may give
/// it back, in milliseconds (BENCHMARKS.md, "purge delay").
pub const PURGE_DELAY_MS: std::ffi::c_long = 1000;

/// [`configure`] set the purge delay (no `MIMALLOC_PURGE_DELAY` in the
/// environment), so [`Nudge::round`] may change it.
static DELAY_IS_OURS: AtomicBool = AtomicBool::new(false);

/// Sets mimalloc up for the process: decommit what it gives back, commit
/// arenas as used, give freed memory back after [`PURGE_DELAY_MS`]. An
/// environment variable (`MIMALLOC_PURGE_DELAY`…) still wins. Call it
/// first thing in `main`.
pub fn configure() {
    DELAY_IS_OURS.store(std::env::var_os("MIMALLOC_PURGE_DELAY").is_none(), Relaxed);
    for (option, env, value) in [
        (
            MI_OPTION_ARENA_EAGER_COMMIT,
            "MIMALLOC_ARENA_EAGER_COMMIT",
            0,
        ),
        (MI_OPTION_PURGE_DECOMMITS, "MIMALLOC_PURGE_DECOMMITS", 1),
        (
            MI_OPTION_PURGE_DELAY,
            "MIMALLOC_PURGE_DELAY",
            PURGE_DELAY_MS,
        ),
    ] {
        if std::env::var_os(env).is_none() {
            // SAFETY: mi_option_set only stores an integer in mimalloc's
            // option table; any value is valid for these options.
            unsafe { libmimalloc_sys::mi_option_set(option, value) };
        }
    }
}

/// Cores whose share of the memory budget is under pressure now.
static PRESSED_CORES: AtomicUsize = AtomicUsize::new(0);

/// A core's side of it: whether the core was under pressure at its last
/// [`Nudge::round`].
#[derive(Default)]
pub struct Nudge {
    pressed: bool,
}

impl Nudge {
    /// One housekeeping round on the core's own thread: while any core's
    /// memory is under pressure freed memory goes back at once (as
    /// without a delay: the budget's bound holds), otherwise after
    /// [`PURGE_DELAY_MS`]; then this thread's heap gives back what it may
    /// (mimalloc would otherwise do it only when the thread allocates or
    /// frees again, so an idle core would keep a burst's memory).
    pub fn round(&mut self, pressed: bool) {
        if pressed != self.pressed {
            self.pressed = pressed;
            if pressed {
                PRESSED_CORES.fetch_add(1, Relaxed);
            } else {
                PRESSED_CORES.fetch_sub(1, Relaxed);
            }
        }
        // Set every round from the count, not only on a change: two cores
        // changing at once cannot leave the other's value behind for long.
        if DELAY_IS_OURS.load(Relaxed) {
            let delay = if PRESSED_CORES.load(Relaxed) > 0 {
                0
            } else {
                PURGE_DELAY_MS
            };
            // SAFETY: as in `configure`: an integer in mimalloc's option
            // table, read by its purges on any thread.
            unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, delay) };
        }
        // SAFETY: mi_collect walks only the calling thread's mimalloc heap
        // and its own bookkeeping. In a process that does not allocate
        // with mimalloc it finds nothing.
        unsafe { libmimalloc_sys::mi_collect(pressed) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delay() -> std::ffi::c_long {
        // SAFETY: reads an integer from mimalloc's option table.
        unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }
    }

    #[test]
    fn freed_memory_goes_at_once_while_any_core_is_pressed() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            eprintln!("SKIPPED: MIMALLOC_PURGE_DELAY is set, which wins");
            return;
        }
        configure();
        assert_eq!(delay(), PURGE_DELAY_MS);
        let (mut a, mut b) = (Nudge::default(), Nudge::default());
        a.round(true);
        assert_eq!(delay(), 0);
        b.round(true);
        a.round(false);
        assert_eq!(delay(), 0, "core b is still pressed");
        a.round(false);
        b.round(false);
        assert_eq!(delay(), PURGE_DELAY_MS);
        assert_eq!(PRESSED_CORES.load(Relaxed), 0);
        // A value another core's round left behind is put right by the
        // next round, change or not.
        // SAFETY: an integer in mimalloc's option table.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
        a.round(false);
        assert_eq!(delay(), PURGE_DELAY_MS);
    }
}
