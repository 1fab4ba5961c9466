//! The `Received:` trace header (RFC 5321 §4.4) stamped at the top of
//! every stored message, and the RFC 5322 date it ends with.
//!
//! Why it exists: it is the one part of a stored message that sluice adds
//! itself, so its exact form is decided (and tested) in one place.

use std::fmt::Write;
use std::net::SocketAddr;

/// What the trace header says about one message.
#[derive(Debug, Clone, Copy)]
pub struct Trace<'a> {
    /// The HELO/EHLO name (`unknown` if the client never gave one).
    pub helo: &'a str,
    /// The client's address.
    pub peer: SocketAddr,
    /// Our host name.
    pub by: &'a str,
    /// `SMTP`, `ESMTP`, `ESMTPS`, `UTF8SMTP` or `UTF8SMTPS`.
    pub with: &'a str,
    /// The TLS version and cipher, after STARTTLS.
    pub tls: Option<&'a str>,
    /// The queue id.
    pub id: &'a str,
    /// The recipient, when there is exactly one.
    pub rcpt: Option<&'a str>,
    /// Seconds since the Unix epoch.
    pub unix_time: u64,
}

/// The `with` keyword of the trace header (RFC 3848, RFC 6531 §3.7.3):
/// what the client said (HELO or EHLO, SMTPUTF8), whether TLS was up and
/// whether it authenticated (AUTH needs EHLO).
pub fn with_keyword(esmtp: bool, smtputf8: bool, tls: bool, auth: bool) -> &'static str {
    const KEYWORDS: [[&str; 4]; 2] = [
        ["ESMTP", "ESMTPA", "ESMTPS", "ESMTPSA"],
        ["UTF8SMTP", "UTF8SMTPA", "UTF8SMTPS", "UTF8SMTPSA"],
    ];
    if !esmtp && !smtputf8 {
        return "SMTP";
    }
    KEYWORDS[usize::from(smtputf8)][usize::from(tls) * 2 + usize::from(auth)]
}

/// Appends the header, folded over lines, ending with CRLF.
pub fn write_received(out: &mut Vec<u8>, t: &Trace<'_>) {
    let mut s = String::with_capacity(192);
    let ip = match t.peer {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("IPv6:{}", a.ip()),
        },
    };
    let _ = write!(
        s,
        "Received: from {} ([{}])\r\n\tby {} (sluice) with {}",
        t.helo, ip, t.by, t.with
    );
    if let Some(tls) = t.tls {
        let _ = write!(s, " ({tls})");
    }
    let _ = write!(s, " id {}", t.id);
    if let Some(rcpt) = t.rcpt {
        let _ = write!(s, "\r\n\tfor <{rcpt}>");
    }
    s.push_str(";\r\n\t");
    write_rfc5322_date(&mut s, t.unix_time);
    s.push_str("\r\n");
    out.extend_from_slice(s.as_bytes());
}

/// Day names, starting with 1970-01-01 (a Thursday).
pub const WEEKDAYS_FROM_EPOCH: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
/// Month names.
pub const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A Unix time split into calendar fields (UTC).
#[derive(Debug, Clone, Copy)]
pub struct Civil {
    pub weekday: &'static str,
    pub year: i64,
    pub month: &'static str,
    pub day: u32,
    pub hour: u64,
    pub minute: u64,
    pub second: u64,
}

/// Calendar fields of a Unix time (UTC).
pub fn civil(unix: u64) -> Civil {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (year, m, day) = civil_from_days(days as i64);
    Civil {
        weekday: WEEKDAYS_FROM_EPOCH[(days % 7) as usize],
        year,
        month: MONTHS[(m - 1) as usize],
        day,
        hour: secs / 3600,
        minute: secs / 60 % 60,
        second: secs % 60,
    }
}

/// `Fri, 27 Nov 2026 20:37:19 +0000` for a Unix time (UTC).
pub fn write_rfc5322_date(s: &mut String, unix: u64) {
    let c = civil(unix);
    let _ = write!(
        s,
        "{}, {} {} {} {:02}:{:02}:{:02} +0000",
        c.weekday, c.day, c.month, c.year, c.hour, c.minute, c.second
    );
}

/// Days since 1970-01-01 → (year, month 1-12, day 1-31), proleptic
/// Gregorian (the well-known era-based conversion).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_match_known_values() {
        let mut s = String::new();
        write_rfc5322_date(&mut s, 0);
        assert_eq!(s, "Thu, 1 Jan 1970 00:00:00 +0000");
        s.clear();
        write_rfc5322_date(&mut s, 1_795_812_239); // 2026-11-27 20:43:59 UTC
        assert_eq!(s, "Fri, 27 Nov 2026 20:43:59 +0000");
        s.clear();
        write_rfc5322_date(&mut s, 951_782_400); // leap day 2000
        assert_eq!(s, "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn header_names_helo_peer_host_id_and_recipient() {
        let mut out = Vec::new();
        write_received(
            &mut out,
            &Trace {
                helo: "client.example",
                peer: "[::1]:4000".parse().unwrap(),
                by: "mx.example",
                with: "ESMTP",
                tls: None,
                id: "0123456789abcdef",
                rcpt: Some("a@b.example"),
                unix_time: 0,
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Received: from client.example ([IPv6:::1])\r\n\tby mx.example (sluice) with ESMTP id 0123456789abcdef\r\n\tfor <a@b.example>;\r\n\tThu, 1 Jan 1970 00:00:00 +0000\r\n"
        );
    }

    #[test]
    fn tls_sessions_name_version_and_cipher_in_a_comment() {
        let mut out = Vec::new();
        write_received(
            &mut out,
            &Trace {
                helo: "c.example",
                peer: "192.0.2.1:25".parse().unwrap(),
                by: "mx.example",
                with: "ESMTPS",
                tls: Some("TLS1.3 TLS13_AES_256_GCM_SHA384"),
                id: "1",
                rcpt: None,
                unix_time: 0,
            },
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                "\tby mx.example (sluice) with ESMTPS (TLS1.3 TLS13_AES_256_GCM_SHA384) id 1;\r\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn with_keywords_follow_rfc_3848() {
        assert_eq!(with_keyword(false, false, false, false), "SMTP");
        assert_eq!(with_keyword(false, false, true, false), "SMTP");
        assert_eq!(with_keyword(true, false, false, false), "ESMTP");
        assert_eq!(with_keyword(true, false, true, false), "ESMTPS");
        assert_eq!(with_keyword(true, true, false, false), "UTF8SMTP");
        assert_eq!(with_keyword(true, true, true, false), "UTF8SMTPS");
        assert_eq!(with_keyword(true, false, true, true), "ESMTPSA");
        assert_eq!(with_keyword(true, true, true, true), "UTF8SMTPSA");
        assert_eq!(with_keyword(true, false, false, true), "ESMTPA");
    }
}
