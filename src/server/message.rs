//! A message in flight: from the session's go-ahead (354, or the first
//! BDAT chunk) to the spool's answer.
//!
//! Why it exists: a message is three things that must stay together: its
//! queue id and trace header, its body [`Intake`] (arena and all), and the
//! spool writer its spills and commit go to. [`Message::receive`] runs the
//! intake against a [`BodySource`] (the connection), writing spills as
//! the intake asks; [`Message::commit`] makes it durable. Dropping a
//! message anywhere (a disconnect, a refusal, RSET) returns its arena and
//! leaves nothing in the spool but chunk records no commit refers to,
//! which readers ignore and recovery cuts.

use std::net::SocketAddr;

use super::intake::{Intake, Limits, Need};
use super::settings::Settings;
use super::shard::Shard;
use crate::scan::DataScanner;
use crate::smtp::received::{with_keyword, write_received, Trace};
use crate::smtp::Session;
use crate::spool::id::now_micros;
use crate::spool::{MessageWriter, Origin, QueueId, StoreError};

/// Where a body's octets come from (the connection: its command buffer
/// first, then the socket).
#[allow(
    async_fn_in_trait,
    reason = "implemented by the connection and used on its own executor: no Send bound wanted"
)]
pub trait BodySource {
    /// Why the source gave up (the connection ends).
    type Error;
    /// Puts at least one octet at the start of `room`; returns how many.
    async fn read_body(&mut self, room: &mut [u8]) -> Result<usize, Self::Error>;
    /// The core's message memory is used up: pause a while (reading
    /// nothing, so the client is held back by TCP) before asking again.
    async fn wait_for_memory(&mut self) -> Result<(), Self::Error>;
}

/// How the body comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// DATA, up to `<CRLF>.<CRLF>`.
    Data,
    /// BDAT chunks.
    Chunks,
}

/// One message being received.
pub struct Message {
    /// The body so far.
    pub intake: Intake,
    writer: MessageWriter,
}

impl Message {
    /// Starts a message of the session's transaction: a queue id, and the
    /// trace header at the head of an arena from the core's pool.
    pub fn begin(
        shard: &Shard,
        settings: &Settings,
        session: &Session,
        peer: SocketAddr,
        transfer: Transfer,
    ) -> Message {
        let writer = shard.message_writer();
        let mut header = trace_header(writer.id(), settings, session, peer);
        // PREPEND answers of the policy service at RCPT, right after the
        // Received line.
        for line in &session.envelope().prepend {
            header.extend_from_slice(line.as_bytes());
            header.extend_from_slice(b"\r\n");
        }
        let limits = Limits {
            memory: shard.message_hold(),
            max_size: settings.config.max_message_size,
        };
        let arena = shard.arena();
        let intake = match transfer {
            Transfer::Data => Intake::data(
                arena,
                &header,
                DataScanner::new(settings.config.max_line_length),
                limits,
            ),
            Transfer::Chunks => Intake::chunks(arena, &header, limits),
        };
        Message { intake, writer }
    }

    /// The message's queue id.
    pub fn id(&self) -> QueueId {
        self.writer.id()
    }

    /// Reads the body (DATA) or the current chunk (BDAT) from `source`,
    /// spilling to the spool as the intake asks.
    pub async fn receive<S: BodySource>(&mut self, source: &mut S) -> Result<(), S::Error> {
        loop {
            match self.intake.need() {
                Need::Done => return Ok(()),
                Need::Spill(octets) => {
                    let written = self.writer.chunk(octets).await;
                    self.intake.spilled(written);
                }
                Need::Read(room) => {
                    let n = source.read_body(room).await?;
                    self.intake.received(n);
                }
                Need::Memory => source.wait_for_memory().await?,
            }
        }
    }

    /// Writes the commit record and waits until it is durable; the queue
    /// id and the stored octets (trace header included).
    pub async fn commit(self, origin: &Origin<'_>) -> Result<(QueueId, u64), StoreError> {
        if let Some(e) = self.intake.failure() {
            return Err(e.clone());
        }
        let tail = self.intake.stored();
        let total = self.writer.size() + tail.len() as u64;
        let id = self.writer.commit(origin, tail).await?;
        Ok((id, total))
    }
}

/// The `Received:` header for message `id` of `session`.
fn trace_header(id: QueueId, settings: &Settings, session: &Session, peer: SocketAddr) -> Vec<u8> {
    let env = session.envelope();
    let rcpt = (env.rcpt_to.len() == 1).then(|| env.rcpt_to[0].to_string());
    let mut header = Vec::with_capacity(256);
    write_received(
        &mut header,
        &Trace {
            helo: session.helo().unwrap_or("unknown"),
            peer,
            by: &settings.session.hostname,
            with: with_keyword(
                session.is_esmtp(),
                env.smtputf8,
                session.tls().is_some(),
                session.auth().is_some(),
            ),
            tls: session.tls(),
            id: &id.to_string(),
            rcpt: rcpt.as_deref(),
            unix_time: now_micros() / 1_000_000,
        },
    );
    header
}
