//! An rspamd client: a message and its envelope to rspamd's normal worker
//! (`POST /checkv2`), its verdict back.
//!
//! Why it exists: rspamd is what mail operators run for spam filtering,
//! and an edge tier must refuse spam before its 250. HTTP/1.1 is hyper's
//! (`client::conn::http1`), driven on the core's glommio executor over a
//! glommio socket through the small adapter below; no HTTP is parsed
//! here, and the JSON verdict is serde_json's. Connections are kept alive
//! and reused per core, like the policy service's.
//!
//! Not yet a stage of the server: what is missing is recorded in
//! ARCHITECTURE.md ("Not built yet").

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{future, AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{handshake, SendRequest};

/// Idle connections a core keeps to rspamd.
const MAX_IDLE: usize = 16;
/// The largest verdict read (rspamd's are a few KiB with all symbols).
const MAX_VERDICT: usize = 1 << 20;

/// What rspamd decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Reject,
    SoftReject,
    Greylist,
    AddHeader,
    RewriteSubject,
    NoAction,
}

impl Action {
    fn from_name(name: &str) -> Option<Action> {
        Some(match name {
            "reject" => Action::Reject,
            "soft reject" => Action::SoftReject,
            "greylist" => Action::Greylist,
            "add header" => Action::AddHeader,
            "rewrite subject" => Action::RewriteSubject,
            "no action" => Action::NoAction,
            _ => return None,
        })
    }

    /// rspamd's name for it (for logs and the drain's header).
    pub fn name(self) -> &'static str {
        match self {
            Action::Reject => "reject",
            Action::SoftReject => "soft reject",
            Action::Greylist => "greylist",
            Action::AddHeader => "add header",
            Action::RewriteSubject => "rewrite subject",
            Action::NoAction => "no action",
        }
    }
}

/// rspamd's verdict on one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub action: Action,
    pub score: f64,
    pub required_score: f64,
    /// The subject to store, for `rewrite subject`.
    pub subject: Option<String>,
    /// `milter.add_headers`, in rspamd's order.
    pub add_headers: Vec<(String, String)>,
    /// `messages.smtp_message`: the text rspamd wants in the reply.
    pub smtp_message: Option<String>,
}

/// Why there is no verdict.
#[derive(Debug, thiserror::Error)]
pub enum RspamdError {
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the verdict is not rspamd's JSON: {0}")]
    Json(String),
}

/// The envelope rspamd is told in its request headers.
#[derive(Debug, Clone, Default)]
pub struct Envelope<'a> {
    pub ip: String,
    pub helo: &'a str,
    pub from: &'a str,
    pub rcpt: Vec<String>,
    pub queue_id: &'a str,
    /// The authenticated user, once AUTH exists.
    pub user: Option<&'a str>,
}

/// Reads rspamd's `/checkv2` JSON.
pub fn parse_verdict(json: &[u8]) -> Result<Verdict, RspamdError> {
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| RspamdError::Json(e.to_string()))?;
    let action = v["action"]
        .as_str()
        .and_then(Action::from_name)
        .ok_or_else(|| RspamdError::Json(format!("no known action in {:?}", v["action"])))?;
    let number = |key: &str| v[key].as_f64().unwrap_or(0.0);
    let mut add_headers = Vec::new();
    if let Some(headers) = v["milter"]["add_headers"].as_object() {
        for (name, value) in headers {
            // A value is a string, {"value": .., "order": ..}, or a list
            // of those.
            let values = match value {
                serde_json::Value::Array(list) => list.iter().collect(),
                one => vec![one],
            };
            for one in values {
                let text = one.as_str().or_else(|| one["value"].as_str());
                if let Some(text) = text {
                    add_headers.push((name.clone(), text.to_string()));
                }
            }
        }
    }
    Ok(Verdict {
        action,
        score: number("score"),
        required_score: number("required_score"),
        subject: v["subject"].as_str().map(str::to_string),
        add_headers,
        smtp_message: v["messages"]["smtp_message"].as_str().map(str::to_string),
    })
}

/// One core's client of one rspamd worker.
pub struct RspamdClient {
    addr: SocketAddr,
    timeout: Duration,
    idle: RefCell<Vec<SendRequest<Full<Bytes>>>>,
}

impl RspamdClient {
    pub fn new(addr: SocketAddr, timeout: Duration) -> RspamdClient {
        RspamdClient {
            addr,
            timeout,
            idle: RefCell::new(Vec::new()),
        }
    }

    /// Scans `message` (the octets as they would be stored), within the
    /// timeout.
    pub async fn check(&self, env: &Envelope<'_>, message: Bytes) -> Result<Verdict, RspamdError> {
        let timeout = self.timeout;
        future::or(self.exchange(env, message), async move {
            glommio::timer::sleep(timeout).await;
            Err(RspamdError::Timeout(timeout))
        })
        .await
    }

    async fn exchange(&self, env: &Envelope<'_>, message: Bytes) -> Result<Verdict, RspamdError> {
        let reused = self.idle.borrow_mut().pop();
        let mut sender = match reused {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        let mut request = hyper::Request::post("/checkv2")
            .header(hyper::header::HOST, self.addr.to_string())
            .header("IP", env.ip.as_str())
            .header("Helo", env.helo)
            .header("From", env.from)
            .header("Queue-Id", env.queue_id);
        for r in &env.rcpt {
            request = request.header("Rcpt", r.as_str());
        }
        if let Some(user) = env.user {
            request = request.header("User", user);
        }
        let request = request
            .body(Full::new(message))
            .map_err(|e| RspamdError::Json(format!("request: {e}")))?;
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), MAX_VERDICT)
            .collect()
            .await
            .map_err(|e| RspamdError::Json(e.to_string()))?
            .to_bytes();
        let mut idle = self.idle.borrow_mut();
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
        drop(idle);
        if status != 200 {
            return Err(RspamdError::Status(status));
        }
        parse_verdict(&body)
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, RspamdError> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| RspamdError::Connect(e.into()))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = handshake(Io(stream)).await?;
        // The connection's I/O runs as its own task on this executor; it
        // ends when the sender is dropped or rspamd closes.
        glommio::spawn_local(async move {
            let _ = connection.await;
        })
        .detach();
        Ok(sender)
    }
}

/// hyper's I/O traits over a glommio socket (futures-io).
struct Io(TcpStream);

impl hyper::rt::Read for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY: the octets are zeroed before they are seen as `[u8]`, and
        // `advance` is called only with the count the read wrote.
        let room = unsafe { buf.as_mut() };
        for b in room.iter_mut() {
            b.write(0);
        }
        // SAFETY: every element was initialised just above; MaybeUninit<u8>
        // and u8 have the same layout.
        let room: &mut [u8] =
            unsafe { &mut *(room as *mut [std::mem::MaybeUninit<u8>] as *mut [u8]) };
        match Pin::new(&mut self.0).poll_read(cx, room) {
            Poll::Ready(Ok(n)) => {
                // SAFETY: `n` octets were written by the read.
                unsafe { buf.advance(n) };
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_read_as_rspamd_writes_them() {
        let v = parse_verdict(
            br#"{"is_skipped":false,"score":7.5,"required_score":15.0,"action":"add header",
                "milter":{"add_headers":{"X-Spamd-Bar":{"value":"+++++++","order":0},
                "X-Spam":"Yes","X-Multi":[{"value":"a","order":1},"b"]}},
                "messages":{},"symbols":{}}"#,
        )
        .unwrap();
        assert_eq!(v.action, Action::AddHeader);
        assert_eq!(v.score, 7.5);
        assert_eq!(v.required_score, 15.0);
        assert!(v
            .add_headers
            .contains(&("X-Spamd-Bar".into(), "+++++++".into())));
        assert!(v.add_headers.contains(&("X-Spam".into(), "Yes".into())));
        assert!(v.add_headers.contains(&("X-Multi".into(), "a".into())));
        assert!(v.add_headers.contains(&("X-Multi".into(), "b".into())));
        let r = parse_verdict(
            br#"{"score":15,"action":"reject","messages":{"smtp_message":"Gtube pattern"}}"#,
        )
        .unwrap();
        assert_eq!(r.action, Action::Reject);
        assert_eq!(r.smtp_message.as_deref(), Some("Gtube pattern"));
        let s =
            parse_verdict(br#"{"action":"rewrite subject","subject":"*** SPAM *** hi"}"#).unwrap();
        assert_eq!(s.subject.as_deref(), Some("*** SPAM *** hi"));
        for name in [
            "reject",
            "soft reject",
            "greylist",
            "add header",
            "rewrite subject",
            "no action",
        ] {
            assert_eq!(Action::from_name(name).map(Action::name), Some(name));
        }
    }

    #[test]
    fn anything_else_is_an_error() {
        for bad in [
            &b"not json"[..],
            br#"{"action":"maybe"}"#,
            br#"{"score":1}"#,
            b"[]",
        ] {
            assert!(
                parse_verdict(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
