//! Policy stages: who may receive mail here, and what outside policy
//! services say about a transaction.
//!
//! - [`recipient_map`]: `--recipient-map`, the known recipients, checked
//!   at RCPT.

pub mod recipient_map;

pub use recipient_map::RecipientMap;
