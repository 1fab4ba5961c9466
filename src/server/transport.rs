//! The byte stream under a session: plain TCP, or TLS after STARTTLS.
//!
//! Why it exists: the connection task reads and writes the same way
//! before and after STARTTLS; this type hides which one it is. TLS is
//! rustls driven by hand over glommio's socket (rustls does no I/O
//! itself): ciphertext is read into a buffer and fed to rustls a piece at
//! a time, so decrypted data never piles up, and whatever rustls wants to
//! send (handshake, alerts, tickets) is written out before we wait again.

use std::io::{self, Read as _, Write as _};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

use super::shutdown::Shutdown;

/// Ciphertext is read this much at a time (one full TLS record and more).
const CIPHERTEXT_READ: usize = 32 << 10;

/// What a read with a time limit produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// This many octets.
    Bytes(usize),
    /// The client closed (or reset) the connection.
    Eof,
    /// The client stayed silent too long.
    Timeout,
    /// Shutdown interrupted the wait.
    Shutdown,
}

/// A session's stream.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
    /// A handshake failed; the socket is gone.
    Closed,
}

/// rustls over a glommio TCP stream.
pub struct TlsStream {
    tcp: TcpStream,
    conn: ServerConnection,
    /// Ciphertext read but not yet given to rustls: `incoming[fed..]`.
    incoming: Vec<u8>,
    fed: usize,
    /// Ciphertext rustls produced, being written.
    outgoing: Vec<u8>,
}

impl Transport {
    /// Sets the timeout of every following read.
    pub fn set_read_timeout(&self, t: Duration) {
        let tcp = match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &t.tcp,
            Transport::Closed => return,
        };
        let _ = tcp.set_read_timeout(Some(t));
    }

    /// Reads plaintext; `Ok(0)` is the end of the stream.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf).await,
            Transport::Tls(t) => t.read(buf).await,
            Transport::Closed => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// One read within `timeout`; with `shutdown`, a shutdown interrupts
    /// the wait.
    pub async fn read_within(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
        shutdown: Option<&Shutdown>,
    ) -> io::Result<Read> {
        self.set_read_timeout(timeout);
        let read = async {
            match self.read(buf).await {
                Ok(0) => Ok(Read::Eof),
                Ok(n) => Ok(Read::Bytes(n)),
                Err(e)
                    if e.kind() == io::ErrorKind::TimedOut
                        || e.kind() == io::ErrorKind::WouldBlock =>
                {
                    Ok(Read::Timeout)
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(Read::Eof),
                Err(e) => Err(e),
            }
        };
        match shutdown {
            None => read.await,
            Some(s) => {
                future::or(read, async {
                    s.wait().await;
                    Ok(Read::Shutdown)
                })
                .await
            }
        }
    }

    /// Writes all of `buf`.
    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.write_all(buf).await,
            Transport::Tls(t) => t.write_all(buf).await,
            Transport::Closed => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Says goodbye (TLS close_notify) and closes.
    pub async fn close(&mut self) {
        match self {
            Transport::Plain(s) => {
                let _ = s.close().await;
            }
            Transport::Tls(t) => {
                t.conn.send_close_notify();
                let _ = t.flush().await;
                let _ = t.tcp.close().await;
            }
            Transport::Closed => {}
        }
    }

    /// Runs the server side of a TLS handshake over a plain stream,
    /// starting with the ciphertext `early` already read from it (implicit
    /// TLS after a PROXY header; empty after STARTTLS). On failure the
    /// stream is [`Transport::Closed`].
    pub async fn start_tls(&mut self, config: Arc<ServerConfig>, early: Vec<u8>) -> io::Result<()> {
        let tcp = match std::mem::replace(self, Transport::Closed) {
            Transport::Plain(s) => s,
            other => {
                *self = other;
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "TLS is already active",
                ));
            }
        };
        let conn = ServerConnection::new(config).map_err(io::Error::other)?;
        let mut t = Box::new(TlsStream {
            tcp,
            conn,
            incoming: early,
            fed: 0,
            outgoing: Vec::new(),
        });
        while t.conn.is_handshaking() {
            t.flush().await?;
            if !t.conn.is_handshaking() {
                break;
            }
            if !t.feed().await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        t.flush().await?;
        *self = Transport::Tls(t);
        Ok(())
    }

    /// The negotiated version and cipher suite, like "TLS1.3
    /// TLS13_AES_256_GCM_SHA384".
    pub fn tls_description(&self) -> Option<String> {
        let Transport::Tls(t) = self else {
            return None;
        };
        let version = t.conn.protocol_version().map(crate::tls::version_name)?;
        let suite = t.conn.negotiated_cipher_suite()?.suite();
        Some(format!("{version} {suite:?}"))
    }
}

impl TlsStream {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if !self.feed().await? {
                return Ok(0);
            }
        }
    }

    /// Gives rustls one piece of ciphertext (reading more from the socket
    /// when none is left), processes it and sends what it answers.
    /// `false` at the end of the stream.
    async fn feed(&mut self) -> io::Result<bool> {
        if self.fed == self.incoming.len() {
            self.incoming.resize(CIPHERTEXT_READ, 0);
            let n = self.tcp.read(&mut self.incoming).await;
            let n = n.inspect_err(|_| self.incoming.clear())?;
            self.incoming.truncate(n);
            self.fed = 0;
            if n == 0 {
                return Ok(false);
            }
        }
        let mut piece = &self.incoming[self.fed..];
        self.fed += self.conn.read_tls(&mut piece)?;
        let processed = self.conn.process_new_packets();
        // Send any alert before giving up.
        let flushed = self.flush().await;
        processed.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        flushed?;
        Ok(true)
    }

    async fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.conn.writer().write(buf)?;
            buf = &buf[n..];
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes out every record rustls has ready.
    async fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.outgoing.clear();
            self.conn.write_tls(&mut self.outgoing)?;
            self.tcp.write_all(&self.outgoing).await?;
        }
        Ok(())
    }
}
