//! The commit record's payload: the envelope of a stored message, and the
//! octets of it that were not streamed as chunks.
//!
//! Why it exists: the commit record is the single source of truth about a
//! message (who sent it, to whom, when, how big, its checksum). Keeping
//! its encoding in one small module makes the format easy to read and to
//! extend with a version byte.
//!
//! Version 2 adds tagged fields after the recipients (`u16` tag, then a
//! length-prefixed string), so later fields need no new version; a reader
//! skips tags it does not know. Tag 1 is the spam filter's verdict, tag 2
//! the user who authenticated (SMTP AUTH), tags 3 to 5 the DSN requests
//! (RFC 3461): `RET`, `ENVID`, and for each recipient that had any
//! `index TAB notify TAB orcpt` (empty where absent; the values hold no
//! control characters, the parser refuses them).
//! Version 1 records (no tagged fields) still read.

use std::net::SocketAddr;

use super::id::QueueId;
use crate::smtp::command::RcptParams;
use crate::smtp::Envelope;

const VERSION: u8 = 2;
/// Tag of the spam verdict (`ACTION SCORE`, like `add header 7.50`).
const TAG_SPAM: u16 = 1;
/// Tag of the authenticated user.
const TAG_AUTH: u16 = 2;
/// Tags of the DSN requests.
const TAG_DSN_RET: u16 = 3;
const TAG_DSN_ENVID: u16 = 4;
const TAG_DSN_RCPT: u16 = 5;

/// The envelope as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEnvelope {
    /// Queue id.
    pub id: QueueId,
    /// Microseconds since the Unix epoch when the data ended.
    pub received_at_micros: u64,
    /// Octets of the stored message (trace header + body).
    pub size: u64,
    /// CRC32C of the stored message octets.
    pub body_crc: u32,
    /// Chunk records written for this message before the commit.
    pub chunks: u32,
    /// Client address as `ip:port`.
    pub peer: String,
    /// HELO/EHLO name.
    pub helo: String,
    /// Reverse-path without brackets; empty for `<>`.
    pub mail_from: String,
    /// Forward-paths without brackets or source routes.
    pub rcpt_to: Vec<String>,
    /// The spam filter's verdict, when the message was scanned.
    pub spam: Option<SpamVerdict>,
    /// The user who authenticated (SMTP AUTH), if any.
    pub auth: Option<String>,
    /// The DSN requests, when the client made any.
    pub dsn: Option<Dsn>,
}

/// What the client asked of delivery status notifications (RFC 3461).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dsn {
    /// `FULL` or `HDRS`.
    pub ret: Option<String>,
    /// The envelope id, decoded.
    pub envid: Option<String>,
    /// One per recipient, in the order of `rcpt_to` (the session's own
    /// `NOTIFY=`/`ORCPT=` pair).
    pub rcpt: Vec<RcptParams>,
}

impl Dsn {
    /// The envelope's DSN requests; `None` when there are none.
    pub fn of(env: &Envelope) -> Option<Dsn> {
        let any_rcpt = env.rcpt_dsn.iter().any(|p| !p.is_empty());
        if env.ret.is_none() && env.envid.is_none() && !any_rcpt {
            return None;
        }
        // The session keeps the list only up to the last recipient that
        // asked; stored, it has one entry per recipient.
        let mut rcpt = env.rcpt_dsn.clone();
        rcpt.resize_with(env.rcpt_to.len(), RcptParams::default);
        Some(Dsn {
            ret: env.ret.map(|r| r.as_str().to_string()),
            envid: env.envid.clone(),
            rcpt,
        })
    }
}

/// A spam filter's verdict as stored: rspamd's action name, and its score
/// as rspamd printed it (two decimals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpamVerdict {
    pub action: String,
    pub score: String,
}

/// What the session knows about a message when it is committed; the
/// writer adds what the spool knows (id, time, size, checksum, chunks).
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The client (from a PROXY header, if there was one).
    pub peer: SocketAddr,
    /// The HELO/EHLO name; empty if none was given.
    pub helo: &'a str,
    /// The user who authenticated, if any.
    pub auth: Option<&'a str>,
    /// The transaction's envelope.
    pub envelope: &'a Envelope,
    /// What the spam filter said, if it scanned the message.
    pub spam: Option<&'a SpamVerdict>,
}

/// Why a commit payload does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad commit record: {}", self.0)
    }
}

impl StoredEnvelope {
    /// Appends the encoded envelope (the inline octets follow it).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        out.extend_from_slice(&self.id.0.to_le_bytes());
        out.extend_from_slice(&self.received_at_micros.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.body_crc.to_le_bytes());
        out.extend_from_slice(&self.chunks.to_le_bytes());
        for s in [&self.peer, &self.helo, &self.mail_from] {
            put_str(out, s);
        }
        out.extend_from_slice(&(self.rcpt_to.len() as u32).to_le_bytes());
        for r in &self.rcpt_to {
            put_str(out, r);
        }
        let mut tagged: Vec<(u16, std::borrow::Cow<'_, str>)> = Vec::new();
        if let Some(s) = &self.spam {
            tagged.push((TAG_SPAM, format!("{} {}", s.action, s.score).into()));
        }
        if let Some(user) = &self.auth {
            tagged.push((TAG_AUTH, user.into()));
        }
        if let Some(dsn) = &self.dsn {
            if let Some(ret) = &dsn.ret {
                tagged.push((TAG_DSN_RET, ret.into()));
            }
            if let Some(envid) = &dsn.envid {
                tagged.push((TAG_DSN_ENVID, envid.into()));
            }
            for (i, r) in dsn.rcpt.iter().enumerate() {
                if r.notify.is_some() || r.orcpt.is_some() {
                    let (n, o) = (r.notify.as_deref(), r.orcpt.as_deref());
                    let value = format!("{i}\t{}\t{}", n.unwrap_or(""), o.unwrap_or(""));
                    tagged.push((TAG_DSN_RCPT, value.into()));
                }
            }
        }
        out.extend_from_slice(&(tagged.len() as u32).to_le_bytes());
        for (tag, value) in &tagged {
            out.extend_from_slice(&tag.to_le_bytes());
            put_str(out, value);
        }
    }

    /// Decodes a commit payload into the envelope and the inline octets.
    pub fn decode(payload: &[u8]) -> Result<(StoredEnvelope, &[u8]), DecodeError> {
        let mut c = Cursor(payload);
        let version = c.take(1)?[0];
        if version != 1 && version != VERSION {
            return Err(DecodeError("unknown version"));
        }
        let id = QueueId(c.u64()?);
        let received_at_micros = c.u64()?;
        let size = c.u64()?;
        let body_crc = c.u32()?;
        let chunks = c.u32()?;
        let peer = c.string()?;
        let helo = c.string()?;
        let mail_from = c.string()?;
        let n = c.u32()? as usize;
        let mut rcpt_to = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            rcpt_to.push(c.string()?);
        }
        let (mut spam, mut auth, mut dsn) = (None, None, None::<Dsn>);
        if version >= 2 {
            for _ in 0..c.u32()? {
                let tag = u16::from_le_bytes(c.take(2)?.try_into().expect("2"));
                let value = c.string()?;
                if tag == TAG_SPAM {
                    let (action, score) = value.rsplit_once(' ').unwrap_or((&value, ""));
                    spam = Some(SpamVerdict {
                        action: action.to_string(),
                        score: score.to_string(),
                    });
                } else if tag == TAG_AUTH {
                    auth = Some(value);
                } else if (TAG_DSN_RET..=TAG_DSN_RCPT).contains(&tag) {
                    let d = dsn.get_or_insert_with(|| Dsn {
                        rcpt: vec![RcptParams::default(); rcpt_to.len()],
                        ..Dsn::default()
                    });
                    match tag {
                        TAG_DSN_RET => d.ret = Some(value),
                        TAG_DSN_ENVID => d.envid = Some(value),
                        _ => {
                            let mut f = value.splitn(3, '\t');
                            let slot = f
                                .next()
                                .and_then(|i| i.parse::<usize>().ok())
                                .and_then(|i| d.rcpt.get_mut(i))
                                .ok_or(DecodeError("DSN field for no recipient"))?;
                            let some =
                                |v: Option<&str>| v.filter(|v| !v.is_empty()).map(str::to_string);
                            slot.notify = some(f.next());
                            slot.orcpt = some(f.next());
                        }
                    }
                }
            }
        }
        Ok((
            StoredEnvelope {
                id,
                received_at_micros,
                size,
                body_crc,
                chunks,
                peer,
                helo,
                mail_from,
                rcpt_to,
                spam,
                auth,
                dsn,
            },
            c.0,
        ))
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("truncated envelope"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| DecodeError("address is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_inline_octets() {
        let env = StoredEnvelope {
            id: QueueId(42),
            received_at_micros: 7,
            size: 5,
            body_crc: 9,
            chunks: 0,
            peer: "127.0.0.1:5000".into(),
            helo: "c.example".into(),
            mail_from: String::new(),
            rcpt_to: vec!["a@b".into(), "josé@c".into()],
            spam: None,
            auth: None,
            dsn: None,
        };
        let mut buf = Vec::new();
        env.encode(&mut buf);
        buf.extend_from_slice(b"hello");
        let (got, inline) = StoredEnvelope::decode(&buf).unwrap();
        assert_eq!(got, env);
        assert_eq!(inline, b"hello");
        assert!(StoredEnvelope::decode(&buf[..20]).is_err());
        let scanned = StoredEnvelope {
            spam: Some(SpamVerdict {
                action: "add header".into(),
                score: "7.50".into(),
            }),
            auth: Some("alice@fleet.test".into()),
            dsn: Some(Dsn {
                ret: Some("HDRS".into()),
                envid: Some("QQ314159".into()),
                rcpt: vec![
                    RcptParams::default(),
                    RcptParams {
                        notify: Some("SUCCESS,FAILURE".into()),
                        orcpt: Some("rfc822;b@x.test".into()),
                    },
                ],
            }),
            ..env.clone()
        };
        let mut buf = Vec::new();
        scanned.encode(&mut buf);
        buf.extend_from_slice(b"hello");
        let (got, inline) = StoredEnvelope::decode(&buf).unwrap();
        assert_eq!(got, scanned);
        assert_eq!(inline, b"hello");
    }

    #[test]
    fn version_1_records_still_read_and_unknown_tags_are_skipped() {
        let env = StoredEnvelope {
            id: QueueId(1),
            received_at_micros: 2,
            size: 2,
            body_crc: 3,
            chunks: 0,
            peer: "p".into(),
            helo: "h".into(),
            mail_from: "f".into(),
            rcpt_to: vec!["r".into()],
            spam: None,
            auth: None,
            dsn: None,
        };
        let mut v2 = Vec::new();
        env.encode(&mut v2);
        // Version 1: the same without the tagged fields' count.
        let mut v1 = v2[..v2.len() - 4].to_vec();
        v1[0] = 1;
        v1.extend_from_slice(b"hi");
        let (got, inline) = StoredEnvelope::decode(&v1).unwrap();
        assert_eq!((got, inline), (env.clone(), &b"hi"[..]));
        // A tag from the future.
        let mut future = v2[..v2.len() - 4].to_vec();
        future.extend_from_slice(&1u32.to_le_bytes());
        future.extend_from_slice(&99u16.to_le_bytes());
        put_str(&mut future, "later");
        future.extend_from_slice(b"hi");
        let (got, inline) = StoredEnvelope::decode(&future).unwrap();
        assert_eq!((got, inline), (env, &b"hi"[..]));
    }
}
