//! Exporting stored messages: JSONL (for scripts), mboxrd and maildir (for
//! mail tools like mutt and Dovecot).
//!
//! Why it exists: a spool is only useful if its contents can be taken out
//! in formats other programs read. The envelope goes into the exported
//! copy (JSON fields, or `Return-Path:`/`Delivered-To:` headers for
//! mailboxes); the spool itself is never changed.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use base64::Engine;

use super::walk::Found;
use crate::smtp::received::{civil, civil_from_days};

/// `2026-11-27T20:37:19.123456Z` for microseconds since the epoch.
pub fn rfc3339(micros: u64) -> String {
    let secs = micros / 1_000_000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let t = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        t / 3600,
        t / 60 % 60,
        t % 60,
        micros % 1_000_000
    )
}

/// The DSN requests: `ret`, `envid` and one `{notify, orcpt}` per
/// recipient, with nulls where the client asked nothing.
fn dsn_json(e: &crate::spool::StoredEnvelope) -> serde_json::Value {
    let none = crate::spool::envelope::Dsn::default();
    let dsn = e.dsn.as_ref().unwrap_or(&none);
    let rcpt: Vec<serde_json::Value> = (0..e.rcpt_to.len())
        .map(|i| {
            let r = dsn.rcpt.get(i);
            serde_json::json!({
                "notify": r.and_then(|r| r.notify.as_ref()),
                "orcpt": r.and_then(|r| r.orcpt.as_ref()),
            })
        })
        .collect();
    serde_json::json!({"ret": dsn.ret, "envid": dsn.envid, "rcpt": rcpt})
}

/// One JSON object (one line) for a message.
pub fn jsonl_line(m: &Found, data: &[u8]) -> String {
    let e = &m.envelope;
    let obj = serde_json::json!({
        "id": e.id.to_string(),
        "core": e.id.core(),
        "received_at": rfc3339(e.received_at_micros),
        "peer": e.peer,
        "helo": e.helo,
        "mail_from": e.mail_from,
        "rcpt_to": e.rcpt_to,
        "size": e.size,
        "auth": e.auth,
        "dsn": dsn_json(e),
        "spam": e.spam.as_ref().map(|s| serde_json::json!({"action": s.action, "score": s.score})),
        "data_b64": base64::engine::general_purpose::STANDARD.encode(data),
    });
    obj.to_string()
}

/// Appends a message in mboxrd form: a `From ` line, the message with LF
/// line ends and `>`-quoted `From ` lines, then a blank line.
pub fn write_mboxrd(out: &mut impl Write, m: &Found, data: &[u8]) -> io::Result<()> {
    let from = if m.envelope.mail_from.is_empty() {
        "MAILER-DAEMON"
    } else {
        &m.envelope.mail_from
    };
    writeln!(
        out,
        "From {from} {}",
        asctime(m.envelope.received_at_micros / 1_000_000)
    )?;
    for line in lines(data) {
        let unquoted = line.iter().position(|&b| b != b'>').unwrap_or(line.len());
        if line[unquoted..].starts_with(b"From ") {
            out.write_all(b">")?;
        }
        out.write_all(line)?;
        out.write_all(b"\n")?;
    }
    out.write_all(b"\n")
}

/// Writes a message into a maildir (`tmp/` then renamed into `new/`),
/// with `Return-Path:` and `Delivered-To:` headers added to the copy.
pub fn write_maildir(dir: &Path, m: &Found, data: &[u8]) -> io::Result<()> {
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    let e = &m.envelope;
    let name = format!(
        "{}.M{}P{}Q{}.sluice",
        e.received_at_micros / 1_000_000,
        e.received_at_micros % 1_000_000,
        std::process::id(),
        e.id
    );
    let mut text = String::new();
    let _ = writeln!(text, "Return-Path: <{}>", e.mail_from);
    for r in &e.rcpt_to {
        let _ = writeln!(text, "Delivered-To: {r}");
    }
    let tmp = dir.join("tmp").join(&name);
    let mut f = fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    for line in lines(data) {
        f.write_all(line)?;
        f.write_all(b"\n")?;
    }
    f.sync_all()?;
    fs::rename(&tmp, dir.join("new").join(&name))
}

/// The lines of a message without their CRLF (or LF).
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let data = data.strip_suffix(b"\n").unwrap_or(data);
    data.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(move |_| !data.is_empty())
}

/// `Thu Jan  1 00:00:00 1970` (the mbox `From ` line's date).
fn asctime(secs: u64) -> String {
    let c = civil(secs);
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} {}",
        c.weekday, c.month, c.day, c.hour, c.minute, c.second, c.year
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{QueueId, StoredEnvelope};

    fn found() -> Found {
        Found {
            envelope: StoredEnvelope {
                id: QueueId(0x100),
                received_at_micros: 1_500_000,
                size: 0,
                body_crc: 0,
                chunks: 0,
                peer: "127.0.0.1:1".into(),
                helo: "h".into(),
                mail_from: "a@b".into(),
                rcpt_to: vec!["c@d".into()],
                spam: None,
                auth: None,
                dsn: None,
            },
            segment: 1,
            offset: 0,
            chunks: vec![],
            inline: bytes::Bytes::new(),
        }
    }

    #[test]
    fn rfc3339_has_micros_and_z() {
        assert_eq!(rfc3339(1_500_000), "1970-01-01T00:00:01.500000Z");
    }

    #[test]
    fn mboxrd_quotes_from_lines_and_uses_lf() {
        let mut out = Vec::new();
        write_mboxrd(
            &mut out,
            &found(),
            b"Subject: x\r\n\r\nFrom here\r\n>From there\r\n",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "From a@b Thu Jan  1 00:00:01 1970\nSubject: x\n\n>From here\n>>From there\n\n"
        );
    }

    #[test]
    fn jsonl_has_the_documented_fields() {
        let v: serde_json::Value = serde_json::from_str(&jsonl_line(&found(), b"hi")).unwrap();
        assert_eq!(v["id"], "0000000000000100");
        assert_eq!(v["core"], 0);
        assert_eq!(v["mail_from"], "a@b");
        assert_eq!(v["rcpt_to"][0], "c@d");
        assert_eq!(v["data_b64"], "aGk=");
        assert_eq!(v["peer"], "127.0.0.1:1");
    }
}
