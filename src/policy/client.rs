//! A core's client of the `--policy-service`: requests over connections
//! kept open and reused, on the core's executor, each within
//! `--policy-timeout`.
//!
//! Why it exists: a policy request sits on the RCPT path of every
//! session, so it must never block the executor (it is async I/O like the
//! client socket) and must not cost a connection per request (Postfix
//! keeps policy connections open too). A core keeps up to
//! [`MAX_IDLE`] idle connections and has at most [`MAX_IN_FLIGHT`]
//! requests out at once; more wait (within their timeout). A reused
//! connection the service closed meanwhile is noticed (end of stream
//! before any answer) and the request goes once more on a fresh one.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpStream, UnixStream};
use glommio::sync::Semaphore;

use super::delegation::{answer_end, parse_answer, AnswerError, Decision, MAX_ANSWER};

/// Idle connections a core keeps.
pub const MAX_IDLE: usize = 16;
/// Requests a core has out at once.
pub const MAX_IN_FLIGHT: u64 = 64;

/// Where the policy service listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyTarget {
    Inet(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for PolicyTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicyTarget::Inet(a) => write!(f, "inet:{a}"),
            PolicyTarget::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFailure {
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    #[error("{0}")]
    Io(io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the service closed the connection without answering")]
    Closed,
    #[error("an answer longer than {MAX_ANSWER} octets")]
    TooLong,
    #[error("{0}")]
    Answer(#[from] AnswerError),
}

/// A stream to a service that listens on TCP or a Unix socket.
pub enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    /// Connects to `target`.
    pub async fn connect(target: &PolicyTarget) -> io::Result<Conn> {
        Ok(match target {
            PolicyTarget::Inet(addr) => Conn::Tcp(TcpStream::connect(*addr).await?),
            PolicyTarget::Unix(path) => Conn::Unix(UnixStream::connect(path).await?),
        })
    }

    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.write_all(buf).await,
            Conn::Unix(s) => s.write_all(buf).await,
        }
    }

    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf).await,
            Conn::Unix(s) => s.read(buf).await,
        }
    }
}

/// One core's client.
pub struct PolicyClient {
    target: PolicyTarget,
    timeout: Duration,
    idle: RefCell<Vec<Conn>>,
    in_flight: Semaphore,
}

impl PolicyClient {
    pub fn new(target: PolicyTarget, timeout: Duration) -> PolicyClient {
        PolicyClient {
            target,
            timeout,
            idle: RefCell::new(Vec::new()),
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
        }
    }

    /// The service, for log lines.
    pub fn target(&self) -> &PolicyTarget {
        &self.target
    }

    /// Sends `request` and reads the decision, within the timeout.
    pub async fn ask(&self, request: &[u8]) -> Result<Decision, PolicyFailure> {
        let timeout = self.timeout;
        future::or(self.exchange(request), async move {
            glommio::timer::sleep(timeout).await;
            Err(PolicyFailure::Timeout(timeout))
        })
        .await
    }

    async fn exchange(&self, request: &[u8]) -> Result<Decision, PolicyFailure> {
        let _permit = self
            .in_flight
            .acquire_permit(1)
            .await
            .map_err(|e| PolicyFailure::Io(io::Error::other(e.to_string())))?;
        let reused = self.idle.borrow_mut().pop();
        if let Some(conn) = reused {
            match self.once(conn, request).await {
                Err(PolicyFailure::Closed) | Err(PolicyFailure::Io(_)) => {}
                done => return done,
            }
        }
        let conn = Conn::connect(&self.target)
            .await
            .map_err(PolicyFailure::Connect)?;
        self.once(conn, request).await
    }

    /// One request on `conn`; the connection goes back to the idle list
    /// when the answer ended cleanly.
    async fn once(&self, mut conn: Conn, request: &[u8]) -> Result<Decision, PolicyFailure> {
        conn.write_all(request).await.map_err(PolicyFailure::Io)?;
        let mut answer = Vec::with_capacity(64);
        let mut piece = [0u8; 512];
        let end = loop {
            if let Some(end) = answer_end(&answer) {
                break end;
            }
            if answer.len() > MAX_ANSWER {
                return Err(PolicyFailure::TooLong);
            }
            let n = conn.read(&mut piece).await.map_err(PolicyFailure::Io)?;
            if n == 0 {
                return Err(PolicyFailure::Closed);
            }
            answer.extend_from_slice(&piece[..n]);
        };
        let decision = parse_answer(&answer[..end]);
        // Octets after the answer mean the two sides disagree on framing:
        // the connection is not used again.
        if end == answer.len() && decision.is_ok() {
            let mut idle = self.idle.borrow_mut();
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
        Ok(decision?)
    }
}
