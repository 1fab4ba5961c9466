//! DNS block and allow lists: which lists to ask, how to ask them, and
//! what a client scores.
//!
//! Why it exists: a DNS list is the cheapest screen an edge has (one UDP
//! round trip per list, cached), and Postfix users already describe
//! theirs in `postscreen_dnsbl_sites` syntax. Everything here but
//! [`lookup`] is pure, so each rule is a unit test.
//!
//! - [`site`]: `ZONE[=FILTER][*WEIGHT]`, parsed at start-up.
//! - [`wire`]: the query name, and DNS messages built and read with
//!   `hickory-proto` (no hand-written DNS parser).
//! - [`lookup`]: the queries of one client, in parallel on the core's
//!   executor (glommio UDP), each with a timeout; the score.

pub mod lookup;
pub mod site;
pub mod wire;

pub use lookup::{look_up, score, Lookup, Score};
pub use site::{Filter, Site};
