//! Reverse- and forward-paths: the `<...>` part of MAIL and RCPT, parsed by
//! RFC 5321 §4.1.2 with its limits (§4.5.3.1).
//!
//! Why it exists: addresses are the one piece of a command with a real
//! grammar (source routes, quoted local parts, address literals, UTF-8
//! under SMTPUTF8). The parser keeps the mailbox exactly as sent and drops
//! only the source route, as §3.3 and Appendix C allow.

use std::fmt;

/// Local part limit in octets.
pub const MAX_LOCAL_PART: usize = 64;
/// Domain limit in octets.
pub const MAX_DOMAIN: usize = 255;
/// Whole path limit in octets, brackets included.
pub const MAX_PATH: usize = 256;

/// A mailbox `local@domain` as the client wrote it (no source route).
/// `domain` is empty only for the special `<Postmaster>` recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// Everything before the last `@` (quotes kept as sent).
    pub local: String,
    /// A domain, or an address literal with its brackets.
    pub domain: String,
}

impl Mailbox {
    /// Whether any octet is outside ASCII (needs SMTPUTF8).
    pub fn is_utf8(&self) -> bool {
        !self.local.is_ascii() || !self.domain.is_ascii()
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.domain.is_empty() {
            f.write_str(&self.local)
        } else {
            write!(f, "{}@{}", self.local, self.domain)
        }
    }
}

/// Why a path did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not `<...>` or the grammar inside does not hold.
    Syntax(&'static str),
    /// Over one of the §4.5.3.1 limits.
    TooLong(&'static str),
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::Syntax(s) | PathError::TooLong(s) => f.write_str(s),
        }
    }
}

/// Parses a path at the start of `s` (which begins with `<`). Returns the
/// mailbox (`None` for `<>` when `allow_null`) and the rest of `s`.
pub fn parse_path(s: &str, allow_null: bool) -> Result<(Option<Mailbox>, &str), PathError> {
    let Some(inner_and_rest) = s.strip_prefix('<') else {
        return Err(PathError::Syntax("the address must be enclosed in <>"));
    };
    let close = find_close(inner_and_rest).ok_or(PathError::Syntax("missing closing >"))?;
    let inner = &inner_and_rest[..close];
    let rest = &inner_and_rest[close + 1..];
    if inner.len() + 2 > MAX_PATH {
        return Err(PathError::TooLong("path longer than 256 octets"));
    }
    if inner.is_empty() {
        return if allow_null {
            Ok((None, rest))
        } else {
            Err(PathError::Syntax("an empty path is not allowed here"))
        };
    }
    let mailbox_text = strip_source_route(inner)?;
    Ok((Some(parse_mailbox(mailbox_text)?), rest))
}

/// Finds the `>` that closes the path, skipping quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut quoted = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'>' if !quoted => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// `@a,@b:user@host` → `user@host`, checking the route's syntax.
fn strip_source_route(inner: &str) -> Result<&str, PathError> {
    if !inner.starts_with('@') {
        return Ok(inner);
    }
    let colon = inner
        .find(':')
        .ok_or(PathError::Syntax("source route without ':'"))?;
    for hop in inner[..colon].split(',') {
        let domain = hop
            .strip_prefix('@')
            .ok_or(PathError::Syntax("source route hop must start with @"))?;
        check_domain(domain)?;
    }
    Ok(&inner[colon + 1..])
}

/// `local@domain`, `"quoted local"@domain`, `user@[1.2.3.4]`.
fn parse_mailbox(s: &str) -> Result<Mailbox, PathError> {
    if s.eq_ignore_ascii_case("postmaster") {
        return Ok(Mailbox {
            local: s.to_string(),
            domain: String::new(),
        });
    }
    let local_len = if s.starts_with('"') {
        quoted_len(s)?
    } else {
        s.find('@')
            .ok_or(PathError::Syntax("the address has no @domain"))?
    };
    let (local, at_domain) = s.split_at(local_len);
    let domain = at_domain
        .strip_prefix('@')
        .ok_or(PathError::Syntax("the address has no @domain"))?;
    if local.len() > MAX_LOCAL_PART {
        return Err(PathError::TooLong("local part longer than 64 octets"));
    }
    if !local.starts_with('"') {
        check_dot_string(local)?;
    }
    if domain.starts_with('[') {
        check_address_literal(domain)?;
    } else {
        check_domain(domain)?;
    }
    Ok(Mailbox {
        local: local.to_string(),
        domain: domain.to_string(),
    })
}

/// Length of a quoted string at the start of `s`, quotes included.
fn quoted_len(s: &str) -> Result<usize, PathError> {
    let bytes = s.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                let next = *bytes
                    .get(i + 1)
                    .ok_or(PathError::Syntax("unterminated quoted local part"))?;
                if !(32..=126).contains(&next) {
                    return Err(PathError::Syntax("bad quoted pair in local part"));
                }
                i += 2;
            }
            b'"' => return Ok(i + 1),
            32..=126 => i += 1,
            b if b >= 0x80 => i += 1,
            _ => return Err(PathError::Syntax("control character in quoted local part")),
        }
    }
    Err(PathError::Syntax("unterminated quoted local part"))
}

/// RFC 5322 atext, plus any non-ASCII octet (checked against SMTPUTF8 by
/// the session).
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

fn check_dot_string(local: &str) -> Result<(), PathError> {
    if local.is_empty() {
        return Err(PathError::Syntax("empty local part"));
    }
    for atom in local.split('.') {
        if atom.is_empty() || !atom.bytes().all(is_atext) {
            return Err(PathError::Syntax("bad character or dot in local part"));
        }
    }
    Ok(())
}

/// Checks a domain name: dot-separated labels of letters, digits and
/// hyphens (or UTF-8), not starting or ending with a hyphen.
pub fn check_domain(domain: &str) -> Result<(), PathError> {
    if domain.is_empty() {
        return Err(PathError::Syntax("empty domain"));
    }
    if domain.len() > MAX_DOMAIN {
        return Err(PathError::TooLong("domain longer than 255 octets"));
    }
    for label in domain.split('.') {
        let b = label.as_bytes();
        let ok = !b.is_empty()
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
            && b.iter()
                .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c >= 0x80);
        if !ok {
            return Err(PathError::Syntax("bad domain name"));
        }
    }
    Ok(())
}

/// `[1.2.3.4]`, `[IPv6:...]` or a general literal `[tag:content]`.
pub fn check_address_literal(lit: &str) -> Result<(), PathError> {
    let inner = lit
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or(PathError::Syntax("bad address literal"))?;
    if let Some(v6) = inner
        .strip_prefix("IPv6:")
        .or_else(|| inner.strip_prefix("ipv6:"))
    {
        return v6
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| PathError::Syntax("bad IPv6 address literal"));
    }
    if inner.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(());
    }
    // General-address-literal: Standardized-tag ":" 1*dcontent.
    match inner.split_once(':') {
        Some((tag, content))
            if !tag.is_empty()
                && tag.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                && !content.is_empty()
                && content
                    .bytes()
                    .all(|c| (33..=126).contains(&c) && c != b'[' && c != b']' && c != b'\\') =>
        {
            Ok(())
        }
        _ => Err(PathError::Syntax("bad address literal")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Mailbox {
        parse_path(s, false).unwrap().0.unwrap()
    }

    #[test]
    fn plain_mailbox_keeps_case() {
        let m = ok("<John.Doe@Example.COM>");
        assert_eq!(m.local, "John.Doe");
        assert_eq!(m.domain, "Example.COM");
    }

    #[test]
    fn source_route_is_dropped() {
        let m = ok("<@a.example,@b.example:user@c.example>");
        assert_eq!(m.to_string(), "user@c.example");
    }

    #[test]
    fn null_path_only_where_allowed() {
        assert_eq!(parse_path("<>", true).unwrap().0, None);
        assert!(parse_path("<>", false).is_err());
    }

    #[test]
    fn quoted_local_part_with_at_and_space() {
        let m = ok("<\"john @ doe\\\"x\"@example.com>");
        assert_eq!(m.local, "\"john @ doe\\\"x\"");
        assert_eq!(m.domain, "example.com");
    }

    #[test]
    fn address_literals() {
        assert_eq!(ok("<a@[192.0.2.1]>").domain, "[192.0.2.1]");
        assert_eq!(ok("<a@[IPv6:2001:db8::1]>").domain, "[IPv6:2001:db8::1]");
        assert!(parse_path("<a@[300.1.1.1]>", false).is_err());
        assert!(parse_path("<a@[IPv6:zz]>", false).is_err());
    }

    #[test]
    fn postmaster_without_domain() {
        assert_eq!(ok("<Postmaster>").to_string(), "Postmaster");
    }

    #[test]
    fn limits() {
        let local = "a".repeat(65);
        assert!(matches!(
            parse_path(&format!("<{local}@x.example>"), false),
            Err(PathError::TooLong(_))
        ));
        let label = "a".repeat(63);
        let domain = [label.as_str(); 5].join(".");
        assert!(matches!(
            parse_path(&format!("<a@{domain}>"), false),
            Err(PathError::TooLong(_))
        ));
        assert!(parse_path(&format!("<{}@x.example>", "a".repeat(64)), false).is_ok());
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "a@b", "<a@b", "<a>", "<a..b@c>", "<.a@c>", "<a@-b.c>", "<a@b..c>", "<@a:b@c",
            "<a b@c>",
        ] {
            assert!(parse_path(bad, false).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn utf8_is_noticed() {
        assert!(ok("<josé@example.com>").is_utf8());
        assert!(ok("<a@bücher.example>").is_utf8());
        assert!(!ok("<a@b.example>").is_utf8());
    }
}
