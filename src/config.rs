//! One validated configuration from `sluice serve` flags and an optional
//! TOML file (flags win), with every default a named constant.
//!
//! Why it exists: operators make mistakes, and a mistake should stop the
//! server at start-up with a sentence saying what is wrong, not show up as
//! odd behaviour under load. Every value is checked here, once; the rest
//! of the server takes a [`Config`] and trusts it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Deserialize;

use crate::proxy::Cidr;
use crate::smtp::BareNewlinePolicy;
use crate::spool::Durability;

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
/// How long transactions in flight may take to finish at shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: u64 = 30;

/// The flags of `sluice serve`. Every one can also be set in the file
/// given with `--config`, under the same names (`max-recipients = 50`).
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeArgs {
    /// TOML file with any of these settings; flags override it.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address to listen on (repeatable). Default 127.0.0.1:2525.
    #[arg(long, value_name = "ADDR")]
    #[serde(default)]
    pub listen: Vec<String>,

    /// Spool directory (created if missing). Default ./spool.
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,

    /// Our host name, in the greeting and trace headers. Default: the
    /// machine's host name.
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,

    /// Cores to run on: a count (`2`) or a CPU list (`0,2-3`). Default:
    /// all online CPUs.
    #[arg(long, value_name = "N|LIST")]
    pub cores: Option<String>,

    /// Largest message accepted, in octets; accepts K, M, G suffixes
    /// (powers of 1024). Default 35M.
    #[arg(long, value_name = "BYTES")]
    pub max_message_size: Option<String>,

    /// Recipients per message. Default 100.
    #[arg(long, value_name = "N")]
    pub max_recipients: Option<usize>,

    /// Connections per core; more are answered 421. Default 10000.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Seconds a client may stay silent between commands. Default 300.
    #[arg(long, value_name = "SECS")]
    pub idle_timeout: Option<u64>,

    /// Seconds a client may stay silent inside DATA/BDAT. Default 600.
    #[arg(long, value_name = "SECS")]
    pub data_timeout: Option<u64>,

    /// Domain we accept mail for (repeatable). Without any, all domains
    /// are accepted, which is allowed only on loopback listeners.
    #[arg(long, value_name = "DOMAIN")]
    #[serde(default)]
    pub accept_domain: Vec<String>,

    /// Accept mail for any domain even on a non-loopback listener (an
    /// open relay into your system; only behind your own filtering).
    #[arg(long)]
    #[serde(default)]
    pub accept_any_domain: bool,

    /// `fsync`: a 250 means the message is on disk. `none`: never sync
    /// (benchmarks only: a crash loses acknowledged mail).
    #[arg(long, value_enum)]
    pub durability: Option<Durability>,

    /// Longest line in a message, octets with CRLF. Default 1000.
    #[arg(long, value_name = "OCTETS")]
    pub max_line_length: Option<usize>,

    /// What to do with a bare CR or LF in DATA (and a bare LF ending a
    /// command): `reject` (default, defends against SMTP smuggling) or
    /// `accept`.
    #[arg(long, value_enum)]
    pub bare_newlines: Option<BareNewlinePolicy>,

    /// Segment size at which the spool rolls to a new file. Default 256M.
    #[arg(long, value_name = "BYTES")]
    pub segment_size: Option<String>,

    /// Memory per connection for a message; larger messages stream to
    /// the spool in chunks while they arrive. Default 256K.
    #[arg(long, value_name = "BYTES")]
    pub message_memory: Option<String>,

    /// Seconds transactions in flight may take to finish at shutdown.
    /// Default 30.
    #[arg(long, value_name = "SECS")]
    pub shutdown_grace: Option<u64>,

    /// Serve Prometheus metrics at http://ADDR/metrics and a health check
    /// at /healthz (plain HTTP: keep it on a private address). Off by
    /// default.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,

    /// Every connection must start with a PROXY protocol v1 or v2 header
    /// (from a load balancer); the client address is taken from it.
    /// Connections without a valid header are closed.
    #[arg(long)]
    #[serde(default)]
    pub proxy_protocol: bool,

    /// With --proxy-protocol: only these address blocks (the balancers)
    /// may connect, like 10.0.0.0/8 (repeatable). Default: any.
    #[arg(long, value_name = "CIDR")]
    #[serde(default)]
    pub proxy_from: Vec<String>,

    /// PEM certificate chain (leaf first) for STARTTLS. With --tls-key,
    /// EHLO offers STARTTLS. Re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key matching --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Refuse MAIL (530 5.7.0) until the client has done STARTTLS.
    #[arg(long)]
    #[serde(default)]
    pub require_tls: bool,

    /// When the spool not yet handed on by `sluice drain` grows past this
    /// (all cores together; K, M, G suffixes), new mail gets 452 4.3.1
    /// until the drain catches up. Default: no limit.
    #[arg(long, value_name = "BYTES")]
    pub spool_max_bytes: Option<String>,
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
    /// Undrained spool limit, octets.
    pub spool_max_bytes: Option<u64>,
}

impl ServeArgs {
    /// Merges the file (if any) under the flags and validates the result.
    pub fn resolve(self) -> Result<Config> {
        let merged = match self.config.clone() {
            Some(path) => self.over(read_file(&path)?),
            None => self,
        };
        merged.validate()
    }

    /// `self` (flags) over `file`.
    fn over(self, file: ServeArgs) -> ServeArgs {
        ServeArgs {
            config: self.config,
            listen: if self.listen.is_empty() {
                file.listen
            } else {
                self.listen
            },
            spool: self.spool.or(file.spool),
            hostname: self.hostname.or(file.hostname),
            cores: self.cores.or(file.cores),
            max_message_size: self.max_message_size.or(file.max_message_size),
            max_recipients: self.max_recipients.or(file.max_recipients),
            max_connections: self.max_connections.or(file.max_connections),
            idle_timeout: self.idle_timeout.or(file.idle_timeout),
            data_timeout: self.data_timeout.or(file.data_timeout),
            accept_domain: if self.accept_domain.is_empty() {
                file.accept_domain
            } else {
                self.accept_domain
            },
            accept_any_domain: self.accept_any_domain || file.accept_any_domain,
            durability: self.durability.or(file.durability),
            max_line_length: self.max_line_length.or(file.max_line_length),
            bare_newlines: self.bare_newlines.or(file.bare_newlines),
            segment_size: self.segment_size.or(file.segment_size),
            message_memory: self.message_memory.or(file.message_memory),
            shutdown_grace: self.shutdown_grace.or(file.shutdown_grace),
            metrics: self.metrics.or(file.metrics),
            proxy_protocol: self.proxy_protocol || file.proxy_protocol,
            proxy_from: if self.proxy_from.is_empty() {
                file.proxy_from
            } else {
                self.proxy_from
            },
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            require_tls: self.require_tls || file.require_tls,
            spool_max_bytes: self.spool_max_bytes.or(file.spool_max_bytes),
        }
    }

    fn validate(self) -> Result<Config> {
        let listen_text = if self.listen.is_empty() {
            vec![DEFAULT_LISTEN.to_string()]
        } else {
            self.listen
        };
        let mut listen = Vec::new();
        for l in &listen_text {
            let addr: SocketAddr = l.parse().with_context(|| {
                format!("--listen {l:?}: expected IP:PORT, like 127.0.0.1:2525 or [::1]:2525")
            })?;
            listen.push(addr);
        }
        let metrics = match &self.metrics {
            Some(m) => Some(m.parse::<SocketAddr>().with_context(|| {
                format!("--metrics {m:?}: expected IP:PORT, like 127.0.0.1:9325")
            })?),
            None => None,
        };
        let proxy_from = self
            .proxy_from
            .iter()
            .map(|c| {
                c.parse::<Cidr>()
                    .map_err(|e| anyhow::anyhow!("--proxy-from {e}"))
            })
            .collect::<Result<Vec<_>>>()?;
        if !proxy_from.is_empty() && !self.proxy_protocol {
            bail!(
                "--proxy-from lists load balancers, which only makes sense with --proxy-protocol"
            );
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
            (None, None) => None,
            _ => bail!("--tls-cert and --tls-key go together: give both or neither"),
        };
        if self.require_tls && tls.is_none() {
            bail!(
                "--require-tls needs --tls-cert and --tls-key (there is no STARTTLS without them)"
            );
        }
        let mut accept_domains = Vec::new();
        for d in &self.accept_domain {
            crate::smtp::path::check_domain(d)
                .map_err(|e| anyhow::anyhow!("--accept-domain {d:?}: {e}"))?;
            accept_domains.push(d.to_ascii_lowercase());
        }
        if accept_domains.is_empty() && !self.accept_any_domain {
            if let Some(open) = listen.iter().find(|a| !a.ip().is_loopback()) {
                bail!(
                    "--listen {open} is not a loopback address and no --accept-domain is given: \
                     that would accept mail for any domain from anyone (an open relay). \
                     Name the domains with --accept-domain, or pass --accept-any-domain if you mean it"
                );
            }
        }
        let max_message_size = size_arg(
            "--max-message-size",
            self.max_message_size,
            DEFAULT_MAX_MESSAGE_SIZE,
        )?;
        let segment_size = size_arg("--segment-size", self.segment_size, DEFAULT_SEGMENT_SIZE)?;
        let message_memory = size_arg(
            "--message-memory",
            self.message_memory,
            DEFAULT_MESSAGE_MEMORY as u64,
        )?;
        if !(4096..=64 << 20).contains(&message_memory) {
            bail!("--message-memory must be between 4K and 64M, got {message_memory}");
        }
        if segment_size < 64 << 10 {
            bail!("--segment-size must be at least 64K, got {segment_size}");
        }
        let max_recipients = positive(
            "--max-recipients",
            self.max_recipients,
            DEFAULT_MAX_RECIPIENTS,
        )?;
        let max_connections = positive(
            "--max-connections",
            self.max_connections,
            DEFAULT_MAX_CONNECTIONS,
        )?;
        let max_line_length = self.max_line_length.unwrap_or(DEFAULT_MAX_LINE_LENGTH);
        if max_line_length < 3 {
            bail!("--max-line-length must be at least 3 octets (a CRLF and one character)");
        }
        let idle = positive(
            "--idle-timeout",
            self.idle_timeout.map(|s| s as usize),
            DEFAULT_IDLE_TIMEOUT as usize,
        )?;
        let data = positive(
            "--data-timeout",
            self.data_timeout.map(|s| s as usize),
            DEFAULT_DATA_TIMEOUT as usize,
        )?;
        let hostname = match self.hostname {
            Some(h) => {
                crate::smtp::path::check_domain(&h)
                    .map_err(|e| anyhow::anyhow!("--hostname {h:?}: {e}"))?;
                h
            }
            None => machine_hostname(),
        };
        Ok(Config {
            listen,
            spool: self.spool.unwrap_or_else(|| PathBuf::from(DEFAULT_SPOOL)),
            hostname,
            cpus: parse_cores(self.cores.as_deref(), &online_cpus()?)?,
            max_message_size,
            max_recipients,
            max_connections,
            idle_timeout: Duration::from_secs(idle as u64),
            data_timeout: Duration::from_secs(data as u64),
            accept_domains: (!accept_domains.is_empty()).then_some(accept_domains),
            durability: self.durability.unwrap_or(Durability::Fsync),
            max_line_length,
            bare_newlines: self.bare_newlines.unwrap_or_default(),
            segment_size,
            message_memory: message_memory as usize,
            shutdown_grace: Duration::from_secs(
                self.shutdown_grace.unwrap_or(DEFAULT_SHUTDOWN_GRACE),
            ),
            metrics,
            proxy_protocol: self.proxy_protocol,
            proxy_from,
            tls,
            require_tls: self.require_tls,
            spool_max_bytes: match self.spool_max_bytes {
                Some(s) => Some(size_arg("--spool-max-bytes", Some(s), 0)?),
                None => None,
            },
        })
    }
}

fn read_file(path: &Path) -> Result<ServeArgs> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--config {}: cannot read", path.display()))?;
    toml::from_str(&text)
        .with_context(|| format!("--config {}: not a valid sluice config", path.display()))
}

fn positive(flag: &str, v: Option<usize>, default: usize) -> Result<usize> {
    match v {
        Some(0) => bail!("{flag} must be at least 1"),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

fn size_arg(flag: &str, v: Option<String>, default: u64) -> Result<u64> {
    match v {
        None => Ok(default),
        Some(s) => parse_size(&s).map_err(|e| anyhow::anyhow!("{flag} {s:?}: {e}")),
    }
}

/// `4096`, `64K`, `35M`, `1G` (powers of 1024; `KiB`/`MB` spellings too).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a number of octets like 35M".to_string())?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        other => return Err(format!("unknown unit {other:?}; use K, M or G")),
    };
    let v = n
        .checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or("too large")?;
    if v == 0 {
        return Err("must be more than zero".into());
    }
    Ok(v)
}

/// Parses `10s`, `5m`, `24h`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..split]
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 10m, 24h or 7d"))?;
    let unit = match &t[split..] {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    n.checked_mul(unit)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?}: too long"))
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
    // SAFETY: sched_getaffinity writes into the zeroed set we own.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        bail!(
            "cannot read the CPU affinity: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok((0..libc::CPU_SETSIZE as usize)
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
    fn durations() {
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999d").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("35M"), Ok(35 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

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
}
