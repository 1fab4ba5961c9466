//! Message buffers: one core's pool of arenas, and the guard that gives an
//! arena back to it.
//!
//! Why it exists: a message body is read, scanned and unstuffed in one
//! buffer, and those buffers are large (the message memory budget plus
//! room for reads). Allocating one per message would put the allocator on
//! the message path, and handing them back by hand at every exit (a
//! disconnect, a timeout, a refused chunk) is how buffers leak. An
//! [`Arena`] returns itself to its pool when dropped, whatever path the
//! message took.
//!
//! An arena is not zero-filled when it is allocated: its memory is
//! initialised only as far as a message reaches into it ([`Arena::reach`]),
//! once per buffer, so a 2 KiB message touches only the pages it uses and
//! a reused buffer costs nothing at all.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::rc::Rc;

/// Reads from a socket into an arena are at most this big.
pub const READ_CHUNK: usize = 64 << 10;

/// The one sizing rule: an arena holds the message memory budget, one
/// full read past it (the budget is checked between reads), and one more
/// read's room for the trace header and the scanner's gap (the few octets
/// between the body written so far and the input still to scan).
pub const fn arena_size(message_memory: usize) -> usize {
    message_memory + 2 * READ_CHUNK
}

/// One core's free arenas. Same thread only (`Rc`, `RefCell`).
pub struct ArenaPool {
    size: usize,
    free: RefCell<Vec<Vec<u8>>>,
    /// Free arenas beyond this many are released to the allocator.
    keep: usize,
}

impl ArenaPool {
    /// A pool of arenas for messages of `message_memory` octets in memory,
    /// keeping at most `keep` free ones.
    pub fn new(message_memory: usize, keep: usize) -> Rc<ArenaPool> {
        Rc::new(ArenaPool {
            size: arena_size(message_memory),
            free: RefCell::new(Vec::new()),
            keep,
        })
    }

    /// The size of every arena of this pool.
    pub fn arena_size(&self) -> usize {
        self.size
    }

    /// An arena, reused if one is free.
    pub fn take(self: &Rc<Self>) -> Arena {
        let buf = self
            .free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.size));
        Arena {
            buf,
            pool: self.clone(),
        }
    }

    /// Free arenas held (for tests and the stop line).
    pub fn free(&self) -> usize {
        self.free.borrow().len()
    }

    fn give(&self, buf: Vec<u8>) {
        let mut free = self.free.borrow_mut();
        if free.len() < self.keep {
            free.push(buf);
        }
    }
}

/// A message buffer on loan from its core's pool; dropping it gives it
/// back. It derefs to its initialised part (see [`Arena::reach`]).
pub struct Arena {
    /// `len` is how far the buffer has been initialised; `capacity` is
    /// the pool's arena size.
    buf: Vec<u8>,
    pool: Rc<ArenaPool>,
}

impl Arena {
    /// The arena's full size (what [`Arena::reach`] may ask for).
    pub fn size(&self) -> usize {
        self.pool.size
    }

    /// The first `end` octets, initialising (zeroing) any of them that
    /// were never used in this buffer before.
    ///
    /// # Panics
    ///
    /// If `end` is over [`Arena::size`]: the caller broke the sizing rule.
    pub fn reach(&mut self, end: usize) -> &mut [u8] {
        assert!(
            end <= self.pool.size,
            "arena overrun: {end} of {}",
            self.pool.size
        );
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        &mut self.buf[..end]
    }
}

impl Deref for Arena {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf
    }
}

impl DerefMut for Arena {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_arena_goes_back_to_its_pool_when_dropped() {
        let pool = ArenaPool::new(4096, 2);
        let (a, b, c) = (pool.take(), pool.take(), pool.take());
        assert_eq!(pool.free(), 0);
        drop(a);
        drop(b);
        assert_eq!(pool.free(), 2);
        drop(c);
        assert_eq!(pool.free(), 2, "beyond `keep`, arenas are released");
        let again = pool.take();
        assert_eq!(pool.free(), 1, "a free arena is reused");
        drop(again);
    }

    #[test]
    fn memory_is_initialised_only_as_far_as_it_is_reached_and_kept_on_reuse() {
        let pool = ArenaPool::new(4096, 1);
        let mut a = pool.take();
        assert_eq!(a.size(), 4096 + 2 * READ_CHUNK);
        assert_eq!(a.len(), 0, "nothing is zeroed at allocation");
        a.reach(100)[99] = 7;
        assert_eq!(a.len(), 100);
        a.reach(10);
        assert_eq!(a.len(), 100, "reaching less keeps what is initialised");
        drop(a);
        let a = pool.take();
        assert_eq!(a.len(), 100, "a reused arena needs no zeroing again");
        assert_eq!(a[99], 7);
    }

    #[test]
    #[should_panic(expected = "arena overrun")]
    fn reaching_past_the_size_rule_is_a_bug_not_an_overflow() {
        let pool = ArenaPool::new(4096, 1);
        pool.take().reach(arena_size(4096) + 1);
    }
}
