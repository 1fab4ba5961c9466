//! Integration tests: the real `sluice` binary on loopback, over raw
//! sockets, with the spool read back by `sluice spool`.

mod support;

// Every command and reply code, limits, pipelining, smuggling.
mod protocol;
// Messages into the spool byte-exact; concurrency; crashes and restarts.
mod spool;
// Timeouts, shutdown, connection limits, start-up errors.
mod lifecycle;
// A real SMTP client library (lettre) sends through sluice.
mod client_library;
// The bundled load generator against the real server, checked on the spool.
mod loadgen;
// --metrics: Prometheus counters and /healthz.
mod metrics;
// --proxy-protocol: raw headers and a real HAProxy in front.
mod proxy;
// STARTTLS with a rustls client.
mod tls;
// SIGHUP reloads the configuration and TLS material.
mod reload;
// RFC 5321 §3.8: every close follows QUIT or a 421.
mod close_rules;
// Client limits, trusted networks, error limits, greet pause.
mod admission;
// --recipient-map: unknown recipients refused at RCPT, SIGHUP.
mod recipients;
// --policy-service: postgrey and postfwd, and services that misbehave.
mod policy;
// The rspamd client against a real rspamd.
mod rspamd;
// DNS lists against a real dnsmasq.
mod dnsbl;
// Thousands of parked bodies under --memory-budget.
mod memory;
// NATS JetStream test support.
mod nats;
// sluice drain into a real JetStream cluster.
mod drain;
// Submission: AUTH on 587 and 465 with swaks, smtplib, msmtp and Dovecot.
mod submission;
// Log lines (text and JSON) and sd_notify readiness.
mod logging;
// The patched glommio: parked executors are always woken; no membarrier.
mod glommio_patch;
// The Debian package: contents, units, man pages, the unpacked binary.
mod package;
