use crate::support::*;

#[test]
fn every_command_gets_its_reply_code() {
    let s = Server::start(&["--max-recipients", "2", "--accept-domain", "ok.test"]);
    let mut c = s.connect();
    assert_eq!(c.code("MAIL FROM:<a@x.test>"), 503, "MAIL before EHLO");
    assert_eq!(c.code("HELO client.test"), 250);
    let ehlo = c.cmd("EHLO client.test");
    for ext in [
        "PIPELINING",
        "SIZE 36700160",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
    ] {
        assert!(
            ehlo.contains(&format!("250-{ext}\r\n")) || ehlo.contains(&format!("250 {ext}\r\n")),
            "{ext} in {ehlo}"
        );
    }
    assert!(ehlo.starts_with("250-mx.test"));
    assert_eq!(c.code("NOOP"), 250);
    assert_eq!(c.code("HELP"), 214);
    assert_eq!(c.code("VRFY postmaster"), 252);
    for v in [
        "EXPN staff",
        "SEND FROM:<a@b.test>",
        "SOML FROM:<a@b.test>",
        "SAML FROM:<a@b.test>",
        "TURN",
    ] {
        assert_eq!(c.code(v), 502, "{v}");
    }
    assert_eq!(c.code("XYZZY"), 500);
    assert_eq!(c.code("RCPT TO:<b@ok.test>"), 503, "RCPT before MAIL");
    assert_eq!(c.code("DATA"), 503, "DATA before MAIL");
    assert_eq!(c.code("MAIL FROM:a@x.test"), 501);
    assert_eq!(c.code("MAIL FROM:<a@x.test> FROB=1"), 555);
    assert_eq!(c.code("MAIL FROM:<a@x.test> SIZE=99999999999"), 552);
    assert_eq!(
        c.code("mail from:<@relay.test:a@x.test>"),
        250,
        "source route"
    );
    assert_eq!(c.code("MAIL FROM:<a@x.test>"), 503, "nested MAIL");
    assert_eq!(c.code("DATA"), 503, "DATA without RCPT");
    assert_eq!(c.code("RCPT TO:<b@elsewhere.test>"), 550);
    assert_eq!(c.code("RCPT TO:<\"odd local\"@OK.test>"), 250);
    assert_eq!(c.code("RCPT TO:<c@ok.test>"), 250);
    assert_eq!(
        c.cmd("RCPT TO:<d@ok.test>"),
        "452 4.5.3 Too many recipients\r\n"
    );
    assert_eq!(c.code("RSET"), 250);
    assert_eq!(c.code("RCPT TO:<b@ok.test>"), 503, "RSET cleared MAIL");
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    assert!(c.closed());
}

#[test]
fn address_forms_and_limits() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    c.code("EHLO client.test");
    c.code("MAIL FROM:<>");
    assert_eq!(c.code("RCPT TO:<u@[127.0.0.1]>"), 250);
    assert_eq!(c.code("RCPT TO:<u@[IPv6:::1]>"), 250);
    assert_eq!(c.code("RCPT TO:<Postmaster>"), 250);
    assert_eq!(c.code(&format!("RCPT TO:<{}@x.test>", "a".repeat(64))), 250);
    assert_eq!(c.code(&format!("RCPT TO:<{}@x.test>", "a".repeat(65))), 501);
    let long_domain = format!("{}.test", vec!["d".repeat(63); 4].join("."));
    assert_eq!(c.code(&format!("RCPT TO:<a@{long_domain}>")), 501);
    assert_eq!(
        c.code("RCPT TO:<josé@x.test>"),
        553,
        "UTF-8 without SMTPUTF8"
    );
    c.code("RSET");
    assert_eq!(
        c.code("MAIL FROM:<josé@x.test> SMTPUTF8 BODY=8BITMIME"),
        250
    );
    assert_eq!(c.code("RCPT TO:<ü@bücher.test>"), 250);
}

#[test]
fn over_long_command_line_is_500_and_the_session_goes_on() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    let reply = c.cmd(&format!("NOOP {}", "x".repeat(600)));
    assert!(reply.starts_with("500 5.5.2 Line too long"), "{reply}");
    assert_eq!(c.code("NOOP"), 250);
    // Exactly 512 octets with CRLF is allowed.
    assert_eq!(c.code(&format!("NOOP {}", "x".repeat(505))), 250);
}

#[test]
fn pipelined_transaction_in_one_write_gets_all_replies_in_order() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    c.send(
        b"EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\n\
          DATA\r\nSubject: pipelined\r\n\r\nbody\r\n.\r\nMAIL FROM:<a@x.test>\r\n\
          RCPT TO:<b@y.test>\r\nBDAT 6 LAST\r\nhello\nQUIT\r\n",
    );
    let codes: Vec<u16> = (0..10).map(|_| code_of(&c.reply())).collect();
    assert_eq!(codes, [250, 250, 250, 250, 354, 250, 250, 250, 250, 221]);
    assert!(c.closed());
    let msgs = exported(&s.spool);
    assert_eq!(msgs.len(), 2);
    let bodies: Vec<&[u8]> = msgs.values().map(|(_, d)| without_trace(d)).collect();
    assert!(bodies.contains(&&b"Subject: pipelined\r\n\r\nbody\r\n"[..]));
    assert!(bodies.contains(&&b"hello\n"[..]));
}

#[test]
fn smuggling_payloads_do_not_end_data_and_are_rejected() {
    let s = Server::start(&[]);
    for (name, payload) in [
        ("LF.LF", &b"a\r\n\n.\nMAIL FROM:<evil@x.test>\r\n"[..]),
        ("CR.CR", b"a\r\n\r.\rMAIL FROM:<evil@x.test>\r\n"),
        ("CRLF.LF", b"a\r\n.\nMAIL FROM:<evil@x.test>\r\n"),
        ("LF.CRLF", b"a\n.\r\nMAIL FROM:<evil@x.test>\r\n"),
    ] {
        let mut c = s.connect();
        c.open_data();
        c.send(payload);
        c.send(b"\r\n.\r\n");
        let reply = c.reply();
        assert!(reply.starts_with("550 5.6.0 "), "{name}: {reply}");
        assert_eq!(
            c.code("NOOP"),
            250,
            "{name}: the smuggled MAIL was body, not a command"
        );
    }
    assert!(exported(&s.spool).is_empty(), "nothing stored");
}

#[test]
fn bare_newlines_can_be_accepted_by_policy() {
    let s = Server::start(&["--bare-newlines", "accept"]);
    let mut c = s.connect();
    let reply = c.send_mail("a@x.test", "b@y.test", b"one\ntwo\rthree\r\n");
    let id = queued_id(&reply);
    assert_eq!(
        without_trace(&exported(&s.spool)[&id].1),
        b"one\ntwo\rthree\r\n"
    );
}

#[test]
fn message_over_the_size_limit_is_552_after_data_and_not_stored() {
    let s = Server::start(&["--max-message-size", "1K"]);
    let mut c = s.connect();
    let body = "x".repeat(70).repeat(20).into_bytes();
    let mut lines = Vec::new();
    for chunk in body.chunks(70) {
        lines.extend_from_slice(chunk);
        lines.extend_from_slice(b"\r\n");
    }
    let reply = c.send_mail("a@x.test", "b@y.test", &lines);
    assert!(reply.starts_with("552 5.3.4 "), "{reply}");
    assert_eq!(c.code("NOOP"), 250);
    c.code("MAIL FROM:<a@x.test>");
    c.code("RCPT TO:<b@y.test>");
    c.send(b"BDAT 2000 LAST\r\n");
    c.send(&vec![b'y'; 2000]);
    assert_eq!(code_of(&c.reply()), 552);
    assert_eq!(
        c.code("NOOP"),
        250,
        "the chunk was read, the stream is in sync"
    );
    assert!(exported(&s.spool).is_empty());
}

#[test]
fn data_line_over_the_limit_is_rejected_after_data() {
    let s = Server::start(&["--max-line-length", "100"]);
    let mut c = s.connect();
    let mut body = "y".repeat(99).into_bytes();
    body.extend_from_slice(b"\r\n");
    let reply = c.send_mail("a@x.test", "b@y.test", &body);
    assert!(reply.starts_with("550 5.6.0 "), "{reply}");
    let mut ok = "y".repeat(98).into_bytes();
    ok.extend_from_slice(b"\r\n");
    c.code("RSET");
    assert_eq!(code_of(&c.send_mail("a@x.test", "b@y.test", &ok)), 250);
}

#[test]
fn bare_lf_command_is_refused() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    c.send(b"NOOP\n");
    assert!(c.reply().starts_with("500 5.5.2 "));
    assert_eq!(c.code("NOOP"), 250);
}

#[test]
fn bdat_in_several_chunks_is_stored_byte_exact() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    c.open_transaction();
    c.send(b"BDAT 6\r\n.\r\n\0\r\n");
    assert_eq!(c.reply(), "250 2.0.0 Chunk received, octets: 6\r\n");
    c.send(b"BDAT 0 LAST\r\n");
    let id = queued_id(&c.reply());
    assert_eq!(without_trace(&exported(&s.spool)[&id].1), b".\r\n\0\r\n");
}

#[test]
fn replies_pipelined_before_a_bdat_go_out_before_the_server_waits_for_its_chunk() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    c.send(b"EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT 5 LAST\r\n");
    // Without the flush these came only at the data timeout (600 s).
    c.stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    for _ in 0..3 {
        assert_eq!(code_of(&c.reply()), 250);
    }
    c.send(b"hello");
    let id = queued_id(&c.reply());
    assert_eq!(without_trace(&exported(&s.spool)[&id].1), b"hello");
}

#[test]
fn bad_input_does_not_affect_other_connections() {
    let s = Server::start(&[]);
    let mut good = s.connect();
    good.code("EHLO client.test");
    let mut zeros = vec![0u8; 3000];
    zeros.extend_from_slice(b"\r\n");
    for (junk, want) in [
        (&b"\xff\xfe\x00\x01garbage\r\n"[..], 501),
        (&zeros, 500),
        (b"BDAT nonsense\r\n", 501),
    ] {
        let mut bad = s.connect();
        bad.send(junk);
        assert_eq!(code_of(&bad.reply()), want);
    }
    assert_eq!(
        code_of(&good.send_mail("a@x.test", "b@y.test", b"still fine\r\n")),
        250
    );
}

#[test]
fn a_malformed_bdat_is_501_and_its_chunk_is_read_as_refused_commands() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    assert_eq!(c.code("EHLO client.test"), 250);
    assert_eq!(c.code("MAIL FROM:<a@x.test>"), 250);
    assert_eq!(c.code("RCPT TO:<b@y.test>"), 250);
    // RFC 5321 §3.8: no close without QUIT or a 421.
    let reply = c.cmd("BDAT many LAST");
    assert!(reply.starts_with("501 5.5.4 "), "{reply}");
    // The chunk the client sends anyway is taken as a command line.
    assert_eq!(c.code("Subject: smuggled?"), 500);
    assert_eq!(c.code("NOOP"), 250, "the session goes on");
    c.send(b"BDAT 6 LAST\r\nhello\n");
    let stored = c.reply();
    assert!(stored.starts_with("250 2.0.0 Ok: queued as "), "{stored}");
    assert_eq!(c.code("QUIT"), 221);
}
