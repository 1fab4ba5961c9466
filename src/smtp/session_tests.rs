//! The session state machine, one RFC rule per test, without sockets.

use std::rc::Rc;

use super::session::*;
use crate::scan::BodyFlags;

fn config() -> SessionConfig {
    SessionConfig::small()
}

struct T {
    s: Session,
}

impl T {
    fn new() -> T {
        T::with(config())
    }

    fn with(c: SessionConfig) -> T {
        T {
            s: Session::new(Rc::new(c)),
        }
    }

    /// Sends one line; returns the replies and the action.
    fn send(&mut self, line: &str) -> (String, Action) {
        let mut out = Vec::new();
        let a = self.s.command(line.as_bytes(), false, &mut out);
        (String::from_utf8(out).unwrap(), a)
    }

    /// Sends a line and returns the first reply code.
    fn code(&mut self, line: &str) -> u16 {
        self.send(line).0[..3].parse().unwrap()
    }

    fn ready(&mut self) {
        assert_eq!(self.code("EHLO c.test"), 250);
        assert_eq!(self.code("MAIL FROM:<a@x.test>"), 250);
        assert_eq!(self.code("RCPT TO:<b@ok.test>"), 250);
    }
}

#[test]
fn greeting_is_220_with_hostname() {
    let mut out = Vec::new();
    T::new().s.greet(&mut out);
    assert_eq!(out, b"220 mx.test ESMTP sluice ready\r\n");
}

#[test]
fn ehlo_lists_every_extension_multiline() {
    let (r, _) = T::new().send("EHLO c.test");
    assert_eq!(
        r,
        "250-mx.test greets c.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n\
         250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250 CHUNKING\r\n"
    );
}

#[test]
fn helo_is_one_line_and_refuses_esmtp_parameters() {
    let mut t = T::new();
    assert_eq!(t.send("HELO c.test").0, "250 mx.test greets c.test\r\n");
    assert_eq!(t.code("MAIL FROM:<a@x.test> SIZE=10"), 555);
    assert_eq!(t.code("MAIL FROM:<a@x.test>"), 250);
}

#[test]
fn order_is_enforced_with_503() {
    let mut t = T::new();
    assert_eq!(t.code("MAIL FROM:<a@x.test>"), 503);
    assert_eq!(t.code("RCPT TO:<b@ok.test>"), 503);
    assert_eq!(t.code("DATA"), 503);
    t.code("EHLO c.test");
    assert_eq!(t.code("RCPT TO:<b@ok.test>"), 503);
    assert_eq!(t.code("DATA"), 503);
    assert_eq!(t.code("MAIL FROM:<a@x.test>"), 250);
    assert_eq!(t.code("MAIL FROM:<a@x.test>"), 503);
    assert_eq!(t.code("DATA"), 503, "DATA without recipients");
}

#[test]
fn data_then_body_then_store() {
    let mut t = T::new();
    t.ready();
    let (r, a) = t.send("DATA");
    assert!(r.starts_with("354 "));
    assert_eq!(a, Action::ReceiveData);
    let mut out = Vec::new();
    assert_eq!(
        t.s.data_done(10, BodyFlags::default(), &mut out),
        Verdict::Store
    );
    assert_eq!(t.s.envelope().rcpt_to[0].to_string(), "b@ok.test");
    t.s.stored(Ok("00abc"), &mut out);
    assert_eq!(out, b"250 2.0.0 Ok: queued as 00abc\r\n");
    assert!(
        t.s.envelope().rcpt_to.is_empty(),
        "transaction reset after 250"
    );
    assert_eq!(
        t.code("MAIL FROM:<a@x.test>"),
        250,
        "a new transaction can start"
    );
}

#[test]
fn storage_failures_map_to_4xx() {
    for (fail, want) in [
        (StoreFailure::NoSpace, "452 4.3.1 "),
        (StoreFailure::Io, "451 4.3.0 "),
    ] {
        let mut t = T::new();
        t.ready();
        t.send("DATA");
        let mut out = Vec::new();
        t.s.data_done(1, BodyFlags::default(), &mut out);
        t.s.stored(Err(fail), &mut out);
        assert!(String::from_utf8(out).unwrap().starts_with(want));
    }
}

#[test]
fn body_policies_reject_with_5xx() {
    let cases = [
        (1001, BodyFlags::default(), "552 5.3.4 "),
        (
            10,
            BodyFlags {
                bare_lf: true,
                ..Default::default()
            },
            "550 5.6.0 ",
        ),
        (
            10,
            BodyFlags {
                bare_cr: true,
                ..Default::default()
            },
            "550 5.6.0 ",
        ),
        (
            10,
            BodyFlags {
                long_line: true,
                ..Default::default()
            },
            "550 5.6.0 ",
        ),
    ];
    for (size, flags, want) in cases {
        let mut t = T::new();
        t.ready();
        t.send("DATA");
        let mut out = Vec::new();
        assert_eq!(t.s.data_done(size, flags, &mut out), Verdict::Rejected);
        let r = String::from_utf8(out).unwrap();
        assert!(r.starts_with(want), "{r}");
        assert!(!t.s.in_transaction());
    }
}

#[test]
fn bare_newlines_may_be_accepted_by_policy() {
    let mut t = T::with(SessionConfig {
        bare_newlines: BareNewlinePolicy::Accept,
        ..config()
    });
    t.ready();
    t.send("DATA");
    let flags = BodyFlags {
        bare_lf: true,
        bare_cr: true,
        long_line: false,
    };
    assert_eq!(t.s.data_done(10, flags, &mut Vec::new()), Verdict::Store);
}

#[test]
fn bare_lf_command_is_refused() {
    let mut t = T::new();
    let mut out = Vec::new();
    assert_eq!(t.s.command(b"NOOP", true, &mut out), Action::ReadCommands);
    assert!(out.starts_with(b"500 5.5.2 "));
}

#[test]
fn recipients_limit_domain_and_postmaster() {
    let mut t = T::new();
    t.code("EHLO c.test");
    t.code("MAIL FROM:<>");
    assert_eq!(t.code("RCPT TO:<x@elsewhere.test>"), 550);
    assert_eq!(t.code("RCPT TO:<Postmaster>"), 250);
    assert_eq!(t.code("RCPT TO:<x@OK.test>"), 250);
    assert_eq!(t.code("RCPT TO:<y@ok.test>"), 250);
    assert_eq!(
        t.send("RCPT TO:<z@ok.test>").0,
        "452 4.5.3 Too many recipients\r\n"
    );
}

#[test]
fn size_parameter_over_limit_is_552() {
    let mut t = T::new();
    t.code("EHLO c.test");
    assert_eq!(t.code("MAIL FROM:<a@x.test> SIZE=1001"), 552);
    assert_eq!(t.code("MAIL FROM:<a@x.test> SIZE=1000"), 250);
}

#[test]
fn utf8_addresses_need_smtputf8() {
    let mut t = T::new();
    t.code("EHLO c.test");
    assert_eq!(t.code("MAIL FROM:<josé@x.test>"), 553);
    assert_eq!(t.code("MAIL FROM:<a@x.test>"), 250);
    assert_eq!(t.code("RCPT TO:<josé@ok.test>"), 553);
    t.code("RSET");
    assert_eq!(t.code("MAIL FROM:<josé@x.test> SMTPUTF8"), 250);
    assert_eq!(t.code("RCPT TO:<josé@ok.test>"), 250);
}

#[test]
fn misc_commands() {
    let mut t = T::new();
    assert_eq!(t.code("NOOP"), 250);
    assert_eq!(t.code("HELP"), 214);
    assert_eq!(t.code("VRFY someone"), 252);
    assert_eq!(t.code("EXPN list"), 502);
    assert_eq!(t.code("TURN"), 502);
    assert_eq!(t.code("FROB"), 500);
    assert_eq!(t.code("RSET"), 250);
    let (r, a) = t.send("QUIT");
    assert_eq!(r, "221 2.0.0 Bye\r\n");
    assert_eq!(a, Action::Close);
    assert!(t.s.is_closed());
}

#[test]
fn rset_clears_the_transaction() {
    let mut t = T::new();
    t.ready();
    assert_eq!(t.code("RSET"), 250);
    assert_eq!(t.code("RCPT TO:<b@ok.test>"), 503);
}

#[test]
fn bdat_chunks_then_last_stores() {
    let mut t = T::new();
    t.ready();
    let (r, a) = t.send("BDAT 5");
    assert_eq!(r, "");
    assert_eq!(
        a,
        Action::ReceiveChunk {
            size: 5,
            last: false,
            discard: false
        }
    );
    let mut out = Vec::new();
    assert_eq!(t.s.chunk_done(5, false, &mut out), Verdict::MoreChunks);
    assert_eq!(out, b"250 2.0.0 Chunk received, octets: 5\r\n");
    assert_eq!(t.code("DATA"), 503, "DATA cannot follow BDAT");
    assert_eq!(t.code("MAIL FROM:<a@x.test>"), 503);
    t.send("BDAT 3 LAST");
    assert_eq!(t.s.chunk_done(3, true, &mut Vec::new()), Verdict::Store);
}

#[test]
fn bdat_out_of_order_is_read_then_refused() {
    let mut t = T::new();
    t.code("EHLO c.test");
    let (_, a) = t.send("BDAT 7 LAST");
    assert_eq!(
        a,
        Action::ReceiveChunk {
            size: 7,
            last: true,
            discard: true
        }
    );
    let mut out = Vec::new();
    assert_eq!(t.s.chunk_done(7, true, &mut out), Verdict::Rejected);
    assert!(out.starts_with(b"503 5.5.1 "));
}

#[test]
fn bdat_over_the_size_limit_is_552_and_resets() {
    let mut t = T::new();
    t.ready();
    t.send("BDAT 600");
    t.s.chunk_done(600, false, &mut Vec::new());
    let (_, a) = t.send("BDAT 600");
    assert_eq!(
        a,
        Action::ReceiveChunk {
            size: 600,
            last: false,
            discard: true
        }
    );
    let mut out = Vec::new();
    assert_eq!(t.s.chunk_done(600, false, &mut out), Verdict::Rejected);
    assert!(out.starts_with(b"552 5.3.4 "));
    assert!(!t.s.in_transaction());
}

#[test]
fn rset_or_ehlo_between_chunks_abandons_the_message() {
    for ending in ["RSET", "EHLO c.test", "HELO c.test"] {
        let mut t = T::new();
        t.ready();
        t.send("BDAT 5");
        assert_eq!(
            t.s.chunk_done(5, false, &mut Vec::new()),
            Verdict::MoreChunks
        );
        assert_eq!(t.code("NOOP"), 250);
        assert_eq!(t.send("NOOP").1, Action::ReadCommands, "NOOP keeps it");
        let (reply, action) = t.send(ending);
        assert!(reply.starts_with("250"), "{ending}: {reply}");
        assert_eq!(action, Action::Abandon, "{ending}");
        assert!(!t.s.in_transaction());
        assert_eq!(
            t.send("RSET").1,
            Action::ReadCommands,
            "nothing left to drop"
        );
    }
}

#[test]
fn unparsable_bdat_is_501_and_the_session_continues() {
    let mut t = T::new();
    t.ready();
    for bad in ["BDAT lots", "BDAT", "BDAT 10 NOW"] {
        let (r, a) = t.send(bad);
        assert!(r.starts_with("501 5.5.4 "), "{bad}: {r}");
        assert_eq!(a, Action::ReadCommands, "{bad}");
    }
    assert!(t.s.in_transaction(), "the transaction is still there");
    assert_eq!(t.code("NOOP"), 250);
    let (_, a) = t.send("BDAT 3 LAST");
    assert!(matches!(a, Action::ReceiveChunk { discard: false, .. }));
}

fn tls_config(require_tls: bool) -> SessionConfig {
    SessionConfig {
        starttls: true,
        require_tls,
        ..config()
    }
}

#[test]
fn starttls_is_offered_only_with_material_and_only_before_tls() {
    let (ehlo, _) = T::new().send("EHLO c.test");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert_eq!(T::new().code("STARTTLS"), 502);

    let mut t = T::with(tls_config(false));
    let (ehlo, _) = t.send("EHLO c.test");
    assert!(ehlo.ends_with("250 STARTTLS\r\n"), "{ehlo}");
    assert_eq!(t.code("STARTTLS now"), 501);
    let (reply, action) = t.send("STARTTLS");
    assert_eq!(reply, "220 2.0.0 Ready to start TLS\r\n");
    assert_eq!(action, Action::StartTls);
    t.s.tls_started("TLS1.3 X".into());
    assert_eq!(t.s.tls(), Some("TLS1.3 X"));
    // RFC 3207 §4.2: the EHLO name is forgotten; EHLO must come again,
    // and it no longer offers STARTTLS.
    assert_eq!(t.s.helo(), None);
    assert_eq!(t.code("MAIL FROM:<a@x.test>"), 503);
    let (ehlo, _) = t.send("EHLO c.test");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert_eq!(t.code("STARTTLS"), 503);
    assert_eq!(t.code("MAIL FROM:<a@x.test>"), 250);
}

#[test]
fn starttls_inside_a_transaction_is_503() {
    let mut t = T::with(tls_config(false));
    t.ready();
    let (reply, action) = t.send("STARTTLS");
    assert!(reply.starts_with("503 5.5.1 "), "{reply}");
    assert_eq!(action, Action::ReadCommands);
}

#[test]
fn require_tls_refuses_mail_before_starttls_with_530() {
    let mut t = T::with(tls_config(true));
    assert_eq!(t.code("EHLO c.test"), 250);
    let (reply, _) = t.send("MAIL FROM:<a@x.test>");
    assert_eq!(reply, "530 5.7.0 Must issue a STARTTLS command first\r\n");
    assert_eq!(t.send("STARTTLS").1, Action::StartTls);
    t.s.tls_started("TLS1.3 X".into());
    assert_eq!(t.code("EHLO c.test"), 250);
    assert_eq!(t.code("MAIL FROM:<a@x.test>"), 250);
}

#[test]
fn a_full_spool_refuses_new_transactions_with_452_until_it_drains() {
    let mut t = T::new();
    assert_eq!(t.code("EHLO c.test"), 250);
    t.s.set_spool_full(true);
    let (reply, _) = t.send("MAIL FROM:<a@x.test>");
    assert!(reply.starts_with("452 4.3.1 "), "{reply}");
    assert_eq!(t.code("RCPT TO:<b@ok.test>"), 503);
    t.s.set_spool_full(false);
    assert_eq!(t.code("MAIL FROM:<a@x.test>"), 250);
}

/// A quota that allows a fixed number of each, counting what was asked.
struct Allow {
    messages: u32,
    recipients: u32,
}

impl Quota for Allow {
    fn message(&mut self) -> bool {
        self.messages
            .checked_sub(1)
            .map(|n| self.messages = n)
            .is_some()
    }
    fn recipient(&mut self) -> bool {
        self.recipients
            .checked_sub(1)
            .map(|n| self.recipients = n)
            .is_some()
    }
}

#[test]
fn the_client_rates_refuse_mail_and_rcpt_with_451_4_7_1() {
    let mut t = T::new();
    t.s.set_quota(Box::new(Allow {
        messages: 1,
        recipients: 2,
    }));
    t.ready();
    // Only accepted recipients are taken from the quota.
    assert_eq!(t.code("RCPT TO:<c@elsewhere.test>"), 550);
    assert_eq!(t.code("RCPT TO:<c@ok.test>"), 250);
    let (reply, _) = t.send("RCPT TO:<d@ok.test>");
    assert_eq!(
        reply,
        "451 4.7.1 Too many recipients from your address, try again later\r\n"
    );
    assert_eq!(t.code("RSET"), 250);
    let (reply, _) = t.send("MAIL FROM:<a@x.test>");
    assert_eq!(
        reply,
        "451 4.7.1 Too many messages from your address, try again later\r\n"
    );
    // A refused MAIL leaves no transaction.
    assert_eq!(t.code("RCPT TO:<b@ok.test>"), 503);
}

#[test]
fn the_hard_error_limit_ends_the_session_with_421_after_the_nth_error() {
    let mut t = T::with(SessionConfig {
        hard_error_limit: 3,
        ..config()
    });
    assert_eq!(t.code("FOO"), 500);
    assert_eq!(t.code("NOOP"), 250, "successes do not count");
    assert_eq!(t.code("MAIL FROM:<a@x.test>"), 503);
    assert_eq!(t.s.errors(), 2);
    let (reply, action) = t.send("BAR");
    assert_eq!(
        reply,
        "500 5.5.2 Syntax error, command unrecognized\r\n421 4.7.0 Too many errors, closing connection\r\n"
    );
    assert_eq!(action, Action::Close);
    assert!(t.s.is_closed());
}

#[test]
fn an_accepted_message_resets_the_error_count() {
    let mut t = T::with(SessionConfig {
        hard_error_limit: 3,
        ..config()
    });
    assert_eq!(t.code("FOO"), 500);
    assert_eq!(t.code("FOO"), 500);
    t.ready();
    assert_eq!(t.send("DATA").1, Action::ReceiveData);
    let mut out = Vec::new();
    assert_eq!(
        t.s.data_done(10, BodyFlags::default(), &mut out),
        Verdict::Store
    );
    t.s.stored(Ok("id1"), &mut out);
    assert_eq!(t.s.errors(), 0);
    assert_eq!(t.code("FOO"), 500);
    assert_eq!(t.code("FOO"), 500);
    assert_eq!(t.send("FOO").1, Action::Close);
}

#[test]
fn a_refused_body_counts_and_can_be_the_last_error() {
    let mut t = T::with(SessionConfig {
        hard_error_limit: 2,
        ..config()
    });
    assert_eq!(t.code("FOO"), 500);
    t.ready();
    t.send("DATA");
    let mut out = Vec::new();
    let verdict = t.s.data_done(5000, BodyFlags::default(), &mut out);
    assert_eq!(verdict, Verdict::Rejected);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("552 ")
            && text.ends_with("421 4.7.0 Too many errors, closing connection\r\n"),
        "{text}"
    );
    assert!(t.s.is_closed());
}

#[test]
fn after_a_554_greeting_only_quit_is_accepted() {
    let mut t = T::new();
    let mut out = Vec::new();
    t.s.refuse(
        crate::smtp::reply::BLOCKED,
        format_args!("[192.0.2.1] blocked using bl.test"),
        &mut out,
    );
    assert_eq!(
        out,
        b"554 5.7.1 Service unavailable; client [192.0.2.1] blocked using bl.test\r\n"
    );
    for line in [
        "EHLO c.test",
        "MAIL FROM:<a@x.test>",
        "RSET",
        "NOOP",
        "garbage",
    ] {
        let (reply, action) = t.send(line);
        assert!(reply.starts_with("503 5.5.1 "), "{line}: {reply}");
        assert_eq!(action, Action::ReadCommands);
    }
    let (reply, action) = t.send("QUIT");
    assert_eq!(
        (reply.as_str(), action),
        ("221 2.0.0 Bye\r\n", Action::Close)
    );
}

#[test]
fn errors_and_quota_survive_starttls() {
    let mut t = T::with(SessionConfig {
        starttls: true,
        ..config()
    });
    t.s.set_quota(Box::new(Allow {
        messages: 0,
        recipients: 0,
    }));
    assert_eq!(t.code("FOO"), 500);
    assert_eq!(t.send("STARTTLS").1, Action::StartTls);
    t.s.tls_started("TLSv1.3".into());
    assert_eq!(t.s.errors(), 1);
    assert_eq!(t.code("EHLO c.test"), 250);
    assert_eq!(t.code("MAIL FROM:<a@x.test>"), 451);
}

#[test]
fn with_a_recipient_map_an_unknown_recipient_is_550_5_1_1_and_counts_as_an_error() {
    let map = crate::policy::RecipientMap::parse("b@ok.test\n", "test", "+").unwrap();
    let mut t = T::with(SessionConfig {
        recipient_map: Some(std::sync::Arc::new(map)),
        hard_error_limit: 2,
        ..config()
    });
    assert_eq!(t.code("EHLO c.test"), 250);
    assert_eq!(t.code("MAIL FROM:<a@x.test>"), 250);
    assert_eq!(t.code("RCPT TO:<B+tag@OK.test>"), 250);
    // The domain is checked first: a foreign domain is still relaying.
    assert_eq!(t.code("RCPT TO:<b@elsewhere.test>"), 550);
    let (r, a) = t.send("RCPT TO:<c@ok.test>");
    assert_eq!(
        r,
        "550 5.1.1 <c@ok.test>: Recipient address rejected: User unknown\r\n\
         421 4.7.0 Too many errors, closing connection\r\n"
    );
    assert_eq!(a, Action::Close);
}

/// A submission session over TLS, with `hard_error_limit` errors allowed.
fn submission(hard_error_limit: u32) -> T {
    let mut t = T::with(SessionConfig {
        starttls: true,
        hard_error_limit,
        ..config()
    });
    t.s.set_submission();
    t
}

/// `\0user\0password`, base64.
fn plain(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}

impl T {
    /// The session's answer to checked credentials.
    fn checked(&mut self, c: crate::auth::Checked) -> (String, Action) {
        let mut out = Vec::new();
        let a = self.s.authenticated(c, &mut out);
        (String::from_utf8(out).unwrap(), a)
    }
}

#[test]
fn auth_is_offered_only_on_submission_once_tls_is_up() {
    let mut t = submission(0);
    let (ehlo, _) = t.send("EHLO c.test");
    assert!(
        ehlo.ends_with("250 STARTTLS\r\n") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert_eq!(
        t.send(&format!("AUTH PLAIN {}", plain("a", "b"))).0[..4],
        *"503 "
    );
    assert_eq!(t.code("MAIL FROM:<a@x.test>"), 530);
    t.s.tls_started("TLS1.3 test".into());
    let (ehlo, _) = t.send("EHLO c.test");
    assert!(
        ehlo.ends_with("250-CHUNKING\r\n250 AUTH PLAIN LOGIN\r\n"),
        "{ehlo}"
    );
    let (mail, _) = t.send("MAIL FROM:<a@x.test>");
    assert_eq!(mail, "530 5.7.0 Authentication required\r\n");
    // Port 25 sessions never offer it, even over TLS.
    let mut t = T::with(SessionConfig {
        starttls: true,
        ..config()
    });
    t.s.tls_started("TLS1.3 test".into());
    assert!(!t.send("EHLO c.test").0.contains("AUTH"));
    assert_eq!(t.code("AUTH LOGIN"), 503);
    assert_eq!(t.code("MAIL FROM:<a@x.test> AUTH=<>"), 555);
}

#[test]
fn plain_and_login_exchanges_end_in_credentials_to_check() {
    let mut t = submission(0);
    t.s.tls_started("TLS1.3 test".into());
    t.code("EHLO c.test");
    let (r, a) = t.send(&format!("AUTH PLAIN {}", plain("alice", "pw")));
    assert_eq!((r.as_str(), a), ("", Action::Authenticate));
    let creds = t.s.take_credentials().unwrap();
    assert_eq!(
        (creds.user.as_str(), &creds.password[..]),
        ("alice", &b"pw"[..])
    );
    assert_eq!(
        t.checked(crate::auth::Checked::Invalid).0,
        "535 5.7.8 Authentication credentials invalid\r\n"
    );
    assert_eq!(t.send("AUTH LOGIN").0, "334 VXNlcm5hbWU6\r\n");
    assert_eq!(t.send("Ym9i").0, "334 UGFzc3dvcmQ6\r\n");
    assert_eq!(t.send("cHc=").1, Action::Authenticate);
    assert_eq!(t.s.take_credentials().unwrap().user, "bob");
    let (r, _) = t.checked(crate::auth::Checked::Valid("bob".into()));
    assert_eq!(r, "235 2.7.0 Authentication successful\r\n");
    assert_eq!(t.s.auth(), Some("bob"));
    assert_eq!(t.code("AUTH LOGIN"), 503, "once only");
    // Authenticated: any domain, and AUTH= is accepted.
    assert_eq!(
        t.code("MAIL FROM:<bob@fleet.test> AUTH=bob@fleet.test"),
        250
    );
    assert_eq!(t.code("RCPT TO:<someone@elsewhere.example>"), 250);
    assert_eq!(t.code("AUTH PLAIN"), 503, "not inside a transaction");
}

#[test]
fn cancelled_garbled_and_unknown_exchanges_are_refused() {
    let mut t = submission(0);
    t.s.tls_started("TLS1.3 test".into());
    t.code("EHLO c.test");
    assert_eq!(t.code("AUTH CRAM-MD5"), 504);
    assert_eq!(t.send("AUTH PLAIN").0, "334 \r\n");
    assert_eq!(t.send("*").0, "501 5.7.0 Authentication aborted\r\n");
    assert_eq!(t.code("AUTH PLAIN !!!"), 501);
    let mut out = Vec::new();
    t.send("AUTH LOGIN");
    t.s.line_too_long(&mut out);
    assert!(out.starts_with(b"500 5.5.6"), "{out:?}");
    // The exchange is over: the next line is a command again.
    assert_eq!(t.code("NOOP"), 250);
    let (r, _) = t.checked(crate::auth::Checked::Unavailable("down".into()));
    assert!(r.starts_with("454 4.7.0"), "{r}");
}

#[test]
fn wrong_passwords_count_toward_the_hard_error_limit() {
    let mut t = submission(3);
    t.s.tls_started("TLS1.3 test".into());
    t.code("EHLO c.test");
    for _ in 0..2 {
        t.send(&format!("AUTH PLAIN {}", plain("alice", "guess")));
        let (r, a) = t.checked(crate::auth::Checked::Invalid);
        assert!(r.starts_with("535 "), "{r}");
        assert_eq!(a, Action::ReadCommands);
    }
    t.send(&format!("AUTH PLAIN {}", plain("alice", "guess")));
    let (r, a) = t.checked(crate::auth::Checked::Invalid);
    assert!(r.starts_with("535 ") && r.contains("\r\n421 4.7.0"), "{r}");
    assert_eq!(a, Action::Close);
    assert_eq!(t.s.errors(), 3);
}

#[test]
fn submission_survives_starttls_and_auth_does_not_carry_over_a_new_session() {
    let mut t = submission(0);
    t.code("EHLO c.test");
    t.s.tls_started("TLS1.3 test".into());
    assert!(t.send("EHLO c.test").0.contains("AUTH PLAIN LOGIN"));
    assert_eq!(t.s.auth(), None);
}

#[test]
fn dsn_is_offered_and_kept_only_with_dsn_on() {
    let mut t = T::new();
    assert!(!t.send("EHLO c.test").0.contains("DSN"));
    assert_eq!(t.code("MAIL FROM:<a@x.test> RET=HDRS"), 555);
    assert_eq!(t.code("MAIL FROM:<a@x.test>"), 250);
    assert_eq!(t.code("RCPT TO:<b@ok.test> NOTIFY=NEVER"), 555);
    let mut t = T::with(SessionConfig {
        dsn: true,
        ..config()
    });
    let (ehlo, _) = t.send("EHLO c.test");
    assert!(ehlo.ends_with("250-CHUNKING\r\n250 DSN\r\n"), "{ehlo}");
    assert_eq!(t.code("MAIL FROM:<a@x.test> RET=HDRS ENVID=Q+2B1"), 250);
    assert_eq!(t.code("RCPT TO:<b@ok.test>"), 250);
    assert!(
        t.s.envelope().rcpt_dsn.is_empty(),
        "nothing kept while none is asked"
    );
    assert_eq!(
        t.code("RCPT TO:<c@ok.test> NOTIFY=FAILURE,SUCCESS ORCPT=rfc822;C+40ok.test"),
        250
    );
    let env = t.s.envelope();
    assert_eq!(env.ret, Some(super::command::Ret::Hdrs));
    assert_eq!(env.envid.as_deref(), Some("Q+1"));
    assert_eq!(env.rcpt_dsn.len(), 2);
    assert!(env.rcpt_dsn[0].is_empty());
    assert_eq!(env.rcpt_dsn[1].notify.as_deref(), Some("SUCCESS,FAILURE"));
    assert_eq!(env.rcpt_dsn[1].orcpt.as_deref(), Some("rfc822;C@ok.test"));
    // A refused recipient leaves no DSN entry behind.
    assert_eq!(t.code("RCPT TO:<d@elsewhere.test> NOTIFY=NEVER"), 550);
    assert_eq!(t.s.envelope().rcpt_dsn.len(), 2);
}
