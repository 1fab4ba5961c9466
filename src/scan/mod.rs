//! Byte scanning for the two SMTP input modes: command lines and DATA
//! bodies.
//!
//! Why it exists: both modes decide where lines end, and they must decide
//! it the same way (only CRLF) or a client can smuggle a second message
//! past a filter. Keeping both readers in one module makes that rule one
//! place to read. The module knows nothing about SMTP states.

mod blocks;
mod data;
mod line;

pub use data::{BodyFlags, DataScanner, Progress};
pub use line::{Line, LineReader};

#[doc(hidden)]
pub mod differential;
#[doc(hidden)]
pub mod naive;
#[cfg(test)]
mod tests;
