//! The end-of-message stages of a message the session said to store, in
//! order: the policy service at END-OF-MESSAGE (`--policy-stages data`),
//! then rspamd; and a DISCARD from either policy stage.
//!
//! Why it exists: the connection should await one call and get one
//! outcome (store, refuse, or answer 250 without storing); the order of
//! the stages and what each answer does to the message are decided here.
//! When none is configured the connection does not call in at all.

use std::net::SocketAddr;

use super::message::Message;
use super::policy_stage::{self, Finished};
use super::rspamd_stage;
use super::settings::Settings;
use super::shard::Shard;
use crate::policy::delegation::{Decision, Stage};
use crate::smtp::Session;
use crate::spool::SpamVerdict;

/// What the connection does with the message.
pub enum Outcome {
    /// Commit it (changed as the stages asked), with rspamd's verdict.
    Store(Option<SpamVerdict>),
    /// Refuse it with this reply; nothing is stored.
    Refuse {
        code: u16,
        status: String,
        text: String,
    },
    /// Answer 250 and store nothing (a policy DISCARD, with its text).
    Discard(String),
}

/// Whether a message of `session` needs these stages at all.
pub fn needed(settings: &Settings, session: &Session) -> bool {
    settings.rspamd.is_some()
        || session.envelope().discard.is_some()
        || settings
            .config
            .policy_service
            .as_ref()
            .is_some_and(|p| p.at_data)
}

/// Runs the stages on `m` (queue id `id`).
pub async fn run(
    shard: &Shard,
    settings: &Settings,
    session: &Session,
    peer: SocketAddr,
    m: &mut Message,
    id: &str,
) -> Outcome {
    let mut discard = session.envelope().discard.clone();
    if settings
        .config
        .policy_service
        .as_ref()
        .is_some_and(|p| p.at_data)
    {
        let finished = Finished {
            queue_id: id,
            size: m.intake.size(),
        };
        let decision = policy_stage::ask(
            shard,
            settings,
            session,
            peer,
            Stage::EndOfMessage,
            Some(finished),
        )
        .await;
        match decision {
            Decision::Refuse(r) => {
                return Outcome::Refuse {
                    code: r.code,
                    status: r.status,
                    text: format!("<END-OF-MESSAGE>: End-of-data rejected: {}", r.text),
                }
            }
            Decision::Prepend(header) => {
                let line = [header.as_bytes(), b"\r\n"].concat();
                if !m.intake.insert_after_head(&line) {
                    shard.policy_note(format_args!(
                        "PREPEND {header:?} not added to {id}: the message was \
                         streamed to the spool before the end-of-message answer"
                    ));
                }
            }
            Decision::Discard(why) => discard = Some(why),
            _ => {}
        }
    }
    if let Some(why) = discard {
        return Outcome::Discard(why);
    }
    rspamd_stage::scan(shard, settings, session, peer, m, id).await
}
