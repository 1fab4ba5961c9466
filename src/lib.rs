//! sluice: a thread-per-core SMTP ingest engine.
//!
//! # Layout
//!
//! - [`scan`]: finds line ends and the end of DATA with SIMD (memchr),
//!   unstuffs dots in place, notes bare CR/LF and long lines.
//! - [`smtp`]: the protocol without I/O: commands, paths, replies, the
//!   session state machine, the `Received:` header.
//! - [`spool`]: per-core append-only segments with group commit, their
//!   record format, recovery and readers.
//! - [`server`]: one pinned glommio executor per core; each connection a
//!   pipeline of stages (admission, screening, the I/O pump, the sans-I/O
//!   body intake, commit); shutdown and reload.
//! - [`auth`]: SMTP AUTH on the submission listeners: SASL PLAIN and
//!   LOGIN, the `--auth-users` file, Dovecot's auth protocol.
//! - [`client`]: per-client state every core shares: connection counts,
//!   smooth rates, cached DNS list verdicts, in a bounded lock-free table.
//! - [`dnsbl`]: DNS block and allow lists (postscreen syntax, hickory-proto
//!   wire format, parallel lookups on the core's executor).
//! - [`cli`]: the command line (clap), shared with the man pages.
//! - [`generate`]: man pages, completions and the sample settings file.
//! - [`config`]: flags and TOML file → one validated [`config::Config`].
//! - [`drain`]: `sluice drain`, the spool into NATS JetStream.
//! - [`log`]: the log subscriber: levels, text or JSON lines, a writer
//!   thread so no executor waits on stderr.
//! - [`metrics`]: per-core counters, `/metrics` and `/healthz`.
//! - [`policy`]: the recipient map and policy services, at RCPT and at
//!   the end of data.
//! - [`proxy`]: PROXY protocol v1/v2 headers, CIDR lists.
//! - [`service`]: `sd_notify` readiness, reload and stop for systemd.
//! - [`tls`]: STARTTLS certificates and keys (rustls).
//! - [`tools`]: `sluice spool verify|ls|cat|export`.
//! - [`tune`]: `sluice tune check`, host settings for an ingest node.

pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod dnsbl;
pub mod drain;
pub mod generate;
pub mod log;
pub mod memory;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod scan;
pub mod server;
pub mod service;
pub mod smtp;
pub mod spool;
pub mod tls;
pub mod tools;
pub mod tune;
