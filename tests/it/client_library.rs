use lettre::message::Mailbox;
use lettre::{Message, SmtpTransport, Transport};

use crate::support::*;

#[test]
fn lettre_sends_through_sluice() {
    let s = Server::start(&[]);
    let email = Message::builder()
        .from("Alice <alice@client.test>".parse::<Mailbox>().unwrap())
        .to("Bob <bob@ok.test>".parse::<Mailbox>().unwrap())
        .subject("Hello from lettre")
        .body(String::from(".leading dot line\nsecond line\n"))
        .unwrap();
    let mailer = SmtpTransport::builder_dangerous(s.addr.ip().to_string())
        .port(s.addr.port())
        .build();
    let response = mailer.send(&email).expect("lettre sends");
    assert!(response.is_positive());
    let id = response
        .message()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let stored = exported(&s.spool);
    let (env, data) = &stored[&id];
    assert_eq!(env["mail_from"], "alice@client.test");
    assert_eq!(env["rcpt_to"], serde_json::json!(["bob@ok.test"]));
    let text = String::from_utf8_lossy(without_trace(data)).into_owned();
    assert!(text.contains("Subject: Hello from lettre\r\n"), "{text}");
    assert!(
        text.contains("\r\n.leading dot line\r\nsecond line\r\n"),
        "{text}"
    );
}
