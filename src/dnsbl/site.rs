//! One DNS list as an operator writes it: `ZONE[=FILTER][*WEIGHT]`.
//!
//! Why it exists: the syntax is Postfix's `postscreen_dnsbl_sites`, so a
//! main.cf line carries over unchanged: `zen.example=127.0.0.[2..11]*3`,
//! `list.dnswl.example=127.0.[0..255].[1..3]*-5`. A FILTER is four octet
//! patterns; each is a number, or `[...]` holding numbers and
//! `LOW..HIGH` ranges separated by `;`. WEIGHT (default 1) is added to
//! the client's score when the list answers with an address the filter
//! accepts; a negative weight makes the list an allow list.

use std::net::Ipv4Addr;

/// One list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The list's DNS zone, lower case, without a trailing dot.
    pub zone: String,
    /// Which answers count; `None` counts any.
    pub filter: Option<Filter>,
    /// Added to the score when listed.
    pub weight: i32,
}

/// Four octet patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter([Vec<(u8, u8)>; 4]);

impl Filter {
    /// Whether `addr` (a list's answer) matches.
    pub fn accepts(&self, addr: Ipv4Addr) -> bool {
        self.0
            .iter()
            .zip(addr.octets())
            .all(|(ranges, octet)| ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&octet)))
    }
}

impl Site {
    /// Whether an answer `addr` lists the client.
    pub fn lists(&self, addr: Ipv4Addr) -> bool {
        self.filter.as_ref().is_none_or(|f| f.accepts(addr))
    }
}

impl std::str::FromStr for Site {
    type Err = String;

    fn from_str(s: &str) -> Result<Site, String> {
        let (rest, weight) = match s.rsplit_once('*') {
            Some((rest, w)) => (
                rest,
                w.parse::<i32>()
                    .map_err(|_| format!("the weight {w:?} is not a whole number"))?,
            ),
            None => (s, 1),
        };
        let (zone, filter) = match rest.split_once('=') {
            Some((zone, f)) => (zone, Some(parse_filter(f)?)),
            None => (rest, None),
        };
        let zone = zone.trim_end_matches('.').to_ascii_lowercase();
        crate::smtp::path::check_domain(&zone)
            .map_err(|e| format!("the zone {zone:?} is not a domain: {e}"))?;
        Ok(Site {
            zone,
            filter,
            weight,
        })
    }
}

fn parse_filter(f: &str) -> Result<Filter, String> {
    let bad = || {
        format!("the filter {f:?} is not four octet patterns like 127.0.0.2 or 127.0.0.[2..11;20]")
    };
    let parts: Vec<&str> = f.split('.').collect();
    // `..` inside brackets splits too: join the pieces of each bracket.
    let mut octets = Vec::new();
    let mut pending: Option<String> = None;
    for p in parts {
        match pending.take() {
            Some(open) => {
                let joined = format!("{open}.{p}");
                if joined.ends_with(']') {
                    octets.push(joined);
                } else {
                    pending = Some(joined);
                }
            }
            None if p.starts_with('[') && !p.ends_with(']') => pending = Some(p.to_string()),
            None => octets.push(p.to_string()),
        }
    }
    if pending.is_some() || octets.len() != 4 {
        return Err(bad());
    }
    let mut out: [Vec<(u8, u8)>; 4] = Default::default();
    for (slot, text) in out.iter_mut().zip(&octets) {
        *slot = parse_octet(text).ok_or_else(bad)?;
    }
    Ok(Filter(out))
}

fn parse_octet(text: &str) -> Option<Vec<(u8, u8)>> {
    let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) else {
        let n = text.parse().ok()?;
        return Some(vec![(n, n)]);
    };
    inner
        .split(';')
        .map(|item| match item.split_once("..") {
            Some((lo, hi)) => {
                let (lo, hi) = (lo.parse().ok()?, hi.parse().ok()?);
                (lo <= hi).then_some((lo, hi))
            }
            None => item.parse().ok().map(|n| (n, n)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(s: &str) -> Site {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn a_bare_zone_counts_any_answer_once() {
        let s = site("Zen.Example.");
        assert_eq!((s.zone.as_str(), s.weight), ("zen.example", 1));
        assert!(s.lists(ip("127.0.0.2")) && s.lists(ip("10.1.2.3")));
    }

    #[test]
    fn filters_and_weights_as_postscreen_writes_them() {
        let s = site("bl.example=127.0.0.[2..11;20]*3");
        assert_eq!(s.weight, 3);
        assert!(s.lists(ip("127.0.0.2")) && s.lists(ip("127.0.0.11")));
        assert!(s.lists(ip("127.0.0.20")));
        assert!(!s.lists(ip("127.0.0.12")) && !s.lists(ip("127.0.1.2")));
        let allow = site("wl.example=127.0.[0..255].[1..3]*-5");
        assert_eq!(allow.weight, -5);
        assert!(allow.lists(ip("127.0.9.3")) && !allow.lists(ip("127.0.9.4")));
        let exact = site("bl.example=127.0.0.2");
        assert!(exact.lists(ip("127.0.0.2")) && !exact.lists(ip("127.0.0.3")));
        assert_eq!(site("bl.example*2").filter, None);
    }

    #[test]
    fn mistakes_are_named() {
        for (text, why) in [
            ("bl.example=127.0.0", "four octet patterns"),
            ("bl.example=127.0.0.[2..]", "four octet patterns"),
            ("bl.example=127.0.0.[9..2]", "four octet patterns"),
            ("bl.example=127.0.0.300", "four octet patterns"),
            ("bl.example*x", "not a whole number"),
            ("=127.0.0.2", "not a domain"),
        ] {
            let err = text.parse::<Site>().unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
