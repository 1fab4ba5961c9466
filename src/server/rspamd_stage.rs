//! The rspamd stage: a finished message, before its commit, to rspamd;
//! the verdict applied (refuse, defer, add headers, rewrite the subject,
//! store), logged with the queue id.
//!
//! Why it exists: what rspamd is sent, which messages are not scanned,
//! what `--rspamd-fail` means and how a verdict changes the message are
//! decided here; `end_of_message` runs it after the policy service.

use std::net::SocketAddr;

use bytes::Bytes;

use super::end_of_message::Outcome;
use super::message::Message;
use super::settings::Settings;
use super::shard::Shard;
use crate::policy::edit::{header_lines, set_subject};
use crate::policy::rspamd::{Action, Envelope};
use crate::smtp::Session;
use crate::spool::SpamVerdict;

/// Scans `m` (queue id `id`) if rspamd is configured; applies the verdict.
pub async fn scan(
    shard: &Shard,
    settings: &Settings,
    session: &Session,
    peer: SocketAddr,
    m: &mut Message,
    id: &str,
) -> Outcome {
    let (Some(client), Some(rspamd)) = (&settings.rspamd, &settings.config.rspamd) else {
        return Outcome::Store(None);
    };
    let size = m.intake.size();
    if size > rspamd.max_size as u64 {
        note(
            shard,
            format_args!("{id} not scanned: {size} octets is over --rspamd-max-size"),
        );
        return Outcome::Store(None);
    }
    let Some(message) = m.intake.stored_whole() else {
        // Streamed to the spool under memory pressure: rspamd cannot have it.
        return failed(
            shard,
            rspamd.fail_closed,
            id,
            "the message was streamed to the spool (memory budget)",
        );
    };
    let env = session.envelope();
    let from = env.reverse_path();
    let request = Envelope {
        ip: peer.ip().to_string(),
        helo: session.helo().unwrap_or(""),
        from: &from,
        rcpt: env.rcpt_to.iter().map(|r| r.to_string()).collect(),
        queue_id: id,
        user: session.auth(),
    };
    let verdict = match client
        .check(&request, Bytes::copy_from_slice(message))
        .await
    {
        Ok(v) => v,
        Err(e) => return failed(shard, rspamd.fail_closed, id, &e.to_string()),
    };
    tracing::info!(
        core = shard.core(),
        queue_id = id,
        "rspamd {id} from {peer}: {} (score {:.2} / {:.2})",
        verdict.action.name(),
        verdict.score,
        verdict.required_score
    );
    let stored = SpamVerdict {
        action: verdict.action.name().to_string(),
        score: format!("{:.2}", verdict.score),
    };
    let text = |fallback: &str| {
        verdict
            .smtp_message
            .clone()
            .unwrap_or_else(|| fallback.to_string())
    };
    match verdict.action {
        Action::Reject => Outcome::Refuse {
            code: 554,
            status: "5.7.1".into(),
            text: text("Spam message rejected"),
        },
        Action::SoftReject | Action::Greylist => Outcome::Refuse {
            code: 451,
            status: "4.7.1".into(),
            text: text("Try again later"),
        },
        Action::AddHeader => {
            let mut headers = vec![("X-Spam".to_string(), "Yes".to_string())];
            headers.extend(
                verdict
                    .add_headers
                    .iter()
                    .filter(|(name, _)| !name.eq_ignore_ascii_case("X-Spam"))
                    .cloned(),
            );
            if !m.intake.insert_after_head(&header_lines(&headers)) {
                note(
                    shard,
                    format_args!("{id}: rspamd's headers did not fit; stored without them"),
                );
            }
            Outcome::Store(Some(stored))
        }
        Action::RewriteSubject => {
            if let Some(subject) = &verdict.subject {
                let rewritten = m.intake.after_head().map(|rest| set_subject(rest, subject));
                if !rewritten.is_some_and(|r| m.intake.replace_after_head(&r)) {
                    note(
                        shard,
                        format_args!("{id}: the rewritten subject did not fit; stored as sent"),
                    );
                }
            }
            Outcome::Store(Some(stored))
        }
        Action::NoAction => Outcome::Store(Some(stored)),
    }
}

/// rspamd gave no verdict: `--rspamd-fail`.
fn failed(shard: &Shard, closed: bool, id: &str, why: &str) -> Outcome {
    let taken = if closed {
        "deferred (--rspamd-fail closed)"
    } else {
        "stored unscanned (--rspamd-fail open)"
    };
    note(shard, format_args!("{id} {taken}: {why}"));
    if closed {
        Outcome::Refuse {
            code: 451,
            status: "4.7.1".into(),
            text: "Try again later: the message could not be scanned".into(),
        }
    } else {
        Outcome::Store(None)
    }
}

fn note(shard: &Shard, what: std::fmt::Arguments<'_>) {
    shard.policy_note(format_args!("rspamd: {what}"));
}
