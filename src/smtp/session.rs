//! The SMTP session state machine: command lines in, replies and actions
//! out. No I/O of any kind.
//!
//! Why it exists: every ordering rule of RFC 5321 (HELO before MAIL, MAIL
//! before RCPT, RCPT before DATA, RSET anywhere, BDAT bookkeeping per RFC
//! 3030) and every policy decision about a finished body (size, bare
//! newlines, long lines) lives here, so each one is a unit test without a
//! socket. The connection task feeds it lines and body summaries and does
//! what the returned [`Action`] says.

use std::rc::Rc;

use super::command::{self, Body, Command, MailParams, RcptParams, Ret};
use super::path::Mailbox;
use super::reply::{self, write_line};
use crate::auth::sasl::{Credentials, Exchange, Mechanism, SaslError, Step};
use crate::auth::Checked;
use crate::policy::delegation::Decision;
use crate::scan::BodyFlags;

/// What to do with bare CR / bare LF in a DATA body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BareNewlinePolicy {
    /// Reject the message with 550 after its data (the default; defends
    /// against SMTP smuggling).
    #[default]
    Reject,
    /// Store the message as received.
    Accept,
}

impl std::str::FromStr for BareNewlinePolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<BareNewlinePolicy, String> {
        match s {
            "reject" => Ok(BareNewlinePolicy::Reject),
            "accept" => Ok(BareNewlinePolicy::Accept),
            other => Err(format!(
                "{other:?} is not a bare-newline policy: use reject or accept"
            )),
        }
    }
}

/// The per-server settings a session needs. Shared read-only.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our name, in the greeting and the EHLO reply.
    pub hostname: String,
    /// The largest message accepted, in octets.
    pub max_message_size: u64,
    /// Recipients per transaction.
    pub max_recipients: usize,
    /// Lower-case domains we accept mail for; `None` accepts any.
    pub accept_domains: Option<Vec<String>>,
    /// The longest DATA line, in octets with CRLF.
    pub max_line_length: usize,
    /// What to do with bare CR / LF in DATA.
    pub bare_newlines: BareNewlinePolicy,
    /// TLS material is loaded: EHLO offers STARTTLS.
    pub starttls: bool,
    /// MAIL is refused (530) until STARTTLS.
    pub require_tls: bool,
    /// After this many error replies the session gets 421 and ends; 0 is
    /// never.
    pub hard_error_limit: u32,
    /// Each RCPT waits for the policy service ([`Action::CheckRecipient`]).
    pub policy_at_rcpt: bool,
    /// Known recipients (`--recipient-map`); `None` accepts any in an
    /// accepted domain.
    pub recipient_map: Option<std::sync::Arc<crate::policy::RecipientMap>>,
    /// `--dsn`: EHLO offers DSN and its parameters are taken (RFC 3461).
    pub dsn: bool,
}

impl SessionConfig {
    /// Small limits that tests and the fuzzer reach quickly: 1,000-octet
    /// messages, 3 recipients, mail only for `ok.test`, no TLS, no error
    /// limit. Not a default for serving (the server builds its own).
    #[doc(hidden)]
    pub fn small() -> SessionConfig {
        SessionConfig {
            hostname: "mx.test".into(),
            max_message_size: 1000,
            max_recipients: 3,
            accept_domains: Some(vec!["ok.test".into()]),
            max_line_length: 1000,
            bare_newlines: BareNewlinePolicy::Reject,
            starttls: false,
            require_tls: false,
            hard_error_limit: 0,
            policy_at_rcpt: false,
            recipient_map: None,
            dsn: false,
        }
    }
}

/// The client's share of the per-client rates, asked when a MAIL or RCPT
/// is about to be accepted. No I/O: an implementation counts in memory
/// (the server's is a few atomic operations on the shared client table).
pub trait Quota {
    /// One more message from this client now, or `false` (451 4.7.1).
    fn message(&mut self) -> bool;
    /// One more recipient from this client now, or `false` (451 4.7.1).
    fn recipient(&mut self) -> bool;
}

/// What the connection must do after a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Keep reading command lines.
    ReadCommands,
    /// 354 was sent: read a DATA body until `<CRLF>.<CRLF>`.
    ReceiveData,
    /// Read exactly `size` octets of BDAT chunk. With `discard` they are
    /// not part of any message (the reply was already decided: an error).
    ReceiveChunk {
        size: u64,
        last: bool,
        discard: bool,
    },
    /// Send what was written (the 220), discard any input already read,
    /// run the TLS handshake, then call [`Session::tls_started`].
    StartTls,
    /// Send what was written and close the connection.
    Close,
    /// Ask the policy service about [`Session::pending_recipient`], then
    /// call [`Session::recipient_checked`] with its decision.
    CheckRecipient,
    /// The BDAT transaction ended without a message (RSET, HELO, EHLO):
    /// drop the chunks received so far, keep reading command lines.
    Abandon,
    /// Check [`Session::take_credentials`], then call
    /// [`Session::authenticated`] with the result.
    Authenticate,
}

/// The envelope of the transaction in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// The reverse-path; `None` for `<>`.
    pub mail_from: Option<Mailbox>,
    /// Forward-paths in the order given.
    pub rcpt_to: Vec<Mailbox>,
    /// MAIL had SMTPUTF8.
    pub smtputf8: bool,
    /// MAIL's BODY= value.
    pub body: Option<Body>,
    /// MAIL's SIZE= value.
    pub size: Option<u64>,
    /// Header lines (without CRLF) a policy service asked to prepend,
    /// placed right after the `Received:` line.
    pub prepend: Vec<String>,
    /// A policy service said DISCARD (its text): the message is answered
    /// 250 and not stored.
    pub discard: Option<String>,
    /// MAIL's `RET=` (DSN).
    pub ret: Option<Ret>,
    /// MAIL's `ENVID=` (DSN), decoded.
    pub envid: Option<String>,
    /// Each recipient's `NOTIFY=` and `ORCPT=`, in the order of
    /// `rcpt_to`, up to the last recipient that gave any (empty, and not
    /// allocated, when none did).
    pub rcpt_dsn: Vec<RcptParams>,
}

impl Envelope {
    /// The reverse-path without brackets; empty for `<>`.
    pub fn reverse_path(&self) -> String {
        self.sender().to_string()
    }

    /// [`Envelope::reverse_path`] as a `Display`, for a log field (no
    /// string is built unless the event is written).
    pub fn sender(&self) -> Sender<'_> {
        Sender(self.mail_from.as_ref())
    }
}

/// The reverse-path without brackets, or nothing for `<>`.
pub struct Sender<'a>(Option<&'a Mailbox>);

impl std::fmt::Display for Sender<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(m) => m.fmt(f),
            None => Ok(()),
        }
    }
}

/// What to do with a finished body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Store it; then call [`Session::stored`] with the outcome.
    Store,
    /// The reply was written; the message is dropped.
    Rejected,
    /// A BDAT chunk that is not the last: keep it, reply was written.
    MoreChunks,
}

/// Why storing failed, for the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFailure {
    /// No space left (452 4.3.1).
    NoSpace,
    /// Any other I/O error (451 4.3.0).
    Io,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Greeted; no HELO/EHLO yet.
    Connected,
    /// HELO/EHLO done; no transaction.
    Idle,
    /// MAIL accepted; collecting recipients.
    Mail,
    /// Inside DATA (354 sent).
    Data,
    /// BDAT chunks are being received for this transaction.
    Chunking,
    /// A finished body is waiting for the spool's answer.
    Storing,
    /// The greeting was a 554: only QUIT (RFC 5321 §3.1).
    Refused,
    /// QUIT or a fatal error.
    Closed,
}

/// One SMTP session.
pub struct Session {
    config: Rc<SessionConfig>,
    state: State,
    helo: Option<String>,
    esmtp: bool,
    /// The negotiated TLS version and cipher, once STARTTLS completed
    /// (for the trace header); the session's only record of TLS.
    tls: Option<String>,
    /// The spool is over its undrained limit: MAIL gets 452.
    spool_full: bool,
    envelope: Envelope,
    /// Octets of BDAT chunks received in this transaction.
    chunked: u64,
    /// The BDAT chunk being read is refused, for this reason.
    chunk_refusal: Option<ChunkRefusal>,
    /// Error replies (4xx, 5xx) since the session began or last stored a
    /// message.
    errors: u32,
    /// Per-client rates; `None` is unlimited (a trusted client).
    quota: Option<Box<dyn Quota>>,
    /// A recipient (and its DSN parameters) waiting for the policy
    /// service's decision.
    pending: Option<(Mailbox, RcptParams)>,
    /// A submission listener's session: AUTH is offered once TLS is up,
    /// and MAIL needs it.
    submission: bool,
    /// The authenticated user, after a 235.
    auth: Option<String>,
    /// An AUTH exchange waiting for the client's next response line.
    sasl: Option<Exchange>,
    /// Credentials waiting to be checked ([`Action::Authenticate`]).
    credentials: Option<Credentials>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("state", &self.state)
            .field("helo", &self.helo)
            .field("tls", &self.tls)
            .field("errors", &self.errors)
            .field("auth", &self.auth)
            .field("envelope", &self.envelope)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A new session; call [`Session::greet`] first.
    pub fn new(config: Rc<SessionConfig>) -> Self {
        Session {
            config,
            state: State::Connected,
            helo: None,
            esmtp: false,
            tls: None,
            spool_full: false,
            envelope: Envelope::default(),
            chunked: 0,
            chunk_refusal: None,
            errors: 0,
            quota: None,
            pending: None,
            submission: false,
            auth: None,
            sasl: None,
            credentials: None,
        }
    }

    /// Makes this a submission session (RFC 6409): AUTH is offered once
    /// TLS is up, MAIL needs TLS and AUTH first, and an authenticated
    /// client may send to any domain.
    pub fn set_submission(&mut self) {
        self.submission = true;
    }

    /// The authenticated user, if any.
    pub fn auth(&self) -> Option<&str> {
        self.auth.as_deref()
    }

    /// AUTH is offered now: on submission, over TLS, not yet done.
    fn offers_auth(&self) -> bool {
        self.submission && self.tls.is_some()
    }

    /// Gives the session its client's rates (untrusted clients only).
    pub fn set_quota(&mut self, quota: Box<dyn Quota>) {
        self.quota = Some(quota);
    }

    /// Writes the 220 greeting.
    pub fn greet(&self, out: &mut Vec<u8>) {
        let text = format!("{} ESMTP sluice ready", self.config.hostname);
        write_line(out, 220, "", &text, true);
    }

    /// Writes a 554 greeting instead (`reply` with `detail`): from now on
    /// every command but QUIT gets 503 5.5.1, and QUIT 221 (RFC 5321
    /// §3.1).
    pub fn refuse(
        &mut self,
        reply: reply::Reply,
        detail: std::fmt::Arguments<'_>,
        out: &mut Vec<u8>,
    ) {
        debug_assert_eq!(reply.code, 554);
        reply.write_with(out, detail);
        self.state = State::Refused;
    }

    /// Error replies since the start or the last stored message.
    pub fn errors(&self) -> u32 {
        self.errors
    }

    /// Counts the reply written from `out[from..]` if it is an error; at
    /// the hard limit adds the 421 and closes the session.
    fn count_error(&mut self, out: &mut Vec<u8>, from: usize) -> bool {
        if !matches!(out.get(from), Some(b'4' | b'5')) || self.state == State::Closed {
            return false;
        }
        self.errors += 1;
        let limit = self.config.hard_error_limit;
        if limit > 0 && self.errors >= limit {
            reply::TOO_MANY_ERRORS.write(out);
            self.state = State::Closed;
            return true;
        }
        false
    }

    /// The HELO/EHLO name, once given.
    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    /// The TLS handshake finished (`description` names the version and
    /// cipher): per RFC 3207 §4.2 everything learnt before it is
    /// forgotten, and the client must say EHLO again.
    pub fn tls_started(&mut self, description: String) {
        *self = Session {
            tls: Some(description),
            // What the client is allowed and what it did wrong stay.
            quota: self.quota.take(),
            errors: self.errors,
            submission: self.submission,
            ..Session::new(self.config.clone())
        };
    }

    /// Tells the session whether the spool is over its undrained limit;
    /// while it is, new transactions are refused with 452 4.3.1.
    pub fn set_spool_full(&mut self, full: bool) {
        self.spool_full = full;
    }

    /// The TLS version and cipher, when the session runs over TLS.
    pub fn tls(&self) -> Option<&str> {
        self.tls.as_deref()
    }

    /// Whether the client said EHLO (for `with ESMTP`).
    pub fn is_esmtp(&self) -> bool {
        self.esmtp
    }

    /// The transaction's envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// Whether a transaction (MAIL given) is in progress.
    pub fn in_transaction(&self) -> bool {
        matches!(
            self.state,
            State::Mail | State::Data | State::Chunking | State::Storing
        )
    }

    /// The session is over.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// A command line longer than 512 octets arrived (and was skipped).
    pub fn line_too_long(&mut self, out: &mut Vec<u8>) -> Action {
        let from = out.len();
        if self.sasl.take().is_some() {
            reply::AUTH_LINE_TOO_LONG.write(out);
        } else {
            reply::LINE_TOO_LONG.write(out);
        }
        self.after_reply(Action::ReadCommands, out, from)
    }

    /// Handles one command line (without its line ending).
    pub fn command(&mut self, line: &[u8], bare_lf: bool, out: &mut Vec<u8>) -> Action {
        let from = out.len();
        let action = self.answer(line, bare_lf, out);
        self.after_reply(action, out, from)
    }

    /// `action`, unless the reply at `out[from..]` was the last error the
    /// hard limit allows: then the session closes.
    fn after_reply(&mut self, action: Action, out: &mut Vec<u8>, from: usize) -> Action {
        if self.count_error(out, from) {
            Action::Close
        } else {
            action
        }
    }

    fn answer(&mut self, line: &[u8], bare_lf: bool, out: &mut Vec<u8>) -> Action {
        debug_assert!(matches!(
            self.state,
            State::Connected | State::Idle | State::Mail | State::Chunking | State::Refused
        ));
        if self.state == State::Refused {
            return self.refused(line, out);
        }
        if let Some(exchange) = self.sasl.take() {
            return self.sasl_response(exchange, line, out);
        }
        if bare_lf && self.config.bare_newlines == BareNewlinePolicy::Reject {
            reply::BARE_LF_COMMAND.write(out);
            return Action::ReadCommands;
        }
        let cmd = match command::parse(line) {
            Ok(cmd) => cmd,
            Err(e) => {
                // Even a BDAT we cannot parse only gets its 501: RFC 5321
                // §3.8 lets a server close only after QUIT or a 421, and
                // Postfix keeps the session too. A chunk the client sends
                // anyway arrives as lines, and each is refused.
                e.write_reply(out);
                return Action::ReadCommands;
            }
        };
        let chunking = self.state == State::Chunking;
        if chunking && !allowed_while_chunking(&cmd) {
            reply::BAD_SEQUENCE.write_with(
                out,
                format_args!("only BDAT, RSET, EHLO, NOOP or QUIT may follow BDAT"),
            );
            return Action::ReadCommands;
        }
        let action = self.dispatch(cmd, out);
        if chunking && action == Action::ReadCommands && !self.in_transaction() {
            // RSET, HELO or EHLO ended the BDAT transaction.
            return Action::Abandon;
        }
        action
    }

    fn dispatch(&mut self, cmd: Command, out: &mut Vec<u8>) -> Action {
        match cmd {
            Command::Helo(name) => self.hello(name, false, out),
            Command::Ehlo(name) => self.hello(name, true, out),
            Command::Mail(from, params) => self.mail(from, params, out),
            Command::Rcpt(to, params) => self.rcpt(to, params, out),
            Command::Data => self.data(out),
            Command::Bdat { size, last } => self.bdat(size, last, out),
            Command::Rset => {
                self.reset_transaction();
                reply::OK.write(out);
                Action::ReadCommands
            }
            Command::Noop => {
                reply::OK.write(out);
                Action::ReadCommands
            }
            Command::Quit => {
                reply::BYE.write(out);
                self.close()
            }
            Command::Help => {
                reply::HELP.write(out);
                Action::ReadCommands
            }
            Command::StartTls => self.starttls(out),
            Command::Auth { mechanism, initial } => self.auth_command(&mechanism, initial, out),
            Command::Vrfy => {
                reply::CANNOT_VRFY.write(out);
                Action::ReadCommands
            }
            Command::NotImplemented => {
                reply::NOT_IMPLEMENTED.write(out);
                Action::ReadCommands
            }
        }
    }

    /// After a 554 greeting: QUIT, or 503.
    fn refused(&mut self, line: &[u8], out: &mut Vec<u8>) -> Action {
        if let Ok(Command::Quit) = command::parse(line) {
            reply::BYE.write(out);
            return self.close();
        }
        reply::GREETING_REFUSED.write(out);
        Action::ReadCommands
    }

    fn close(&mut self) -> Action {
        self.state = State::Closed;
        Action::Close
    }

    fn reset_transaction(&mut self) {
        self.envelope = Envelope::default();
        self.pending = None;
        self.chunked = 0;
        if !matches!(
            self.state,
            State::Connected | State::Closed | State::Refused
        ) {
            self.state = State::Idle;
        }
    }

    fn hello(&mut self, name: String, esmtp: bool, out: &mut Vec<u8>) -> Action {
        self.reset_transaction();
        self.state = State::Idle;
        self.helo = Some(name);
        self.esmtp = esmtp;
        let greeting = format!(
            "{} greets {}",
            self.config.hostname,
            self.helo.as_deref().unwrap_or("")
        );
        if esmtp {
            let size = format!("SIZE {}", self.config.max_message_size);
            let starttls = self.config.starttls && self.tls.is_none();
            let offered = [
                (self.config.dsn, "DSN"),
                (starttls, "STARTTLS"),
                (self.offers_auth(), "AUTH PLAIN LOGIN"),
            ];
            write_multiline_ehlo(out, &greeting, &size, offered);
        } else {
            write_line(out, 250, "", &greeting, true);
        }
        Action::ReadCommands
    }

    fn starttls(&mut self, out: &mut Vec<u8>) -> Action {
        if !self.config.starttls {
            reply::TLS_NOT_OFFERED.write(out);
        } else if self.tls.is_some() {
            reply::BAD_SEQUENCE.write_with(out, format_args!("TLS is already active"));
        } else if self.in_transaction() {
            reply::BAD_SEQUENCE.write_with(
                out,
                format_args!("a mail transaction is in progress; RSET first"),
            );
        } else {
            reply::READY_FOR_TLS.write(out);
            return Action::StartTls;
        }
        Action::ReadCommands
    }

    /// `AUTH mechanism [initial]` (RFC 4954 §4). Once per session at
    /// most: kept out of line so the per-message commands stay compact.
    #[cold]
    #[inline(never)]
    fn auth_command(
        &mut self,
        mechanism: &str,
        initial: Option<String>,
        out: &mut Vec<u8>,
    ) -> Action {
        if !self.offers_auth() {
            reply::AUTH_NOT_OFFERED.write(out);
            return Action::ReadCommands;
        }
        let why = match self.state {
            State::Connected => Some("say EHLO first"),
            State::Idle if self.auth.is_some() => Some("already authenticated"),
            State::Idle => None,
            _ => Some("AUTH is not allowed during a mail transaction"),
        };
        if let Some(why) = why {
            reply::BAD_SEQUENCE.write_with(out, format_args!("{why}"));
            return Action::ReadCommands;
        }
        let Some(mechanism) = Mechanism::named(mechanism) else {
            reply::AUTH_MECHANISM_UNKNOWN.write(out);
            return Action::ReadCommands;
        };
        let (exchange, step) = Exchange::start(mechanism, initial.as_deref());
        self.sasl_step(exchange, step, out)
    }

    /// A response line inside an AUTH exchange.
    #[cold]
    #[inline(never)]
    fn sasl_response(&mut self, mut exchange: Exchange, line: &[u8], out: &mut Vec<u8>) -> Action {
        let step = match std::str::from_utf8(line) {
            Ok(text) => exchange.respond(text),
            Err(_) => Step::Failed(SaslError::NotBase64),
        };
        self.sasl_step(exchange, step, out)
    }

    fn sasl_step(&mut self, exchange: Exchange, step: Step, out: &mut Vec<u8>) -> Action {
        match step {
            Step::Challenge(text) => {
                write_line(out, 334, "", text, true);
                self.sasl = Some(exchange);
                Action::ReadCommands
            }
            Step::Done(credentials) => {
                self.credentials = Some(credentials);
                Action::Authenticate
            }
            Step::Failed(SaslError::Cancelled) => {
                reply::AUTH_CANCELLED.write(out);
                Action::ReadCommands
            }
            Step::Failed(SaslError::NotBase64) => {
                reply::AUTH_BAD_RESPONSE.write_with(out, format_args!("not base64"));
                Action::ReadCommands
            }
            Step::Failed(SaslError::Malformed(why)) => {
                reply::AUTH_BAD_RESPONSE.write_with(out, format_args!("{why}"));
                Action::ReadCommands
            }
        }
    }

    /// The credentials [`Action::Authenticate`] asks to check.
    pub fn take_credentials(&mut self) -> Option<Credentials> {
        self.credentials.take()
    }

    /// The checked credentials: 235, or 535 (an error, counted for the
    /// error limits: password guessing is tarpitted and cut off), or 454.
    pub fn authenticated(&mut self, checked: Checked, out: &mut Vec<u8>) -> Action {
        let from = out.len();
        match checked {
            Checked::Valid(user) => {
                self.auth = Some(user);
                reply::AUTH_OK.write(out);
            }
            Checked::Invalid => reply::AUTH_INVALID.write(out),
            Checked::Unavailable(_) => reply::AUTH_UNAVAILABLE.write(out),
        }
        self.after_reply(Action::ReadCommands, out, from)
    }

    fn mail(&mut self, from: Option<Mailbox>, params: MailParams, out: &mut Vec<u8>) -> Action {
        let needs_tls = self.config.require_tls || self.submission;
        if needs_tls && self.tls.is_none() && self.state != State::Connected {
            reply::TLS_REQUIRED.write(out);
            return Action::ReadCommands;
        }
        if self.submission && self.auth.is_none() && self.state != State::Connected {
            reply::AUTH_REQUIRED.write(out);
            return Action::ReadCommands;
        }
        if params.auth.is_some() && !self.submission {
            reply::UNKNOWN_PARAMETER.write_with(out, format_args!("AUTH (not offered here)"));
            return Action::ReadCommands;
        }
        if (params.ret.is_some() || params.envid.is_some()) && !self.config.dsn {
            reply::UNKNOWN_PARAMETER
                .write_with(out, format_args!("RET/ENVID (DSN is not offered here)"));
            return Action::ReadCommands;
        }
        match self.state {
            State::Connected => {
                reply::BAD_SEQUENCE.write_with(out, format_args!("say HELO or EHLO first"));
                return Action::ReadCommands;
            }
            State::Mail => {
                reply::BAD_SEQUENCE.write_with(
                    out,
                    format_args!("a transaction is already in progress; RSET first"),
                );
                return Action::ReadCommands;
            }
            _ => {}
        }
        if self.spool_full {
            reply::SPOOL_FULL.write(out);
            return Action::ReadCommands;
        }
        if !self.esmtp && params != MailParams::default() {
            reply::UNKNOWN_PARAMETER.write_with(out, format_args!("MAIL parameters need EHLO"));
            return Action::ReadCommands;
        }
        if let Some(size) = params.size.filter(|&s| s > self.config.max_message_size) {
            reply::MESSAGE_TOO_BIG.write_with(
                out,
                format_args!("{} octets (SIZE={size})", self.config.max_message_size),
            );
            return Action::ReadCommands;
        }
        if from.as_ref().is_some_and(Mailbox::is_utf8) && !params.smtputf8 {
            reply::NEEDS_SMTPUTF8.write(out);
            return Action::ReadCommands;
        }
        if !self.quota.as_mut().is_none_or(|q| q.message()) {
            reply::CLIENT_TOO_MANY_MESSAGES.write(out);
            return Action::ReadCommands;
        }
        self.envelope = Envelope {
            mail_from: from,
            rcpt_to: Vec::new(),
            smtputf8: params.smtputf8,
            body: params.body,
            size: params.size,
            ret: params.ret,
            envid: params.envid,
            ..Envelope::default()
        };
        self.state = State::Mail;
        reply::SENDER_OK.write(out);
        Action::ReadCommands
    }

    fn rcpt(&mut self, to: Mailbox, params: RcptParams, out: &mut Vec<u8>) -> Action {
        if !params.is_empty() && !self.config.dsn {
            reply::UNKNOWN_PARAMETER
                .write_with(out, format_args!("NOTIFY/ORCPT (DSN is not offered here)"));
            return Action::ReadCommands;
        }
        if self.state != State::Mail {
            reply::BAD_SEQUENCE.write_with(out, format_args!("need MAIL before RCPT"));
            return Action::ReadCommands;
        }
        if self.envelope.rcpt_to.len() >= self.config.max_recipients {
            reply::TOO_MANY_RECIPIENTS.write(out);
            return Action::ReadCommands;
        }
        if to.is_utf8() && !self.envelope.smtputf8 {
            reply::NEEDS_SMTPUTF8.write(out);
            return Action::ReadCommands;
        }
        // An authenticated client submits: any domain, any recipient
        // (Postfix's permit_sasl_authenticated).
        let submitted = self.auth.is_some();
        if !submitted && !self.accepts(&to) {
            reply::RELAY_DENIED.write(out);
            return Action::ReadCommands;
        }
        if !submitted && !self.known(&to) {
            reply::USER_UNKNOWN.write_about(out, format_args!("<{to}>"));
            return Action::ReadCommands;
        }
        if self.config.policy_at_rcpt {
            self.pending = Some((to, params));
            return Action::CheckRecipient;
        }
        self.admit(to, params, out)
    }

    /// The recipient the policy service is being asked about.
    pub fn pending_recipient(&self) -> Option<&Mailbox> {
        self.pending.as_ref().map(|(to, _)| to)
    }

    /// The policy service decided about the pending recipient (a failure
    /// already turned into its `--policy-default`): the RCPT's reply.
    pub fn recipient_checked(&mut self, decision: &Decision, out: &mut Vec<u8>) -> Action {
        let Some((to, params)) = self.pending.take() else {
            return Action::ReadCommands;
        };
        let from = out.len();
        let action = match decision {
            Decision::Refuse(r) => {
                reply::write_line_fmt(
                    out,
                    r.code,
                    &r.status,
                    format_args!("<{to}>: Recipient address rejected: {}", r.text),
                    true,
                );
                Action::ReadCommands
            }
            Decision::Prepend(header) => {
                self.envelope.prepend.push(header.clone());
                self.admit(to, params, out)
            }
            Decision::Discard(why) => {
                self.envelope.discard = Some(why.clone());
                self.admit(to, params, out)
            }
            Decision::Accept | Decision::Warn(_) | Decision::Unsupported(_) => {
                self.admit(to, params, out)
            }
        };
        self.after_reply(action, out, from)
    }

    /// The last checks of a recipient every other stage accepted.
    fn admit(&mut self, to: Mailbox, params: RcptParams, out: &mut Vec<u8>) -> Action {
        if !self.quota.as_mut().is_none_or(|q| q.recipient()) {
            reply::CLIENT_TOO_MANY_RECIPIENTS.write(out);
            return Action::ReadCommands;
        }
        self.envelope.rcpt_to.push(to);
        if !params.is_empty() {
            let before = self.envelope.rcpt_to.len() - 1;
            self.envelope
                .rcpt_dsn
                .resize_with(before, RcptParams::default);
            self.envelope.rcpt_dsn.push(params);
        }
        reply::RECIPIENT_OK.write(out);
        Action::ReadCommands
    }

    /// An end-of-message stage (the policy service, rspamd) refused the
    /// finished message before it was stored: this reply, and the
    /// transaction ends.
    pub fn message_refused(
        &mut self,
        code: u16,
        status: &str,
        text: std::fmt::Arguments<'_>,
        out: &mut Vec<u8>,
    ) {
        debug_assert_eq!(self.state, State::Storing);
        let from = out.len();
        reply::write_line_fmt(out, code, status, text, true);
        self.reset_transaction();
        self.count_error(out, from);
    }

    /// `--recipient-map`: the recipient exists (bare `<Postmaster>` always
    /// does, RFC 5321 §4.5.1).
    fn known(&self, to: &Mailbox) -> bool {
        match &self.config.recipient_map {
            Some(map) if !to.domain.is_empty() => map.accepts(&to.local, &to.domain),
            _ => true,
        }
    }

    fn accepts(&self, to: &Mailbox) -> bool {
        // RFC 5321 §4.5.1: <Postmaster> must always be accepted.
        if to.domain.is_empty() {
            return true;
        }
        match &self.config.accept_domains {
            None => true,
            Some(domains) => domains.iter().any(|d| d.eq_ignore_ascii_case(&to.domain)),
        }
    }

    fn data(&mut self, out: &mut Vec<u8>) -> Action {
        if self.state != State::Mail {
            let why = match self.state {
                State::Chunking => "DATA cannot follow BDAT",
                _ => "need MAIL and RCPT before DATA",
            };
            reply::BAD_SEQUENCE.write_with(out, format_args!("{why}"));
            return Action::ReadCommands;
        }
        if self.envelope.rcpt_to.is_empty() {
            reply::BAD_SEQUENCE.write_with(out, format_args!("no valid recipients"));
            return Action::ReadCommands;
        }
        self.state = State::Data;
        reply::START_DATA.write(out);
        Action::ReceiveData
    }

    fn bdat(&mut self, size: u64, last: bool, out: &mut Vec<u8>) -> Action {
        let _ = out;
        let refusal = match self.state {
            State::Mail if self.envelope.rcpt_to.is_empty() => Some(ChunkRefusal::NoRecipients),
            State::Mail | State::Chunking => {
                let total = self.chunked.saturating_add(size);
                (total > self.config.max_message_size).then_some(ChunkRefusal::TooBig)
            }
            _ => Some(ChunkRefusal::NoTransaction),
        };
        // Refused or not, the chunk's octets are on their way: they are
        // read (and dropped) before the answer (RFC 3030 §2).
        self.chunk_refusal = refusal;
        if refusal.is_none() {
            self.state = State::Chunking;
        }
        Action::ReceiveChunk {
            size,
            last,
            discard: refusal.is_some(),
        }
    }

    /// A BDAT chunk of `size` octets has been read (and kept, unless the
    /// action said `discard`).
    pub fn chunk_done(&mut self, size: u64, last: bool, out: &mut Vec<u8>) -> Verdict {
        let from = out.len();
        let verdict = self.chunk_verdict(size, last, out);
        self.count_error(out, from);
        verdict
    }

    fn chunk_verdict(&mut self, size: u64, last: bool, out: &mut Vec<u8>) -> Verdict {
        if let Some(refusal) = self.chunk_refusal.take() {
            match refusal {
                ChunkRefusal::NoRecipients => {
                    reply::BAD_SEQUENCE.write_with(out, format_args!("no valid recipients"))
                }
                ChunkRefusal::NoTransaction => reply::BAD_SEQUENCE
                    .write_with(out, format_args!("need MAIL and RCPT before BDAT")),
                ChunkRefusal::TooBig => {
                    self.write_too_big(out);
                    self.reset_transaction();
                }
            }
            return Verdict::Rejected;
        }
        self.chunked += size;
        if last {
            self.state = State::Storing;
            Verdict::Store
        } else {
            reply::CHUNK_OK.write_with(out, format_args!("{size}"));
            Verdict::MoreChunks
        }
    }

    /// A DATA body ended: `size` octets after unstuffing (counting any the
    /// connection dropped for being over the limit), with `flags`.
    pub fn data_done(&mut self, size: u64, flags: BodyFlags, out: &mut Vec<u8>) -> Verdict {
        debug_assert_eq!(self.state, State::Data);
        let from = out.len();
        let refused = if size > self.config.max_message_size {
            self.write_too_big(out);
            true
        } else if (flags.bare_cr || flags.bare_lf)
            && self.config.bare_newlines == BareNewlinePolicy::Reject
        {
            reply::BARE_NEWLINE.write(out);
            true
        } else if flags.long_line {
            reply::DATA_LINE_TOO_LONG
                .write_with(out, format_args!("{} octets", self.config.max_line_length));
            true
        } else {
            false
        };
        if refused {
            self.reset_transaction();
            self.count_error(out, from);
            Verdict::Rejected
        } else {
            self.state = State::Storing;
            Verdict::Store
        }
    }

    /// The spool's answer for the message handed over after
    /// [`Verdict::Store`]: its queue id, or why it was not stored.
    pub fn stored(&mut self, result: Result<&str, StoreFailure>, out: &mut Vec<u8>) {
        debug_assert_eq!(self.state, State::Storing);
        let from = out.len();
        match result {
            Ok(id) => {
                reply::QUEUED.write_with(out, format_args!("{id}"));
                // An accepted message forgives (Postfix's error counts too).
                self.errors = 0;
            }
            Err(StoreFailure::NoSpace) => reply::INSUFFICIENT_STORAGE.write(out),
            Err(StoreFailure::Io) => reply::LOCAL_ERROR.write(out),
        }
        self.reset_transaction();
        self.count_error(out, from);
    }

    fn write_too_big(&self, out: &mut Vec<u8>) {
        reply::MESSAGE_TOO_BIG
            .write_with(out, format_args!("{} octets", self.config.max_message_size));
    }
}

/// Why a BDAT chunk is read only to be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkRefusal {
    NoRecipients,
    NoTransaction,
    TooBig,
}

/// Commands that may come between BDAT chunks (RFC 3030 §2).
fn allowed_while_chunking(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Bdat { .. }
            | Command::Rset
            | Command::Quit
            | Command::Noop
            | Command::Helo(_)
            | Command::Ehlo(_)
    )
}

/// The EHLO reply: greeting line, then one line per extension.
fn write_multiline_ehlo(
    out: &mut Vec<u8>,
    greeting: &str,
    size: &str,
    optional: [(bool, &str); 3],
) {
    let always = [
        greeting,
        "PIPELINING",
        size,
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
    ];
    let mut lines = [""; 10];
    lines[..always.len()].copy_from_slice(&always);
    let mut n = always.len();
    for (offered, line) in optional {
        if offered {
            lines[n] = line;
            n += 1;
        }
    }
    reply::write_multiline(out, 250, "", &lines[..n]);
}
