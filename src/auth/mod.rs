//! SMTP AUTH for the submission listeners (RFC 4954): the SASL exchange,
//! and the two places credentials are checked: the `--auth-users` file
//! and Dovecot's auth server (`--auth-dovecot`).
//!
//! Why it exists: the session only knows that credentials came in and
//! what the answer was ([`Checked`]); how they are checked must not block
//! the executor. Password hashes are computed on the core's blocking
//! thread (glommio's `spawn_blocking`); Dovecot is asked over async I/O.

pub mod dovecot;
pub mod sasl;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use crate::policy::client::PolicyTarget;
use dovecot::{DovecotClient, RequestContext};
use sasl::Credentials;
use users::AuthUsers;

/// How long Dovecot may take to answer.
pub const DOVECOT_TIMEOUT: Duration = Duration::from_secs(10);

/// What checking credentials found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// They are good: the user name to record (Dovecot may canonicalise it).
    Valid(String),
    /// Wrong user or password (535 5.7.8).
    Invalid,
    /// They could not be checked now (454 4.7.0), with why.
    Unavailable(String),
}

/// Where credentials are checked, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthBackend {
    Users(Arc<AuthUsers>),
    Dovecot(PolicyTarget),
}

/// One core's way of checking credentials.
pub enum Authenticator {
    Users(Arc<AuthUsers>),
    Dovecot(DovecotClient),
}

impl Authenticator {
    pub fn new(backend: &AuthBackend) -> Authenticator {
        match backend {
            AuthBackend::Users(u) => Authenticator::Users(u.clone()),
            AuthBackend::Dovecot(t) => {
                Authenticator::Dovecot(DovecotClient::new(t.clone(), DOVECOT_TIMEOUT))
            }
        }
    }

    /// Checks `creds` without blocking the executor.
    pub async fn check(&self, creds: Credentials, cx: &RequestContext) -> Checked {
        match self {
            Authenticator::Users(users) => {
                let users = users.clone();
                let Credentials { user, password } = creds;
                glommio::executor()
                    .spawn_blocking(move || {
                        if users.verify(&user, &password) {
                            Checked::Valid(user)
                        } else {
                            Checked::Invalid
                        }
                    })
                    .await
            }
            Authenticator::Dovecot(d) => d.check(&creds, cx).await,
        }
    }
}
