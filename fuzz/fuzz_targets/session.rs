//! The session state machine fed arbitrary command lines, with bodies,
//! chunks, TLS, AUTH exchanges, DSN parameters, store outcomes, a
//! recipient map and policy-service decisions chosen by the input too. Every call must answer with
//! well-formed replies, and nothing may panic.
#![no_main]

use std::rc::Rc;

use libfuzzer_sys::fuzz_target;
use sluice::auth::Checked;
use sluice::policy::delegation::{Decision, PolicyReply};
use sluice::policy::RecipientMap;
use sluice::scan::BodyFlags;
use sluice::smtp::{Action, Session, SessionConfig, StoreFailure, Verdict};

/// The tests' small limits, with STARTTLS, a recipient map and a policy
/// service at RCPT as the seed says, and an error limit the input can
/// reach.
fn config(seed: u8) -> SessionConfig {
    let map = RecipientMap::parse("a@ok.test\n@ok.test\nb+c@ok.test\n", "fuzz", "+").unwrap();
    SessionConfig {
        starttls: seed & 1 == 1,
        hard_error_limit: 7,
        policy_at_rcpt: seed & 4 == 4,
        recipient_map: (seed & 8 == 8).then(|| std::sync::Arc::new(map)),
        dsn: seed & 16 == 16,
        ..SessionConfig::small()
    }
}

/// A policy decision picked by `twist`.
fn decision(twist: u64) -> Decision {
    let refuse = |code, status: &str, text: String| {
        Decision::Refuse(PolicyReply {
            code,
            status: status.into(),
            text,
        })
    };
    match twist % 6 {
        0 => Decision::Accept,
        1 => refuse(550, "5.7.1", "x".repeat((twist % 700) as usize)),
        2 => refuse(450, "4.7.1", "Greylisted".into()),
        3 => Decision::Prepend("X-Fuzz: yes".into()),
        4 => Decision::Discard("trap".into()),
        _ => Decision::Warn("odd".into()),
    }
}

/// Every reply line: three digits, a space or dash, CRLF, ≤ 512 octets.
fn well_formed(out: &[u8]) {
    for line in out.split_inclusive(|&b| b == b'\n') {
        assert!(line.len() <= 512 && line.ends_with(b"\r\n"), "{line:?}");
        assert!(line[..3].iter().all(u8::is_ascii_digit), "{line:?}");
        assert!(matches!(line[3], b' ' | b'-'), "{line:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let mut s = Session::new(Rc::new(config(seed)));
    if seed & 32 == 32 {
        s.set_submission();
    }
    let mut out = Vec::new();
    s.greet(&mut out);
    for (n, line) in input.split(|&b| b == b'\n').enumerate() {
        if s.is_closed() {
            break;
        }
        out.clear();
        let bare_lf = seed & 2 == 2 && n % 3 == 0;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let action = s.command(line, bare_lf, &mut out);
        let twist = line.len() as u64 ^ u64::from(seed);
        match action {
            Action::ReceiveData => {
                let flags = BodyFlags {
                    bare_lf: twist & 4 == 4,
                    ..BodyFlags::default()
                };
                if s.data_done(twist * 37 % 1500, flags, &mut out) == Verdict::Store {
                    let result = match twist % 3 {
                        0 => Ok("id"),
                        1 => Err(StoreFailure::Io),
                        _ => Err(StoreFailure::NoSpace),
                    };
                    s.stored(result, &mut out);
                }
            }
            Action::ReceiveChunk { size, last, .. } => {
                if s.chunk_done(size, last, &mut out) == Verdict::Store {
                    s.stored(Ok("id"), &mut out);
                }
            }
            Action::StartTls => s.tls_started("TLSv1.3".into()),
            Action::CheckRecipient => {
                assert!(s.pending_recipient().is_some());
                s.recipient_checked(&decision(twist), &mut out);
            }
            Action::Authenticate => {
                assert!(s.take_credentials().is_some());
                let checked = match twist % 3 {
                    0 => Checked::Valid("fuzz".into()),
                    1 => Checked::Invalid,
                    _ => Checked::Unavailable("fuzz".into()),
                };
                s.authenticated(checked, &mut out);
            }
            Action::Close => assert!(s.is_closed()),
            Action::ReadCommands | Action::Abandon => {}
        }
        // BDAT is answered once its chunk is in; everything else at once.
        assert!(!out.is_empty(), "a command without a reply");
        well_formed(&out);
    }
});
