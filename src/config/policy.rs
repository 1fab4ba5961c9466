//! The settings of the policy-service stage, validated.
//!
//! Why it exists: `--policy-service` comes with a timeout, a default for
//! when the service fails and the stages it is asked at; they are checked
//! together (one without the service is a mistake worth a sentence).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};

use super::layer::{Source, Sourced};
use super::{value_or, Given, Secs, Size};
use crate::policy::client::PolicyTarget;

/// Postfix's smtpd_policy_service_timeout is 100 s; the contract
/// (and a sane RCPT) is 10.
pub const DEFAULT_POLICY_TIMEOUT_SECS: u64 = 10;

/// What an unusable answer (service down, slow, nonsense) counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyDefault {
    /// Go on as if the service said DUNNO.
    Dunno,
    /// 451 4.3.5: the client tries later.
    Defer,
}

/// `--policy-service` and its companions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyService {
    pub target: PolicyTarget,
    pub timeout: Duration,
    pub default: PolicyDefault,
    /// Asked at each RCPT.
    pub at_rcpt: bool,
    /// Asked at the end of each message, before it is stored.
    pub at_data: bool,
}

pub(super) fn validate(g: &Given) -> Result<Option<PolicyService>> {
    let Some(service) = &g.policy_service else {
        let companions = [
            g.policy_timeout.as_ref().map(|s| s.source.clone()),
            g.policy_default.as_ref().map(|s| s.source.clone()),
            g.policy_stages.as_ref().map(|s| s.source.clone()),
        ];
        return none_alone(companions, "--policy-service");
    };
    let target = parse_target(&service.value).map_err(|why| {
        anyhow::anyhow!(
            "{}: {why}",
            service.source.with_value(format!("{:?}", service.value))
        )
    })?;
    let timeout = timeout(
        g.policy_timeout.clone(),
        "policy_timeout",
        DEFAULT_POLICY_TIMEOUT_SECS,
    )?;
    let default = choice(
        g.policy_default.as_ref(),
        [
            ("dunno", PolicyDefault::Dunno),
            ("defer", PolicyDefault::Defer),
        ],
        PolicyDefault::Defer,
    )?;
    let (at_rcpt, at_data) = stages(g.policy_stages.as_ref())?;
    Ok(Some(PolicyService {
        target,
        timeout,
        default,
        at_rcpt,
        at_data,
    }))
}

/// Nothing is configured: an error if a companion of `main` was given
/// without it.
fn none_alone<T>(companions: [Option<Source>; 3], main: &str) -> Result<Option<T>> {
    if let Some(lonely) = companions.into_iter().flatten().next() {
        bail!("{lonely} only makes sense with {main}");
    }
    Ok(None)
}

/// One of two words (any case), or `default` when not given.
fn choice<T: Copy>(
    given: Option<&Sourced<String>>,
    words: [(&str, T); 2],
    default: T,
) -> Result<T> {
    let Some(g) = given else {
        return Ok(default);
    };
    let word = g.value.to_ascii_lowercase();
    match words.iter().find(|(w, _)| *w == word) {
        Some(&(_, v)) => Ok(v),
        None => bail!(
            "{}: expected {} or {}",
            g.source.with_value(format!("{:?}", g.value)),
            words[0].0,
            words[1].0
        ),
    }
}

/// A service's timeout, 0.01 to 600 seconds.
fn timeout(given: Option<Sourced<Secs>>, field: &'static str, default: u64) -> Result<Duration> {
    let t = value_or(given, field, Secs(Duration::from_secs(default)));
    if t.value.0 < Duration::from_millis(10) || t.value.0 > Duration::from_secs(600) {
        bail!("{} must be between 0.01 and 600 seconds", t.source);
    }
    Ok(t.value.0)
}

/// `rcpt`, `data` or both, comma-separated; default `rcpt`.
fn stages(given: Option<&Sourced<String>>) -> Result<(bool, bool)> {
    let Some(given) = given else {
        return Ok((true, false));
    };
    let (mut rcpt, mut data) = (false, false);
    for stage in given.value.split(',').map(str::trim) {
        match stage.to_ascii_lowercase().as_str() {
            "rcpt" => rcpt = true,
            "data" => data = true,
            _ => bail!(
                "{}: {stage:?} is not a stage; expected rcpt, data or rcpt,data",
                given.source.with_value(format!("{:?}", given.value))
            ),
        }
    }
    Ok((rcpt, data))
}

/// `inet:HOST:PORT` (a name is resolved now, at start-up) or
/// `unix:PATH`, as Postfix writes them.
pub(super) fn parse_target(text: &str) -> Result<PolicyTarget, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("unix: needs a socket path".into());
        }
        return Ok(PolicyTarget::Unix(PathBuf::from(path)));
    }
    let Some(hostport) = text.strip_prefix("inet:") else {
        return Err("expected inet:HOST:PORT or unix:PATH, like inet:127.0.0.1:10023".into());
    };
    if let Ok(addr) = hostport.parse::<SocketAddr>() {
        return Ok(PolicyTarget::Inet(addr));
    }
    let resolved = hostport
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {hostport:?}: {e}"))?
        .next();
    resolved
        .map(PolicyTarget::Inet)
        .ok_or_else(|| format!("{hostport:?} resolves to no address"))
}

/// rspamd's default timeout, seconds.
pub const DEFAULT_RSPAMD_TIMEOUT_SECS: u64 = 5;
/// Messages over this are stored unscanned.
pub const DEFAULT_RSPAMD_MAX_SIZE: u64 = 2 << 20;

/// `--rspamd` and its companions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RspamdSettings {
    /// The normal worker's address.
    pub addr: SocketAddr,
    pub timeout: Duration,
    /// `--rspamd-fail closed`: 451 when rspamd fails.
    pub fail_closed: bool,
    pub max_size: usize,
}

pub(super) fn rspamd(g: &Given) -> Result<Option<RspamdSettings>> {
    let Some(url) = &g.rspamd else {
        let companions = [
            g.rspamd_timeout.as_ref().map(|s| s.source.clone()),
            g.rspamd_fail.as_ref().map(|s| s.source.clone()),
            g.rspamd_max_size.as_ref().map(|s| s.source.clone()),
        ];
        return none_alone(companions, "--rspamd");
    };
    let addr = parse_url(&url.value).map_err(|why| {
        anyhow::anyhow!(
            "{}: {why}",
            url.source.with_value(format!("{:?}", url.value))
        )
    })?;
    let timeout = timeout(
        g.rspamd_timeout.clone(),
        "rspamd_timeout",
        DEFAULT_RSPAMD_TIMEOUT_SECS,
    )?;
    let fail_closed = choice(
        g.rspamd_fail.as_ref(),
        [("open", false), ("closed", true)],
        false,
    )?;
    let max_size = value_or(
        g.rspamd_max_size.clone(),
        "rspamd_max_size",
        Size(DEFAULT_RSPAMD_MAX_SIZE),
    );
    if !(4096..=64 << 20).contains(&max_size.value.0) {
        bail!(
            "{} must be between 4K and 64M, got {}",
            max_size.source,
            max_size.value.0
        );
    }
    Ok(Some(RspamdSettings {
        addr,
        timeout,
        fail_closed,
        max_size: max_size.value.0 as usize,
    }))
}

/// `http://HOST:PORT` (a name is resolved now; the path, if any, must be
/// `/`: requests go to `/checkv2`).
fn parse_url(text: &str) -> Result<SocketAddr, String> {
    let uri: hyper::Uri = text.parse().map_err(|e| format!("not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("expected http://HOST:PORT (rspamd's normal worker speaks plain HTTP)".into());
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("give only http://HOST:PORT; requests go to /checkv2".into());
    }
    let host = uri.host().ok_or("the host is missing")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(11333);
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host:?} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_inet_or_unix() {
        assert_eq!(
            parse_target("inet:127.0.0.1:10023"),
            Ok(PolicyTarget::Inet("127.0.0.1:10023".parse().unwrap()))
        );
        assert_eq!(
            parse_target("inet:[::1]:10023"),
            Ok(PolicyTarget::Inet("[::1]:10023".parse().unwrap()))
        );
        assert_eq!(
            parse_target("inet:localhost:10023")
                .map(|t| matches!(t, PolicyTarget::Inet(a) if a.port() == 10023)),
            Ok(true)
        );
        assert_eq!(
            parse_target("unix:/run/postgrey.sock"),
            Ok(PolicyTarget::Unix("/run/postgrey.sock".into()))
        );
        for bad in ["127.0.0.1:10023", "unix:", "inet:nohost", "tcp:1.2.3.4:5"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rspamd_urls_are_plain_http_to_a_host_and_port() {
        assert_eq!(
            parse_url("http://127.0.0.1:11333"),
            Ok("127.0.0.1:11333".parse().unwrap())
        );
        assert_eq!(
            parse_url("http://[::1]:11333/"),
            Ok("[::1]:11333".parse().unwrap())
        );
        assert_eq!(
            parse_url("http://127.0.0.1"),
            Ok("127.0.0.1:11333".parse().unwrap())
        );
        for bad in [
            "https://127.0.0.1:11333",
            "http://127.0.0.1:11333/checkv2",
            "127.0.0.1:11333",
            "nonsense",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stages_are_rcpt_data_or_both() {
        let s = |v: &str| {
            stages(Some(&Sourced::new(
                v.to_string(),
                Source::Flag("policy_stages"),
            )))
        };
        assert_eq!(stages(None).unwrap(), (true, false));
        assert_eq!(s("rcpt").unwrap(), (true, false));
        assert_eq!(s("data").unwrap(), (false, true));
        assert_eq!(s("rcpt, DATA").unwrap(), (true, true));
        let e = s("rcpt,eom").unwrap_err().to_string();
        assert!(e.contains("\"eom\" is not a stage"), "{e}");
    }
}
