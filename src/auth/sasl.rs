//! The server side of the SASL mechanisms sluice offers, PLAIN (RFC 4616)
//! and LOGIN, as a sans-I/O exchange: the AUTH command and each response
//! line in, a challenge or the client's credentials out.
//!
//! Why it exists: the exchange spans several lines (`334` challenges),
//! base64 and a cancel (`*`) at every step, and every corner of it is a
//! unit test here rather than a socket test. Whoever checks the
//! credentials (the users file, Dovecot) gets them as one [`Credentials`].

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// A mechanism offered in EHLO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
}

impl Mechanism {
    /// The mechanism named `name` (any case), if offered.
    pub fn named(name: &str) -> Option<Mechanism> {
        if name.eq_ignore_ascii_case("PLAIN") {
            Some(Mechanism::Plain)
        } else if name.eq_ignore_ascii_case("LOGIN") {
            Some(Mechanism::Login)
        } else {
            None
        }
    }
}

/// What the client proved it knows, to be checked.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Why an exchange ended without credentials; each maps to one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslError {
    /// The client sent `*` (501 5.7.0).
    Cancelled,
    /// Not base64 (501 5.5.2).
    NotBase64,
    /// Decoded, but not what the mechanism expects (501 5.5.2), with why.
    Malformed(&'static str),
}

/// The next step of an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send `334 <this>` and read one response line.
    Challenge(&'static str),
    /// The exchange is complete: check these.
    Done(Credentials),
    /// The exchange failed.
    Failed(SaslError),
}

/// `Username:` and `Password:`, base64, as LOGIN clients expect them.
const USERNAME: &str = "VXNlcm5hbWU6";
const PASSWORD: &str = "UGFzc3dvcmQ6";

/// An exchange in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    mechanism: Mechanism,
    /// LOGIN: the user name, once given.
    user: Option<String>,
}

impl Exchange {
    /// `AUTH <mechanism> [initial-response]`.
    pub fn start(mechanism: Mechanism, initial: Option<&str>) -> (Exchange, Step) {
        let mut x = Exchange {
            mechanism,
            user: None,
        };
        let step = match (mechanism, initial) {
            (Mechanism::Plain, None) => Step::Challenge(""),
            (Mechanism::Login, None) => Step::Challenge(USERNAME),
            (_, Some(line)) => x.respond(line),
        };
        (x, step)
    }

    /// One response line from the client.
    pub fn respond(&mut self, line: &str) -> Step {
        let line = line.trim_end();
        if line == "*" {
            return Step::Failed(SaslError::Cancelled);
        }
        // RFC 4954 §4: "=" is an empty initial response.
        let decoded = if line == "=" {
            Vec::new()
        } else {
            match STANDARD.decode(line) {
                Ok(d) => d,
                Err(_) => return Step::Failed(SaslError::NotBase64),
            }
        };
        match self.mechanism {
            Mechanism::Plain => plain(&decoded),
            Mechanism::Login => match self.user.take() {
                None => match String::from_utf8(decoded) {
                    Ok(user) if !user.is_empty() => {
                        self.user = Some(user);
                        Step::Challenge(PASSWORD)
                    }
                    _ => Step::Failed(SaslError::Malformed("the user name is empty or not UTF-8")),
                },
                Some(user) => Step::Done(Credentials {
                    user,
                    password: decoded,
                }),
            },
        }
    }
}

/// `[authzid] NUL authcid NUL passwd`; an authorization identity other
/// than the user's own is not supported.
fn plain(decoded: &[u8]) -> Step {
    let mut parts = decoded.split(|&b| b == 0);
    let (Some(authz), Some(authc), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Step::Failed(SaslError::Malformed(
            "PLAIN wants authzid NUL user NUL password",
        ));
    };
    let Ok(user) = std::str::from_utf8(authc) else {
        return Step::Failed(SaslError::Malformed("the user name is not UTF-8"));
    };
    if user.is_empty() {
        return Step::Failed(SaslError::Malformed("the user name is empty"));
    }
    if !authz.is_empty() && authz != authc {
        return Step::Failed(SaslError::Malformed(
            "acting for another identity is not supported",
        ));
    }
    Step::Done(Credentials {
        user: user.to_string(),
        password: password.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &[u8]) -> String {
        STANDARD.encode(s)
    }

    fn creds(user: &str, password: &str) -> Step {
        Step::Done(Credentials {
            user: user.into(),
            password: password.into(),
        })
    }

    #[test]
    fn plain_with_and_without_an_initial_response() {
        let initial = b64(b"\0alice\0secret");
        let (_, step) = Exchange::start(Mechanism::Plain, Some(&initial));
        assert_eq!(step, creds("alice", "secret"));
        let (mut x, step) = Exchange::start(Mechanism::Plain, None);
        assert_eq!(step, Step::Challenge(""));
        assert_eq!(
            x.respond(&b64(b"alice\0alice\0secret")),
            creds("alice", "secret")
        );
    }

    #[test]
    fn login_asks_for_the_user_then_the_password() {
        let (mut x, step) = Exchange::start(Mechanism::Login, None);
        assert_eq!(step, Step::Challenge(USERNAME));
        assert_eq!(x.respond(&b64(b"bob")), Step::Challenge(PASSWORD));
        assert_eq!(x.respond(&b64(b"pw")), creds("bob", "pw"));
        let (mut x, step) = Exchange::start(Mechanism::Login, Some(&b64(b"bob")));
        assert_eq!(step, Step::Challenge(PASSWORD));
        assert_eq!(x.respond(&b64(b"")), creds("bob", ""));
    }

    #[test]
    fn cancel_garbage_and_impersonation_fail() {
        let (mut x, _) = Exchange::start(Mechanism::Login, None);
        assert_eq!(x.respond("*"), Step::Failed(SaslError::Cancelled));
        let (mut x, _) = Exchange::start(Mechanism::Plain, None);
        assert_eq!(x.respond("not base64!"), Step::Failed(SaslError::NotBase64));
        for bad in [
            &b"alice\0secret"[..],
            b"\0\0secret",
            b"mallory\0alice\0pw",
            b"\0a\0b\0c",
        ] {
            let (_, step) = Exchange::start(Mechanism::Plain, Some(&b64(bad)));
            assert!(
                matches!(step, Step::Failed(SaslError::Malformed(_))),
                "{bad:?}"
            );
        }
        let (_, step) = Exchange::start(Mechanism::Plain, Some("="));
        assert!(matches!(step, Step::Failed(SaslError::Malformed(_))));
        assert_eq!(Mechanism::named("login"), Some(Mechanism::Login));
        assert_eq!(Mechanism::named("CRAM-MD5"), None);
    }
}
