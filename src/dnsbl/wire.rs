//! The DNS side of a list lookup: the name to ask, the query, and what
//! an answer says.
//!
//! Why it exists: DNS messages are parsed with `hickory-proto`, a
//! maintained implementation of the wire format; this module only
//! decides what to ask and what the answer means for a list. A list
//! says "listed" with A records (the address codes the reason, which the
//! site's filter checks) and "not listed" with NXDOMAIN or an empty
//! answer. TTLs follow RFC 2308: a negative answer is cached for its
//! SOA's minimum, and not at all without one.

use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

/// The longest a verdict is cached, whatever the TTL says (a day).
pub const MAX_TTL: u32 = 86_400;

/// What a list said about one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A records for the name, and how long they may be cached.
    Listed { addrs: Vec<Ipv4Addr>, ttl: u32 },
    /// No such name (or no A record); cacheable for `ttl` (0: not at all).
    NotListed { ttl: u32 },
}

/// Why an answer could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("not a DNS message: {0}")]
    Malformed(String),
    #[error("an answer to another query")]
    Mismatch,
    #[error("the server answered {0}")]
    Refused(ResponseCode),
    #[error("the answer was truncated")]
    Truncated,
}

/// The name to look up `ip` in `zone`: reversed octets for IPv4
/// (`2.0.0.127.zone`), reversed nibbles for IPv6 (RFC 5782 §2.4).
pub fn query_name(ip: IpAddr, zone: &str) -> String {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    let mut name = String::with_capacity(72 + zone.len());
    match ip {
        IpAddr::V4(v4) => {
            for o in v4.octets().iter().rev() {
                name.push_str(&o.to_string());
                name.push('.');
            }
        }
        IpAddr::V6(v6) => {
            for o in v6.octets().iter().rev() {
                for nibble in [o & 0xf, o >> 4] {
                    name.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
                    name.push('.');
                }
            }
        }
    }
    name.push_str(zone);
    name.push('.');
    name
}

/// A recursive A query for `name` with message id `id`.
pub fn query(id: u16, name: &str) -> Result<Vec<u8>, WireError> {
    let name = Name::from_ascii(name).map_err(|e| WireError::Malformed(e.to_string()))?;
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name, RecordType::A));
    m.to_vec().map_err(|e| WireError::Malformed(e.to_string()))
}

/// What the response `bytes` to query `id` for `name` says.
pub fn answer(bytes: &[u8], id: u16, name: &str) -> Result<Answer, WireError> {
    let m = Message::from_vec(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    let asked = Name::from_ascii(name).map_err(|e| WireError::Malformed(e.to_string()))?;
    let ours = m.metadata.id == id
        && m.metadata.message_type == MessageType::Response
        && m.queries.len() == 1
        && m.queries[0].name().eq_case(&asked)
        && m.queries[0].query_type() == RecordType::A;
    if !ours {
        return Err(WireError::Mismatch);
    }
    if m.metadata.truncation {
        return Err(WireError::Truncated);
    }
    let negative_ttl = || {
        m.authorities
            .iter()
            .find_map(|r| match &r.data {
                RData::SOA(soa) => Some(soa.minimum.min(r.ttl)),
                _ => None,
            })
            .unwrap_or(0)
            .min(MAX_TTL)
    };
    match m.metadata.response_code {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => {
            return Ok(Answer::NotListed {
                ttl: negative_ttl(),
            })
        }
        other => return Err(WireError::Refused(other)),
    }
    let mut addrs = Vec::new();
    let mut ttl = MAX_TTL;
    for r in &m.answers {
        if let RData::A(a) = &r.data {
            addrs.push(a.0);
            ttl = ttl.min(r.ttl);
        }
    }
    Ok(if addrs.is_empty() {
        Answer::NotListed {
            ttl: negative_ttl(),
        }
    } else {
        Answer::Listed { addrs, ttl }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::Record;

    fn response(id: u16, name: &str, code: ResponseCode) -> Message {
        let mut m = Message::new(id, MessageType::Response, OpCode::Query);
        m.metadata.response_code = code;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m
    }

    #[test]
    fn names_are_reversed_octets_or_nibbles() {
        assert_eq!(
            query_name("192.0.2.99".parse().unwrap(), "bl.example"),
            "99.2.0.192.bl.example."
        );
        assert_eq!(
            query_name("::ffff:127.0.0.2".parse().unwrap(), "bl.example"),
            "2.0.0.127.bl.example."
        );
        let v6 = query_name("2001:db8::1".parse().unwrap(), "bl.example");
        assert_eq!(
            v6,
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example."
        );
    }

    #[test]
    fn a_query_round_trips_through_the_library() {
        let bytes = query(7, "2.0.0.127.bl.example.").unwrap();
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.metadata.id, 7);
        assert!(m.metadata.recursion_desired);
        assert_eq!(m.queries[0].query_type(), RecordType::A);
    }

    #[test]
    fn listed_answers_carry_their_addresses_and_smallest_ttl() {
        let name = "2.0.0.127.bl.example.";
        let mut m = response(9, name, ResponseCode::NoError);
        for (addr, ttl) in [("127.0.0.2", 300), ("127.0.0.4", 60)] {
            let n = Name::from_ascii(name).unwrap();
            m.add_answer(Record::from_rdata(
                n,
                ttl,
                RData::A(A(addr.parse().unwrap())),
            ));
        }
        let got = answer(&m.to_vec().unwrap(), 9, name).unwrap();
        assert_eq!(
            got,
            Answer::Listed {
                addrs: vec!["127.0.0.2".parse().unwrap(), "127.0.0.4".parse().unwrap()],
                ttl: 60
            }
        );
    }

    #[test]
    fn negative_answers_are_cached_for_the_soa_minimum_only() {
        let name = "3.0.0.127.bl.example.";
        let bare = response(1, name, ResponseCode::NXDomain);
        assert_eq!(
            answer(&bare.to_vec().unwrap(), 1, name),
            Ok(Answer::NotListed { ttl: 0 })
        );
        let mut with_soa = response(1, name, ResponseCode::NXDomain);
        let zone = Name::from_ascii("bl.example.").unwrap();
        let soa = SOA::new(zone.clone(), zone.clone(), 1, 3600, 600, 86400, 120);
        with_soa.add_authority(Record::from_rdata(zone, 900, RData::SOA(soa)));
        assert_eq!(
            answer(&with_soa.to_vec().unwrap(), 1, name),
            Ok(Answer::NotListed { ttl: 120 })
        );
    }

    #[test]
    fn foreign_failed_and_garbled_answers_are_errors() {
        let name = "2.0.0.127.bl.example.";
        let ok = response(5, name, ResponseCode::NoError).to_vec().unwrap();
        assert_eq!(answer(&ok, 6, name), Err(WireError::Mismatch));
        assert_eq!(
            answer(&ok, 5, "3.0.0.127.bl.example."),
            Err(WireError::Mismatch)
        );
        let fail = response(5, name, ResponseCode::ServFail).to_vec().unwrap();
        assert_eq!(
            answer(&fail, 5, name),
            Err(WireError::Refused(ResponseCode::ServFail))
        );
        assert!(matches!(
            answer(b"\x00\x05garbage", 5, name),
            Err(WireError::Malformed(_))
        ));
    }
}
