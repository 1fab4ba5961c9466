//! The Postfix policy delegation protocol (SMTPD_POLICY_README), without
//! I/O: the request sluice sends and what an answer means.
//!
//! Why it exists: postgrey, postfwd, policyd-spf and many in-house tools
//! speak this protocol, so an operator can keep them. A request is
//! `name=value` lines and an empty line; the answer is `action=…` (other
//! attributes ignored) and an empty line. Actions are applied as Postfix's
//! access(5) does; the few Postfix features sluice does not have (HOLD,
//! REDIRECT, FILTER, BCC) are reported so the caller can log them and go
//! on.

/// The longest answer read; a service that sends more is answering
/// nonsense.
pub const MAX_ANSWER: usize = 16 << 10;

/// Where in the transaction a request is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Rcpt,
    EndOfMessage,
}

impl Stage {
    /// `protocol_state`.
    pub fn protocol_state(self) -> &'static str {
        match self {
            Stage::Rcpt => "RCPT",
            Stage::EndOfMessage => "END-OF-MESSAGE",
        }
    }
}

/// What sluice knows about the transaction, for one request.
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    pub esmtp: bool,
    pub helo: &'a str,
    pub queue_id: &'a str,
    pub sender: &'a str,
    pub recipient: &'a str,
    pub recipient_count: usize,
    pub client_address: String,
    pub client_port: u16,
    pub size: u64,
    /// TLS version and cipher, when TLS is up.
    pub encryption: Option<(&'a str, &'a str)>,
    pub sasl_username: &'a str,
    /// Unique per transaction (Postfix's `instance`).
    pub instance: &'a str,
}

/// Writes the request for `facts` at `stage` into `out`.
pub fn write_request(out: &mut Vec<u8>, stage: Stage, facts: &Facts<'_>) {
    use std::io::Write as _;
    let mut attr = |name: &str, value: &dyn std::fmt::Display| {
        let start = out.len();
        let _ = write!(out, "{name}={value}");
        // A value never breaks the framing: line ends become spaces.
        for b in &mut out[start..] {
            if matches!(*b, b'\n' | b'\r') {
                *b = b' ';
            }
        }
        out.push(b'\n');
    };
    attr("request", &"smtpd_access_policy");
    attr("protocol_state", &stage.protocol_state());
    attr("protocol_name", &if facts.esmtp { "ESMTP" } else { "SMTP" });
    attr("client_address", &facts.client_address);
    attr("client_port", &facts.client_port);
    // sluice does not look client names up: Postfix says "unknown" then
    // too (smtpd_peername_lookup = no).
    attr("client_name", &"unknown");
    attr("reverse_client_name", &"unknown");
    attr("helo_name", &facts.helo);
    attr("sender", &facts.sender);
    attr("recipient", &facts.recipient);
    attr("recipient_count", &facts.recipient_count);
    attr("queue_id", &facts.queue_id);
    attr("instance", &facts.instance);
    attr("size", &facts.size);
    let (protocol, cipher) = facts.encryption.unwrap_or(("", ""));
    attr("encryption_protocol", &protocol);
    attr("encryption_cipher", &cipher);
    attr("sasl_method", &"");
    attr("sasl_username", &facts.sasl_username);
    attr("sasl_sender", &"");
    out.push(b'\n');
}

/// The end of a complete answer in `buf`: the offset after its empty line.
pub fn answer_end(buf: &[u8]) -> Option<usize> {
    if buf.starts_with(b"\n") {
        return Some(1);
    }
    memchr::memmem::find(buf, b"\n\n").map(|at| at + 2)
}

/// An SMTP reply a policy decided on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyReply {
    pub code: u16,
    pub status: String,
    pub text: String,
}

/// What an answer means for the transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// OK, DUNNO, DEFER_IF_REJECT (nothing after the policy rejects),
    /// and actions sluice does not have (see [`Decision::Unsupported`]).
    Accept,
    /// REJECT, DEFER, DEFER_IF_PERMIT, `4NN`/`5NN` replies.
    Refuse(PolicyReply),
    /// PREPEND: go on, with this header line (no CRLF) in the message.
    Prepend(String),
    /// WARN: go on, and log this.
    Warn(String),
    /// DISCARD: answer 250, store nothing.
    Discard(String),
    /// HOLD, REDIRECT, FILTER, BCC, …: logged, then taken as DUNNO.
    Unsupported(String),
}

/// Why an answer could not be used (the `--policy-default` applies).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("the answer has no action= line")]
    NoAction,
    #[error("the answer is not text")]
    NotText,
    #[error("unknown action {0:?}")]
    UnknownAction(String),
}

/// Reads a complete answer (up to its empty line).
pub fn parse_answer(answer: &[u8]) -> Result<Decision, AnswerError> {
    let text = std::str::from_utf8(answer).map_err(|_| AnswerError::NotText)?;
    let action = text
        .lines()
        .find_map(|l| l.strip_prefix("action="))
        .ok_or(AnswerError::NoAction)?;
    decide(action.trim())
}

/// What one `action=` value means (access(5) semantics).
pub fn decide(action: &str) -> Result<Decision, AnswerError> {
    let (word, rest) = match action.split_once(|c: char| c.is_ascii_whitespace()) {
        Some((w, r)) => (w, r.trim()),
        None => (action, ""),
    };
    let text = |fallback: &str| {
        if rest.is_empty() {
            fallback.to_string()
        } else {
            rest.to_string()
        }
    };
    let refuse = |code: u16, status: &str| {
        Decision::Refuse(PolicyReply {
            code,
            status: status.to_string(),
            text: text("Access denied"),
        })
    };
    Ok(match word.to_ascii_uppercase().as_str() {
        "OK" | "DUNNO" | "DEFER_IF_REJECT" => Decision::Accept,
        "REJECT" => refuse(550, "5.7.1"),
        "DEFER" | "DEFER_IF_PERMIT" => refuse(450, "4.7.1"),
        "PREPEND" if valid_header(rest) => Decision::Prepend(rest.to_string()),
        "PREPEND" => return Err(AnswerError::UnknownAction(action.to_string())),
        "WARN" => Decision::Warn(rest.to_string()),
        "DISCARD" => Decision::Discard(rest.to_string()),
        "HOLD" | "REDIRECT" | "FILTER" | "BCC" | "INFO" | "FILTER_ANY" => {
            Decision::Unsupported(word.to_ascii_uppercase())
        }
        _ => match numeric_reply(word, rest) {
            Some(reply) => Decision::Refuse(reply),
            None => return Err(AnswerError::UnknownAction(action.to_string())),
        },
    })
}

/// `4NN [x.y.z] text` or `5NN [x.y.z] text`; the status defaults to
/// 4.7.1 / 5.7.1 and must be of the code's class.
fn numeric_reply(word: &str, rest: &str) -> Option<PolicyReply> {
    let code: u16 = word.parse().ok().filter(|c| (400..600).contains(c))?;
    if word.len() != 3 {
        return None;
    }
    let class = char::from(word.as_bytes()[0]);
    let (status, text) = match rest.split_once(' ') {
        Some((s, t)) if is_status(s, class) => (s.to_string(), t.trim().to_string()),
        None if is_status(rest, class) => (rest.to_string(), String::new()),
        _ => (format!("{class}.7.1"), rest.to_string()),
    };
    let text = if text.is_empty() {
        "Access denied".to_string()
    } else {
        text
    };
    Some(PolicyReply { code, status, text })
}

/// An RFC 3463 status code `class.subject.detail` of `class`.
fn is_status(s: &str, class: char) -> bool {
    let mut parts = s.split('.');
    let ok = |p: Option<&str>, max: usize| {
        p.is_some_and(|p| !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit()))
    };
    s.starts_with(class)
        && ok(parts.next(), 1)
        && ok(parts.next(), 3)
        && ok(parts.next(), 3)
        && parts.next().is_none()
}

/// `Name: value`: a field name of printable ASCII without a colon, then a
/// colon (RFC 5322 §2.2).
fn valid_header(line: &str) -> bool {
    match line.split_once(':') {
        Some((name, _)) => {
            !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, status: &str, text: &str) -> Decision {
        Decision::Refuse(PolicyReply {
            code,
            status: status.into(),
            text: text.into(),
        })
    }

    #[test]
    fn actions_mean_what_they_mean_to_postfix() {
        for (action, want) in [
            ("OK", Decision::Accept),
            ("dunno", Decision::Accept),
            ("DEFER_IF_REJECT maybe later", Decision::Accept),
            ("REJECT", reply(550, "5.7.1", "Access denied")),
            ("REJECT go away", reply(550, "5.7.1", "go away")),
            ("DEFER", reply(450, "4.7.1", "Access denied")),
            (
                "DEFER_IF_PERMIT Greylisted, see x",
                reply(450, "4.7.1", "Greylisted, see x"),
            ),
            (
                "defer_if_permit Greylisted",
                reply(450, "4.7.1", "Greylisted"),
            ),
            ("450 4.2.0 Greylisted", reply(450, "4.2.0", "Greylisted")),
            ("554 no thanks", reply(554, "5.7.1", "no thanks")),
            ("421", reply(421, "4.7.1", "Access denied")),
            // A status of the wrong class is text, with the default status.
            ("550 4.2.0 odd", reply(550, "5.7.1", "4.2.0 odd")),
            (
                "PREPEND X-Greylist: delayed 300 seconds",
                Decision::Prepend("X-Greylist: delayed 300 seconds".into()),
            ),
            ("WARN looks odd", Decision::Warn("looks odd".into())),
            ("DISCARD spam trap", Decision::Discard("spam trap".into())),
            ("HOLD", Decision::Unsupported("HOLD".into())),
            ("redirect a@b", Decision::Unsupported("REDIRECT".into())),
        ] {
            assert_eq!(decide(action), Ok(want), "{action}");
        }
    }

    #[test]
    fn nonsense_is_an_error_for_the_default_to_handle() {
        for action in [
            "",
            "MAYBE",
            "PREPEND no colon",
            "PREPEND : empty name",
            "299 ok",
            "6000 x",
            "45 x",
        ] {
            assert!(decide(action).is_err(), "{action:?}");
        }
        assert_eq!(parse_answer(b"hello=1\n\n"), Err(AnswerError::NoAction));
        assert_eq!(parse_answer(b"action=\xff\n\n"), Err(AnswerError::NotText));
        assert_eq!(parse_answer(b"x=1\naction=DUNNO\n\n"), Ok(Decision::Accept));
    }

    #[test]
    fn an_answer_ends_at_its_empty_line() {
        assert_eq!(answer_end(b"action=DUNNO\n"), None);
        assert_eq!(answer_end(b"action=DUNNO\n\nrest"), Some(14));
        assert_eq!(answer_end(b"\n"), Some(1));
    }

    #[test]
    fn a_request_has_one_line_per_attribute_and_ends_with_an_empty_line() {
        let mut out = Vec::new();
        let facts = Facts {
            esmtp: true,
            helo: "client.example",
            sender: "a@x.example",
            recipient: "b@y.example",
            client_address: "192.0.2.1".into(),
            size: 1234,
            encryption: Some(("TLSv1.3", "TLS13_AES_128_GCM_SHA256")),
            instance: "abc.1",
            ..Facts::default()
        };
        write_request(&mut out, Stage::Rcpt, &facts);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(
            "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
        ));
        for line in [
            "client_address=192.0.2.1",
            "helo_name=client.example",
            "sender=a@x.example",
            "recipient=b@y.example",
            "size=1234",
            "encryption_protocol=TLSv1.3",
            "encryption_cipher=TLS13_AES_128_GCM_SHA256",
            "instance=abc.1",
            "client_name=unknown",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
        assert!(text.ends_with("\n\n"));
        assert_eq!(text.matches("\n\n").count(), 1);
    }

    #[test]
    fn a_value_cannot_break_the_framing() {
        let mut out = Vec::new();
        let facts = Facts {
            helo: "evil\n\naction=OK\n",
            ..Facts::default()
        };
        write_request(&mut out, Stage::EndOfMessage, &facts);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("\n\n").count(), 1);
        assert!(text.contains("helo_name=evil  action=OK \n"));
        assert!(text.contains("protocol_state=END-OF-MESSAGE\n"));
    }
}
