//! SMTP as a protocol, without sockets: command grammar, replies, the
//! session state machine and the trace header it stamps on every message.
//!
//! Why it exists: keeping the protocol sans-I/O (like `h11` or
//! `quinn-proto`) turns every RFC rule into a unit test and keeps the
//! server module down to moving bytes.

pub mod command;
pub mod path;
pub mod received;
pub mod reply;
pub mod session;

pub use session::{
    Action, BareNewlinePolicy, Envelope, Quota, Session, SessionConfig, StoreFailure, Verdict,
};

#[cfg(test)]
mod session_tests;
