//! The PROXY protocol (HAProxy's v1 text and v2 binary headers), which a
//! load balancer puts in front of the SMTP stream to say who the client
//! really is, and the CIDR lists that say which balancers may send it.
//!
//! Why it exists: behind an L4 balancer every connection comes from the
//! balancer; without the header the `Received:` line, the logs and any
//! per-client limit would all name the balancer. Parsing is pure (bytes
//! in, verdict out) so every malformed shape is a unit test; the
//! connection task does the reading.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 line is at most this long, CRLF included.
const V1_MAX: usize = 107;
/// Header bytes a connection may send before we give up.
pub const MAX_HEADER: usize = 16 + 536;

/// What the first bytes of a connection say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header {
    /// Not enough bytes yet.
    Incomplete,
    /// A valid header of `len` octets. `source` is the client; `None` for
    /// a balancer's own health check (v2 LOCAL, v1 UNKNOWN, or a
    /// non-TCP family): use the connection's own address.
    Valid {
        len: usize,
        source: Option<SocketAddr>,
    },
    /// Not a PROXY header, or a broken one; the reason.
    Invalid(&'static str),
}

/// Parses the header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Header {
    if buf.first() == Some(&b'P') {
        return parse_v1(buf);
    }
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] != V2_SIGNATURE[..n] {
        return Header::Invalid("the connection did not start with a PROXY protocol header");
    }
    parse_v2(buf)
}

fn parse_v1(buf: &[u8]) -> Header {
    let n = buf.len().min(6);
    if buf[..n] != b"PROXY "[..n] {
        return Header::Invalid("the connection did not start with a PROXY protocol header");
    }
    let Some(lf) = memchr::memchr(b'\n', &buf[..buf.len().min(V1_MAX)]) else {
        return if buf.len() >= V1_MAX {
            Header::Invalid("PROXY v1 line longer than 107 octets")
        } else {
            Header::Incomplete
        };
    };
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Header::Invalid("PROXY v1 line does not end with CRLF");
    }
    let Ok(line) = std::str::from_utf8(&buf[6..lf - 1]) else {
        return Header::Invalid("PROXY v1 line is not ASCII");
    };
    let fields: Vec<&str> = line.split(' ').collect();
    let len = lf + 1;
    match fields.as_slice() {
        ["UNKNOWN", ..] => Header::Valid { len, source: None },
        [family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let v6 = *family == "TCP6";
            let (Some(src), Some(_), Some(sport), Some(_)) = (
                v1_ip(src, v6),
                v1_ip(dst, v6),
                v1_port(sport),
                v1_port(dport),
            ) else {
                return Header::Invalid("PROXY v1 line has a malformed address or port");
            };
            Header::Valid {
                len,
                source: Some(SocketAddr::new(src, sport)),
            }
        }
        _ => Header::Invalid("PROXY v1 line is not TCP4, TCP6 or UNKNOWN with four fields"),
    }
}

fn v1_ip(s: &str, v6: bool) -> Option<IpAddr> {
    if v6 {
        s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    } else {
        s.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    }
}

/// Ports are decimal without leading zeros (the spec's grammar).
fn v1_port(s: &str) -> Option<u16> {
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    s.parse().ok()
}

fn parse_v2(buf: &[u8]) -> Header {
    if buf.len() < 16 {
        return Header::Incomplete;
    }
    let version = buf[12] >> 4;
    let command = buf[12] & 0x0f;
    if version != 2 {
        return Header::Invalid("PROXY v2 header with an unknown version");
    }
    let family = buf[13];
    let body_len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let len = 16 + body_len;
    if len > MAX_HEADER {
        return Header::Invalid("PROXY v2 header longer than 552 octets");
    }
    if buf.len() < len {
        return Header::Incomplete;
    }
    let body = &buf[16..len];
    match command {
        0 => Header::Valid { len, source: None },
        1 => {
            let source = match family {
                // TCP over IPv4: src, dst, sport, dport.
                0x11 if body.len() >= 12 => {
                    let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
                    let port = u16::from_be_bytes([body[8], body[9]]);
                    Some(SocketAddr::new(IpAddr::V4(ip), port))
                }
                0x21 if body.len() >= 36 => {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(&body[..16]);
                    let port = u16::from_be_bytes([body[32], body[33]]);
                    Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
                }
                0x11 | 0x21 => {
                    return Header::Invalid("PROXY v2 header too short for its addresses")
                }
                _ => None,
            };
            Header::Valid { len, source }
        }
        _ => Header::Invalid("PROXY v2 header with an unknown command"),
    }
}

/// An address block, like `10.0.0.0/8` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (ip, bits) = match s.split_once('/') {
            Some((ip, bits)) => (ip, Some(bits)),
            None => (s, None),
        };
        let net: IpAddr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not an address block like 10.0.0.0/8"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|&b| b <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { net, bits })
    }
}

impl Cidr {
    /// Whether `ip` is inside the block (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), self.bits),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), self.bits),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let whole = (bits / 8) as usize;
    if a[..whole] != b[..whole] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || (a[whole] ^ b[whole]) >> (8 - rest) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    fn source(h: Header) -> Option<SocketAddr> {
        match h {
            Header::Valid { source, .. } => source,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn v1_tcp4_tcp6_unknown() {
        let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\nEHLO x\r\n";
        assert_eq!(
            parse(line),
            Header::Valid {
                len: 44,
                source: Some("192.0.2.7:40000".parse().unwrap())
            }
        );
        let six = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 25\r\n";
        assert_eq!(source(parse(six)), Some("[2001:db8::1]:1".parse().unwrap()));
        assert_eq!(source(parse(b"PROXY UNKNOWN\r\n")), None);
        assert_eq!(
            source(parse(b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n")),
            None
        );
    }

    #[test]
    fn v1_every_prefix_is_incomplete_then_valid() {
        let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n";
        for end in 0..line.len() {
            assert_eq!(parse(&line[..end]), Header::Incomplete, "prefix {end}");
        }
        assert!(matches!(parse(line), Header::Valid { len: 44, .. }));
    }

    #[test]
    fn v1_malformed() {
        for bad in [
            &b"EHLO client\r\n"[..],
            b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 40000\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.1 1 25\r\n",
            b"PROXY TCP6 192.0.2.7 2001:db8::2 1 25\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 040000 25\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 70000 25\r\n",
            b"PROXY TCP4 192.0.2.7  198.51.100.1 1 25\r\n",
            b"PROXY UDP4 192.0.2.7 198.51.100.1 1 25\r\n",
            b"PROXYTCP4\r\n",
        ] {
            assert!(
                matches!(parse(bad), Header::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY ".as_slice(), &[b'A'; 120]].concat();
        assert_eq!(
            parse(&long),
            Header::Invalid("PROXY v1 line longer than 107 octets")
        );
    }

    #[test]
    fn v2_ipv4_ipv6_local_and_tlvs() {
        let mut body = vec![192, 0, 2, 7, 198, 51, 100, 1];
        body.extend_from_slice(&40000u16.to_be_bytes());
        body.extend_from_slice(&25u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0x00, 0x01, 0xaa]); // a TLV, ignored
        let mut h = v2(1, 0x11, &body);
        let len = h.len();
        h.extend_from_slice(b"EHLO x\r\n");
        assert_eq!(
            parse(&h),
            Header::Valid {
                len,
                source: Some("192.0.2.7:40000".parse().unwrap())
            }
        );
        for end in 0..len {
            assert_eq!(parse(&h[..end]), Header::Incomplete, "prefix {end}");
        }

        let mut body6 = Ipv6Addr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 9])
            .octets()
            .to_vec();
        body6.extend_from_slice(&[0; 16]);
        body6.extend_from_slice(&[0x01, 0x02, 0, 25]);
        assert_eq!(
            source(parse(&v2(1, 0x21, &body6))),
            Some("[2001:db8::9]:258".parse().unwrap())
        );
        assert_eq!(source(parse(&v2(0, 0x00, &[]))), None);
        assert_eq!(source(parse(&v2(1, 0x31, &[0; 216]))), None);
    }

    #[test]
    fn v2_malformed() {
        assert!(matches!(parse(&v2(1, 0x11, &[0; 4])), Header::Invalid(_)));
        assert!(matches!(parse(&v2(1, 0x21, &[0; 12])), Header::Invalid(_)));
        assert!(matches!(parse(&v2(7, 0x11, &[0; 12])), Header::Invalid(_)));
        let mut wrong_version = v2(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x11;
        assert!(matches!(parse(&wrong_version), Header::Invalid(_)));
        let mut huge = v2(1, 0x11, &[0; 12]);
        huge[14..16].copy_from_slice(&60_000u16.to_be_bytes());
        assert!(matches!(parse(&huge), Header::Invalid(_)));
        assert!(matches!(parse(b"\r\n\r\n\0\r\nQUI!"), Header::Invalid(_)));
    }

    #[test]
    fn cidr_blocks() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.255.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        let odd: Cidr = "192.168.0.128/25".parse().unwrap();
        assert!(odd.contains("192.168.0.200".parse().unwrap()));
        assert!(!odd.contains("192.168.0.127".parse().unwrap()));
        let six: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(six.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!six.contains("10.1.0.1".parse().unwrap()));
        let host: Cidr = "127.0.0.1".parse().unwrap();
        assert!(host.contains("127.0.0.1".parse().unwrap()));
        assert!(!host.contains("127.0.0.2".parse().unwrap()));
        assert!("0.0.0.0/0"
            .parse::<Cidr>()
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0/8".parse::<Cidr>().is_err());
    }
}
