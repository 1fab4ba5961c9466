//! A client's identity for limits: its IPv4 address, or its IPv6 /64.
//!
//! Why it exists: a host given an IPv6 /64 can rotate through 2^64
//! addresses, so counting per address would count nothing. The key packs
//! either kind into one `u64` so the shared table can compare it with a
//! single atomic load.

use std::net::IpAddr;

/// A client, as limits count it. Never 0 (0 marks a free table slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(u64);

impl ClientKey {
    /// The key of `ip`: IPv4 (also when IPv4-mapped) as `1 << 32 | addr`;
    /// IPv6 as its first 64 bits. The IPv4 form lies in `0:1::/32`,
    /// reserved IPv6 space no client is ever given.
    pub fn of(ip: IpAddr) -> ClientKey {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let raw = match ip {
            IpAddr::V4(v4) => 1 << 32 | u64::from(u32::from(v4)),
            IpAddr::V6(v6) => (u128::from(v6) >> 64) as u64,
        };
        // `::/64` (which holds ::1) would be 0: give it the key of the
        // equally reserved `0:0:0:1::/64`.
        ClientKey(raw.max(1))
    }

    /// The key as stored in the table.
    pub fn raw(self) -> u64 {
        self.0
    }

    /// Where the key's probe window starts in a table of `mask + 1` slots
    /// (a multiplicative hash: nearby addresses land far apart).
    pub fn home(self, mask: usize) -> usize {
        (self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ClientKey {
        ClientKey::of(s.parse().unwrap())
    }

    #[test]
    fn ipv6_hosts_of_one_slash_64_are_one_client() {
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }

    #[test]
    fn ipv4_addresses_are_clients_of_their_own_also_when_mapped() {
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("192.0.2.1"), key("::ffff:192.0.2.1"));
        assert_ne!(key("192.0.2.1"), key("::c000:201"));
    }

    #[test]
    fn no_key_is_zero() {
        assert_ne!(key("::1").raw(), 0);
        assert_ne!(key("::").raw(), 0);
        assert_ne!(key("0.0.0.0").raw(), 0);
    }
}
