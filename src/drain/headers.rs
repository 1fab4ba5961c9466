//! The NATS headers that carry a message's envelope into JetStream.
//!
//! Why it exists: downstream workers read the envelope from these names;
//! they are a published interface (see `docs/drain.md`), decided here and
//! tested. `Nats-Msg-Id` is the queue id, so JetStream's duplicate window
//! drops a message the drain hands on twice (after a crash or a retry).

use crate::spool::export::rfc3339;
use crate::spool::StoredEnvelope;

/// JetStream's de-duplication header.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// Set on a pointer message: `<bucket>/<object name>` holds the octets.
pub const OBJECT: &str = "Sluice-Object";

/// The envelope as (name, value) pairs; `Sluice-Rcpt-To` repeats, one per
/// recipient, in RCPT order.
pub fn envelope_headers(env: &StoredEnvelope) -> Vec<(&'static str, String)> {
    let id = env.id.to_string();
    let mut h = vec![
        (MSG_ID, id.clone()),
        ("Sluice-Queue-Id", id),
        ("Sluice-Mail-From", clean(&env.mail_from)),
        ("Sluice-Peer", clean(&env.peer)),
        ("Sluice-Helo", clean(&env.helo)),
        ("Sluice-Received-At", rfc3339(env.received_at_micros)),
        ("Sluice-Size", env.size.to_string()),
        ("Sluice-Body-Crc32c", format!("{:08x}", env.body_crc)),
    ];
    for r in &env.rcpt_to {
        h.push(("Sluice-Rcpt-To", clean(r)));
    }
    if let Some(spam) = &env.spam {
        h.push(("Sluice-Spam-Action", clean(&spam.action)));
        h.push(("Sluice-Spam-Score", clean(&spam.score)));
    }
    if let Some(user) = &env.auth {
        h.push(("Sluice-Auth", clean(user)));
    }
    if let Some(dsn) = &env.dsn {
        if let Some(ret) = &dsn.ret {
            h.push(("Sluice-Dsn-Ret", clean(ret)));
        }
        if let Some(envid) = &dsn.envid {
            h.push(("Sluice-Dsn-Envid", clean(envid)));
        }
        for (i, r) in dsn.rcpt.iter().enumerate() {
            let mut v = i.to_string();
            if let Some(n) = &r.notify {
                v.push_str(&format!(" NOTIFY={n}"));
            }
            if let Some(o) = &r.orcpt {
                v.push_str(&format!(" ORCPT={}", xtext(o)));
            }
            if r.notify.is_some() || r.orcpt.is_some() {
                h.push(("Sluice-Dsn-Rcpt", v));
            }
        }
    }
    h
}

/// RFC 3461 §4 xtext: what a header value can carry unambiguously (an
/// ORCPT address may hold spaces or `=`).
fn xtext(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// Header values may not hold CR or LF (NATS headers are line based);
/// SMTP paths never do, but a damaged spool must not break the framing.
fn clean(v: &str) -> String {
    v.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::QueueId;

    #[test]
    fn every_envelope_field_is_a_header_and_recipients_repeat() {
        let env = StoredEnvelope {
            id: QueueId(0x0123_4567_89ab_cd00),
            received_at_micros: 1_795_000_000_123_456,
            size: 42,
            body_crc: 0xdead_beef,
            chunks: 0,
            peer: "192.0.2.7:40000".into(),
            helo: "client.example".into(),
            mail_from: String::new(),
            rcpt_to: vec!["a@x.example".into(), "b@y.example".into()],
            spam: None,
            auth: None,
            dsn: None,
        };
        let h = envelope_headers(&env);
        let get = |n: &str| -> Vec<&str> {
            h.iter()
                .filter(|(k, _)| *k == n)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        assert_eq!(get(MSG_ID), vec![env.id.to_string().as_str()]);
        assert_eq!(get("Sluice-Queue-Id"), get(MSG_ID));
        assert_eq!(get("Sluice-Mail-From"), vec![""]);
        assert_eq!(get("Sluice-Rcpt-To"), vec!["a@x.example", "b@y.example"]);
        assert_eq!(get("Sluice-Peer"), vec!["192.0.2.7:40000"]);
        assert_eq!(get("Sluice-Helo"), vec!["client.example"]);
        assert_eq!(get("Sluice-Size"), vec!["42"]);
        assert_eq!(get("Sluice-Body-Crc32c"), vec!["deadbeef"]);
        assert!(get("Sluice-Received-At")[0].starts_with("2026-"));
        assert!(
            get("Sluice-Spam-Action").is_empty(),
            "not scanned: no verdict"
        );
        let scanned = StoredEnvelope {
            spam: Some(crate::spool::SpamVerdict {
                action: "add header".into(),
                score: "7.50".into(),
            }),
            ..env.clone()
        };
        let h = envelope_headers(&scanned);
        assert!(
            h.iter().all(|(k, _)| *k != "Sluice-Auth"),
            "no AUTH: no header"
        );
        let submitted = StoredEnvelope {
            auth: Some("alice".into()),
            ..env.clone()
        };
        assert!(envelope_headers(&submitted).contains(&("Sluice-Auth", "alice".into())));
        let dsn = StoredEnvelope {
            rcpt_to: vec!["a@x.test".into(), "b@x.test".into()],
            dsn: Some(crate::spool::envelope::Dsn {
                ret: Some("HDRS".into()),
                envid: Some("Q1".into()),
                rcpt: vec![
                    Default::default(),
                    crate::smtp::command::RcptParams {
                        notify: Some("SUCCESS,FAILURE".into()),
                        orcpt: Some("rfc822;b=1 @x.test".into()),
                    },
                ],
            }),
            ..env.clone()
        };
        let hd = envelope_headers(&dsn);
        assert!(hd.contains(&("Sluice-Dsn-Ret", "HDRS".into())));
        assert!(hd.contains(&("Sluice-Dsn-Envid", "Q1".into())));
        let rcpt: Vec<_> = hd.iter().filter(|(k, _)| *k == "Sluice-Dsn-Rcpt").collect();
        assert_eq!(
            rcpt,
            [&(
                "Sluice-Dsn-Rcpt",
                "1 NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+3D1+20@x.test".into()
            )]
        );
        assert!(h.contains(&("Sluice-Spam-Action", "add header".into())));
        assert!(h.contains(&("Sluice-Spam-Score", "7.50".into())));
        assert_eq!(clean("a\r\nb"), "a??b");
    }
}
