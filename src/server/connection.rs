//! One client connection: moves bytes between the socket, the session
//! state machine, the DATA scanner and the spool writer.
//!
//! Why it exists: this is the only code that does I/O for a session. It
//! reads command lines into a small buffer and answers every complete
//! command before it reads again (pipelining: replies go out in one write
//! when the input runs dry). For DATA and BDAT it borrows a preallocated
//! arena from the core's pool, reads the body straight into it, scans it
//! in place, and streams it to the spool in chunks once it outgrows the
//! memory budget. A 250 is sent only after the spool says the commit
//! record is durable.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;
use glommio::net::TcpStream;

use super::settings::Settings;
use super::shard::{Shard, READ_CHUNK};
use super::transport::Transport;
use crate::proxy;
use crate::scan::{DataScanner, Line, LineReader};
use crate::smtp::received::{write_received, Trace};
use crate::smtp::{reply, Action, Session, StoreFailure, Verdict};
use crate::spool::id::now_micros;
use crate::spool::{MessageWriter, StoreError, StoredEnvelope};

/// Command lines may be at most this long (RFC 5321 §4.5.3.1.4).
const MAX_COMMAND_LINE: usize = 512;
/// Bytes read at a time in command mode.
const COMMAND_READ: usize = 4096;
/// Replies pending beyond this are written before more input is read, so a
/// client that does not read its replies stops being read from.
const REPLY_HIGH_WATER: usize = 16 << 10;

/// How a session ended, for its log line.
#[derive(Debug)]
enum End {
    Quit,
    Disconnected,
    IdleTimeout,
    DataTimeout,
    Shutdown,
    BadProxyHeader(&'static str),
    TlsFailed(io::Error),
    Error(io::Error),
}

/// A message being received: its spool writer and its arena.
struct Inflight {
    msg: MessageWriter,
    arena: Box<[u8]>,
    /// Stored octets end here in the arena.
    out: usize,
    /// Body octets seen so far (for the size limit).
    body: u64,
    /// A chunk write failed; keep reading, then answer 4xx.
    failed: Option<StoreError>,
    /// Over the size limit: nothing more is kept.
    oversized: bool,
}

struct Connection {
    shard: Rc<Shard>,
    /// Taken when the session starts; a reload does not change them.
    settings: Rc<Settings>,
    stream: Transport,
    /// The negotiated TLS version and cipher, after STARTTLS.
    tls: Option<String>,
    /// The client: the TCP peer, or the address a PROXY header gave.
    peer: SocketAddr,
    /// The balancer that sent a PROXY header.
    via: Option<SocketAddr>,
    session: Session,
    lines: LineReader,
    /// Command input; unread bytes are `input[start..]`.
    input: Vec<u8>,
    start: usize,
    /// Replies not yet written.
    out: Vec<u8>,
    scanner: DataScanner,
    /// A BDAT message spans several commands, so it lives here.
    inflight: Option<Inflight>,
    messages: u64,
    bytes: u64,
}

/// Serves one connection to its end and logs one line about it.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let settings = shard.settings();
    let mut c = Connection {
        session: Session::new(settings.session.clone()),
        lines: LineReader::new(MAX_COMMAND_LINE),
        scanner: DataScanner::new(settings.config.max_line_length),
        settings,
        input: Vec::new(),
        start: 0,
        out: Vec::with_capacity(256),
        inflight: None,
        messages: 0,
        bytes: 0,
        shard,
        stream: Transport::Plain(stream),
        tls: None,
        peer,
        via: None,
    };
    let end = c.run().await;
    if let Some(m) = c.inflight.take() {
        c.shard.pool.give(m.arena);
    }
    c.stream.close().await;
    if let End::BadProxyHeader(_) = end {
        c.shard.metrics.rejected.add(1);
    }
    if c.shard.verbosity >= 0 {
        let via = c.via.map(|v| format!(" via={v}")).unwrap_or_default();
        eprintln!(
            "sluice: session peer={}{via} core={} messages={} bytes={} end={}",
            c.peer,
            c.shard.core,
            c.messages,
            c.bytes,
            match &end {
                End::Quit => "quit".to_string(),
                End::Disconnected => "disconnected".to_string(),
                End::IdleTimeout => "idle-timeout".to_string(),
                End::DataTimeout => "data-timeout".to_string(),
                End::Shutdown => "shutdown".to_string(),
                End::BadProxyHeader(why) => format!("closed: {why}"),
                End::TlsFailed(e) => format!("tls-failed: {e}"),
                End::Error(e) => format!("error: {e}"),
            }
        );
    }
}

/// What a read produced.
enum Read {
    Bytes(usize),
    Eof,
    Timeout,
    Shutdown,
}

impl Connection {
    async fn run(&mut self) -> End {
        if self.shard.shutdown.is_triggered() {
            reply::SHUTTING_DOWN.write(&mut self.out);
            return self.flush().await.err().unwrap_or(End::Shutdown);
        }
        if self.settings.config.proxy_protocol {
            if let Err(end) = self.read_proxy_header().await {
                return end;
            }
        }
        self.session.greet(&mut self.out);
        loop {
            let full = self
                .shard
                .spool_full
                .load(std::sync::atomic::Ordering::Relaxed);
            self.session.set_spool_full(full);
            if let Err(end) = self.process_input().await {
                return end;
            }
            if let Err(end) = self.flush().await {
                return end;
            }
            if self.shard.shutdown.is_triggered() && !self.session.in_transaction() {
                reply::SHUTTING_DOWN.write(&mut self.out);
                return self.flush().await.err().unwrap_or(End::Shutdown);
            }
            match self.read_commands().await {
                Ok(Read::Bytes(_)) | Ok(Read::Shutdown) => {}
                Ok(Read::Eof) => return End::Disconnected,
                Ok(Read::Timeout) => {
                    reply::IDLE_TIMEOUT.write(&mut self.out);
                    return self.flush().await.err().unwrap_or(End::IdleTimeout);
                }
                Err(e) => return End::Error(e),
            }
        }
    }

    /// Reads the PROXY header that must start the connection and takes the
    /// client's address from it. Nothing is sent before it is complete.
    async fn read_proxy_header(&mut self) -> Result<(), End> {
        loop {
            match proxy::parse(&self.input[self.start..]) {
                proxy::Header::Valid { len, source } => {
                    self.start += len;
                    if let Some(client) = source {
                        self.via = Some(self.peer);
                        self.peer = client;
                    }
                    return Ok(());
                }
                proxy::Header::Invalid(why) => return Err(End::BadProxyHeader(why)),
                proxy::Header::Incomplete => {}
            }
            match self.read_commands().await {
                Ok(Read::Bytes(_)) => {}
                Ok(Read::Eof) => return Err(End::Disconnected),
                Ok(Read::Timeout) => return Err(End::IdleTimeout),
                Ok(Read::Shutdown) => return Err(End::Shutdown),
                Err(e) => return Err(End::Error(e)),
            }
        }
    }

    /// Handles every complete command line in the input buffer.
    async fn process_input(&mut self) -> Result<(), End> {
        loop {
            let line = self.lines.next(&self.input[self.start..]);
            let action = match line {
                Line::Complete {
                    len,
                    consumed,
                    bare_lf,
                } => {
                    let text = self.start..self.start + len;
                    self.start += consumed;
                    self.session
                        .command(&self.input[text], bare_lf, &mut self.out)
                }
                Line::TooLong { consumed } => {
                    self.start += consumed;
                    self.session.line_too_long(&mut self.out)
                }
                Line::Incomplete { consumed } => {
                    self.start += consumed;
                    return Ok(());
                }
            };
            match action {
                Action::ReadCommands => {}
                Action::Close => {
                    self.flush().await?;
                    return Err(End::Quit);
                }
                Action::StartTls => {
                    self.flush().await?;
                    self.start_tls().await?;
                }
                Action::ReceiveData => {
                    self.flush().await?;
                    self.receive_data().await?;
                }
                Action::ReceiveChunk {
                    size,
                    last,
                    discard,
                } => {
                    self.receive_chunk(size, last, discard).await?;
                }
            }
            if self.inflight.is_some() && !self.session.in_transaction() {
                // RSET, EHLO or a refused chunk ended a BDAT transaction.
                let m = self.inflight.take().expect("checked");
                self.shard.pool.give(m.arena);
            }
            if self.out.len() >= REPLY_HIGH_WATER {
                self.flush().await?;
            }
        }
    }

    /// After `220 Ready to start TLS`: throws away anything the client
    /// sent after STARTTLS (RFC 3207 §4.2; a man in the middle could have
    /// injected commands there), then runs the handshake.
    async fn start_tls(&mut self) -> Result<(), End> {
        self.input.clear();
        self.start = 0;
        self.lines = LineReader::new(MAX_COMMAND_LINE);
        let Some(tls) = self.settings.config.tls.clone() else {
            return Err(End::TlsFailed(io::Error::other("no TLS material")));
        };
        self.stream
            .set_read_timeout(self.settings.config.idle_timeout);
        match self.stream.start_tls(tls).await {
            Ok(()) => {
                self.shard.metrics.tls_handshakes.add(1);
                self.tls = self.stream.tls_description();
                self.session.tls_started();
                Ok(())
            }
            Err(e) => {
                self.shard.metrics.tls_failures.add(1);
                Err(End::TlsFailed(e))
            }
        }
    }

    /// Writes pending replies.
    async fn flush(&mut self) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.shard.metrics.count_replies(&self.out);
        let r = self.stream.write_all(&self.out).await;
        self.out.clear();
        r.map_err(End::Error)
    }

    /// Reads more command input, with the idle timeout; outside a
    /// transaction a shutdown interrupts the wait.
    async fn read_commands(&mut self) -> io::Result<Read> {
        if self.start > 0 {
            self.input.drain(..self.start);
            self.start = 0;
        }
        let old = self.input.len();
        self.input.resize(old + COMMAND_READ, 0);
        let watch = !self.session.in_transaction();
        let r = read_with(
            &mut self.stream,
            &mut self.input[old..],
            self.settings.config.idle_timeout,
            watch.then_some(&*self.shard.shutdown),
        )
        .await;
        let n = match &r {
            Ok(Read::Bytes(n)) => *n,
            _ => 0,
        };
        self.input.truncate(old + n);
        r
    }

    /// Starts a message: an arena with the trace header, and its writer.
    fn begin_message(&mut self) -> Inflight {
        let mut arena = self.shard.pool.take();
        let id = self.shard.writer.next_id();
        let env = self.session.envelope();
        let rcpt = (env.rcpt_to.len() == 1).then(|| env.rcpt_to[0].to_string());
        let with = match (env.smtputf8, self.session.is_esmtp(), self.tls.is_some()) {
            (true, _, false) => "UTF8SMTP",
            (true, _, true) => "UTF8SMTPS",
            (false, true, false) => "ESMTP",
            (false, true, true) => "ESMTPS",
            (false, false, _) => "SMTP",
        };
        let mut header = Vec::with_capacity(256);
        write_received(
            &mut header,
            &Trace {
                helo: self.session.helo().unwrap_or("unknown"),
                peer: self.peer,
                by: &self.settings.session.hostname,
                with,
                tls: self.tls.as_deref(),
                id: &id.to_string(),
                rcpt: rcpt.as_deref(),
                unix_time: now_micros() / 1_000_000,
            },
        );
        arena[..header.len()].copy_from_slice(&header);
        Inflight {
            msg: self.shard.writer.message(id),
            out: header.len(),
            arena,
            body: 0,
            failed: None,
            oversized: false,
        }
    }

    /// Receives a DATA body up to `<CRLF>.<CRLF>`, then stores or refuses.
    async fn receive_data(&mut self) -> Result<(), End> {
        let mut m = self.begin_message();
        // Bytes already read after the DATA line are the body's start.
        let early = &self.input[self.start..];
        let mut filled = m.out + early.len();
        m.arena[m.out..filled].copy_from_slice(early);
        self.input.clear();
        self.start = 0;
        let mut pos = m.out;
        self.scanner.reset();
        let max = self.settings.config.max_message_size;
        loop {
            let p = self.scanner.scan(&mut m.arena[..filled], m.out, pos);
            m.body += (p.out - m.out) as u64;
            m.out = p.out;
            pos = p.consumed;
            if m.body > max {
                m.oversized = true;
            }
            if m.oversized {
                m.out = 0;
            }
            if p.done {
                // Anything after the terminator is pipelined commands.
                self.input.extend_from_slice(&m.arena[pos..filled]);
                break;
            }
            // Over the budget, or no room for a full read: stream what is
            // stored so far to the spool as a chunk.
            if m.out >= self.settings.config.message_memory || m.arena.len() - filled < READ_CHUNK {
                // Only the (at most two octet) gap between body and input
                // must survive the slide; its contents do not matter.
                let gap = pos - m.out;
                self.spill(&mut m).await;
                pos = gap;
                filled = gap;
            }
            let room = &mut m.arena[filled..filled + READ_CHUNK];
            match read_with(
                &mut self.stream,
                room,
                self.settings.config.data_timeout,
                None,
            )
            .await
            {
                Ok(Read::Bytes(n)) => filled += n,
                Ok(Read::Eof) => {
                    self.shard.pool.give(m.arena);
                    return Err(End::Disconnected);
                }
                Ok(Read::Timeout) | Ok(Read::Shutdown) => {
                    self.shard.pool.give(m.arena);
                    reply::DATA_TIMEOUT.write(&mut self.out);
                    return Err(self.flush().await.err().unwrap_or(End::DataTimeout));
                }
                Err(e) => {
                    self.shard.pool.give(m.arena);
                    return Err(End::Error(e));
                }
            }
        }
        let verdict = self
            .session
            .data_done(m.body, self.scanner.flags(), &mut self.out);
        if verdict == Verdict::Store {
            self.commit(m).await;
        } else {
            self.shard.pool.give(m.arena);
        }
        Ok(())
    }

    /// Streams the arena's stored octets to the spool as a chunk.
    async fn spill(&mut self, m: &mut Inflight) {
        if m.out > 0 && !m.oversized && m.failed.is_none() {
            if let Err(e) = m.msg.chunk(&m.arena[..m.out]).await {
                m.failed = Some(e);
            }
        }
        m.out = 0;
    }

    /// Receives one BDAT chunk of exactly `size` octets.
    async fn receive_chunk(&mut self, size: u64, last: bool, discard: bool) -> Result<(), End> {
        let mut m = match self.inflight.take() {
            Some(m) => Some(m),
            None if !discard => Some(self.begin_message()),
            None => None,
        };
        let mut left = size;
        // First from what is already buffered, then from the socket.
        while left > 0 {
            let buffered = self.input.len() - self.start;
            if buffered > 0 {
                let n = buffered.min(left as usize);
                let from = self.start..self.start + n;
                if let (false, Some(m)) = (discard, m.as_mut()) {
                    self.keep_chunk_bytes(m, from.clone()).await;
                }
                self.start += n;
                left -= n as u64;
                continue;
            }
            self.input.clear();
            self.start = 0;
            let want = (left as usize).min(READ_CHUNK);
            self.input.resize(want, 0);
            let r = read_with(
                &mut self.stream,
                &mut self.input[..],
                self.settings.config.data_timeout,
                None,
            )
            .await;
            match r {
                Ok(Read::Bytes(n)) => self.input.truncate(n),
                other => {
                    self.input.clear();
                    if let Some(m) = m {
                        self.shard.pool.give(m.arena);
                    }
                    return Err(match other {
                        Ok(Read::Eof) => End::Disconnected,
                        Err(e) => End::Error(e),
                        _ => {
                            reply::DATA_TIMEOUT.write(&mut self.out);
                            self.flush().await.err().unwrap_or(End::DataTimeout)
                        }
                    });
                }
            }
        }
        match self.session.chunk_done(size, last, &mut self.out) {
            Verdict::Store => {
                let m = m.expect("a stored chunk has a message");
                self.commit(m).await;
            }
            Verdict::MoreChunks => self.inflight = m,
            Verdict::Rejected => {
                if let Some(m) = m {
                    if self.session.in_transaction() {
                        self.inflight = Some(m);
                    } else {
                        self.shard.pool.give(m.arena);
                    }
                }
            }
        }
        Ok(())
    }

    /// Copies `input[from]` into the message, spilling when the arena fills.
    async fn keep_chunk_bytes(&mut self, m: &mut Inflight, from: std::ops::Range<usize>) {
        let mut from = from;
        while !from.is_empty() {
            let budget = self.settings.config.message_memory;
            if m.out >= budget {
                self.spill(m).await;
            }
            let n = from.len().min(budget - m.out);
            m.arena[m.out..m.out + n].copy_from_slice(&self.input[from.start..from.start + n]);
            m.out += n;
            m.body += n as u64;
            from.start += n;
        }
    }

    /// Writes the commit record, waits for durability, answers.
    async fn commit(&mut self, m: Inflight) {
        let env = self.session.envelope();
        let stored = StoredEnvelope {
            id: m.msg.id(),
            received_at_micros: now_micros(),
            size: 0,
            body_crc: 0,
            chunks: 0,
            peer: self.peer.to_string(),
            helo: self.session.helo().unwrap_or("").to_string(),
            mail_from: env
                .mail_from
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default(),
            rcpt_to: env.rcpt_to.iter().map(|r| r.to_string()).collect(),
        };
        let total = m.msg.size() + m.out as u64;
        let result = match m.failed {
            Some(e) => Err(e),
            None => m.msg.commit(stored, &m.arena[..m.out]).await,
        };
        self.shard.pool.give(m.arena);
        match result {
            Ok(id) => {
                self.messages += 1;
                self.bytes += total;
                self.shard.metrics.messages.add(1);
                self.shard.metrics.bytes.add(total);
                if self.shard.verbosity > 0 {
                    eprintln!("sluice: stored {id} from {} ({total} bytes)", self.peer);
                }
                self.session.stored(Ok(&id.to_string()), &mut self.out);
            }
            Err(e) => {
                let failure = match e {
                    StoreError::NoSpace => StoreFailure::NoSpace,
                    StoreError::Io => StoreFailure::Io,
                };
                self.session.stored(Err(failure), &mut self.out);
            }
        }
    }
}

/// One read with a timeout, optionally interrupted by shutdown.
async fn read_with(
    stream: &mut Transport,
    buf: &mut [u8],
    timeout: Duration,
    shutdown: Option<&super::shutdown::Shutdown>,
) -> io::Result<Read> {
    stream.set_read_timeout(timeout);
    let read = async {
        match stream.read(buf).await {
            Ok(0) => Ok(Read::Eof),
            Ok(n) => Ok(Read::Bytes(n)),
            Err(e)
                if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock =>
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
