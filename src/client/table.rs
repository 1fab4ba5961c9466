//! The bounded table of clients every core shares.
//!
//! Why it exists: limits per client must hold across cores without a lock
//! on the connection path, and a flood of distinct source addresses (IPv6,
//! forged PROXY headers) must not grow memory. The table is a fixed array
//! of [`SLOT_BYTES`]-octet slots allocated once; a client's slot is found
//! by linear probing in a window of [`WINDOW`] slots from its key's hash.
//!
//! # Claiming a slot without a lock
//!
//! A slot's `state` word holds its open connections (low 32 bits), a
//! generation (bits 32..63) and a `LOCKED` bit. A connection counts
//! itself in with one compare-and-swap on a state it read *before*
//! checking the key, so a slot re-keyed in between (which bumps the
//! generation) makes the swap fail. Re-keying a free or idle slot sets
//! `LOCKED` first, then looks through the window again: if another core
//! is claiming a slot there too, or has just given this client one, it
//! backs off and starts over. Each client therefore has at most one slot.
//! Only slots without open connections are ever re-keyed, and rates and
//! the DNS list verdict are only touched by a connection holding its
//! slot, so they are never reset under a user.
//!
//! # Bounds
//!
//! An entry is *idle* once it has no connections, every rate has decayed
//! and its cached verdict has expired: re-keying it loses nothing. When a
//! window has no free or idle slot, the one with no connections that was
//! seen longest ago is taken (its rate history is lost: counted in
//! `evicted`). When every slot of the window has open connections the
//! client is admitted untracked (counted in `untracked`); with the
//! default capacity that takes 16 clients of one window all connected at
//! once.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Instant;

use super::key::ClientKey;
use super::rate;

/// Slots probed for one key.
pub const WINDOW: usize = 16;
/// Slots in the server's table: 4 MiB at [`SLOT_BYTES`] each.
pub const DEFAULT_CAPACITY: usize = 1 << 16;
/// Memory per slot (one cache line).
pub const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

const LOCKED: u64 = 1 << 63;
const CONNECTIONS: u64 = 0xFFFF_FFFF;
const GENERATION: u64 = 1 << 32;
/// Claim attempts before a client is admitted untracked.
const ATTEMPTS: usize = 64;

#[derive(Default)]
#[repr(align(64))]
struct Slot {
    key: AtomicU64,
    state: AtomicU64,
    connection_tat: AtomicU64,
    message_tat: AtomicU64,
    recipient_tat: AtomicU64,
    /// Nanoseconds (table time) a connection last opened or closed.
    seen: AtomicU64,
    /// The cached DNS list verdict: expiry (table seconds) << 32 | tag
    /// << 20 | which lists listed the client (a bit per list).
    verdict: AtomicU64,
}

impl Slot {
    fn is_idle(&self, now: u64) -> bool {
        rate::is_idle(&self.connection_tat, now)
            && rate::is_idle(&self.message_tat, now)
            && rate::is_idle(&self.recipient_tat, now)
            && (self.verdict.load(SeqCst) >> 32) <= now / NS_PER_SEC
    }
}

const NS_PER_SEC: u64 = 1_000_000_000;

/// Rates per client, in events per 60 s; 0 is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rates {
    pub connections: u32,
    pub messages: u32,
    pub recipients: u32,
}

/// Counts of how the table coped, for the metrics.
#[derive(Debug, Default)]
pub struct TableStats {
    /// Slots taken from a client seen before whose rates had not decayed.
    pub evicted: AtomicU64,
    /// Clients admitted without a slot: their window was all in use.
    pub untracked: AtomicU64,
}

/// Per-client state shared by every core.
pub struct ClientTable {
    slots: Box<[Slot]>,
    mask: usize,
    epoch: Instant,
    stats: TableStats,
}

impl ClientTable {
    /// A table of `capacity` slots (a power of two, at least [`WINDOW`]).
    pub fn new(capacity: usize) -> Arc<ClientTable> {
        assert!(capacity.is_power_of_two() && capacity >= WINDOW);
        Arc::new(ClientTable {
            slots: (0..capacity).map(|_| Slot::default()).collect(),
            mask: capacity - 1,
            epoch: Instant::now(),
            stats: TableStats::default(),
        })
    }

    /// Nanoseconds since the table was made (never 0).
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    /// How the table coped so far.
    pub fn stats(&self) -> &TableStats {
        &self.stats
    }

    /// Counts a new connection of `key` in; `None` when it cannot be
    /// tracked (its window is all in use). Dropping the hold counts it
    /// out.
    pub fn connect(self: &Arc<Self>, key: ClientKey) -> Option<ClientHold> {
        let now = self.now();
        for _ in 0..ATTEMPTS {
            match self.try_connect(key, now) {
                Claim::Held(index, connections) => {
                    self.slots[index].seen.store(now, SeqCst);
                    return Some(ClientHold {
                        table: self.clone(),
                        index,
                        connections,
                    });
                }
                Claim::Full => break,
                Claim::Retry => std::hint::spin_loop(),
            }
        }
        self.stats.untracked.fetch_add(1, SeqCst);
        None
    }

    fn window(&self, key: ClientKey) -> impl Iterator<Item = usize> + '_ {
        let home = key.home(self.mask);
        (0..WINDOW).map(move |i| (home + i) & self.mask)
    }

    fn try_connect(&self, key: ClientKey, now: u64) -> Claim {
        // The client's own slot, if it has one.
        let mut busy = false;
        for i in self.window(key) {
            let slot = &self.slots[i];
            let state = slot.state.load(SeqCst);
            if state & LOCKED != 0 {
                busy = true;
                continue;
            }
            if slot.key.load(SeqCst) == key.raw() {
                let count = state & CONNECTIONS;
                if count == CONNECTIONS {
                    return Claim::Full;
                }
                return match slot
                    .state
                    .compare_exchange(state, state + 1, SeqCst, SeqCst)
                {
                    Ok(_) => Claim::Held(i, (count + 1) as u32),
                    Err(_) => Claim::Retry,
                };
            }
        }
        if busy {
            // Someone is re-keying a slot here; it may be for this client.
            return Claim::Retry;
        }
        // A new slot: free first, then idle, then the least recently seen.
        let victim = self
            .window(key)
            .filter_map(|i| {
                let slot = &self.slots[i];
                let state = slot.state.load(SeqCst);
                if state & (LOCKED | CONNECTIONS) != 0 {
                    return None;
                }
                let rank = if slot.key.load(SeqCst) == 0 {
                    (0, 0)
                } else if slot.is_idle(now) {
                    (1, 0)
                } else {
                    (2, slot.seen.load(SeqCst))
                };
                Some((rank, i, state))
            })
            .min();
        let Some(((kind, _), index, state)) = victim else {
            return Claim::Full;
        };
        let slot = &self.slots[index];
        if slot
            .state
            .compare_exchange(state, state | LOCKED, SeqCst, SeqCst)
            .is_err()
        {
            return Claim::Retry;
        }
        let contested = self.window(key).any(|i| {
            i != index && {
                let other = &self.slots[i];
                other.state.load(SeqCst) & LOCKED != 0 || other.key.load(SeqCst) == key.raw()
            }
        });
        let next = (state & !CONNECTIONS) + GENERATION;
        if contested {
            slot.state.store(next & !LOCKED, SeqCst);
            return Claim::Retry;
        }
        if kind == 2 {
            self.stats.evicted.fetch_add(1, SeqCst);
        }
        for word in [
            &slot.connection_tat,
            &slot.message_tat,
            &slot.recipient_tat,
            &slot.verdict,
        ] {
            word.store(0, SeqCst);
        }
        slot.key.store(key.raw(), SeqCst);
        slot.state.store((next & !LOCKED) | 1, SeqCst);
        Claim::Held(index, 1)
    }
}

enum Claim {
    /// Counted in at this slot, with this many connections now.
    Held(usize, u32),
    /// Every slot of the window has connections.
    Full,
    /// Lost a race; try again.
    Retry,
}

/// A connection's claim on its client's slot; dropping it counts the
/// connection out.
pub struct ClientHold {
    table: Arc<ClientTable>,
    index: usize,
    connections: u32,
}

impl ClientHold {
    fn slot(&self) -> &Slot {
        &self.table.slots[self.index]
    }

    /// The client's open connections when this one was counted in
    /// (itself included).
    pub fn connections(&self) -> u32 {
        self.connections
    }

    /// Takes one new connection of a rate of `per_minute`.
    pub fn take_connection(&self, per_minute: u32) -> bool {
        rate::take(&self.slot().connection_tat, self.table.now(), per_minute)
    }

    /// Takes one accepted MAIL of a rate of `per_minute`.
    pub fn take_message(&self, per_minute: u32) -> bool {
        rate::take(&self.slot().message_tat, self.table.now(), per_minute)
    }

    /// Takes one accepted RCPT of a rate of `per_minute`.
    pub fn take_recipient(&self, per_minute: u32) -> bool {
        rate::take(&self.slot().recipient_tat, self.table.now(), per_minute)
    }

    /// Which lists listed this client (bit `i` for list `i`), as cached
    /// under `tag` (naming the list configuration), if not expired.
    pub fn cached_listing(&self, tag: u16) -> Option<u32> {
        let v = self.slot().verdict.load(SeqCst);
        let fresh = (v >> 32) > self.table.now() / NS_PER_SEC;
        let same = (v >> LISTING_BITS) as u16 & TAG_MASK == tag & TAG_MASK;
        (fresh && same).then_some(v as u32 & LISTING_MASK)
    }

    /// Caches `listing` under `tag` for `ttl_secs` (0: not at all).
    pub fn cache_listing(&self, tag: u16, listing: u32, ttl_secs: u32) {
        if ttl_secs == 0 {
            return;
        }
        let expires =
            (self.table.now() / NS_PER_SEC + u64::from(ttl_secs)).min(u64::from(u32::MAX));
        let v = expires << 32
            | u64::from(tag & TAG_MASK) << LISTING_BITS
            | u64::from(listing & LISTING_MASK);
        self.slot().verdict.store(v, SeqCst);
    }
}

/// The most DNS lists a cached verdict can name.
pub const MAX_LISTS: usize = LISTING_BITS as usize;
const LISTING_BITS: u32 = 20;
const LISTING_MASK: u32 = (1 << LISTING_BITS) - 1;
/// A configuration tag keeps 12 bits: after a reload that changes the
/// lists, an old verdict is reused only with a chance of 1 in 4096, and
/// only until its TTL.
const TAG_MASK: u16 = 0xFFF;

impl Drop for ClientHold {
    fn drop(&mut self) {
        let slot = self.slot();
        slot.seen.store(self.table.now(), SeqCst);
        slot.state.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn v4(n: u32) -> ClientKey {
        ClientKey::of(IpAddr::V4(Ipv4Addr::from(n)))
    }

    #[test]
    fn a_slot_is_one_cache_line() {
        assert_eq!(SLOT_BYTES, 64);
    }

    #[test]
    fn connections_are_counted_per_client_and_released_on_drop() {
        let t = ClientTable::new(64);
        let a1 = t.connect(v4(1)).unwrap();
        let a2 = t.connect(v4(1)).unwrap();
        let b = t.connect(v4(2)).unwrap();
        assert_eq!(
            (a1.connections(), a2.connections(), b.connections()),
            (1, 2, 1)
        );
        drop(a1);
        assert_eq!(t.connect(v4(1)).unwrap().connections(), 2);
        drop(a2);
        assert_eq!(t.connect(v4(1)).unwrap().connections(), 1);
    }

    #[test]
    fn rates_live_as_long_as_the_slot() {
        let t = ClientTable::new(64);
        let h = t.connect(v4(7)).unwrap();
        assert!(h.take_message(2) && h.take_message(2));
        assert!(!h.take_message(2));
        drop(h);
        // Reconnecting within the minute finds the same state.
        let h = t.connect(v4(7)).unwrap();
        assert!(!h.take_message(2));
        assert!(h.take_recipient(2), "each rate is its own");
    }

    #[test]
    fn cached_listings_are_per_tag_and_not_cached_without_a_ttl() {
        let t = ClientTable::new(64);
        let h = t.connect(v4(9)).unwrap();
        assert_eq!(h.cached_listing(3), None);
        h.cache_listing(3, 0b101, 60);
        assert_eq!(h.cached_listing(3), Some(0b101));
        assert_eq!(h.cached_listing(4), None, "another list configuration");
        h.cache_listing(3, 0b1, 0);
        assert_eq!(h.cached_listing(3), Some(0b101), "a TTL of 0 is not cached");
        drop(h);
        let again = t.connect(v4(9)).unwrap();
        assert_eq!(
            again.cached_listing(3),
            Some(0b101),
            "kept between connections"
        );
    }

    #[test]
    fn a_flood_of_distinct_clients_stays_within_the_table() {
        let t = ClientTable::new(1024);
        // Each connects and leaves, with a rate used so entries are not idle.
        for n in 0..100_000 {
            let h = t
                .connect(v4(n))
                .expect("a slot with no connections is reusable");
            assert!(h.take_message(10));
        }
        assert!(t.stats().evicted.load(SeqCst) > 90_000);
        assert_eq!(t.stats().untracked.load(SeqCst), 0);
    }

    #[test]
    fn a_window_full_of_connected_clients_admits_untracked() {
        let t = ClientTable::new(WINDOW);
        let held: Vec<_> = (0..WINDOW as u32)
            .map(|n| t.connect(v4(n)).unwrap())
            .collect();
        assert!(t.connect(v4(1000)).is_none());
        assert_eq!(t.stats().untracked.load(SeqCst), 1);
        // Known clients still find their slot.
        assert_eq!(t.connect(v4(3)).unwrap().connections(), 2);
        drop(held);
        assert!(t.connect(v4(1000)).is_some());
    }

    #[test]
    fn cores_racing_on_one_new_client_count_exactly() {
        // Threads connect the same few clients at once; every hold must
        // see a distinct count, and all are back to 0 at the end.
        let t = ClientTable::new(64);
        for round in 0..200u32 {
            let holds = std::sync::Mutex::new(Vec::new());
            std::thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| {
                        let h = t.connect(v4(round % 5)).unwrap();
                        holds.lock().unwrap().push(h);
                    });
                }
            });
            let holds = holds.into_inner().unwrap();
            let mut counts: Vec<u32> = holds.iter().map(|h| h.connections()).collect();
            counts.sort_unstable();
            assert_eq!(counts, vec![1, 2, 3, 4], "round {round}");
        }
    }
}
