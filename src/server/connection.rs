//! One client connection: the I/O pump between the socket and the
//! session's stages.
//!
//! Why it exists: this is the only code that does I/O for a session, and
//! it decides nothing. It reads the PROXY header (if configured), sends
//! the greeting, reads command lines into a small buffer and feeds them
//! to the sans-I/O [`Session`], answering every complete command before
//! it reads again (pipelining: replies go out in one write when the input
//! runs dry). When the session says a body comes, it feeds a [`Message`]
//! (whose [`Intake`](super::intake::Intake) decides everything about the
//! octets) from the command buffer and then the socket, and after the
//! session's verdict has the spool commit it. A 250 is sent only after
//! the spool says the commit record is durable.
//!
//! Its one piece of state beyond buffers is the [`Phase`]: between BDAT
//! chunks the message being received lives there.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use glommio::net::TcpStream;
use tracing::info;

use super::admission::{self, Admitted, ClientQuota};
use super::arena::READ_CHUNK;
use super::end_of_message::{self, Outcome};
use super::message::{BodySource, Message, Transfer};
use super::policy_stage;
use super::screening;
use super::settings::Settings;
use super::shard::Shard;
use super::transport::{Read, Transport};
use crate::auth::dovecot::RequestContext;
use crate::auth::Checked;
use crate::config::ListenerKind;
use crate::dnsbl;
use crate::metrics::Refusal;
use crate::policy::delegation::Stage;
use crate::proxy;
use crate::scan::{Line, LineReader};
use crate::smtp::command::MAX_LINE;
use crate::smtp::{reply, Action, Session, StoreFailure, Verdict};
use crate::spool::{Origin, SpamVerdict, StoreError};

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
    /// The client did not read its replies for the idle timeout.
    WriteTimeout,
    Shutdown,
    BadProxyHeader(&'static str),
    /// Refused before or instead of the greeting, or at the error limit.
    Refused(Refusal),
    TlsFailed(io::Error),
    Error(io::Error),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Quit => f.write_str("quit"),
            End::Disconnected => f.write_str("disconnected"),
            End::IdleTimeout => f.write_str("idle-timeout"),
            End::DataTimeout => f.write_str("data-timeout"),
            End::WriteTimeout => f.write_str("write-timeout"),
            End::Shutdown => f.write_str("shutdown"),
            End::BadProxyHeader(why) => write!(f, "closed: {why}"),
            End::Refused(why) => write!(f, "refused: {}", why.label()),
            End::TlsFailed(e) => write!(f, "tls-failed: {e}"),
            End::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// Where the replies to one command start (see `Connection::replies_mark`).
#[derive(Clone, Copy)]
struct RepliesMark {
    pending: usize,
    flushes: u32,
    refusals: u64,
}

/// Copies the command's verb, lower-cased, into `verb` (the `reason` of a
/// refusal it gets: `rcpt`, `mail`, `data`).
fn verb_of(line: &[u8], verb: &mut [u8; 4]) {
    for (v, b) in verb.iter_mut().zip(line.iter().chain(b"    ")) {
        *v = if b.is_ascii_alphabetic() {
            b.to_ascii_lowercase()
        } else {
            b' '
        };
    }
}

/// Whether a reply code refuses the client something it asked for:
/// mailbox, policy, size and resource refusals (not syntax errors, not
/// 421, not AUTH's 535/454, which their stages log).
fn is_refusal(code: &[u8]) -> bool {
    matches!(
        code,
        b"450" | b"451" | b"452" | b"530" | b"550" | b"551" | b"552" | b"553" | b"554"
    )
}

/// What the connection is doing between commands.
enum Phase {
    /// Reading command lines; no message is open.
    Commands,
    /// Between the chunks of a BDAT message: the message so far.
    Chunking(Message),
}

struct Connection {
    shard: Rc<Shard>,
    /// The listener it came in on.
    kind: ListenerKind,
    /// Taken when the session starts; a reload does not change them.
    settings: Rc<Settings>,
    stream: Transport,
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
    phase: Phase,
    messages: u64,
    bytes: u64,
    /// Reply writes so far (for [`RepliesMark`]).
    flushes: u32,
}

/// Serves one connection to its end and logs one line about it.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, peer: SocketAddr, kind: ListenerKind) {
    let _ = stream.set_nodelay(true);
    let settings = shard.settings();
    // A client that stops reading its replies is given the idle timeout,
    // as Postfix's smtpd_timeout does for writes; then it is taken for
    // gone (no 421 could reach it). The timer only starts when a write
    // would block.
    let _ = stream.set_write_timeout(Some(settings.config.idle_timeout));
    let mut session = Session::new(settings.session.clone());
    if kind != ListenerKind::Smtp {
        session.set_submission();
    }
    let mut c = Connection {
        session,
        kind,
        lines: LineReader::new(MAX_LINE),
        settings,
        input: Vec::new(),
        start: 0,
        out: Vec::with_capacity(256),
        phase: Phase::Commands,
        messages: 0,
        bytes: 0,
        flushes: 0,
        shard,
        stream: Transport::Plain(stream),
        peer,
        via: None,
    };
    let end = c.run().await;
    c.phase = Phase::Commands;
    c.stream.close().await;
    if let End::BadProxyHeader(why) = end {
        c.shard.metrics().rejected.add(1);
        c.shard.refused(
            Refusal::BadProxyHeader,
            c.peer.ip(),
            format_args!("{}: {why}", c.peer),
        );
    }
    c.log_end(&end);
}

impl Connection {
    /// The `stored` event: the message, and how long from its last octet
    /// to the answer (the spool's commit and any end-of-message stages).
    fn log_stored(&self, id: &str, size: u64, ended: Instant) {
        let envelope = self.session.envelope();
        info!(
            core = self.shard.core(),
            event = "stored",
            queue_id = id,
            client = %self.peer.ip(),
            from = %envelope.sender(),
            rcpts = envelope.rcpt_to.len(),
            size,
            latency_us = ended.elapsed().as_micros() as u64,
            "stored"
        );
    }

    /// The `session` event: who, through what, and how it went.
    fn log_end(&self, end: &End) {
        let via = self.via.map(|v| v.to_string());
        info!(
            core = self.shard.core(),
            event = "session",
            peer = %self.peer,
            via = via.as_deref().unwrap_or(""),
            listener = self.kind.name(),
            helo = self.session.helo().unwrap_or(""),
            tls = self.session.tls().unwrap_or(""),
            auth = self.session.auth().unwrap_or(""),
            messages = self.messages,
            bytes = self.bytes,
            outcome = %end,
            "session"
        );
    }

    async fn run(&mut self) -> End {
        if self.shard.shutdown().is_triggered() {
            return self.say_goodbye(reply::SHUTTING_DOWN, End::Shutdown).await;
        }
        if self.settings.config.proxy_protocol {
            if let Err(end) = self.read_proxy_header().await {
                return end;
            }
        }
        if self.kind == ListenerKind::Submissions {
            // Implicit TLS (RFC 8314): what followed a PROXY header is
            // the start of the handshake.
            let early = self.input.split_off(self.start);
            self.input.clear();
            self.start = 0;
            if let Err(end) = self.handshake(early).await {
                return end;
            }
        }
        if let Err(end) = self.admit_and_greet().await {
            return end;
        }
        loop {
            self.session.set_spool_full(self.shard.spool_full());
            if let Err(end) = self.process_input().await {
                return end;
            }
            if let Err(end) = self.flush().await {
                return end;
            }
            let stopping = self.shard.shutdown().is_triggered();
            if stopping && !self.session.in_transaction() || self.shard.grace_over().is_triggered()
            {
                return self.say_goodbye(reply::SHUTTING_DOWN, End::Shutdown).await;
            }
            match self.read_commands().await {
                Ok(Read::Bytes(_)) | Ok(Read::Shutdown) => {}
                Ok(Read::Eof) => return End::Disconnected,
                Ok(Read::Timeout) => {
                    return self
                        .say_goodbye(reply::IDLE_TIMEOUT, End::IdleTimeout)
                        .await
                }
                Err(e) => return End::Error(e),
            }
        }
    }

    /// The stages between the PROXY header and the session: admission
    /// (trust, client limits), screening (greet pause, DNS lists), then
    /// the greeting: a 220, or a 554 after which only QUIT is accepted.
    async fn admit_and_greet(&mut self) -> Result<(), End> {
        let config = self.settings.config.clone();
        let rules = &config.admission;
        let ip = self.peer.ip();
        let Admitted { trusted, hold } = match admission::admit(&self.shard, rules, ip) {
            Ok(admitted) => admitted,
            Err(why) => {
                self.shard.metrics().rejected.add(1);
                let text = admission::refusal_text(why, rules);
                self.shard.refused(why, ip, format_args!("{ip}: {text}"));
                let reply = admission::refusal_reply(why);
                return Err(self.say_goodbye(reply, End::Refused(why)).await);
            }
        };
        let lists = rules.dns_lists.as_ref().filter(|_| !trusted);
        let pending = lists.map(|l| screening::start(&self.shard, l, ip, hold.as_ref()));
        if !trusted {
            self.greet_pause(rules.greet_pause).await?;
        }
        let mut blocked = None;
        if let (Some(lists), Some(pending)) = (lists, pending) {
            let listing = screening::finish(pending, &self.shard, lists, hold.as_ref()).await;
            let score = dnsbl::score(&lists.sites, listing);
            if score.total >= lists.threshold {
                let zone = score.zone.unwrap_or("the DNS lists").to_string();
                let what = format!(
                    "{ip}: DNS list score {} >= {} (listed by {zone})",
                    score.total, lists.threshold
                );
                if !lists.log_only {
                    self.shard
                        .refused(Refusal::Dnsbl, ip, format_args!("{what}"));
                    blocked = Some(zone);
                } else {
                    info!(
                        core = self.shard.core(),
                        client = %ip,
                        "would refuse (--dnsbl-log-only): {what}"
                    );
                }
            }
        }
        match blocked {
            Some(zone) => self.session.refuse(
                reply::BLOCKED,
                format_args!("[{ip}] blocked using {zone}"),
                &mut self.out,
            ),
            None => self.session.greet(&mut self.out),
        }
        if let Some(hold) = hold {
            let quota = ClientQuota::new(hold, rules.rates, self.shard.clone(), ip);
            self.session.set_quota(Box::new(quota));
        }
        Ok(())
    }

    /// `--greet-pause`: waits in silence before the greeting. A client
    /// that sends anything first (even in the packet of its PROXY header)
    /// gets 554 5.5.1 as its greeting and 421 as the answer to what it
    /// sent, and is closed; nothing it sent is processed.
    async fn greet_pause(&mut self, pause: std::time::Duration) -> Result<(), End> {
        if pause.is_zero() {
            return Ok(());
        }
        let talked = if self.start < self.input.len() {
            true
        } else {
            match self.read_commands_within(pause).await {
                Ok(Read::Bytes(_)) => true,
                Ok(Read::Timeout) => false,
                Ok(Read::Eof) => return Err(End::Disconnected),
                Ok(Read::Shutdown) => {
                    return Err(self.say_goodbye(reply::SHUTTING_DOWN, End::Shutdown).await)
                }
                Err(e) => return Err(End::Error(e)),
            }
        };
        if !talked {
            return Ok(());
        }
        self.input.clear();
        self.start = 0;
        let why = Refusal::EarlyTalker;
        self.shard.refused(
            why,
            self.peer.ip(),
            format_args!("{}: talked before the greeting", self.peer.ip()),
        );
        reply::TALKED_FIRST.write(&mut self.out);
        Err(self
            .say_goodbye(reply::CLOSING_AFTER_TALKING_FIRST, End::Refused(why))
            .await)
    }

    /// Sends a last reply (a 421) and ends with `end`, unless the write
    /// fails first.
    async fn say_goodbye(&mut self, last: reply::Reply, end: End) -> End {
        last.write(&mut self.out);
        self.flush().await.err().unwrap_or(end)
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
            if !matches!(line, Line::Incomplete { .. }) {
                self.tarpit().await?;
            }
            let before = self.replies_mark();
            let mut verb = [0u8; 4];
            let mut command = 0..0;
            let action = match line {
                Line::Complete {
                    len,
                    consumed,
                    bare_lf,
                } => {
                    let text = self.start..self.start + len;
                    verb_of(&self.input[text.clone()], &mut verb);
                    command = text.clone();
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
                Action::Abandon => self.phase = Phase::Commands,
                Action::Close => {
                    self.flush().await?;
                    return Err(self.closed_end());
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
                } => self.receive_chunk(size, last, discard).await?,
                Action::Authenticate => {
                    let checked = self.authenticate().await;
                    self.session.authenticated(checked, &mut self.out);
                }
                Action::CheckRecipient => {
                    let decision = policy_stage::ask(
                        &self.shard,
                        &self.settings,
                        &self.session,
                        self.peer,
                        Stage::Rcpt,
                        None,
                    )
                    .await;
                    self.session.recipient_checked(&decision, &mut self.out);
                }
            }
            self.log_refusals(&verb, command, before);
            if self.session.is_closed() {
                // A refused body or failed store was the last error.
                self.flush().await?;
                return Err(self.closed_end());
            }
            if self.out.len() >= REPLY_HIGH_WATER {
                self.flush().await?;
            }
        }
    }

    /// How a session the session machine closed ended: QUIT, or the hard
    /// error limit.
    fn closed_end(&self) -> End {
        let limit = self.settings.config.admission.hard_error_limit;
        if limit == 0 || self.session.errors() < limit {
            return End::Quit;
        }
        let why = Refusal::HardErrorLimit;
        self.shard.refused(
            why,
            self.peer.ip(),
            format_args!("{}: {} errors (--hard-error-limit)", self.peer.ip(), limit),
        );
        End::Refused(why)
    }

    /// Past `--soft-error-limit`, every reply waits `--error-delay` (a
    /// timer: the core goes on with other sessions). Replies already
    /// decided go out first.
    async fn tarpit(&mut self) -> Result<(), End> {
        let rules = &self.settings.config.admission;
        let soft = rules.soft_error_limit;
        if soft == 0 || self.session.errors() < soft {
            return Ok(());
        }
        let delay = rules.error_delay;
        self.flush().await?;
        glommio::timer::sleep(delay).await;
        Ok(())
    }

    /// After `220 Ready to start TLS`: throws away anything the client
    /// sent after STARTTLS (RFC 3207 §4.2; a man in the middle could have
    /// injected commands there), then runs the handshake.
    async fn start_tls(&mut self) -> Result<(), End> {
        self.input.clear();
        self.start = 0;
        self.lines = LineReader::new(MAX_LINE);
        self.handshake(Vec::new()).await
    }

    /// The TLS handshake, starting with the ciphertext `early` already
    /// read; the session then knows TLS is up.
    async fn handshake(&mut self, early: Vec<u8>) -> Result<(), End> {
        let Some(tls) = self.settings.config.tls.clone() else {
            return Err(End::TlsFailed(io::Error::other("no TLS material")));
        };
        self.stream
            .set_read_timeout(self.settings.config.idle_timeout);
        match self.stream.start_tls(tls, early).await {
            Ok(()) => {
                self.shard.metrics().tls_handshakes.add(1);
                let description = self.stream.tls_description().unwrap_or_default();
                self.session.tls_started(description);
                Ok(())
            }
            Err(e) => {
                self.shard.metrics().tls_failures.add(1);
                Err(End::TlsFailed(e))
            }
        }
    }

    /// Checks the credentials the session collected (off the executor
    /// thread, or over async I/O to Dovecot). A failure to check is
    /// logged, within the core's log budget.
    async fn authenticate(&mut self) -> Checked {
        let (Some(creds), Some(auth)) = (
            self.session.take_credentials(),
            self.settings.authenticator.clone(),
        ) else {
            return Checked::Unavailable("no way of checking credentials".into());
        };
        let user = creds.user.clone();
        let cx = RequestContext {
            client: self.peer.ip(),
            local: None,
            tls: self.session.tls().is_some(),
        };
        let checked = auth.check(creds, &cx).await;
        match &checked {
            Checked::Valid(_) => {}
            Checked::Invalid => self.shard.refused(
                Refusal::AuthFailed,
                self.peer.ip(),
                format_args!("{}: AUTH failed for {user:?}", self.peer.ip()),
            ),
            Checked::Unavailable(why) => self.shard.refused(
                Refusal::AuthUnavailable,
                self.peer.ip(),
                format_args!("{}: AUTH for {user:?} not checked: {why}", self.peer.ip()),
            ),
        }
        checked
    }

    /// Where the replies to the next command will start: the length of
    /// the pending replies, the flushes so far, the refusals the core
    /// logged so far.
    fn replies_mark(&self) -> RepliesMark {
        RepliesMark {
            pending: self.out.len(),
            flushes: self.flushes,
            refusals: self.shard.refusals_logged(),
        }
    }

    /// Logs the refusals among the replies to the command `verb` (written
    /// since `before`) as `refused` events, unless the stage that refused
    /// logged it already (rates, AUTH). For MAIL and RCPT the event names
    /// the command line (`input[command]`, still there: neither reads
    /// input) and the transaction's sender.
    fn log_refusals(&self, verb: &[u8; 4], command: std::ops::Range<usize>, before: RepliesMark) {
        let start = if self.flushes == before.flushes {
            before.pending
        } else {
            0
        };
        let Some(replies) = self.out.get(start..) else {
            return;
        };
        if !matches!(replies.first(), Some(b'4' | b'5'))
            || self.shard.refusals_logged() != before.refusals
        {
            return;
        }
        let name = std::str::from_utf8(verb).unwrap_or("").trim_end();
        let line = match name {
            "mail" | "rcpt" => self.input.get(command).unwrap_or_default(),
            _ => &[],
        };
        let line = String::from_utf8_lossy(line);
        let from = self.session.envelope().sender().to_string();
        for reply in replies.split(|&b| b == b'\n') {
            let reply = reply.strip_suffix(b"\r").unwrap_or(reply);
            if reply.len() >= 4 && reply[3] == b' ' && is_refusal(&reply[..3]) {
                let refusal = super::shard::CommandRefusal {
                    command: name,
                    line: &line,
                    from: &from,
                    reply: &String::from_utf8_lossy(reply),
                };
                self.shard.refused_command(self.peer.ip(), &refusal);
            }
        }
    }

    /// Writes pending replies.
    async fn flush(&mut self) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.flushes = self.flushes.wrapping_add(1);
        self.shard.metrics().count_replies(&self.out);
        let r = self.stream.write_all(&self.out).await;
        self.out.clear();
        r.map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut => End::WriteTimeout,
            _ => End::Error(e),
        })
    }

    /// Reads more command input, with the idle timeout; outside a
    /// transaction a shutdown interrupts the wait.
    async fn read_commands(&mut self) -> io::Result<Read> {
        self.read_commands_within(self.settings.config.idle_timeout)
            .await
    }

    /// [`Connection::read_commands`] with another time limit.
    async fn read_commands_within(&mut self, limit: std::time::Duration) -> io::Result<Read> {
        if self.start > 0 {
            self.input.drain(..self.start);
            self.start = 0;
        }
        let old = self.input.len();
        self.input.resize(old + COMMAND_READ, 0);
        // Outside a transaction a shutdown ends the wait; inside one, only
        // the end of the grace period does.
        let interrupt = if self.session.in_transaction() {
            self.shard.grace_over()
        } else {
            &**self.shard.shutdown()
        };
        let r = self
            .stream
            .read_within(&mut self.input[old..], limit, Some(interrupt))
            .await;
        let n = match &r {
            Ok(Read::Bytes(n)) => *n,
            _ => 0,
        };
        self.input.truncate(old + n);
        r
    }

    /// A new message of the session's transaction.
    fn begin_message(&self, transfer: Transfer) -> Message {
        Message::begin(
            &self.shard,
            &self.settings,
            &self.session,
            self.peer,
            transfer,
        )
    }

    /// Receives a DATA body up to `<CRLF>.<CRLF>`, then stores or refuses.
    async fn receive_data(&mut self) -> Result<(), End> {
        let mut m = self.begin_message(Transfer::Data);
        m.receive(self).await?;
        let ended = Instant::now();
        // Octets read after the terminator are pipelined commands.
        let leftover = m.intake.leftover();
        self.input
            .splice(self.start..self.start, leftover.iter().copied());
        let verdict = self
            .session
            .data_done(m.intake.size(), m.intake.flags(), &mut self.out);
        if verdict == Verdict::Store {
            self.finish(m, ended).await;
        }
        Ok(())
    }

    /// Receives one BDAT chunk of exactly `size` octets (into the message,
    /// or dropped when the session refused it already).
    async fn receive_chunk(&mut self, size: u64, last: bool, discard: bool) -> Result<(), End> {
        let message = if discard {
            self.skip(size).await?;
            None
        } else {
            let mut m = match std::mem::replace(&mut self.phase, Phase::Commands) {
                Phase::Chunking(m) => m,
                Phase::Commands => self.begin_message(Transfer::Chunks),
            };
            m.intake.chunk(size);
            m.receive(self).await?;
            Some(m)
        };
        let ended = Instant::now();
        match (self.session.chunk_done(size, last, &mut self.out), message) {
            (Verdict::Store, Some(m)) => self.finish(m, ended).await,
            (Verdict::MoreChunks, Some(m)) => self.phase = Phase::Chunking(m),
            // Refused: the message so far, if any, is dropped.
            _ => self.phase = Phase::Commands,
        }
        Ok(())
    }

    /// Reads `left` octets and drops them.
    async fn skip(&mut self, mut left: u64) -> Result<(), End> {
        let mut scratch = vec![0u8; left.min(READ_CHUNK as u64) as usize];
        while left > 0 {
            let want = left.min(scratch.len() as u64) as usize;
            left -= self.read_body(&mut scratch[..want]).await? as u64;
        }
        Ok(())
    }

    /// The end-of-message stages (when any is configured), then the
    /// commit; `ended` is when the body's last octet came.
    async fn finish(&mut self, mut m: Message, ended: Instant) {
        if !end_of_message::needed(&self.settings, &self.session) {
            return self.commit(m, None, ended).await;
        }
        let id = m.id().to_string();
        let outcome = end_of_message::run(
            &self.shard,
            &self.settings,
            &self.session,
            self.peer,
            &mut m,
            &id,
        )
        .await;
        match outcome {
            Outcome::Store(spam) => self.commit(m, spam, ended).await,
            Outcome::Refuse { code, status, text } => {
                self.session
                    .message_refused(code, &status, format_args!("{text}"), &mut self.out);
            }
            Outcome::Discard(why) => {
                // Answered as stored; nothing is written but chunk records
                // no commit refers to (readers skip them, recovery cuts them).
                info!(
                    core = self.shard.core(),
                    event = "discarded",
                    queue_id = %id,
                    client = %self.peer.ip(),
                    "discarded {id} from {} (policy DISCARD {why})",
                    self.peer
                );
                self.session.stored(Ok(&id), &mut self.out);
            }
        }
    }

    /// Commits a message the session said to store, and answers.
    async fn commit(&mut self, m: Message, spam: Option<SpamVerdict>, ended: Instant) {
        let origin = Origin {
            peer: self.peer,
            helo: self.session.helo().unwrap_or(""),
            auth: self.session.auth(),
            envelope: self.session.envelope(),
            spam: spam.as_ref(),
        };
        match m.commit(&origin).await {
            Ok((id, total)) => {
                self.messages += 1;
                self.bytes += total;
                self.shard.metrics().messages.add(1);
                self.shard.metrics().bytes.add(total);
                let id = id.to_string();
                self.log_stored(&id, total, ended);
                self.session.stored(Ok(&id), &mut self.out);
            }
            Err(e) => {
                let failure = match e {
                    StoreError::NoSpace(_) => StoreFailure::NoSpace,
                    StoreError::Io(_) | StoreError::Stopped => StoreFailure::Io,
                };
                self.session.stored(Err(failure), &mut self.out);
            }
        }
    }
}

/// How long a message that has no memory pauses before it asks again.
const MEMORY_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

impl BodySource for Connection {
    type Error = End;

    /// Pauses [`MEMORY_PAUSE`] (a timer; the core serves other sessions);
    /// the end of the grace period ends the wait with a 421.
    async fn wait_for_memory(&mut self) -> Result<(), End> {
        self.shard.memory_wait();
        let grace_over = self.shard.grace_over();
        let woke = futures_lite::future::or(
            async {
                glommio::timer::sleep(MEMORY_PAUSE).await;
                false
            },
            async {
                grace_over.wait().await;
                true
            },
        )
        .await;
        if woke {
            return Err(self.say_goodbye(reply::SHUTTING_DOWN, End::Shutdown).await);
        }
        Ok(())
    }

    /// Body octets: first what the command buffer holds, then the socket
    /// (with the data timeout; a shutdown lets a body finish, the end of
    /// the grace period does not). Replies still pending (to the commands
    /// pipelined before a BDAT) go out before the read waits: a client may
    /// wait for them before it sends the chunk (RFC 2920 §3.2).
    async fn read_body(&mut self, room: &mut [u8]) -> Result<usize, End> {
        let buffered = &self.input[self.start..];
        if !buffered.is_empty() {
            let n = buffered.len().min(room.len());
            room[..n].copy_from_slice(&buffered[..n]);
            self.start += n;
            return Ok(n);
        }
        self.flush().await?;
        let timeout = self.settings.config.data_timeout;
        let grace_over = self.shard.grace_over();
        match self
            .stream
            .read_within(room, timeout, Some(grace_over))
            .await
        {
            Ok(Read::Bytes(n)) => Ok(n),
            Ok(Read::Eof) => Err(End::Disconnected),
            Ok(Read::Timeout) => Err(self
                .say_goodbye(reply::DATA_TIMEOUT, End::DataTimeout)
                .await),
            Ok(Read::Shutdown) => Err(self.say_goodbye(reply::SHUTTING_DOWN, End::Shutdown).await),
            Err(e) => Err(End::Error(e)),
        }
    }
}
