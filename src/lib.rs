//! sluice: a thread-per-core SMTP ingest engine.
//!
//! # Layout
//!
//! - [`scan`]: finds line ends and the end of DATA with SIMD (memchr),
//!   unstuffs dots in place, notes bare CR/LF and long lines.

pub mod scan;
pub mod smtp;
pub mod spool;
