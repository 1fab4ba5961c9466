//! SMTP replies: codes, enhanced status codes (RFC 3463 / RFC 2034) and
//! the wire format, single- and multi-line (RFC 5321 §4.2, Appendix E).
//!
//! Why it exists: every reply the server sends goes through here, so the
//! rules about replies (CRLF endings, `250-` continuation lines, no line
//! over 512 octets, an enhanced code on everything but the greeting and
//! the EHLO/HELO answer) hold in one place.

use std::io::Write;

/// The longest reply line we ever send, CRLF included (RFC 5321 §4.5.3.1.5).
pub const MAX_REPLY_LINE: usize = 512;

/// A reply with a fixed text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The enhanced status code, like `"5.5.1"`; empty for none.
    pub status: &'static str,
    /// A human sentence.
    pub text: &'static str,
}

impl Reply {
    /// Appends this reply as one line.
    pub fn write(&self, out: &mut Vec<u8>) {
        write_line(out, self.code, self.status, self.text, true);
    }

    /// Appends this reply with an extra detail after its text, formatted
    /// straight into `out` (no allocation: this is the per-message
    /// `250 ... queued as <id>`).
    /// The reply with `subject: ` before its text, as Postfix puts the
    /// address a refusal is about.
    pub fn write_about(&self, out: &mut Vec<u8>, subject: std::fmt::Arguments<'_>) {
        write_line_fmt(
            out,
            self.code,
            self.status,
            format_args!("{}: {}", subject, self.text),
            true,
        );
    }

    pub fn write_with(&self, out: &mut Vec<u8>, detail: std::fmt::Arguments<'_>) {
        write_line_fmt(
            out,
            self.code,
            self.status,
            format_args!("{} {}", self.text, detail),
            true,
        );
    }
}

/// Appends one reply line `CODE[-| ]STATUS TEXT\r\n`, cut to 512 octets.
pub fn write_line(out: &mut Vec<u8>, code: u16, status: &str, text: &str, last: bool) {
    write_line_fmt(out, code, status, format_args!("{text}"), last);
}

/// [`write_line`] with formatted text.
pub fn write_line_fmt(
    out: &mut Vec<u8>,
    code: u16,
    status: &str,
    text: std::fmt::Arguments<'_>,
    last: bool,
) {
    let start = out.len();
    let sep = if last { ' ' } else { '-' };
    let _ = if status.is_empty() {
        write!(out, "{code}{sep}{text}")
    } else {
        write!(out, "{code}{sep}{status} {text}")
    };
    // Keep the line within limits, cutting at a character boundary.
    let max = start + MAX_REPLY_LINE - 2;
    if out.len() > max {
        let mut cut = max;
        while cut > start && (out[cut] & 0xC0) == 0x80 {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a multi-line reply: every line but the last gets `CODE-`.
pub fn write_multiline(out: &mut Vec<u8>, code: u16, status: &str, lines: &[&str]) {
    for (i, line) in lines.iter().enumerate() {
        write_line(out, code, status, line, i + 1 == lines.len());
    }
}

macro_rules! replies {
    ($($(#[$doc:meta])* $name:ident = $code:literal $status:literal $text:literal;)*) => {
        $($(#[$doc])* pub const $name: Reply = Reply { code: $code, status: $status, text: $text };)*
    };
}

replies! {
    /// QUIT.
    BYE = 221 "2.0.0" "Bye";
    /// NOOP and RSET.
    OK = 250 "2.0.0" "Ok";
    /// MAIL accepted.
    SENDER_OK = 250 "2.1.0" "Sender ok";
    /// RCPT accepted.
    RECIPIENT_OK = 250 "2.1.5" "Recipient ok";
    /// A BDAT chunk that is not the last one.
    CHUNK_OK = 250 "2.0.0" "Chunk received, octets:";
    /// The message is stored durably.
    QUEUED = 250 "2.0.0" "Ok: queued as";
    /// VRFY: we do not verify, but RFC 5321 §3.5.3 prefers 252 to 502.
    CANNOT_VRFY = 252 "2.5.0" "Cannot VRFY user, but will accept message and attempt delivery";
    /// HELP.
    HELP = 214 "2.0.0" "Commands: HELO EHLO STARTTLS MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY; see RFC 5321";
    /// DATA accepted: send the body.
    START_DATA = 354 "" "End data with <CR><LF>.<CR><LF>";
    /// STARTTLS accepted: the TLS handshake comes next (RFC 3207 §4).
    READY_FOR_TLS = 220 "2.0.0" "Ready to start TLS";
    /// Shutting down.
    SHUTTING_DOWN = 421 "4.3.2" "Server shutting down, try again later";
    /// The idle timeout passed.
    IDLE_TIMEOUT = 421 "4.4.2" "Idle timeout, closing connection";
    /// The data phase stalled.
    DATA_TIMEOUT = 421 "4.4.2" "Timeout while receiving data, closing connection";
    /// This core has as many connections as it may hold.
    TOO_MANY_CONNECTIONS = 421 "4.7.0" "Too many connections, try again later";
    /// The client has --client-connection-limit connections open, or
    /// opened more than --client-connection-rate in the last minute.
    CLIENT_TOO_MANY_CONNECTIONS = 421 "4.7.0" "Too many connections from your address, try again later";
    /// --client-connection-rate.
    CLIENT_CONNECTING_TOO_FAST = 421 "4.7.0" "Too many new connections from your address, try again later";
    /// --hard-error-limit reached.
    TOO_MANY_ERRORS = 421 "4.7.0" "Too many errors, closing connection";
    /// --client-message-rate.
    CLIENT_TOO_MANY_MESSAGES = 451 "4.7.1" "Too many messages from your address, try again later";
    /// --client-recipient-rate.
    CLIENT_TOO_MANY_RECIPIENTS = 451 "4.7.1" "Too many recipients from your address, try again later";
    /// A write or sync of the spool failed.
    LOCAL_ERROR = 451 "4.3.0" "Local error in processing, message not stored; try again later";
    /// The spool is out of space.
    INSUFFICIENT_STORAGE = 452 "4.3.1" "Insufficient system storage, message not stored; try again later";
    /// The spool not yet handed on is over --spool-max-bytes.
    SPOOL_FULL = 452 "4.3.1" "Insufficient system storage: the spool is full until it drains, try again later";
    /// Over --max-recipients (RFC 5321 §4.5.3.1.10).
    TOO_MANY_RECIPIENTS = 452 "4.5.3" "Too many recipients";
    /// AUTH succeeded (RFC 4954 §6).
    AUTH_OK = 235 "2.7.0" "Authentication successful";
    /// The credentials could not be checked now (RFC 4954 §6).
    AUTH_UNAVAILABLE = 454 "4.7.0" "Temporary authentication failure, try again later";
    /// Unknown verb.
    UNRECOGNIZED = 500 "5.5.2" "Syntax error, command unrecognized";
    /// A command line over 512 octets.
    LINE_TOO_LONG = 500 "5.5.2" "Line too long (the limit is 512 octets)";
    /// A command ended with LF alone.
    BARE_LF_COMMAND = 500 "5.5.2" "Syntax error: command lines must end with CRLF, not a bare LF";
    /// Bad syntax in arguments.
    SYNTAX_ARGS = 501 "5.5.4" "Syntax error in parameters or arguments:";
    /// Commands we decline to implement (EXPN, SEND, SOML, SAML, TURN).
    NOT_IMPLEMENTED = 502 "5.5.1" "Command not implemented";
    /// STARTTLS on a server without certificates.
    TLS_NOT_OFFERED = 502 "5.5.1" "STARTTLS is not offered here";
    /// Out of order.
    BAD_SEQUENCE = 503 "5.5.1" "Bad sequence of commands:";
    /// AUTH on a listener that does not offer it, or before TLS.
    AUTH_NOT_OFFERED = 503 "5.5.1" "Error: authentication not enabled";
    /// AUTH with a mechanism we do not offer (RFC 4954 §6).
    AUTH_MECHANISM_UNKNOWN = 504 "5.5.4" "Unrecognized authentication type";
    /// The client cancelled the exchange with `*` (RFC 4954 §4).
    AUTH_CANCELLED = 501 "5.7.0" "Authentication aborted";
    /// A response that is not base64 or not what the mechanism expects.
    AUTH_BAD_RESPONSE = 501 "5.5.2" "Cannot decode response:";
    /// A response line over the limit (RFC 4954 §4).
    AUTH_LINE_TOO_LONG = 500 "5.5.6" "Authentication exchange line is too long";
    /// Submission: MAIL before AUTH (RFC 4954 §6).
    AUTH_REQUIRED = 530 "5.7.0" "Authentication required";
    /// Wrong user or password (RFC 4954 §6).
    AUTH_INVALID = 535 "5.7.8" "Authentication credentials invalid";
    /// --require-tls: MAIL before STARTTLS (RFC 3207 §4).
    TLS_REQUIRED = 530 "5.7.0" "Must issue a STARTTLS command first";
    /// The client spoke before the greeting (--greet-pause).
    TALKED_FIRST = 554 "5.5.1" "Protocol error: you talked before the greeting";
    /// Follows TALKED_FIRST: the answer to the command the client sent
    /// too early, so that the close comes after a 421 (RFC 5321 §3.8).
    CLOSING_AFTER_TALKING_FIRST = 421 "4.7.0" "Closing connection: commands sent before the greeting are not processed";
    /// A DNS list scored the client over --dnsbl-threshold; the detail is
    /// `[ip] blocked using ZONE` (as Postfix's postscreen says it).
    BLOCKED = 554 "5.7.1" "Service unavailable; client";
    /// Any command but QUIT after a 554 greeting (RFC 5321 §3.1).
    GREETING_REFUSED = 503 "5.5.1" "Bad sequence of commands: this session was refused at the greeting; only QUIT is accepted";
    /// Not in --recipient-map; written after the address (Postfix's words).
    USER_UNKNOWN = 550 "5.1.1" "Recipient address rejected: User unknown";
    /// A recipient domain we do not accept mail for.
    RELAY_DENIED = 550 "5.7.1" "Relaying denied: we do not accept mail for this domain";
    /// The body had a bare CR or LF (SMTP smuggling defence).
    BARE_NEWLINE = 550 "5.6.0" "Message rejected: the data contains a bare CR or LF; lines must end with CRLF";
    /// A body line over --max-line-length.
    DATA_LINE_TOO_LONG = 550 "5.6.0" "Message rejected: a line of the message is longer than";
    /// SIZE= or the data itself over --max-message-size.
    MESSAGE_TOO_BIG = 552 "5.3.4" "Message size exceeds the fixed limit of";
    /// Non-ASCII address without SMTPUTF8 (RFC 6531 §3.5).
    NEEDS_SMTPUTF8 = 553 "5.6.7" "Non-ASCII address requires the SMTPUTF8 parameter on MAIL";
    /// A MAIL or RCPT parameter we do not know (RFC 5321 §4.1.1.11).
    UNKNOWN_PARAMETER = 555 "5.5.4" "Parameter not recognized or not implemented:";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_has_code_status_text_crlf() {
        let mut out = Vec::new();
        OK.write(&mut out);
        assert_eq!(out, b"250 2.0.0 Ok\r\n");
    }

    #[test]
    fn multiline_uses_dash_until_last() {
        let mut out = Vec::new();
        write_multiline(&mut out, 250, "", &["mx.example", "PIPELINING", "SIZE 10"]);
        assert_eq!(out, b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
    }

    #[test]
    fn detail_follows_the_text_and_is_cut_like_any_reply() {
        let mut out = Vec::new();
        QUEUED.write_with(&mut out, format_args!("{}", "0123abcd"));
        assert_eq!(out, b"250 2.0.0 Ok: queued as 0123abcd\r\n");
        out.clear();
        SYNTAX_ARGS.write_with(&mut out, format_args!("{}", "x".repeat(600)));
        assert_eq!(out.len(), MAX_REPLY_LINE);
        assert!(out.ends_with(b"xx\r\n"));
    }

    #[test]
    fn long_reply_is_cut_to_512_octets() {
        let mut out = Vec::new();
        let text = "é".repeat(400);
        write_line(&mut out, 250, "2.0.0", &text, true);
        assert!(out.len() <= MAX_REPLY_LINE);
        assert!(out.ends_with(b"\r\n"));
        assert!(std::str::from_utf8(&out).is_ok());
    }
}
