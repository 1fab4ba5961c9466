//! Who a client is, and the state kept about each one across every core:
//! open connections, smoothed rates, the cached DNS list verdict.
//!
//! Why it exists: SO_REUSEPORT spreads one client's connections over all
//! cores, so per-client limits cannot be per core and still be exact. The
//! [`ClientTable`] is the one structure the cores share on the connection
//! path: a fixed array of cache-line slots, claimed and counted with
//! atomic compare-and-swap, never a lock. A connection costs about four
//! atomic operations (claim, count, release), a message or recipient one
//! compare-and-swap on its rate; nothing happens per byte or per command.
//!
//! - [`key`]: an IPv4 address, or an IPv6 /64, as one 64-bit key.
//! - [`rate`]: a smooth rate (GCRA) on one atomic word.
//! - [`table`]: the bounded table and the [`ClientHold`] a connection keeps.

pub mod key;
pub mod rate;
pub mod table;

pub use key::ClientKey;
pub use table::{ClientHold, ClientTable, Rates, MAX_LISTS};
