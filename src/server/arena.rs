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
//! Arenas grow with what a message needs and are never zero-filled at
//! allocation: memory is initialised only as far as a message reaches
//! into it ([`Arena::reach`]), and capacity grows by doubling up to the
//! pool's arena size, so a 2 KiB message holds a few KiB, not the whole
//! message memory.
//!
//! The pool also keeps the core's share of `--memory-budget`: the
//! capacity of every arena the core holds (in use or free) is counted,
//! and an arena grows only while the count stays within the share
//! ([`Arena::can_reach`]). A message that may not grow spills what it
//! holds to the spool and goes on in the memory it has; one that has
//! nothing to spill waits for memory to come back ([`ArenaPool::note_wait`]).
//! Free arenas are kept for reuse only while they are small and the core
//! is well within its share, so memory goes back to the allocator (and
//! from mimalloc to the OS) after a burst.

use std::cell::{Cell, RefCell};
use std::ops::{Deref, DerefMut};
use std::rc::Rc;

/// Reads from a socket into an arena are at most this big.
pub const READ_CHUNK: usize = 64 << 10;

/// The smallest read a message asks room for: where a new arena starts,
/// and what a message under memory pressure reads at a time.
pub const MIN_READ: usize = 16 << 10;

/// Free arenas larger than this are released, not kept for reuse.
const KEEP_CAPACITY: usize = 2 * READ_CHUNK;

/// The one sizing rule: an arena holds the message memory budget, one
/// full read past it (the budget is checked between reads), and one more
/// read's room for the trace header and the scanner's gap (the few octets
/// between the body written so far and the input still to scan).
pub const fn arena_size(message_memory: usize) -> usize {
    message_memory + 2 * READ_CHUNK
}

/// The least memory budget one core can work with: every message needs
/// room for its trace header and one small read.
pub const MIN_CORE_BUDGET: usize = 1 << 20;

/// One core's free arenas and its share of the memory budget. Same
/// thread only (`Rc`, `RefCell`).
pub struct ArenaPool {
    size: usize,
    free: RefCell<Vec<Vec<u8>>>,
    /// Free arenas beyond this many are released to the allocator.
    keep: usize,
    /// The core's share of `--memory-budget`.
    budget: usize,
    /// Capacity of every arena of this core, in use or free.
    held: Cell<usize>,
}

impl ArenaPool {
    /// The message memory the arenas are sized for.
    pub fn message_memory(&self) -> usize {
        self.size - 2 * READ_CHUNK
    }

    /// A pool of arenas for messages of `message_memory` octets in memory,
    /// keeping at most `keep` free ones, all within `budget` octets.
    pub fn new(message_memory: usize, keep: usize, budget: usize) -> Rc<ArenaPool> {
        Rc::new(ArenaPool {
            size: arena_size(message_memory),
            free: RefCell::new(Vec::new()),
            keep,
            budget,
            held: Cell::new(0),
        })
    }

    /// The size an arena may grow to.
    pub fn arena_size(&self) -> usize {
        self.size
    }

    /// An arena, reused if one is free (a new one holds no memory yet).
    pub fn take(self: &Rc<Self>) -> Arena {
        let buf = self.free.borrow_mut().pop().unwrap_or_default();
        Arena {
            buf,
            pool: self.clone(),
        }
    }

    /// Free arenas held (for tests and the stop line).
    pub fn free(&self) -> usize {
        self.free.borrow().len()
    }

    /// Octets of arena capacity this core holds.
    pub fn held(&self) -> usize {
        self.held.get()
    }

    /// Whether arenas hold more than half the core's share: memory is
    /// short, freed memory should go back to the OS now.
    pub fn pressed(&self) -> bool {
        self.held.get() > self.budget / 2
    }

    /// A message has to wait for memory: let go of the free arenas
    /// (memory no message is using).
    pub fn note_wait(&self) {
        let released: usize = self.free.borrow_mut().drain(..).map(|b| b.capacity()).sum();
        self.held.set(self.held.get() - released);
    }

    fn give(&self, buf: Vec<u8>) {
        let mut free = self.free.borrow_mut();
        let roomy = !self.pressed();
        if free.len() < self.keep && buf.capacity() <= KEEP_CAPACITY && roomy {
            free.push(buf);
        } else {
            self.held.set(self.held.get() - buf.capacity());
        }
    }
}

/// A message buffer on loan from its core's pool; dropping it gives it
/// back. It derefs to its initialised part (see [`Arena::reach`]).
pub struct Arena {
    /// `len` is how far the buffer has been initialised; `capacity` is
    /// what it holds, at most the pool's arena size.
    buf: Vec<u8>,
    pool: Rc<ArenaPool>,
}

impl Arena {
    /// The arena's full size (what [`Arena::reach`] may ask for).
    pub fn size(&self) -> usize {
        self.pool.size
    }

    /// The octets this arena holds without growing.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Whether reaching `end` stays within the core's memory budget (it
    /// always does within the capacity already held).
    pub fn can_reach(&self, end: usize) -> bool {
        self.within(end, self.pool.budget)
    }

    /// Whether reaching `end` stays within half the budget: how far
    /// messages grow freely. The other half is the floor every message
    /// can still get its minimum from while the first half is held by
    /// messages whose clients went quiet.
    pub fn can_grow_freely(&self, end: usize) -> bool {
        self.within(end, self.pool.budget / 2)
    }

    fn within(&self, end: usize, limit: usize) -> bool {
        let cap = self.buf.capacity();
        end <= cap || self.pool.held.get() + (end - cap) <= limit
    }

    /// The first `end` octets, initialising (zeroing) any of them that
    /// were never used in this buffer before, and growing the arena
    /// (doubling, within its size and, where it can, the budget).
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
        let cap = self.buf.capacity();
        if end > cap {
            let doubled = (2 * cap).clamp(end, self.pool.size);
            let grow_to = if self.can_grow_freely(doubled) {
                doubled
            } else {
                end
            };
            self.buf.reserve_exact(grow_to - self.buf.len());
            let held = self.pool.held.get() - cap + self.buf.capacity();
            self.pool.held.set(held);
        }
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
        let pool = ArenaPool::new(4096, 2, usize::MAX);
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
        let pool = ArenaPool::new(4096, 1, usize::MAX);
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
    fn arenas_grow_by_doubling_and_their_capacity_is_counted_until_released() {
        let pool = ArenaPool::new(4096, 1, 1 << 20);
        let mut a = pool.take();
        assert_eq!(a.capacity(), 0, "a new arena holds nothing");
        a.reach(100);
        a.reach(150);
        assert_eq!(a.capacity(), 200, "doubled");
        assert_eq!(pool.held(), 200);
        drop(a);
        assert_eq!(pool.held(), 200, "a kept free arena still counts");
        pool.note_wait();
        assert_eq!((pool.free(), pool.held()), (0, 0), "free arenas let go");
    }

    #[test]
    fn growth_stays_within_the_budget_and_freely_within_half_of_it() {
        let pool = ArenaPool::new(1 << 20, 1, 64 << 10);
        let mut a = pool.take();
        a.reach(30 << 10);
        assert!(a.can_grow_freely(32 << 10) && !a.can_grow_freely(33 << 10));
        assert!(a.can_reach(64 << 10) && !a.can_reach((64 << 10) + 1));
        a.reach(40 << 10);
        assert_eq!(a.capacity(), 40 << 10, "past the free half, no doubling");
        drop(a);
        assert_eq!(pool.held(), 0, "a large arena is released, not kept");
    }

    #[test]
    #[should_panic(expected = "arena overrun")]
    fn reaching_past_the_size_rule_is_a_bug_not_an_overflow() {
        let pool = ArenaPool::new(4096, 1, usize::MAX);
        pool.take().reach(arena_size(4096) + 1);
    }
}
