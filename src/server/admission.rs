//! The stage after the PROXY header: is this client trusted, and is it
//! within its limits?
//!
//! Why it exists: only once the client is known (the TCP peer, or the
//! address a PROXY header gave) can its limits apply. A trusted client
//! skips every limit and screen. Any other client is counted in the
//! shared [`ClientTable`](crate::client::ClientTable): over
//! `--client-connection-limit` or `--client-connection-rate` it gets 421
//! 4.7.0 instead of a greeting. An admitted client's slot then backs the
//! session's [`Quota`] (MAIL and RCPT rates) and the DNS list cache, and
//! is released when the session ends.

use std::net::IpAddr;
use std::rc::Rc;

use super::shard::Shard;
use crate::client::{ClientHold, ClientKey, Rates};
use crate::config::Admission;
use crate::metrics::Refusal;
use crate::smtp::{reply, Quota};

/// An admitted client.
pub struct Admitted {
    /// Exempt from every limit and screen.
    pub trusted: bool,
    /// Its slot in the client table (none for trusted clients, when no
    /// limit needs one, or when the table could not track it).
    pub hold: Option<ClientHold>,
}

/// Admits `ip` under `admission`, or says why not.
pub fn admit(shard: &Shard, admission: &Admission, ip: IpAddr) -> Result<Admitted, Refusal> {
    let untracked = |trusted| Admitted {
        trusted,
        hold: None,
    };
    if admission.trusts(ip) {
        return Ok(untracked(true));
    }
    if !admission.tracks_clients() {
        return Ok(untracked(false));
    }
    let Some(hold) = shard.clients().connect(ClientKey::of(ip)) else {
        shard.metrics().clients_untracked.add(1);
        return Ok(untracked(false));
    };
    let limit = admission.connection_limit;
    if limit > 0 && hold.connections() > limit {
        return Err(Refusal::ClientConnections);
    }
    if !hold.take_connection(admission.rates.connections) {
        return Err(Refusal::ClientConnectionRate);
    }
    Ok(Admitted {
        trusted: false,
        hold: Some(hold),
    })
}

/// The reply a refused client gets instead of the greeting.
pub fn refusal_reply(why: Refusal) -> reply::Reply {
    match why {
        Refusal::ClientConnectionRate => reply::CLIENT_CONNECTING_TOO_FAST,
        _ => reply::CLIENT_TOO_MANY_CONNECTIONS,
    }
}

/// What the log says about a refused client.
pub fn refusal_text(why: Refusal, admission: &Admission) -> String {
    match why {
        Refusal::ClientConnectionRate => format!(
            "over --client-connection-rate {} per minute",
            admission.rates.connections
        ),
        _ => format!(
            "over --client-connection-limit {}",
            admission.connection_limit
        ),
    }
}

/// A session's share of its client's MAIL and RCPT rates.
pub struct ClientQuota {
    hold: ClientHold,
    rates: Rates,
    shard: Rc<Shard>,
    ip: IpAddr,
}

impl ClientQuota {
    /// The quota of the client holding `hold`.
    pub fn new(hold: ClientHold, rates: Rates, shard: Rc<Shard>, ip: IpAddr) -> ClientQuota {
        ClientQuota {
            hold,
            rates,
            shard,
            ip,
        }
    }
}

impl ClientQuota {
    /// Takes one event of `per_minute` with `take`; a refusal is counted
    /// and logged as `what` (`MAIL`, `RCPT`) over `flag`.
    fn take(
        &self,
        take: fn(&ClientHold, u32) -> bool,
        per_minute: u32,
        why: Refusal,
        what: &str,
        flag: &str,
    ) -> bool {
        let ok = take(&self.hold, per_minute);
        if !ok {
            self.shard.refused(
                why,
                self.ip,
                format_args!(
                    "{what} from {}: over {flag} {per_minute} per minute",
                    self.ip
                ),
            );
        }
        ok
    }
}

impl Quota for ClientQuota {
    fn message(&mut self) -> bool {
        let rate = self.rates.messages;
        let why = Refusal::ClientMessageRate;
        self.take(
            ClientHold::take_message,
            rate,
            why,
            "MAIL",
            "--client-message-rate",
        )
    }

    fn recipient(&mut self) -> bool {
        let rate = self.rates.recipients;
        let why = Refusal::ClientRecipientRate;
        self.take(
            ClientHold::take_recipient,
            rate,
            why,
            "RCPT",
            "--client-recipient-rate",
        )
    }
}
