//! Policy stages: who may receive mail here, and what outside policy
//! services say about a transaction.
//!
//! - [`recipient_map`]: `--recipient-map`, the known recipients, checked
//!   at RCPT.
//! - [`delegation`]: the Postfix policy delegation protocol (requests,
//!   answers, what actions mean), without I/O.
//! - [`client`]: a core's connections to the policy service.
//! - [`edit`]: header lines to add and a Subject to replace, as filters
//!   ask.
//! - [`rspamd`]: rspamd's `/checkv2` over hyper on the core's executor,
//!   and its verdict (not yet a stage).

pub mod client;
pub mod delegation;
pub mod edit;
pub mod recipient_map;
pub mod rspamd;

pub use recipient_map::RecipientMap;
