//! Queue ids: unique across cores and restarts, sortable by time.
//!
//! Why it exists: the id is what a client sees in `250 ... queued as`,
//! what the tools look messages up by, and (later) the de-duplication key
//! downstream. An id is 64 bits: microseconds since the Unix epoch in the
//! top 56 bits, the core in the low 8. Each core hands out strictly
//! increasing times (bumping by a microsecond when two messages share
//! one), and starts above the newest id it recovered, so ids never repeat
//! even if the clock steps back across a restart.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

/// A queue id, shown as 16 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId(pub u64);

impl QueueId {
    /// The core that assigned it.
    pub fn core(self) -> u8 {
        self.0 as u8
    }

    /// Microseconds since the Unix epoch when it was assigned.
    pub fn micros(self) -> u64 {
        self.0 >> 8
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for QueueId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 {
            return Err(format!("{s:?} is not a queue id (16 hex digits)"));
        }
        u64::from_str_radix(s, 16)
            .map(QueueId)
            .map_err(|_| format!("{s:?} is not a queue id (16 hex digits)"))
    }
}

/// Hands out ids for one core.
#[derive(Debug)]
pub struct IdGenerator {
    core: u8,
    last_micros: u64,
}

impl IdGenerator {
    /// A generator for `core` whose ids are all newer than `after`.
    pub fn new(core: u8, after: Option<QueueId>) -> Self {
        IdGenerator {
            core,
            last_micros: after.map_or(0, QueueId::micros),
        }
    }

    /// The next id.
    pub fn assign(&mut self) -> QueueId {
        let now = now_micros();
        self.last_micros = now.max(self.last_micros + 1);
        QueueId(self.last_micros << 8 | u64::from(self.core))
    }
}

/// Microseconds since the Unix epoch.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_and_carry_the_core() {
        let mut g = IdGenerator::new(3, None);
        let ids: Vec<QueueId> = (0..1000).map(|_| g.assign()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(ids.iter().all(|id| id.core() == 3));
    }

    #[test]
    fn restart_continues_above_the_newest_recovered_id() {
        let future = QueueId((now_micros() + 10_000_000) << 8 | 1);
        let mut g = IdGenerator::new(1, Some(future));
        assert!(g.assign() > future);
    }

    #[test]
    fn display_parse_round_trip() {
        let id = QueueId(0x0123_4567_89ab_cdef);
        assert_eq!(id.to_string(), "0123456789abcdef");
        assert_eq!("0123456789abcdef".parse::<QueueId>().unwrap(), id);
        assert!("xyz".parse::<QueueId>().is_err());
    }
}
