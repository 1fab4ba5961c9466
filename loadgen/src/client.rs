//! One SMTP client connection: greeting, EHLO, transactions (DATA or BDAT,
//! pipelined or not), QUIT. Every reply is read and checked.
//!
//! Why it exists: the load generator's honesty rests here. A transaction
//! reports exactly what the server said: the final code (250 or not) and
//! any unexpected reply on the way; an I/O failure or a reply that is not
//! SMTP ends the connection and is reported as such.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use crate::rt::{self, TcpStream};
use crate::tls::TlsWire;
use crate::workload::Body;

/// How the message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// DATA with dot-stuffing and `<CRLF>.<CRLF>`.
    Data,
    /// BDAT (RFC 3030), one chunk with LAST.
    Bdat,
}

/// What one transaction got.
#[derive(Debug)]
pub struct Outcome {
    /// The final reply code (to the message data, or the first refusal).
    pub final_code: u16,
    /// Unexpected replies before the final one (codes).
    pub refusals: Vec<u16>,
    /// End of data sent → final reply.
    pub eod_latency: Duration,
}

/// The connection under the session.
enum Wire {
    Plain(TcpStream),
    Tls(Box<TlsWire>),
}

impl Wire {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(s) => s.read(buf).await,
            Wire::Tls(t) => t.read(buf).await,
        }
    }

    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Wire::Plain(s) => s.write_all(buf).await,
            Wire::Tls(t) => t.write_all(buf).await,
        }
    }
}

/// How a connection is secured.
#[derive(Debug, Clone)]
pub enum Security {
    Plain,
    /// STARTTLS after the first EHLO (then EHLO again).
    StartTls(Arc<ClientConfig>),
    /// TLS from the first byte (submissions, port 465).
    Implicit(Arc<ClientConfig>),
}

/// An open SMTP connection.
pub struct Client {
    stream: Wire,
    input: Vec<u8>,
    out: Vec<u8>,
    /// Limit on every read and write.
    timeout: Duration,
}

/// Octets above which the body is written from its own buffer instead of
/// being copied next to the commands.
const COPY_LIMIT: usize = 64 << 10;

impl Client {
    /// Connects (with implicit TLS, runs the handshake first), reads the
    /// 220 greeting and says EHLO; with STARTTLS, then STARTTLS, the
    /// handshake and EHLO again; with `auth` (a base64 PLAIN response),
    /// then AUTH PLAIN, which must get 235.
    pub async fn connect(
        target: SocketAddr,
        helo: &str,
        timeout: Duration,
        security: &Security,
        auth: Option<&str>,
    ) -> io::Result<Client> {
        let mut c = Client::open(target, helo, timeout, security).await?;
        if let Some(plain) = auth {
            c.command(&format!("AUTH PLAIN {plain}\r\n"), 235, "AUTH refused")
                .await?;
        }
        Ok(c)
    }

    async fn open(
        target: SocketAddr,
        helo: &str,
        timeout: Duration,
        security: &Security,
    ) -> io::Result<Client> {
        let stream = rt::timeout(timeout, TcpStream::connect(target)).await?;
        let name = ServerName::IpAddress(target.ip().into());
        let stream = match security {
            Security::Implicit(config) => Wire::Tls(Box::new(
                rt::timeout(
                    timeout,
                    TlsWire::handshake(stream, config.clone(), name.clone()),
                )
                .await?,
            )),
            _ => Wire::Plain(stream),
        };
        let mut c = Client {
            stream,
            input: Vec::with_capacity(4096),
            out: Vec::with_capacity(4096),
            timeout,
        };
        let (code, text) = c.reply().await?;
        if code != 220 {
            return Err(protocol(format!("greeting was not 220: {code} {text}")));
        }
        c.command(&format!("EHLO {helo}\r\n"), 250, "EHLO refused")
            .await?;
        let Security::StartTls(config) = security else {
            return Ok(c);
        };
        c.command("STARTTLS\r\n", 220, "STARTTLS refused").await?;
        if !c.input.is_empty() {
            return Err(protocol(
                "the server sent more after its 220 to STARTTLS".into(),
            ));
        }
        let Wire::Plain(tcp) = c.stream else {
            unreachable!("TLS starts once");
        };
        let wire = rt::timeout(timeout, TlsWire::handshake(tcp, config.clone(), name)).await?;
        let mut c = Client {
            stream: Wire::Tls(Box::new(wire)),
            ..c
        };
        c.command(
            &format!("EHLO {helo}\r\n"),
            250,
            "EHLO after STARTTLS refused",
        )
        .await?;
        Ok(c)
    }

    /// Sends `line` and expects `want`.
    async fn command(&mut self, line: &str, want: u16, what: &str) -> io::Result<()> {
        self.out.extend_from_slice(line.as_bytes());
        self.flush().await?;
        let (code, text) = self.reply().await?;
        if code != want {
            return Err(protocol(format!("{what}: {code} {text}")));
        }
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        rt::timeout(self.timeout, self.stream.write_all(&self.out)).await?;
        self.out.clear();
        Ok(())
    }

    /// Reads one reply (all lines); returns the code and the last line's
    /// text. Anything that is not an SMTP reply is an error.
    pub async fn reply(&mut self) -> io::Result<(u16, String)> {
        loop {
            let Some(lf) = self.input.iter().position(|&b| b == b'\n') else {
                let old = self.input.len();
                if old > 64 << 10 {
                    return Err(protocol("reply line longer than 64 KiB".into()));
                }
                self.input.resize(old + 4096, 0);
                let n = rt::timeout(self.timeout, self.stream.read(&mut self.input[old..])).await;
                let n = match n {
                    Ok(n) => n,
                    Err(e) => {
                        self.input.truncate(old);
                        return Err(e);
                    }
                };
                self.input.truncate(old + n);
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "server closed the connection",
                    ));
                }
                continue;
            };
            let line: Vec<u8> = self.input.drain(..=lf).collect();
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            let code = text
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (200..600).contains(c))
                .ok_or_else(|| protocol(format!("not an SMTP reply: {text:?}")))?;
            match text.as_bytes().get(3) {
                Some(b'-') => continue,
                None | Some(b' ') => return Ok((code, text.get(4..).unwrap_or("").to_string())),
                _ => return Err(protocol(format!("not an SMTP reply: {text:?}"))),
            }
        }
    }

    /// Sends one message. `header` is the per-message header block.
    pub async fn transaction(
        &mut self,
        from: &str,
        rcpts: &[String],
        header: &[u8],
        body: &Body,
        mode: Mode,
        pipelining: bool,
    ) -> io::Result<Outcome> {
        let mut refusals = Vec::new();
        let mut expect = Vec::with_capacity(rcpts.len() + 2);
        self.out
            .extend_from_slice(format!("MAIL FROM:<{from}>\r\n").as_bytes());
        expect.push(250);
        for r in rcpts {
            if !pipelining {
                self.step(&mut expect, &mut refusals).await?;
            }
            self.out
                .extend_from_slice(format!("RCPT TO:<{r}>\r\n").as_bytes());
            expect.push(250);
        }
        if !pipelining {
            self.step(&mut expect, &mut refusals).await?;
        }
        let data = match mode {
            Mode::Data => &body.stuffed,
            Mode::Bdat => &body.plain,
        };
        match mode {
            Mode::Data => {
                self.out.extend_from_slice(b"DATA\r\n");
                self.flush().await?;
                for want in expect.drain(..) {
                    let (code, _) = self.reply().await?;
                    if code != want {
                        refusals.push(code);
                    }
                }
                let (code, _) = self.reply().await?;
                if code != 354 {
                    return Ok(Outcome {
                        final_code: code,
                        refusals,
                        eod_latency: Duration::ZERO,
                    });
                }
                self.out.extend_from_slice(header);
                self.send_body(data, b".\r\n").await?;
            }
            Mode::Bdat => {
                let len = header.len() + data.len();
                self.out
                    .extend_from_slice(format!("BDAT {len} LAST\r\n").as_bytes());
                self.out.extend_from_slice(header);
                self.send_body(data, b"").await?;
            }
        }
        let eod = Instant::now();
        for want in expect.drain(..) {
            let (code, _) = self.reply().await?;
            if code != want {
                refusals.push(code);
            }
        }
        let (final_code, _) = self.reply().await?;
        Ok(Outcome {
            final_code,
            refusals,
            eod_latency: eod.elapsed(),
        })
    }

    /// Without pipelining: send what is queued, read its reply.
    async fn step(&mut self, expect: &mut Vec<u16>, refusals: &mut Vec<u16>) -> io::Result<()> {
        self.flush().await?;
        for want in expect.drain(..) {
            let (code, _) = self.reply().await?;
            if code != want {
                refusals.push(code);
            }
        }
        Ok(())
    }

    /// Writes what is queued, then the body and `tail`.
    async fn send_body(&mut self, data: &[u8], tail: &[u8]) -> io::Result<()> {
        if data.len() <= COPY_LIMIT {
            self.out.extend_from_slice(data);
            self.out.extend_from_slice(tail);
            return self.flush().await;
        }
        self.flush().await?;
        rt::timeout(self.timeout, self.stream.write_all(data)).await?;
        rt::timeout(self.timeout, self.stream.write_all(tail)).await
    }

    /// RSET after a refused transaction.
    pub async fn rset(&mut self) -> io::Result<u16> {
        self.out.extend_from_slice(b"RSET\r\n");
        self.flush().await?;
        Ok(self.reply().await?.0)
    }

    /// QUIT and close (errors ignored: the work is done).
    pub async fn quit(mut self) {
        self.out.extend_from_slice(b"QUIT\r\n");
        if self.flush().await.is_ok() {
            let _ = self.reply().await;
        }
    }
}

fn protocol(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}
