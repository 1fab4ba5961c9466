//! The settings of the submission listeners and AUTH, validated.
//!
//! Why it exists: a submission listener without TLS or without a way to
//! check passwords, or a password file without a listener to use it on,
//! is a mistake an operator should hear about at start-up, in one
//! sentence naming the setting.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};

use super::policy::parse_target;
use super::{each, Given};
use crate::auth::users::AuthUsers;
use crate::auth::AuthBackend;

/// `--submission`, `--submissions` and where credentials are checked.
#[derive(Debug, Default)]
pub struct Submission {
    pub plain: Vec<SocketAddr>,
    pub implicit: Vec<SocketAddr>,
    pub auth: Option<AuthBackend>,
}

pub(super) fn validate(g: &Given, tls: bool) -> Result<Submission> {
    let address = |a: &str| {
        a.parse::<SocketAddr>()
            .map_err(|_| "expected IP:PORT, like 127.0.0.1:587")
    };
    let plain = each(g.submission.clone(), address)?;
    let implicit = each(g.submissions.clone(), address)?;
    let listener = g.submission.as_ref().or(g.submissions.as_ref());
    let auth = match (&g.auth_users, &g.auth_dovecot) {
        (Some(users), None) => {
            let loaded = AuthUsers::load(&users.value)
                .map_err(|e| anyhow!("{}: {e}", users.source.with_value(users.value.display())))?;
            Some(AuthBackend::Users(Arc::new(loaded)))
        }
        (None, Some(dovecot)) => Some(AuthBackend::Dovecot(parse_target(&dovecot.value).map_err(
            |why| {
                anyhow!(
                    "{}: {why}",
                    dovecot.source.with_value(format!("{:?}", dovecot.value))
                )
            },
        )?)),
        (Some(u), Some(d)) => bail!(
            "{} and {} are two ways of checking passwords: give one",
            u.source,
            d.source
        ),
        (None, None) => None,
    };
    match (listener, &auth) {
        (Some(l), None) => bail!(
            "{} needs --auth-users FILE or --auth-dovecot to check the passwords of its clients",
            l.source
        ),
        (None, Some(_)) => {
            let given = g.auth_users.as_ref().map(|u| u.source.clone());
            let given = given.or_else(|| g.auth_dovecot.as_ref().map(|d| d.source.clone()));
            bail!(
                "{} only makes sense with --submission or --submissions",
                given.expect("one of them is given")
            )
        }
        (Some(l), Some(_)) if !tls => bail!(
            "{} needs --tls-cert and --tls-key (AUTH is offered only over TLS)",
            l.source
        ),
        _ => {}
    }
    Ok(Submission {
        plain,
        implicit,
        auth,
    })
}
