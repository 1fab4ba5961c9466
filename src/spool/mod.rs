//! The spool: per-core append-only segment files that make a message
//! durable before its 250.
//!
//! Why it exists: the one promise sluice makes is that an acknowledged
//! message survives `kill -9` and power loss. Each core owns
//! `spool/core-<k>/<n>.seg` and appends framed, checksummed records to it
//! with group commit; no octet once written ever changes (direct I/O writes
//! the last partial block again, with the same octets in front). Readers work on the
//! files alone, without a running server.
//!
//! - [`record`]: the framing (magic, kind, length, CRC32C).
//! - [`envelope`]: the commit record's payload.
//! - [`id`]: queue ids.
//! - [`writer`]: the per-core group-commit writer (glommio).
//! - `segment`: the file the writer appends to (direct I/O, zeroes ahead).
//! - [`walk`]: reading segments back (recovery, tools).
//! - [`recover`]: start-up recovery of a torn tail.
//! - [`tail`]: following a core's spool as it grows (for the drain).
//! - [`backlog`]: undrained bytes and messages after the cursor.
//! - [`cursor`]: how far the drain has handed a core's spool on.
//! - [`export`]: JSONL, mbox and maildir output for the tools.

pub mod backlog;
pub mod cursor;
pub mod envelope;
pub mod export;
pub mod id;
pub mod record;
pub mod recover;
mod segment;
pub mod tail;
pub mod walk;
pub mod writer;

#[cfg(test)]
mod fixtures;

pub use envelope::{Origin, SpamVerdict, StoredEnvelope};
pub use id::QueueId;
pub use writer::{Durability, MessageWriter, SpoolWriter, StoreError, WriterConfig};
