//! The metrics endpoint: `GET /metrics` and `GET /healthz` over plain
//! HTTP/1.1 on `--metrics ADDR`, served by one ordinary thread (for
//! `sluice serve` and `sluice drain` alike: each supplies its pages).
//!
//! Why it exists: scrapes come a few times a minute, so a blocking thread
//! outside the executors is the simplest thing that cannot slow the SMTP
//! path down. Each request gets a short read timeout and one response,
//! then the connection closes; a slow scraper delays only other scrapes.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use super::{health, render, unix_millis, CoreMetrics};

/// A page: `Ok(body)` is 200, `Err(body)` is 503.
pub type Page = Result<String, String>;

/// The two pages an endpoint serves.
pub trait Pages: Send + 'static {
    /// `/metrics`, Prometheus text.
    fn metrics(&self) -> String;
    /// `/healthz`.
    fn health(&self) -> Page;
}

/// The server's pages: every core's metrics.
pub struct CorePages(pub Vec<Arc<CoreMetrics>>);

impl Pages for CorePages {
    fn metrics(&self) -> String {
        render::render(&self.0)
    }

    fn health(&self) -> Page {
        health::check(&self.0, unix_millis())
    }
}

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Request heads larger than this are refused.
const MAX_HEAD: usize = 8 << 10;

/// Binds `addr` and serves it on a new thread; returns the bound address.
pub fn spawn(addr: SocketAddr, pages: impl Pages) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("sluice-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => {
                        let _ = answer(s, &pages);
                    }
                    Err(e) => {
                        tracing::warn!("metrics: accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok(bound)
}

/// Reads one request and writes one response.
fn answer(mut stream: TcpStream, pages: &impl Pages) -> io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "request head too large\n",
                false,
            );
        }
    }
    let first = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let first = String::from_utf8_lossy(first);
    let mut parts = first.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "only GET and HEAD\n",
            false,
        );
    }
    match path {
        "/metrics" => respond(&mut stream, "200 OK", &pages.metrics(), head_only),
        "/healthz" => match pages.health() {
            Ok(text) => respond(&mut stream, "200 OK", &text, head_only),
            Err(text) => respond(&mut stream, "503 Service Unavailable", &text, head_only),
        },
        _ => respond(
            &mut stream,
            "404 Not Found",
            "try /metrics or /healthz\n",
            head_only,
        ),
    }
}

fn respond(stream: &mut TcpStream, status: &str, body: &str, head_only: bool) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&out)?;
    stream.flush()
}
