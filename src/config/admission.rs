//! The settings of the admission and screening stages, validated.
//!
//! Why it exists: client limits, error limits and DNS lists are a dozen
//! settings with their own rules (a rate fits in 32 bits, a DNS server
//! defaults to resolv.conf); keeping them apart keeps `Config` readable
//! and gives the stages one struct to take.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};

use super::layer::{Source, Sourced};
use super::{each, value_or, Given, Secs};
use crate::client::{Rates, MAX_LISTS};
use crate::dnsbl::Site;
use crate::proxy::Cidr;

/// Trusted by default: the host itself, as Postfix's `mynetworks_style =
/// host`.
pub const DEFAULT_TRUSTED: [&str; 2] = ["127.0.0.1/32", "::1/128"];
/// Concurrent connections per client (Postfix's
/// smtpd_client_connection_count_limit).
pub const DEFAULT_CLIENT_CONNECTION_LIMIT: usize = 50;
/// Postfix's smtpd_soft_error_limit.
pub const DEFAULT_SOFT_ERROR_LIMIT: usize = 10;
/// Postfix's smtpd_hard_error_limit.
pub const DEFAULT_HARD_ERROR_LIMIT: usize = 20;
/// Postfix's smtpd_error_sleep_time, in milliseconds.
pub const DEFAULT_ERROR_DELAY_MS: u64 = 1000;
/// How long a DNS list may take, in milliseconds.
pub const DEFAULT_DNS_TIMEOUT_MS: u64 = 2000;
/// Where the default DNS server is read from.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// What the admission and screening stages run with.
#[derive(Debug, Clone)]
pub struct Admission {
    /// Exempt from everything here.
    pub trusted: Vec<Cidr>,
    /// Concurrent connections per client; 0 is no limit.
    pub connection_limit: u32,
    /// Per-client rates per 60 s.
    pub rates: Rates,
    /// Errors before each reply is delayed; 0 is never.
    pub soft_error_limit: u32,
    /// Errors before 421 and close; 0 is never.
    pub hard_error_limit: u32,
    /// The delay past the soft limit.
    pub error_delay: Duration,
    /// The wait before the greeting; zero is none.
    pub greet_pause: Duration,
    /// DNS lists, if any.
    pub dns_lists: Option<DnsLists>,
}

impl Admission {
    /// Whether `ip` is exempt.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// Whether anything needs the shared client table.
    pub fn tracks_clients(&self) -> bool {
        self.connection_limit > 0 || self.rates != Rates::default() || self.dns_lists.is_some()
    }
}

/// The DNS list screen.
#[derive(Debug, Clone)]
pub struct DnsLists {
    /// The lists, in order.
    pub sites: Arc<[Site]>,
    /// Refused at this score or more.
    pub threshold: i32,
    /// Log, refuse no one.
    pub log_only: bool,
    /// The DNS server asked.
    pub server: SocketAddr,
    /// How long each list may take.
    pub timeout: Duration,
    /// Names this list configuration in the verdict cache, so a reload
    /// that changes the lists does not reuse old scores.
    pub tag: u16,
}

/// A count that fits the table's 32-bit fields.
fn count(given: Option<Sourced<usize>>, field: &'static str, default: usize) -> Result<u32> {
    let n = value_or(given, field, default);
    u32::try_from(n.value).map_err(|_| anyhow::anyhow!("{} must be at most {}", n.source, u32::MAX))
}

fn duration(given: Option<Sourced<Secs>>, field: &'static str, default_ms: u64) -> Duration {
    value_or(given, field, Secs(Duration::from_millis(default_ms)))
        .value
        .0
}

pub(super) fn validate(g: &Given) -> Result<Admission> {
    let trusted_given = value_or(
        g.trusted_network.clone(),
        "trusted_network",
        DEFAULT_TRUSTED.iter().map(|s| s.to_string()).collect(),
    );
    let trusted = each(Some(trusted_given), |c| c.parse::<Cidr>())?;
    let rates = Rates {
        connections: count(
            g.client_connection_rate.clone(),
            "client_connection_rate",
            0,
        )?,
        messages: count(g.client_message_rate.clone(), "client_message_rate", 0)?,
        recipients: count(g.client_recipient_rate.clone(), "client_recipient_rate", 0)?,
    };
    let soft_error_limit = count(
        g.soft_error_limit.clone(),
        "soft_error_limit",
        DEFAULT_SOFT_ERROR_LIMIT,
    )?;
    let hard_error_limit = count(
        g.hard_error_limit.clone(),
        "hard_error_limit",
        DEFAULT_HARD_ERROR_LIMIT,
    )?;
    let error_delay = duration(g.error_delay.clone(), "error_delay", DEFAULT_ERROR_DELAY_MS);
    if error_delay > Duration::from_secs(60) {
        bail!(
            "{} must be at most 60 seconds (it delays every reply)",
            g.error_delay
                .as_ref()
                .map_or(Source::Default("error_delay"), |e| e.source.clone())
        );
    }
    Ok(Admission {
        trusted,
        connection_limit: count(
            g.client_connection_limit.clone(),
            "client_connection_limit",
            DEFAULT_CLIENT_CONNECTION_LIMIT,
        )?,
        rates,
        soft_error_limit,
        hard_error_limit,
        error_delay,
        greet_pause: duration(g.greet_pause.clone(), "greet_pause", 0),
        dns_lists: dns_lists(g)?,
    })
}

fn dns_lists(g: &Given) -> Result<Option<DnsLists>> {
    let sites = each(g.dnsbl.clone(), |s| s.parse::<Site>())?;
    if let Some(given) = g.dnsbl.as_ref().filter(|_| sites.len() > MAX_LISTS) {
        bail!(
            "{} names {} lists; at most {MAX_LISTS} are supported",
            given.source,
            sites.len()
        );
    }
    let depends = [
        g.dnsbl_threshold.as_ref().map(|s| s.source.clone()),
        g.dnsbl_log_only.as_ref().map(|s| s.source.clone()),
        g.dns_server.as_ref().map(|s| s.source.clone()),
        g.dns_timeout.as_ref().map(|s| s.source.clone()),
    ];
    if sites.is_empty() {
        if let Some(lonely) = depends.into_iter().flatten().next() {
            bail!("{lonely} only makes sense with --dnsbl");
        }
        return Ok(None);
    }
    let threshold = value_or(g.dnsbl_threshold.clone(), "dnsbl_threshold", 1);
    let threshold = i32::try_from(threshold.value)
        .ok()
        .filter(|&t| t >= 1)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{} must be at least 1 (a lower one would refuse clients no list names)",
                threshold.source
            )
        })?;
    let server = match &g.dns_server {
        Some(s) => parse_server(&s.value).map_err(|why| {
            anyhow::anyhow!("{}: {why}", s.source.with_value(format!("{:?}", s.value)))
        })?,
        None => resolv_conf_server(RESOLV_CONF)?,
    };
    let timeout = duration(g.dns_timeout.clone(), "dns_timeout", DEFAULT_DNS_TIMEOUT_MS);
    if timeout < Duration::from_millis(10) || timeout > Duration::from_secs(60) {
        bail!(
            "{} must be between 0.01 and 60 seconds",
            g.dns_timeout
                .as_ref()
                .map_or(Source::Default("dns_timeout"), |t| t.source.clone())
        );
    }
    let tag = fnv16(&format!("{sites:?}"));
    Ok(Some(DnsLists {
        sites: sites.into(),
        threshold,
        log_only: value_or(g.dnsbl_log_only.clone(), "dnsbl_log_only", false).value,
        server,
        timeout,
        tag,
    }))
}

/// `IP` (port 53) or `IP:PORT`, IPv6 as `[IP]:PORT`.
fn parse_server(text: &str) -> Result<SocketAddr, &'static str> {
    text.parse::<SocketAddr>()
        .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| "expected an address like 127.0.0.1, 127.0.0.1:5353 or [::1]:53")
}

/// The first `nameserver` of a resolv.conf.
fn resolv_conf_server(path: &str) -> Result<SocketAddr> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "--dnsbl needs a DNS server: no --dns-server given and {path} cannot be read ({e})"
        )
    })?;
    text.lines()
        .filter_map(|l| {
            l.split_whitespace()
                .collect::<Vec<_>>()
                .get(..2)
                .map(|w| (w[0], w[1]))
        })
        .find_map(|(key, value)| {
            let ip = value.split('%').next()?.parse::<IpAddr>().ok()?;
            (key == "nameserver").then_some(SocketAddr::new(ip, 53))
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--dnsbl needs a DNS server: no --dns-server given and {path} names no nameserver"
            )
        })
}

/// A 16-bit FNV-1a digest (stable, for the cache tag).
fn fnv16(text: &str) -> u16 {
    let h = text.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (h >> 16) as u16 ^ h as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServeArgs;

    fn resolve(args: ServeArgs) -> Result<Admission> {
        args.resolve().map(|c| c.admission)
    }

    #[test]
    fn defaults_trust_the_host_and_limit_connections() {
        let a = resolve(ServeArgs::default()).unwrap();
        assert!(a.trusts("127.0.0.1".parse().unwrap()) && a.trusts("::1".parse().unwrap()));
        assert!(!a.trusts("127.0.0.2".parse().unwrap()));
        assert_eq!((a.connection_limit, a.rates), (50, Rates::default()));
        assert_eq!((a.soft_error_limit, a.hard_error_limit), (10, 20));
        assert_eq!(a.error_delay, Duration::from_secs(1));
        assert!(a.dns_lists.is_none() && a.tracks_clients());
    }

    #[test]
    fn trusted_networks_replace_the_default() {
        let a = resolve(ServeArgs {
            trusted_network: vec!["10.0.0.0/8".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(!a.trusts("127.0.0.1".parse().unwrap()));
        assert!(a.trusts("10.9.8.7".parse().unwrap()));
    }

    #[test]
    fn dns_list_settings_need_a_list_and_say_so() {
        let err = resolve(ServeArgs {
            dns_timeout: Some(Secs(Duration::from_secs(1))),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--dns-timeout only makes sense with --dnsbl"
        );
        let lists = resolve(ServeArgs {
            dnsbl: vec!["bl.test*2".into(), "wl.test*-3".into()],
            dns_server: Some("127.0.0.1:5353".into()),
            dns_timeout: Some(Secs(Duration::from_millis(500))),
            ..Default::default()
        })
        .unwrap()
        .dns_lists
        .unwrap();
        assert_eq!(lists.sites.len(), 2);
        assert_eq!(lists.server, "127.0.0.1:5353".parse().unwrap());
        assert_eq!(
            (lists.threshold, lists.timeout),
            (1, Duration::from_millis(500))
        );
        let err = resolve(ServeArgs {
            dnsbl: vec!["bl.test=127.0.0".into()],
            dns_server: Some("127.0.0.1".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--dnsbl \"bl.test=127.0.0\": the filter"),
            "{err}"
        );
    }

    #[test]
    fn the_default_dns_server_is_resolv_confs_first_nameserver() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(
            &path,
            "# x\nsearch test\nnameserver fe80::1%eth0\nnameserver 10.0.0.1\n",
        )
        .unwrap();
        let got = resolv_conf_server(path.to_str().unwrap()).unwrap();
        assert_eq!(got, "[fe80::1]:53".parse().unwrap());
        std::fs::write(&path, "search test\n").unwrap();
        let err = resolv_conf_server(path.to_str().unwrap()).unwrap_err();
        assert!(err.to_string().contains("names no nameserver"), "{err}");
    }

    #[test]
    fn tags_differ_with_the_lists() {
        assert_ne!(fnv16("[bl.test*1]"), fnv16("[bl.test*2]"));
    }
}
