//! `--auth-dovecot`: credentials checked by Dovecot's authentication
//! server over its SASL client protocol, as Postfix's
//! `smtpd_sasl_type = dovecot` does.
//!
//! Why it exists: where users live in Dovecot already (passwd-file, LDAP,
//! SQL), the MTA should ask Dovecot, not keep a copy. The protocol is
//! Dovecot's line protocol of tab-separated fields: a handshake
//! (`VERSION`, `CPID` from us; `VERSION`, `MECH`…, `DONE` from it), then
//! `AUTH` requests answered `OK`, `FAIL` or `CONT`. sluice collects the
//! credentials itself (PLAIN or LOGIN) and always hands them over as one
//! PLAIN response. A core keeps its connections open and reuses them
//! (one request at a time on each); all I/O is async on the executor.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures_lite::future;

use super::sasl::Credentials;
use super::Checked;
use crate::policy::client::{Conn, PolicyTarget};

/// Idle connections a core keeps.
const MAX_IDLE: usize = 4;
/// The longest line we read from Dovecot.
const MAX_REPLY_LINE: usize = 16 << 10;

/// Where the request comes from, for Dovecot's logs and its penalty on
/// failed attempts (per remote address).
#[derive(Debug, Clone, Copy)]
pub struct RequestContext {
    pub client: IpAddr,
    pub local: Option<IpAddr>,
    pub tls: bool,
}

/// `AUTH` for request `id`: PLAIN, with the context as Postfix sends it.
pub fn auth_request(id: u32, creds: &Credentials, cx: &RequestContext) -> Vec<u8> {
    let mut plain = Vec::with_capacity(creds.user.len() + creds.password.len() + 2);
    plain.push(0);
    plain.extend_from_slice(creds.user.as_bytes());
    plain.push(0);
    plain.extend_from_slice(&creds.password);
    let mut line = format!("AUTH\t{id}\tPLAIN\tservice=smtp\tnologin");
    if let Some(local) = cx.local {
        line.push_str(&format!("\tlip={local}"));
    }
    line.push_str(&format!("\trip={}", cx.client));
    if cx.tls {
        line.push_str("\tsecured");
    }
    line.push_str("\tresp=");
    line.push_str(&STANDARD.encode(&plain));
    line.push('\n');
    line.into_bytes()
}

/// What Dovecot's line about request `id` means; `None` for lines about
/// other requests or that are not answers.
pub fn parse_answer(line: &str, id: u32, user: &str) -> Option<Checked> {
    let mut fields = line.split('\t');
    let verb = fields.next()?;
    if fields.next()?.parse::<u32>().ok()? != id {
        return None;
    }
    let param = |name: &str| {
        line.split('\t')
            .skip(2)
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('=').map(unescape))
    };
    match verb {
        "OK" => Some(Checked::Valid(
            param("user").unwrap_or_else(|| user.to_string()),
        )),
        "FAIL" if line.split('\t').any(|f| f == "temp") => {
            Some(Checked::Unavailable(param("reason").unwrap_or_else(|| {
                "Dovecot reports a temporary failure".into()
            })))
        }
        "FAIL" => Some(Checked::Invalid),
        // PLAIN takes one round; a challenge means the server disagrees.
        "CONT" => Some(Checked::Unavailable(
            "Dovecot asked for another round of PLAIN".into(),
        )),
        _ => None,
    }
}

/// Dovecot escapes `\t`, `\n`, `\1` and `\\` in values.
fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('1') => out.push('\u{1}'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// A connection that finished the handshake.
struct Session {
    conn: Conn,
    /// Octets read past the last line.
    pending: Vec<u8>,
}

impl Session {
    /// Reads one line (without `\n`).
    async fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&self.pending[..end]).into_owned();
                self.pending.drain(..=end);
                return Ok(line);
            }
            if self.pending.len() > MAX_REPLY_LINE {
                return Err(io::Error::other("a line longer than 16 KiB from Dovecot"));
            }
            let mut piece = [0u8; 1024];
            let n = self.conn.read(&mut piece).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.pending.extend_from_slice(&piece[..n]);
        }
    }

    /// Connects and runs the handshake: the server must speak version 1
    /// and offer PLAIN.
    async fn open(target: &PolicyTarget) -> io::Result<Session> {
        let mut conn = Conn::connect(target).await?;
        let hello = format!("VERSION\t1\t2\nCPID\t{}\n", std::process::id());
        conn.write_all(hello.as_bytes()).await?;
        let mut s = Session {
            conn,
            pending: Vec::new(),
        };
        let (mut version, mut plain) = (false, false);
        loop {
            let line = s.line().await?;
            let mut f = line.split('\t');
            match f.next() {
                Some("VERSION") => version = f.next() == Some("1"),
                Some("MECH") => plain |= f.next() == Some("PLAIN"),
                Some("DONE") => break,
                _ => {}
            }
        }
        if !version {
            return Err(io::Error::other(
                "Dovecot does not speak version 1 of its auth protocol",
            ));
        }
        if !plain {
            return Err(io::Error::other(
                "Dovecot does not offer PLAIN (auth_mechanisms)",
            ));
        }
        Ok(s)
    }
}

/// One core's client of Dovecot's auth server.
pub struct DovecotClient {
    target: PolicyTarget,
    timeout: Duration,
    idle: RefCell<Vec<Session>>,
    next_id: Cell<u32>,
}

impl DovecotClient {
    pub fn new(target: PolicyTarget, timeout: Duration) -> DovecotClient {
        DovecotClient {
            target,
            timeout,
            idle: RefCell::new(Vec::new()),
            next_id: Cell::new(1),
        }
    }

    /// Asks Dovecot about `creds`, within the timeout.
    pub async fn check(&self, creds: &Credentials, cx: &RequestContext) -> Checked {
        let timeout = self.timeout;
        let asked = future::or(async { Ok(self.ask(creds, cx).await) }, async move {
            glommio::timer::sleep(timeout).await;
            Err(())
        })
        .await;
        match asked {
            Ok(Ok(checked)) => checked,
            Ok(Err(e)) => Checked::Unavailable(format!("Dovecot at {}: {e}", self.target)),
            Err(()) => Checked::Unavailable(format!(
                "Dovecot at {} did not answer within {timeout:?}",
                self.target
            )),
        }
    }

    async fn ask(&self, creds: &Credentials, cx: &RequestContext) -> io::Result<Checked> {
        let reused = self.idle.borrow_mut().pop();
        if let Some(s) = reused {
            // A connection Dovecot closed meanwhile fails at once; then
            // the request goes once more on a fresh one.
            if let Ok(checked) = self.once(s, creds, cx).await {
                return Ok(checked);
            }
        }
        let s = Session::open(&self.target).await?;
        self.once(s, creds, cx).await
    }

    async fn once(
        &self,
        mut s: Session,
        creds: &Credentials,
        cx: &RequestContext,
    ) -> io::Result<Checked> {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1).max(1));
        s.conn.write_all(&auth_request(id, creds, cx)).await?;
        loop {
            let line = s.line().await?;
            if let Some(checked) = parse_answer(&line, id, &creds.user) {
                let mut idle = self.idle.borrow_mut();
                if idle.len() < MAX_IDLE {
                    idle.push(s);
                }
                return Ok(checked);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_carries_plain_and_the_context() {
        let creds = Credentials {
            user: "alice".into(),
            password: b"pw".to_vec(),
        };
        let cx = RequestContext {
            client: "127.0.0.2".parse().unwrap(),
            local: Some("127.0.0.1".parse().unwrap()),
            tls: true,
        };
        let line = String::from_utf8(auth_request(7, &creds, &cx)).unwrap();
        assert_eq!(
            line,
            "AUTH\t7\tPLAIN\tservice=smtp\tnologin\tlip=127.0.0.1\trip=127.0.0.2\tsecured\tresp=AGFsaWNlAHB3\n"
        );
    }

    #[test]
    fn answers_map_to_valid_invalid_and_unavailable() {
        assert_eq!(
            parse_answer("OK\t7\tuser=alice@x", 7, "alice"),
            Some(Checked::Valid("alice@x".into()))
        );
        assert_eq!(
            parse_answer("OK\t7", 7, "alice"),
            Some(Checked::Valid("alice".into()))
        );
        assert_eq!(
            parse_answer("FAIL\t7\tuser=alice", 7, "alice"),
            Some(Checked::Invalid)
        );
        assert!(matches!(
            parse_answer("FAIL\t7\ttemp\treason=db\\tdown", 7, "alice"),
            Some(Checked::Unavailable(r)) if r == "db\tdown"
        ));
        assert_eq!(parse_answer("OK\t8\tuser=bob", 7, "alice"), None);
        assert_eq!(parse_answer("SPID\t42", 7, "alice"), None);
    }
}
