//! One SMTP command line → a typed [`Command`].
//!
//! Why it exists: the session state machine should reason about verbs and
//! envelopes, not bytes. This module knows the grammar of every command in
//! RFC 5321 §4.1 (verbs case-insensitive, `FROM:`/`TO:` too) and the ESMTP
//! parameters sluice implements (SIZE, BODY, SMTPUTF8); it knows nothing of
//! order or state.

use super::path::{check_address_literal, check_domain, parse_path, Mailbox, PathError};
use super::reply;

/// Command lines may be at most this long, CRLF included (RFC 5321
/// §4.5.3.1.4).
pub const MAX_LINE: usize = 512;

/// The BODY= parameter of MAIL (RFC 6152).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `BODY=7BIT`.
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
}

/// ESMTP parameters of MAIL FROM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=n` (RFC 1870), the client's estimate.
    pub size: Option<u64>,
    /// `BODY=`.
    pub body: Option<Body>,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `AUTH=` (RFC 4954 §5), xtext-decoded; `<>` stays `<>`.
    pub auth: Option<String>,
    /// `RET=` (RFC 3461 §4.3).
    pub ret: Option<Ret>,
    /// `ENVID=` (RFC 3461 §4.4), xtext-decoded.
    pub envid: Option<String>,
}

/// `RET=`: what a delivery status notification should return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

impl Ret {
    pub fn as_str(self) -> &'static str {
        match self {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        }
    }
}

/// ESMTP parameters of RCPT TO (RFC 3461 §4.1, §4.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// `NOTIFY=`, upper-case: `NEVER`, or some of `SUCCESS,FAILURE,DELAY`
    /// in that order.
    pub notify: Option<String>,
    /// `ORCPT=addr-type;xtext`, as `addr-type;decoded`.
    pub orcpt: Option<String>,
}

impl RcptParams {
    /// Neither parameter was given.
    pub fn is_empty(&self) -> bool {
        self.notify.is_none() && self.orcpt.is_none()
    }
}

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `HELO domain`.
    Helo(String),
    /// `EHLO domain-or-literal`.
    Ehlo(String),
    /// `MAIL FROM:<path> [params]`; `None` is the null path `<>`.
    Mail(Option<Mailbox>, MailParams),
    /// `RCPT TO:<path> [params]`.
    Rcpt(Mailbox, RcptParams),
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030).
    Bdat { size: u64, last: bool },
    /// `RSET`.
    Rset,
    /// `NOOP [string]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `HELP [topic]`.
    Help,
    /// `VRFY string`.
    Vrfy,
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954).
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
    /// EXPN, SEND, SOML, SAML, TURN: recognised, never implemented.
    NotImplemented,
}

/// Why a line is not a usable command; each maps to one reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Unknown verb (500).
    Unrecognized,
    /// Bad arguments (501), with a sentence saying what.
    Syntax(String),
    /// A MAIL/RCPT parameter we do not know (555).
    UnknownParameter(String),
}

impl ParseError {
    /// Appends the reply for this error.
    pub fn write_reply(&self, out: &mut Vec<u8>) {
        match self {
            ParseError::Unrecognized => reply::UNRECOGNIZED.write(out),
            ParseError::Syntax(why) => reply::SYNTAX_ARGS.write_with(out, format_args!("{why}")),
            ParseError::UnknownParameter(p) => {
                reply::UNKNOWN_PARAMETER.write_with(out, format_args!("{p}"))
            }
        }
    }
}

fn syntax(why: impl Into<String>) -> ParseError {
    ParseError::Syntax(why.into())
}

impl From<PathError> for ParseError {
    fn from(e: PathError) -> Self {
        syntax(e.to_string())
    }
}

/// Parses one command line (without its CRLF).
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let line = std::str::from_utf8(line).map_err(|_| syntax("the command is not valid UTF-8"))?;
    let (verb, args) = match line.find(' ') {
        Some(sp) => (&line[..sp], &line[sp + 1..]),
        None => (line, ""),
    };
    if verb.eq_ignore_ascii_case("STARTTLS") {
        return no_args(args, Command::StartTls);
    }
    if verb.len() != 4 {
        return Err(ParseError::Unrecognized);
    }
    let mut upper = [0u8; 4];
    upper.copy_from_slice(verb.as_bytes());
    upper.make_ascii_uppercase();
    match &upper {
        b"HELO" => Ok(Command::Helo(hello_name(args)?)),
        b"EHLO" => Ok(Command::Ehlo(hello_name(args)?)),
        b"MAIL" => parse_mail(args),
        b"RCPT" => parse_rcpt(args),
        b"DATA" => no_args(args, Command::Data),
        b"BDAT" => parse_bdat(args),
        b"RSET" => no_args(args, Command::Rset),
        b"QUIT" => no_args(args, Command::Quit),
        b"NOOP" => Ok(Command::Noop),
        b"HELP" => Ok(Command::Help),
        b"AUTH" => parse_auth(args),
        b"VRFY" if args.trim().is_empty() => Err(syntax("VRFY needs an argument")),
        b"VRFY" => Ok(Command::Vrfy),
        b"EXPN" | b"SEND" | b"SOML" | b"SAML" | b"TURN" => Ok(Command::NotImplemented),
        _ => Err(ParseError::Unrecognized),
    }
}

fn no_args(args: &str, cmd: Command) -> Result<Command, ParseError> {
    if args.trim().is_empty() {
        Ok(cmd)
    } else {
        Err(syntax("this command takes no arguments"))
    }
}

/// The HELO/EHLO argument: a domain or an address literal.
fn hello_name(args: &str) -> Result<String, ParseError> {
    let name = args.trim();
    if name.is_empty() {
        return Err(syntax("a domain name or address literal is required"));
    }
    if name.contains(' ') {
        return Err(syntax("the argument must be a single domain name"));
    }
    let valid = if name.starts_with('[') {
        check_address_literal(name)
    } else {
        check_domain(name)
    };
    match valid {
        Ok(()) => Ok(name.to_string()),
        // Real clients send names like `my_pc`; accept any printable
        // ASCII word, refuse only what would corrupt a trace header.
        Err(_) if name.bytes().all(|b| b.is_ascii_graphic()) => Ok(name.to_string()),
        Err(e) => Err(e.into()),
    }
}

/// Strips a case-insensitive keyword like `FROM:` and optional spaces.
fn strip_keyword<'a>(args: &'a str, keyword: &str) -> Option<&'a str> {
    let head = args.get(..keyword.len())?;
    if head.eq_ignore_ascii_case(keyword) {
        Some(args[keyword.len()..].trim_start_matches(' '))
    } else {
        None
    }
}

fn parse_mail(args: &str) -> Result<Command, ParseError> {
    let rest =
        strip_keyword(args, "FROM:").ok_or_else(|| syntax("expected MAIL FROM:<address>"))?;
    let (path, rest) = parse_path(rest, true)?;
    let mut params = MailParams::default();
    for (key, value) in esmtp_params(rest)? {
        if key.eq_ignore_ascii_case("SIZE") {
            let v = value.ok_or_else(|| syntax("SIZE needs a value"))?;
            let n = v
                .parse::<u64>()
                .map_err(|_| syntax("SIZE must be a number of octets"))?;
            params.size = Some(n);
        } else if key.eq_ignore_ascii_case("BODY") {
            let v = value.ok_or_else(|| syntax("BODY needs a value"))?;
            params.body = Some(if v.eq_ignore_ascii_case("7BIT") {
                Body::SevenBit
            } else if v.eq_ignore_ascii_case("8BITMIME") {
                Body::EightBitMime
            } else {
                return Err(ParseError::UnknownParameter(format!("BODY={v}")));
            });
        } else if key.eq_ignore_ascii_case("SMTPUTF8") && value.is_none() {
            params.smtputf8 = true;
        } else if key.eq_ignore_ascii_case("AUTH") {
            let v = value.ok_or_else(|| syntax("AUTH= needs a mailbox or <>"))?;
            params.auth = Some(xtext_decode(v).ok_or_else(|| syntax("AUTH= is not valid xtext"))?);
        } else if key.eq_ignore_ascii_case("RET") {
            let v = value.ok_or_else(|| syntax("RET= needs FULL or HDRS"))?;
            params.ret = Some(if v.eq_ignore_ascii_case("FULL") {
                Ret::Full
            } else if v.eq_ignore_ascii_case("HDRS") {
                Ret::Hdrs
            } else {
                return Err(syntax("RET= must be FULL or HDRS"));
            });
        } else if key.eq_ignore_ascii_case("ENVID") {
            let v = value.ok_or_else(|| syntax("ENVID= needs a value"))?;
            let envid = xtext_decode(v)
                .filter(|e| e.len() <= 100 && !e.chars().any(char::is_control))
                .ok_or_else(|| syntax("ENVID= must be at most 100 characters of xtext"))?;
            params.envid = Some(envid);
        } else {
            return Err(ParseError::UnknownParameter(key.to_string()));
        }
    }
    Ok(Command::Mail(path, params))
}

fn parse_rcpt(args: &str) -> Result<Command, ParseError> {
    let rest = strip_keyword(args, "TO:").ok_or_else(|| syntax("expected RCPT TO:<address>"))?;
    let (path, rest) = parse_path(rest, false)?;
    let mut params = RcptParams::default();
    for (key, value) in esmtp_params(rest)? {
        if key.eq_ignore_ascii_case("NOTIFY") {
            let v = value.ok_or_else(|| syntax("NOTIFY= needs a value"))?;
            params.notify = Some(notify(v)?);
        } else if key.eq_ignore_ascii_case("ORCPT") {
            let v = value.ok_or_else(|| syntax("ORCPT= needs addr-type;address"))?;
            params.orcpt = Some(orcpt(v)?);
        } else {
            return Err(ParseError::UnknownParameter(key.to_string()));
        }
    }
    Ok(Command::Rcpt(
        path.expect("null path refused by parse_path"),
        params,
    ))
}

/// `NEVER`, or a comma list of `SUCCESS`, `FAILURE`, `DELAY` (RFC 3461
/// §4.1), normalised to upper case in that order.
fn notify(v: &str) -> Result<String, ParseError> {
    let words: Vec<String> = v.split(',').map(str::to_ascii_uppercase).collect();
    if words == ["NEVER"] {
        return Ok("NEVER".into());
    }
    let known = ["SUCCESS", "FAILURE", "DELAY"];
    if words.is_empty() || words.iter().any(|w| !known.contains(&w.as_str())) {
        return Err(syntax(
            "NOTIFY= must be NEVER or a list of SUCCESS, FAILURE and DELAY",
        ));
    }
    let kept: Vec<&str> = known
        .into_iter()
        .filter(|k| words.iter().any(|w| w == k))
        .collect();
    Ok(kept.join(","))
}

/// `addr-type;xtext` (RFC 3461 §4.2): the type is an atom, the address
/// xtext without control characters.
fn orcpt(v: &str) -> Result<String, ParseError> {
    let bad = || syntax("ORCPT= must be addr-type;address in xtext, like rfc822;user@example.com");
    let (kind, address) = v.split_once(';').ok_or_else(bad)?;
    if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(bad());
    }
    let address = xtext_decode(address)
        .filter(|a| !a.is_empty() && a.len() <= 500 && !a.chars().any(char::is_control))
        .ok_or_else(bad)?;
    Ok(format!("{kind};{address}"))
}

/// `keyword[=value]` pairs separated by spaces after a path.
fn esmtp_params(rest: &str) -> Result<impl Iterator<Item = (&str, Option<&str>)>, ParseError> {
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err(syntax("expected a space after the address"));
    }
    let mut bad = None;
    for p in rest.split(' ').filter(|p| !p.is_empty()) {
        let key = p.split('=').next().unwrap_or("");
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            bad = Some(p);
        }
    }
    if let Some(p) = bad {
        return Err(syntax(format!("bad parameter {p:?}")));
    }
    Ok(rest
        .split(' ')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (p, None),
        }))
}

fn parse_auth(args: &str) -> Result<Command, ParseError> {
    let mut words = args.split(' ').filter(|w| !w.is_empty());
    let mechanism = words
        .next()
        .ok_or_else(|| syntax("AUTH needs a mechanism"))?
        .to_string();
    let initial = words.next().map(str::to_string);
    if words.next().is_some() {
        return Err(syntax("expected AUTH <mechanism> [initial-response]"));
    }
    Ok(Command::Auth { mechanism, initial })
}

/// Decodes RFC 3461 §4 xtext (`+XX` hex escapes of octets outside `!`..`~`
/// and of `+` and `=`); `None` if malformed or not UTF-8.
pub fn xtext_decode(v: &str) -> Option<String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                if !hex
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
                {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'=' => return None,
            c if (b'!'..=b'~').contains(&c) => {
                out.push(c);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

fn parse_bdat(args: &str) -> Result<Command, ParseError> {
    let mut words = args.split(' ').filter(|w| !w.is_empty());
    let size = words
        .next()
        .and_then(|w| w.parse::<u64>().ok())
        .ok_or_else(|| syntax("BDAT needs a chunk size in octets"))?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(syntax("expected BDAT <size> [LAST]")),
    };
    if words.next().is_some() {
        return Err(syntax("expected BDAT <size> [LAST]"));
    }
    Ok(Command::Bdat { size, last })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(local: &str, domain: &str) -> Mailbox {
        Mailbox {
            local: local.into(),
            domain: domain.into(),
        }
    }

    #[test]
    fn verbs_and_keywords_are_case_insensitive() {
        assert_eq!(
            parse(b"mail from:<A@B.example>").unwrap(),
            Command::Mail(Some(mb("A", "B.example")), MailParams::default())
        );
        assert_eq!(
            parse(b"rCpT tO:<x@y>").unwrap(),
            Command::Rcpt(mb("x", "y"), RcptParams::default())
        );
        assert_eq!(parse(b"QuIt").unwrap(), Command::Quit);
    }

    #[test]
    fn mail_parameters() {
        let Command::Mail(None, p) =
            parse(b"MAIL FROM:<> SIZE=1000 BODY=8BITMIME SMTPUTF8").unwrap()
        else {
            panic!("not a null MAIL");
        };
        assert_eq!(p.size, Some(1000));
        assert_eq!(p.body, Some(Body::EightBitMime));
        assert!(p.smtputf8);
    }

    #[test]
    fn auth_commands_and_the_auth_parameter() {
        assert_eq!(
            parse(b"auth PLAIN AGEAYg==").unwrap(),
            Command::Auth {
                mechanism: "PLAIN".into(),
                initial: Some("AGEAYg==".into())
            }
        );
        assert_eq!(
            parse(b"AUTH LOGIN").unwrap(),
            Command::Auth {
                mechanism: "LOGIN".into(),
                initial: None
            }
        );
        assert!(matches!(parse(b"AUTH"), Err(ParseError::Syntax(_))));
        assert!(matches!(
            parse(b"AUTH PLAIN a b"),
            Err(ParseError::Syntax(_))
        ));
        let Command::Mail(_, p) = parse(b"MAIL FROM:<a@b> AUTH=user+2Bx@b").unwrap() else {
            panic!("not MAIL");
        };
        assert_eq!(p.auth.as_deref(), Some("user+x@b"));
        let Command::Mail(_, p) = parse(b"MAIL FROM:<a@b> AUTH=<>").unwrap() else {
            panic!("not MAIL");
        };
        assert_eq!(p.auth.as_deref(), Some("<>"));
        assert!(matches!(
            parse(b"MAIL FROM:<a@b> AUTH=bad+zz"),
            Err(ParseError::Syntax(_))
        ));
    }

    #[test]
    fn dsn_parameters_are_validated_and_decoded() {
        let Command::Mail(_, p) = parse(b"MAIL FROM:<a@b> RET=hdrs ENVID=QQ+2B314").unwrap() else {
            panic!("not MAIL");
        };
        assert_eq!(
            (p.ret, p.envid.as_deref()),
            (Some(Ret::Hdrs), Some("QQ+314"))
        );
        let Command::Rcpt(_, p) =
            parse(b"RCPT TO:<x@y> NOTIFY=delay,Success ORCPT=rfc822;x+40y").unwrap()
        else {
            panic!("not RCPT");
        };
        assert_eq!(p.notify.as_deref(), Some("SUCCESS,DELAY"));
        assert_eq!(p.orcpt.as_deref(), Some("rfc822;x@y"));
        for bad in [
            &b"MAIL FROM:<a@b> RET=ALL"[..],
            b"MAIL FROM:<a@b> ENVID=a+0Ab",
            b"RCPT TO:<x@y> NOTIFY=NEVER,SUCCESS",
            b"RCPT TO:<x@y> NOTIFY=",
            b"RCPT TO:<x@y> ORCPT=x@y",
            b"RCPT TO:<x@y> ORCPT=rfc822;",
        ] {
            assert!(matches!(parse(bad), Err(ParseError::Syntax(_))), "{bad:?}");
        }
    }

    #[test]
    fn unknown_parameters_get_555() {
        assert!(matches!(
            parse(b"MAIL FROM:<a@b> FOO=bar"),
            Err(ParseError::UnknownParameter(_))
        ));
        assert!(matches!(
            parse(b"RCPT TO:<a@b> FOO=NEVER"),
            Err(ParseError::UnknownParameter(_))
        ));
        assert!(matches!(
            parse(b"MAIL FROM:<a@b> BODY=BINARYMIME"),
            Err(ParseError::UnknownParameter(_))
        ));
    }

    #[test]
    fn bad_arguments_get_501() {
        for bad in [
            &b"MAIL FROM:a@b"[..],
            b"MAIL TO:<a@b>",
            b"RCPT TO:<>",
            b"MAIL FROM:<a@b> SIZE=x",
            b"DATA now",
            b"QUIT please",
            b"BDAT",
            b"BDAT 10 NOW",
            b"EHLO",
            b"HELO a b",
            b"VRFY",
            b"MAIL FROM:<a@b>SIZE=1",
            b"\xff\xfe",
        ] {
            assert!(
                matches!(parse(bad), Err(ParseError::Syntax(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn unknown_verbs_get_500() {
        for bad in [&b"FOO"[..], b"", b"HELLO x", b"MAILFROM:<a@b>"] {
            assert_eq!(parse(bad), Err(ParseError::Unrecognized));
        }
    }

    #[test]
    fn bdat_forms() {
        assert_eq!(
            parse(b"BDAT 100").unwrap(),
            Command::Bdat {
                size: 100,
                last: false
            }
        );
        assert_eq!(
            parse(b"bdat 0 last").unwrap(),
            Command::Bdat {
                size: 0,
                last: true
            }
        );
    }

    #[test]
    fn refused_commands_are_recognised() {
        for v in [
            "EXPN list",
            "SEND FROM:<a@b>",
            "SOML FROM:<a@b>",
            "SAML FROM:<a@b>",
            "TURN",
        ] {
            assert_eq!(parse(v.as_bytes()).unwrap(), Command::NotImplemented);
        }
    }

    #[test]
    fn space_after_colon_is_tolerated() {
        assert_eq!(
            parse(b"RCPT TO: <x@y>").unwrap(),
            Command::Rcpt(mb("x", "y"), RcptParams::default())
        );
    }
}
