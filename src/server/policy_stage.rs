//! The policy-service stage: what the connection asks `--policy-service`
//! at RCPT and at the end of a message, and what a failure counts as.
//!
//! Why it exists: the request needs facts from the session, the
//! connection and the message, and a failure must become the operator's
//! `--policy-default` with a log line (rate-limited: a service that is
//! down would fail every RCPT). Keeping that here leaves the connection
//! with one await and the session with one decision.

use std::net::SocketAddr;

use super::settings::Settings;
use super::shard::Shard;
use crate::config::PolicyDefault;
use crate::policy::delegation::{write_request, Decision, Facts, PolicyReply, Stage};
use crate::smtp::Session;

/// The message being decided on at END-OF-MESSAGE.
pub struct Finished<'a> {
    pub queue_id: &'a str,
    pub size: u64,
}

/// Asks the service (if any) about the session's pending recipient
/// (`Stage::Rcpt`) or the finished message; always returns a decision.
pub async fn ask(
    shard: &Shard,
    settings: &Settings,
    session: &Session,
    peer: SocketAddr,
    stage: Stage,
    message: Option<Finished<'_>>,
) -> Decision {
    let (Some(client), Some(service)) = (&settings.policy, &settings.config.policy_service) else {
        return Decision::Accept;
    };
    let env = session.envelope();
    let sender = env.reverse_path();
    let recipient = match stage {
        Stage::Rcpt => session.pending_recipient().map(|r| r.to_string()),
        // One recipient is named; with several, none (as Postfix does).
        Stage::EndOfMessage => (env.rcpt_to.len() == 1).then(|| env.rcpt_to[0].to_string()),
    }
    .unwrap_or_default();
    let instance = format!("{peer}.{}", shard.core());
    let tls = session.tls().map(|t| t.split_once(' ').unwrap_or((t, "")));
    let facts = Facts {
        esmtp: session.is_esmtp(),
        helo: session.helo().unwrap_or(""),
        queue_id: message.as_ref().map_or("", |m| m.queue_id),
        sender: &sender,
        recipient: &recipient,
        recipient_count: match stage {
            Stage::Rcpt => 0,
            Stage::EndOfMessage => env.rcpt_to.len(),
        },
        client_address: peer.ip().to_string(),
        client_port: peer.port(),
        size: message.as_ref().map_or(env.size.unwrap_or(0), |m| m.size),
        encryption: tls,
        sasl_username: session.auth().unwrap_or(""),
        instance: &instance,
    };
    let mut request = Vec::with_capacity(640);
    write_request(&mut request, stage, &facts);
    let about = || format!("client={peer} from=<{sender}> to=<{recipient}>");
    match client.ask(&request).await {
        Ok(Decision::Warn(text)) => {
            shard.policy_note(format_args!("warn: {text}: {}", about()));
            Decision::Accept
        }
        Ok(Decision::Unsupported(action)) => {
            shard.policy_note(format_args!(
                "action {action} is not supported by sluice, taken as DUNNO: {}",
                about()
            ));
            Decision::Accept
        }
        Ok(decision) => decision,
        Err(e) => {
            let (decision, taken) = match service.default {
                PolicyDefault::Dunno => (Decision::Accept, "dunno"),
                PolicyDefault::Defer => (
                    Decision::Refuse(PolicyReply {
                        code: 451,
                        status: "4.3.5".into(),
                        text: "Server configuration problem".into(),
                    }),
                    "defer",
                ),
            };
            shard.policy_note(format_args!(
                "service {} failed ({e}), taken as {taken} (--policy-default): {}",
                client.target(),
                about()
            ));
            decision
        }
    }
}
