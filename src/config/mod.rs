//! One validated configuration from `sluice serve` flags and an optional
//! TOML file (flags win), with every default a named constant.
//!
//! Why it exists: operators make mistakes, and a mistake should stop the
//! server at start-up with a sentence saying what is wrong, not show up as
//! odd behaviour under load. Every value is checked here, once; the rest
//! of the server takes a [`Config`] and trusts it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::policy::RecipientMap;
use crate::proxy::Cidr;
use crate::smtp::BareNewlinePolicy;
use crate::spool::Durability;
pub use admission::{Admission, DnsLists};
use layer::{serve_settings, Source, Sourced};
pub use policy::{PolicyDefault, PolicyService, RspamdSettings};
pub use value::{parse_duration, parse_size, Secs, Size};

pub mod admission;
pub mod check;
pub mod layer;
pub mod policy;
pub mod submission;
pub mod value;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2525";
/// Default spool directory.
pub const DEFAULT_SPOOL: &str = "./spool";
/// 35 MiB, a common provider limit.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 35 << 20;
/// RFC 5321 §4.5.3.1.8: at least 100 recipients must be buffered.
pub const DEFAULT_MAX_RECIPIENTS: usize = 100;
/// Per core.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// RFC 5321 §4.5.3.2.7: 5 minutes for the server's command timeout.
pub const DEFAULT_IDLE_TIMEOUT: u64 = 300;
/// RFC 5321 §4.5.3.2.6 asks clients to wait 10 minutes after the data.
pub const DEFAULT_DATA_TIMEOUT: u64 = 600;
/// RFC 5321 §4.5.3.1.6: 1000 octets with CRLF.
pub const DEFAULT_MAX_LINE_LENGTH: usize = 1000;
/// Segment roll size.
pub const DEFAULT_SEGMENT_SIZE: u64 = 256 << 20;
/// A message larger than this streams to the spool while it arrives.
pub const DEFAULT_MESSAGE_MEMORY: usize = 256 << 10;
/// Message buffers of all cores together: a quarter of a 1 GiB VM, and
/// enough for 1,000 messages at full speed (a growing message holds
/// 64 KiB to 384 KiB) before bodies spill sooner.
pub const DEFAULT_MEMORY_BUDGET: usize = 256 << 20;
use crate::server::arena::MIN_CORE_BUDGET;
/// How long transactions in flight may take to finish at shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: u64 = 30;

const BOOL: &str = "BOOL";

serve_settings! {
    /// Address to listen on (repeatable). Default 127.0.0.1:2525.
    #[arg(long, value_name = "ADDR")]
    listen: Vec<String> = "'127.0.0.1:2525'",

    /// Spool directory (created if missing). Default ./spool.
    #[arg(long, value_name = "DIR")]
    spool: Option<PathBuf> = "'./spool'",

    /// Our host name, in the greeting and trace headers. Default: the
    /// machine's host name.
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,

    /// Cores to run on: a count (`2`) or a CPU list (`0,2-3`). Default:
    /// all online CPUs.
    #[arg(long, value_name = "N|LIST")]
    cores: Option<String>,

    /// Largest message accepted, in octets; accepts K, M, G suffixes
    /// (powers of 1024). Default 35M.
    #[arg(long, value_name = "BYTES")]
    max_message_size: Option<Size> = "'35M'",

    /// Recipients per message. Default 100.
    #[arg(long, value_name = "N")]
    max_recipients: Option<usize> = "100",

    /// Connections per core; more are answered 421. Default 10000.
    #[arg(long, value_name = "N")]
    max_connections: Option<usize> = "10000",

    /// How long a client may stay silent between commands, or leave its
    /// replies unread (seconds, or with a unit: 5m). Default 300.
    #[arg(long, value_name = "SECS")]
    idle_timeout: Option<Secs> = "'5m'",

    /// How long a client may stay silent inside DATA/BDAT. Default 600.
    #[arg(long, value_name = "SECS")]
    data_timeout: Option<Secs> = "'10m'",

    /// Domain we accept mail for (repeatable). Without any, all domains
    /// are accepted, which is allowed only on loopback listeners.
    #[arg(long, value_name = "DOMAIN")]
    accept_domain: Vec<String>,

    /// Accept mail for any domain even on a non-loopback listener (an
    /// open relay into your system; only behind your own filtering).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = BOOL)]
    accept_any_domain: Option<bool> = "false",

    /// `fsync`: a 250 means the message is on disk. `none`: never sync
    /// (benchmarks only: a crash loses acknowledged mail). Default fsync.
    #[arg(long, value_name = "fsync|none")]
    durability: Option<Durability> = "'fsync'",

    /// Longest line in a message, octets with CRLF. Default 1000.
    #[arg(long, value_name = "OCTETS")]
    max_line_length: Option<usize> = "1000",

    /// What to do with a bare CR or LF in DATA (and a bare LF ending a
    /// command): `reject` (default, defends against SMTP smuggling) or
    /// `accept`.
    #[arg(long, value_name = "reject|accept")]
    bare_newlines: Option<BareNewlinePolicy> = "'reject'",

    /// Segment size at which the spool rolls to a new file. Default 256M.
    #[arg(long, value_name = "BYTES")]
    segment_size: Option<Size> = "'256M'",

    /// Memory per connection for a message; larger messages stream to
    /// the spool in chunks while they arrive. Default 256K.
    #[arg(long, value_name = "BYTES")]
    message_memory: Option<Size> = "'256K'",

    /// Message buffers of all cores together never hold more than this
    /// (K, M, G suffixes); each core gets an equal share. Near it, bodies
    /// spill to the spool sooner and in smaller chunks, and messages that
    /// hold nothing wait (reads pause) until memory comes back; no
    /// message is refused for it. Default 256M.
    #[arg(long, value_name = "BYTES")]
    memory_budget: Option<Size> = "'256M'",

    /// How long transactions in flight may take to finish at shutdown.
    /// Default 30 (seconds).
    #[arg(long, value_name = "SECS")]
    shutdown_grace: Option<Secs> = "'30s'",

    /// Serve Prometheus metrics at http://ADDR/metrics and a health check
    /// at /healthz (plain HTTP: keep it on a private address). Off by
    /// default.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,

    /// Every connection must start with a PROXY protocol v1 or v2 header
    /// (from a load balancer); the client address is taken from it.
    /// Connections without a valid header are closed.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = BOOL)]
    proxy_protocol: Option<bool> = "false",

    /// With --proxy-protocol: only these address blocks (the balancers)
    /// may connect, like 10.0.0.0/8 (repeatable). Default: any.
    #[arg(long, value_name = "CIDR")]
    proxy_from: Vec<String>,

    /// PEM certificate chain (leaf first) for STARTTLS. With --tls-key,
    /// EHLO offers STARTTLS. Re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,

    /// PEM private key matching --tls-cert.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,

    /// Refuse MAIL (530 5.7.0) until the client has done STARTTLS.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = BOOL)]
    require_tls: Option<bool> = "false",

    /// A message submission listener (RFC 6409, port 587; repeatable):
    /// STARTTLS, then AUTH, before MAIL. Needs --tls-cert/--tls-key and
    /// --auth-users or --auth-dovecot.
    #[arg(long, value_name = "ADDR")]
    submission: Vec<String>,

    /// A submission listener with TLS from the first byte (RFC 8314,
    /// port 465; repeatable). Same needs as --submission.
    #[arg(long, value_name = "ADDR")]
    submissions: Vec<String>,

    /// Users who may authenticate on the submission listeners: `user:HASH`
    /// lines, HASH `$6$` (SHA-512 crypt, `openssl passwd -6`), `$2b$`
    /// (bcrypt) or `$argon2id$`; `#` comments. Re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    auth_users: Option<PathBuf>,

    /// Offer DSN (RFC 3461) in EHLO on every listener and keep RET=,
    /// ENVID=, NOTIFY= and ORCPT= with each message for the delivery tier
    /// (which then owes the notifications: see docs/drain.md). Without
    /// it they are refused with 555.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = BOOL)]
    dsn: Option<bool> = "false",

    /// Check credentials with Dovecot's auth server instead (Postfix's
    /// smtpd_sasl_type = dovecot): `unix:PATH` or `inet:HOST:PORT`.
    #[arg(long, value_name = "unix:PATH|inet:HOST:PORT")]
    auth_dovecot: Option<String>,

    /// When the spool not yet handed on by `sluice drain` grows past this
    /// (all cores together; K, M, G suffixes), new mail gets 452 4.3.1
    /// until the drain catches up. Default: no limit.
    #[arg(long, value_name = "BYTES")]
    spool_max_bytes: Option<Size>,

    /// Clients exempt from every limit, screen and DNS list below, like
    /// 10.0.0.0/8 (repeatable; giving it replaces the default). Default:
    /// 127.0.0.1/32 and ::1/128, the host itself, so a load generator on
    /// this host is unlimited unless you name other networks here.
    #[arg(long, value_name = "CIDR")]
    trusted_network: Vec<String> = "['127.0.0.1/32', '::1/128']",

    /// Concurrent connections per client (an IPv4 address or an IPv6
    /// /64, across all cores); more get 421 4.7.0. 0 is no limit.
    /// Default 50.
    #[arg(long, value_name = "N")]
    client_connection_limit: Option<usize> = "50",

    /// New connections per client per 60 s (smoothed); more get 421
    /// 4.7.0. Default 0 (no limit).
    #[arg(long, value_name = "N")]
    client_connection_rate: Option<usize> = "0",

    /// Accepted MAIL commands per client per 60 s (smoothed); more get
    /// 451 4.7.1. Default 0 (no limit).
    #[arg(long, value_name = "N")]
    client_message_rate: Option<usize> = "0",

    /// Accepted RCPT commands per client per 60 s (smoothed); more get
    /// 451 4.7.1. Default 0 (no limit).
    #[arg(long, value_name = "N")]
    client_recipient_rate: Option<usize> = "0",

    /// Error replies a session may get before every further reply is
    /// delayed by --error-delay (0: never). Reset by an accepted message.
    /// Default 10.
    #[arg(long, value_name = "N")]
    soft_error_limit: Option<usize> = "10",

    /// After this many error replies the session gets 421 4.7.0 and is
    /// closed (0: never). Reset by an accepted message. Default 20.
    #[arg(long, value_name = "N")]
    hard_error_limit: Option<usize> = "20",

    /// How long each reply waits once the soft error limit is reached
    /// (seconds, fractions allowed). Default 1.
    #[arg(long, value_name = "SECS")]
    error_delay: Option<Secs> = "'1s'",

    /// Wait this long before the 220 greeting; a client that talks first
    /// gets 554 5.5.1 (then 421 4.7.0) and is closed, and nothing it sent is processed.
    /// Default 0 (greet at once).
    #[arg(long, value_name = "SECS")]
    greet_pause: Option<Secs> = "'0s'",

    /// A DNS list to screen clients with, as Postfix's
    /// postscreen_dnsbl_sites: `ZONE[=FILTER][*WEIGHT]`, like
    /// `zen.example=127.0.0.[2..11]*2` (repeatable; a negative weight
    /// makes an allow list).
    #[arg(long, value_name = "ZONE[=FILTER][*WEIGHT]")]
    dnsbl: Vec<String>,

    /// A client whose DNS list score reaches this is refused (554 5.7.1).
    /// Default 1.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    dnsbl_threshold: Option<i64> = "1",

    /// Score and log DNS list results, but refuse no one.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = BOOL)]
    dnsbl_log_only: Option<bool> = "false",

    /// The DNS server for list queries, IP or IP:PORT. Default: the first
    /// nameserver in /etc/resolv.conf.
    #[arg(long, value_name = "HOST:PORT")]
    dns_server: Option<String>,

    /// How long a list may take to answer; no answer counts as not listed.
    /// Default 2 (seconds, fractions allowed).
    #[arg(long, value_name = "SECS")]
    dns_timeout: Option<Secs> = "'2s'",

    /// Known recipients: a file of `local@domain` or `@domain` (a whole
    /// domain) lines, `#` comments. When given, any other recipient gets
    /// 550 5.1.1 at RCPT (Postfix's relay_recipient_maps). Re-read on
    /// SIGHUP.
    #[arg(long, value_name = "FILE")]
    recipient_map: Option<PathBuf>,

    /// Characters that start an address extension, like `+` (Postfix's
    /// recipient_delimiter): `user+ext@domain` also matches
    /// `user@domain` in --recipient-map.
    #[arg(long, value_name = "CHARS")]
    recipient_delimiter: Option<String>,

    /// A Postfix policy delegation service (postgrey, postfwd,
    /// policyd-spf, …) to ask about each transaction:
    /// `inet:HOST:PORT` or `unix:PATH`. Off by default.
    #[arg(long, value_name = "inet:HOST:PORT|unix:PATH")]
    policy_service: Option<String>,

    /// How long the policy service may take to answer. Default 10
    /// (seconds, fractions allowed).
    #[arg(long, value_name = "SECS")]
    policy_timeout: Option<Secs> = "'10s'",

    /// When the policy service is down, slow or answers nonsense: `defer`
    /// (451 4.3.5, the client tries later; the default) or `dunno` (go on
    /// without it).
    #[arg(long, value_name = "dunno|defer")]
    policy_default: Option<String> = "'defer'",

    /// When to ask the policy service: `rcpt` (each RCPT, the default),
    /// `data` (at the end of each message, before it is stored) or
    /// `rcpt,data`.
    #[arg(long, value_name = "rcpt[,data]")]
    policy_stages: Option<String> = "'rcpt'",

    /// rspamd's normal worker, like `http://127.0.0.1:11333`: every
    /// message is scanned at the end of data, before it is stored. Off by
    /// default.
    #[arg(long, value_name = "URL")]
    rspamd: Option<String>,

    /// How long rspamd may take. Default 5 (seconds, fractions allowed).
    #[arg(long, value_name = "SECS")]
    rspamd_timeout: Option<Secs> = "'5s'",

    /// When rspamd fails (down, slow, nonsense): `open` stores the message
    /// unscanned and logs it (the default), `closed` answers 451 4.7.1.
    #[arg(long, value_name = "open|closed")]
    rspamd_fail: Option<String> = "'open'",

    /// Larger messages are stored unscanned (logged). Messages up to this
    /// size are held in memory until rspamd answers. Default 2M.
    #[arg(long, value_name = "BYTES")]
    rspamd_max_size: Option<Size> = "'2M'",
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// `--listen`: SMTP from anyone (port 25).
    Smtp,
    /// `--submission`: STARTTLS, then AUTH (port 587).
    Submission,
    /// `--submissions`: TLS from the first byte, then AUTH (port 465).
    Submissions,
}

impl ListenerKind {
    /// The name logs use: `smtp`, `submission`, `submissions`.
    pub fn name(self) -> &'static str {
        match self {
            ListenerKind::Smtp => "smtp",
            ListenerKind::Submission => "submission",
            ListenerKind::Submissions => "submissions",
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen addresses.
    pub listen: Vec<SocketAddr>,
    /// Spool directory.
    pub spool: PathBuf,
    /// Our host name.
    pub hostname: String,
    /// CPUs to pin one executor each to.
    pub cpus: Vec<usize>,
    /// Octets.
    pub max_message_size: u64,
    /// Per message.
    pub max_recipients: usize,
    /// Per core.
    pub max_connections: usize,
    /// Between commands.
    pub idle_timeout: Duration,
    /// Inside DATA/BDAT.
    pub data_timeout: Duration,
    /// Lower-case accepted domains; `None` accepts all.
    pub accept_domains: Option<Vec<String>>,
    /// Sync or not.
    pub durability: Durability,
    /// Octets with CRLF.
    pub max_line_length: usize,
    /// Bare CR/LF policy.
    pub bare_newlines: BareNewlinePolicy,
    /// Segment roll size.
    pub segment_size: u64,
    /// In-memory budget per message.
    pub message_memory: usize,
    /// Message buffers of all cores together, octets.
    pub memory_budget: usize,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// Where `/metrics` and `/healthz` are served.
    pub metrics: Option<SocketAddr>,
    /// Connections start with a PROXY header.
    pub proxy_protocol: bool,
    /// Balancers allowed to connect; empty means any.
    pub proxy_from: Vec<Cidr>,
    /// STARTTLS material, when configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// MAIL needs STARTTLS first.
    pub require_tls: bool,
    /// Submission listeners (STARTTLS, then AUTH).
    pub submission: Vec<SocketAddr>,
    /// Submission listeners with implicit TLS.
    pub submissions: Vec<SocketAddr>,
    /// Where AUTH credentials are checked (with submission listeners).
    pub auth: Option<crate::auth::AuthBackend>,
    /// EHLO offers DSN; its parameters are stored.
    pub dsn: bool,
    /// Undrained spool limit, octets.
    pub spool_max_bytes: Option<u64>,
    /// Client limits, error limits and screening.
    pub admission: Admission,
    /// Known recipients, when --recipient-map is given.
    pub recipient_map: Option<Arc<RecipientMap>>,
    /// The policy delegation service, when configured.
    pub policy_service: Option<PolicyService>,
    /// rspamd, when configured.
    pub rspamd: Option<RspamdSettings>,
}

impl Config {
    /// How much of a message is held in memory before it streams to the
    /// spool: `--message-memory`, or more when an end-of-message stage may
    /// change the message: rspamd's maximum size when messages are
    /// scanned (rspamd needs the whole message), and 2 MiB with
    /// `--policy-stages data` (so a PREPEND fits after the Received line).
    pub fn message_hold(&self) -> usize {
        let scanned = self.rspamd.as_ref().map_or(0, |r| r.max_size);
        let asked_at_end = self
            .policy_service
            .as_ref()
            .filter(|p| p.at_data)
            .map_or(0, |_| policy::DEFAULT_RSPAMD_MAX_SIZE as usize);
        self.message_memory.max(scanned).max(asked_at_end)
    }

    /// Every listener: `--listen`, `--submission`, `--submissions`.
    pub fn listeners(&self) -> Vec<(SocketAddr, ListenerKind)> {
        let kinds = [
            (&self.listen, ListenerKind::Smtp),
            (&self.submission, ListenerKind::Submission),
            (&self.submissions, ListenerKind::Submissions),
        ];
        kinds
            .into_iter()
            .flat_map(|(addrs, kind)| addrs.iter().map(move |&a| (a, kind)))
            .collect()
    }

    /// One core's share of `--memory-budget`.
    pub fn memory_share(&self) -> usize {
        self.memory_budget / self.cpus.len().max(1)
    }
}

impl ServeArgs {
    /// Puts the flags over the file (if any) and validates the result.
    pub fn resolve(self) -> Result<Config> {
        validate(self.given()?)
    }

    /// Every setting given, by the flags or else the file, with its source.
    pub fn given(&self) -> Result<Given> {
        let flags = Given::from_flags(self);
        Ok(match &self.config {
            Some(path) => flags.over(Given::from_table(layer::read_table(path)?, path)?),
            None => flags,
        })
    }
}

/// The value given, or `default` (from nowhere).
pub(crate) fn value_or<T>(
    given: Option<Sourced<T>>,
    field: &'static str,
    default: T,
) -> Sourced<T> {
    given.unwrap_or_else(|| Sourced::new(default, Source::Default(field)))
}

/// A count that must not be 0.
fn positive(given: Option<Sourced<usize>>, field: &'static str, default: usize) -> Result<usize> {
    let n = value_or(given, field, default);
    if n.value == 0 {
        bail!("{} must be at least 1", n.source);
    }
    Ok(n.value)
}

/// A time that must be at least a second.
fn seconds(given: Option<Sourced<Secs>>, field: &'static str, default: u64) -> Result<Duration> {
    let t = value_or(given, field, Secs(Duration::from_secs(default)));
    if t.value.0 < Duration::from_secs(1) {
        bail!("{} must be at least 1 second", t.source);
    }
    Ok(t.value.0)
}

/// Each text of a list parsed by `parse`; an error names the item.
pub(crate) fn each<T, E: std::fmt::Display>(
    given: Option<Sourced<Vec<String>>>,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<Vec<T>> {
    let Some(list) = given else {
        return Ok(Vec::new());
    };
    list.value
        .iter()
        .map(|text| {
            parse(text).map_err(|e| {
                anyhow::anyhow!("{}: {e}", list.source.with_value(format!("{text:?}")))
            })
        })
        .collect()
}

fn validate(g: Given) -> Result<Config> {
    let admission = admission::validate(&g)?;
    let recipient_map = recipient_map(&g)?;
    let policy_service = policy::validate(&g)?;
    let rspamd = policy::rspamd(&g)?;
    let tls_given = g.tls_cert.is_some() && g.tls_key.is_some();
    let submission = submission::validate(&g, tls_given)?;
    let listen_given = value_or(g.listen, "listen", vec![DEFAULT_LISTEN.to_string()]);
    let listen = each(Some(listen_given), |l| {
        l.parse::<SocketAddr>()
            .map_err(|_| "expected IP:PORT, like 127.0.0.1:2525 or [::1]:2525")
    })?;
    let metrics = each(
        g.metrics.map(|m| Sourced::new(vec![m.value], m.source)),
        |m| {
            m.parse::<SocketAddr>()
                .map_err(|_| "expected IP:PORT, like 127.0.0.1:9325")
        },
    )?
    .pop();
    let proxy_protocol = value_or(g.proxy_protocol, "proxy_protocol", false).value;
    let proxy_from = each(g.proxy_from.clone(), |c| c.parse::<Cidr>())?;
    if let (Some(from), false) = (&g.proxy_from, proxy_protocol) {
        bail!(
            "{} lists load balancers, which only makes sense with --proxy-protocol",
            from.source
        );
    }
    let tls = match (&g.tls_cert, &g.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::server_config(
            &cert.value,
            &cert.source.with_value(cert.value.display()),
            &key.value,
            &key.source.with_value(key.value.display()),
        )?),
        (None, None) => None,
        (Some(one), None) | (None, Some(one)) => bail!(
            "--tls-cert and --tls-key go together: give both or neither ({} is given alone)",
            one.source
        ),
    };
    let require_tls = value_or(g.require_tls, "require_tls", false);
    if require_tls.value && tls.is_none() {
        bail!(
            "{} needs --tls-cert and --tls-key (there is no STARTTLS without them)",
            require_tls.source
        );
    }
    let accept_domains = each(g.accept_domain, |d| {
        crate::smtp::path::check_domain(d).map(|()| d.to_ascii_lowercase())
    })?;
    let accept_any = value_or(g.accept_any_domain, "accept_any_domain", false).value;
    if accept_domains.is_empty() && !accept_any {
        if let Some(open) = listen.iter().find(|a| !a.ip().is_loopback()) {
            bail!(
                "--listen {open} is not a loopback address and no --accept-domain is given: \
                 that would accept mail for any domain from anyone (an open relay). \
                 Name the domains with --accept-domain, or pass --accept-any-domain if you mean it"
            );
        }
    }
    let max_message_size = value_or(
        g.max_message_size,
        "max_message_size",
        Size(DEFAULT_MAX_MESSAGE_SIZE),
    )
    .value
    .0;
    let segment_size = value_or(g.segment_size, "segment_size", Size(DEFAULT_SEGMENT_SIZE));
    if segment_size.value.0 < 64 << 10 {
        bail!(
            "{} must be at least 64K, got {}",
            segment_size.source,
            segment_size.value.0
        );
    }
    let message_memory = value_or(
        g.message_memory,
        "message_memory",
        Size(DEFAULT_MESSAGE_MEMORY as u64),
    );
    if !(4096..=64 << 20).contains(&message_memory.value.0) {
        bail!(
            "{} must be between 4K and 64M, got {}",
            message_memory.source,
            message_memory.value.0
        );
    }
    let max_line_length = value_or(
        g.max_line_length,
        "max_line_length",
        DEFAULT_MAX_LINE_LENGTH,
    );
    if max_line_length.value < 3 {
        bail!(
            "{} must be at least 3 octets (a CRLF and one character)",
            max_line_length.source
        );
    }
    let hostname = match g.hostname {
        Some(h) => {
            crate::smtp::path::check_domain(&h.value).map_err(|e| {
                anyhow::anyhow!("{}: {e}", h.source.with_value(format!("{:?}", h.value)))
            })?;
            h.value
        }
        None => machine_hostname(),
    };
    let cores = g.cores.map(|c| c.value);
    let cpus = parse_cores(cores.as_deref(), &online_cpus()?)?;
    let memory_budget = value_or(
        g.memory_budget,
        "memory_budget",
        Size(DEFAULT_MEMORY_BUDGET as u64),
    );
    let least = (MIN_CORE_BUDGET * cpus.len()) as u64;
    if memory_budget.value.0 < least {
        bail!(
            "{} must be at least 1M per core ({least} octets for {} cores), got {}",
            memory_budget.source,
            cpus.len(),
            memory_budget.value.0
        );
    }
    Ok(Config {
        listen,
        spool: value_or(g.spool, "spool", PathBuf::from(DEFAULT_SPOOL)).value,
        hostname,
        cpus,
        max_message_size,
        max_recipients: positive(g.max_recipients, "max_recipients", DEFAULT_MAX_RECIPIENTS)?,
        max_connections: positive(
            g.max_connections,
            "max_connections",
            DEFAULT_MAX_CONNECTIONS,
        )?,
        idle_timeout: seconds(g.idle_timeout, "idle_timeout", DEFAULT_IDLE_TIMEOUT)?,
        data_timeout: seconds(g.data_timeout, "data_timeout", DEFAULT_DATA_TIMEOUT)?,
        accept_domains: (!accept_domains.is_empty()).then_some(accept_domains),
        durability: value_or(g.durability, "durability", Durability::Fsync).value,
        max_line_length: max_line_length.value,
        bare_newlines: value_or(
            g.bare_newlines,
            "bare_newlines",
            BareNewlinePolicy::default(),
        )
        .value,
        segment_size: segment_size.value.0,
        message_memory: message_memory.value.0 as usize,
        memory_budget: usize::try_from(memory_budget.value.0).unwrap_or(usize::MAX),
        shutdown_grace: value_or(
            g.shutdown_grace,
            "shutdown_grace",
            Secs(Duration::from_secs(DEFAULT_SHUTDOWN_GRACE)),
        )
        .value
        .0,
        metrics,
        proxy_protocol,
        proxy_from,
        tls,
        require_tls: require_tls.value,
        submission: submission.plain,
        submissions: submission.implicit,
        auth: submission.auth,
        dsn: value_or(g.dsn, "dsn", false).value,
        spool_max_bytes: g.spool_max_bytes.map(|s| s.value.0),
        admission,
        recipient_map,
        policy_service,
        rspamd,
    })
}

/// `--recipient-map` read with `--recipient-delimiter`.
fn recipient_map(g: &Given) -> Result<Option<Arc<RecipientMap>>> {
    let delimiter = g.recipient_delimiter.as_ref();
    if let Some(d) = delimiter {
        if d.value.is_empty() || d.value.contains(|c: char| c == '@' || c.is_whitespace()) {
            bail!(
                "{} must be one or more characters other than @ and spaces, like +",
                d.source.with_value(format!("{:?}", d.value))
            );
        }
    }
    let Some(path) = &g.recipient_map else {
        if let Some(d) = delimiter {
            bail!("{} only makes sense with --recipient-map", d.source);
        }
        return Ok(None);
    };
    let delimiters = delimiter.map(|d| d.value.as_str()).unwrap_or("");
    let map = RecipientMap::load(&path.value, delimiters)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.source))?;
    Ok(Some(Arc::new(map)))
}

/// `"2"` = the first two online CPUs; `"0,2-3"` = those CPUs.
pub fn parse_cores(spec: Option<&str>, online: &[usize]) -> Result<Vec<usize>> {
    let Some(spec) = spec else {
        return Ok(online.to_vec());
    };
    let bad = |why: String| anyhow::anyhow!("--cores {spec:?}: {why}");
    if let Ok(n) = spec.parse::<usize>() {
        if n == 0 || n > online.len() {
            return Err(bad(format!(
                "asks for {n} cores but {} are online",
                online.len()
            )));
        }
        return Ok(online[..n].to_vec());
    }
    let mut cpus = Vec::new();
    for part in spec.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let (a, b): (usize, usize) = match (a.trim().parse(), b.trim().parse()) {
            (Ok(a), Ok(b)) if a <= b => (a, b),
            _ => {
                return Err(bad(format!(
                    "{part:?} is not a CPU number or range like 2-3"
                )))
            }
        };
        for cpu in a..=b {
            if !online.contains(&cpu) {
                return Err(bad(format!("CPU {cpu} is not online (online: {online:?})")));
            }
            if !cpus.contains(&cpu) {
                cpus.push(cpu);
            }
        }
    }
    if cpus.len() > 255 {
        return Err(bad("at most 255 cores are supported".into()));
    }
    Ok(cpus)
}

/// The CPUs this process may run on.
fn online_cpus() -> Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain bits; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most the size given into the
    // set we own.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        bail!(
            "cannot read the CPU affinity: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads bit `c` of the set, `c < CPU_SETSIZE`.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// The machine's host name, or `localhost` if it has none.
fn machine_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() octets into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    if crate::smtp::path::check_domain(&name).is_ok() {
        name
    } else {
        "localhost".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores() {
        let online = [0, 1, 2, 3];
        assert_eq!(parse_cores(None, &online).unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse_cores(Some("2"), &online).unwrap(), vec![0, 1]);
        assert_eq!(parse_cores(Some("0,2-3"), &online).unwrap(), vec![0, 2, 3]);
        assert!(parse_cores(Some("5"), &online).is_err());
        assert!(parse_cores(Some("0,7"), &online).is_err());
        assert!(parse_cores(Some("3-1"), &online).is_err());
        assert!(parse_cores(Some("0"), &online).is_err());
    }

    #[test]
    fn open_relay_needs_consent() {
        let args = ServeArgs {
            listen: vec!["0.0.0.0:25".into()],
            ..Default::default()
        };
        let err = args.clone().resolve().unwrap_err().to_string();
        assert!(err.contains("open relay"), "{err}");
        let ok = ServeArgs {
            accept_domain: vec!["example.com".into()],
            ..args
        };
        assert_eq!(
            ok.resolve().unwrap().accept_domains,
            Some(vec!["example.com".into()])
        );
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sluice.toml");
        std::fs::write(
            &file,
            "max-recipients = 7\nmax-message-size = \"1M\"\nlisten = [\"127.0.0.1:2600\"]\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            max_recipients: Some(9),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.max_recipients, 9);
        assert_eq!(c.max_message_size, 1 << 20);
        assert_eq!(c.listen, vec!["127.0.0.1:2600".parse().unwrap()]);
        std::fs::write(&file, "max-recipents = 7\n").unwrap();
        let err = format!(
            "{:#}",
            ServeArgs {
                config: Some(file),
                ..Default::default()
            }
            .resolve()
            .unwrap_err()
        );
        assert!(err.contains("max-recipents"), "{err}");
    }

    /// `sluice serve` as the binary parses it.
    fn parse(args: &[&str]) -> ServeArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let argv = std::iter::once("serve").chain(args.iter().copied());
        <Cli as clap::Parser>::try_parse_from(argv).unwrap().serve
    }

    fn file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, text).unwrap();
        let path = path.to_str().unwrap().to_string();
        (dir, path)
    }

    #[test]
    fn every_boolean_can_be_switched_off_over_the_file() {
        let (_dir, path) = file("proxy-protocol = true\nrequire-tls = false\n");
        let on = parse(&["--config", &path]).resolve().unwrap();
        assert!(on.proxy_protocol);
        let off = parse(&["--config", &path, "--proxy-protocol=false"]);
        assert!(!off.resolve().unwrap().proxy_protocol);
        // A bare flag still means true.
        assert_eq!(parse(&["--proxy-protocol"]).proxy_protocol, Some(true));
        assert_eq!(parse(&[]).proxy_protocol, None);
    }

    #[test]
    fn a_bad_value_in_the_file_names_the_file_and_the_key() {
        let (_dir, path) = file("max-recipients = \"x\"\n");
        let err = format!("{:#}", parse(&["--config", &path]).resolve().unwrap_err());
        assert_eq!(
            err,
            format!("max-recipients in {path}: expected a whole number, not the string \"x\"")
        );
        let (_dir, path) = file("max-recipients = 0\nlisten = [\"nowhere\"]\n");
        let err = format!("{:#}", parse(&["--config", &path]).resolve().unwrap_err());
        assert!(
            err.starts_with(&format!("listen = \"nowhere\" in {path}: expected IP:PORT")),
            "{err}"
        );
        let err = format!(
            "{:#}",
            parse(&["--config", &path, "--listen", "127.0.0.1:25"])
                .resolve()
                .unwrap_err()
        );
        assert_eq!(err, format!("max-recipients in {path} must be at least 1"));
        let err = format!(
            "{:#}",
            parse(&["--max-recipients", "0"]).resolve().unwrap_err()
        );
        assert_eq!(err, "--max-recipients must be at least 1");
    }

    #[test]
    fn sizes_and_times_parse_the_same_on_both_levels() {
        let (_dir, path) =
            file("message-memory = \"64K\"\nidle-timeout = \"2m\"\ndata-timeout = 9\n");
        let c = parse(&["--config", &path, "--shutdown-grace", "1m"])
            .resolve()
            .unwrap();
        assert_eq!(c.message_memory, 64 << 10);
        assert_eq!(c.idle_timeout, Duration::from_secs(120));
        assert_eq!(c.data_timeout, Duration::from_secs(9));
        assert_eq!(c.shutdown_grace, Duration::from_secs(60));
        let (_dir, path) = file("segment-size = 1024\n");
        let err = format!("{:#}", parse(&["--config", &path]).resolve().unwrap_err());
        assert_eq!(
            err,
            format!("segment-size in {path} must be at least 64K, got 1024")
        );
    }

    #[test]
    fn lists_from_flags_replace_the_file_and_one_value_is_a_list_of_one() {
        let (_dir, path) = file("accept-domain = \"a.test\"\n");
        let c = parse(&["--config", &path]).resolve().unwrap();
        assert_eq!(c.accept_domains, Some(vec!["a.test".to_string()]));
        let c = parse(&["--config", &path, "--accept-domain", "B.test"])
            .resolve()
            .unwrap();
        assert_eq!(c.accept_domains, Some(vec!["b.test".to_string()]));
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let (_dir, path) = file("max_recipients = 3\n");
        let err = format!("{:#}", parse(&["--config", &path]).resolve().unwrap_err());
        assert!(
            err.starts_with(&format!(
                "\"max_recipients\" in {path}: not a sluice setting"
            )),
            "{err}"
        );
    }
}
