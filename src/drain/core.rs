//! Draining one core's spool: read committed messages in order, publish
//! them with a window of PubAcks outstanding, move the durable cursor over
//! the acknowledged prefix, delete segments nothing needs any more.
//!
//! Why it exists: this is where "at least once" is made: the cursor only
//! ever passes messages JetStream acknowledged, in spool order, and is
//! fsynced before any segment behind it is deleted. A failed publish is
//! retried (same `Nats-Msg-Id`) until it is acknowledged, so a drain that
//! is killed, or a NATS node that dies, costs a retry, never a message.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};
use async_nats::jetstream::context::PublishAckFuture;
use bytes::Bytes;

use super::jetstream::Link;
use super::DrainStats;
use crate::spool::cursor::{self, Cursor};
use crate::spool::tail::{Committed, Tail};
use crate::spool::walk::{check_message, check_size, list_segments, read_message};

/// Wait between looks at a spool with nothing new.
const IDLE_POLL: Duration = Duration::from_millis(20);
/// The cursor is written at most this often while messages flow.
const CURSOR_EVERY: Duration = Duration::from_millis(50);
/// Longest wait between retries of a failed publish.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Octets of messages read but not yet acknowledged, at most (besides the
/// window's count): large messages are read whole before they are sent.
const MAX_INFLIGHT_BYTES: u64 = 64 << 20;

/// What one core's drain needs.
pub struct CoreDrain {
    pub core: usize,
    pub dir: PathBuf,
    pub link: Arc<Link>,
    pub stats: Arc<DrainStats>,
    /// PubAcks outstanding at most.
    pub window: usize,
    /// Segments are kept at least this long after their last write.
    pub retain: Duration,
    pub stop: Arc<AtomicBool>,
}

/// The drain was told to stop while a publish was being retried.
#[derive(Debug, thiserror::Error)]
#[error("stopped with messages not yet acknowledged; they are sent again at the next start")]
struct Stopped;

/// A message handed to JetStream and not yet acknowledged.
struct Pending {
    commit: Committed,
    /// The stored octets; `None` when they failed their checksum (the
    /// message is reported and passed over: it cannot be handed on intact).
    data: Option<Bytes>,
    ack: Option<PublishAckFuture>,
}

impl CoreDrain {
    /// Runs until `stop`; then waits for the acks in flight and saves the
    /// cursor. Stopped while NATS is unreachable, it saves what was
    /// acknowledged and leaves the rest for the next start.
    pub async fn run(self) -> Result<()> {
        let mut cursor = cursor::read(&self.dir)?;
        let mut saved = cursor;
        let result = self.drain(&mut cursor, &mut saved).await;
        if let Some(c) = cursor.filter(|c| Some(*c) != saved) {
            self.save(&c)?;
        }
        match result {
            Err(e) if e.is::<Stopped>() => Ok(()),
            other => other,
        }
    }

    async fn drain(&self, cursor: &mut Option<Cursor>, saved: &mut Option<Cursor>) -> Result<()> {
        let mut tail = Tail::open(&self.dir, cursor.map(|c| (c.segment, c.offset)))?;
        if let Some((segment, offset)) = tail.cursor_ahead {
            let (s, o) = tail.position();
            tracing::warn!(
                core = self.core,
                "the cursor (segment {segment}, offset {offset}) is past the end of the spool's records (segment {s}, offset {o}); records handed on before a power loss were not synced by serve (their senders got no 250). Going on from the end."
            );
        }
        let mut inflight: VecDeque<Pending> = VecDeque::new();
        let mut inflight_bytes = 0u64;
        // Read from the spool, not yet sent.
        let mut ready: VecDeque<Committed> = VecDeque::new();
        let mut last_save = Instant::now();
        let mut reported_problems = 0;
        loop {
            let stopping = self.stop.load(Relaxed);
            // Refill in batches: looking at the spool costs a directory
            // listing and a file open.
            if !stopping && ready.is_empty() && inflight.len() <= self.window / 2 {
                ready.extend(tail.poll(self.window - inflight.len())?);
            }
            while !stopping
                && inflight.len() < self.window
                && (inflight.is_empty() || inflight_bytes < MAX_INFLIGHT_BYTES)
            {
                let Some(c) = ready.pop_front() else { break };
                inflight_bytes += c.found.envelope.size;
                inflight.push_back(self.send(c).await?);
            }
            for p in &tail.problems[reported_problems..] {
                tracing::warn!(
                    core = self.core,
                    "damaged record in finished segment {} at offset {}: {}; skipped (see `sluice spool verify`)",
                    p.segment, p.offset, p.defect
                );
            }
            reported_problems = tail.problems.len();
            match inflight.pop_front() {
                Some(p) => {
                    inflight_bytes -= p.commit.found.envelope.size;
                    self.acknowledged(p, cursor).await?;
                }
                None if stopping => break,
                None => tokio::time::sleep(IDLE_POLL).await,
            }
            let due = last_save.elapsed() >= CURSOR_EVERY || inflight.is_empty();
            if cursor != saved && due {
                self.save(cursor.as_ref().expect("advanced"))?;
                *saved = *cursor;
                last_save = Instant::now();
                let unacknowledged = inflight.iter().map(|p| &p.commit).chain(&ready);
                self.delete_drained(&tail, unacknowledged, cursor.as_ref());
            }
        }
        Ok(())
    }

    /// Reads the message's octets (from the commit record itself, the
    /// chunks the tail kept, or its chunks on disk), checks them and sends
    /// them.
    async fn send(&self, mut commit: Committed) -> Result<Pending> {
        let data = if commit.found.chunks.is_empty() {
            // All octets sit in the commit record, whose CRC32C the tail
            // already checked: only the size is left to compare.
            let data = std::mem::take(&mut commit.found.inline);
            check_size(&commit.found, data.len()).map(|()| data)
        } else if let Some(held) = commit.held.take() {
            // Every chunk was checked against its record's CRC32C as the
            // tail read it: joined with the inline octets, the size is
            // left to compare.
            let inline = std::mem::take(&mut commit.found.inline);
            let mut data = Vec::with_capacity(commit.found.envelope.size as usize);
            for chunk in held.iter().chain([&inline]) {
                data.extend_from_slice(chunk);
            }
            check_size(&commit.found, data.len()).map(|()| Bytes::from(data))
        } else {
            // The message goes to the reading thread and comes back,
            // instead of copying its inline octets.
            let dir = self.dir.clone();
            let (back, read) = tokio::task::spawn_blocking(move || {
                let found = &commit.found;
                let read = read_message(&dir, found)
                    .with_context(|| format!("cannot read message {}", found.envelope.id))
                    .map(|data| check_message(found, &data).map(|()| Bytes::from(data)));
                (commit, read)
            })
            .await?;
            commit = back;
            read?
        };
        let data = match data {
            Ok(d) => d,
            Err(why) => {
                self.stats.corrupt.add(1);
                tracing::error!(
                    core = self.core,
                    "{why}: the stored copy is damaged and is NOT handed on (see `sluice spool verify`)"
                );
                return Ok(Pending {
                    commit,
                    data: None,
                    ack: None,
                });
            }
        };
        let ack = self.publish_until_sent(&commit, data.clone()).await?;
        Ok(Pending {
            commit,
            data: Some(data),
            ack: Some(ack),
        })
    }

    /// Publishes, retrying while NATS refuses.
    async fn publish_until_sent(&self, c: &Committed, data: Bytes) -> Result<PublishAckFuture> {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.link.publish(&c.found.envelope, data.clone()).await {
                Ok(fut) => return Ok(fut),
                Err(e) => {
                    self.retry(&c.found.envelope.id.to_string(), &e, &mut backoff)
                        .await?
                }
            }
        }
    }

    /// Waits for a PubAck (re-publishing until one comes) and moves the
    /// cursor past the message.
    async fn acknowledged(&self, p: Pending, cursor: &mut Option<Cursor>) -> Result<()> {
        let Pending { commit, data, ack } = p;
        let mut ack = ack;
        let mut backoff = Duration::from_millis(50);
        while let Some(f) = ack.take() {
            match f.await {
                Ok(a) => {
                    if a.duplicate {
                        self.stats.duplicates.add(1);
                    }
                }
                Err(e) => {
                    let e = anyhow::Error::new(e);
                    self.retry(&commit.found.envelope.id.to_string(), &e, &mut backoff)
                        .await?;
                    let data = data.clone().expect("only sent messages have acks");
                    ack = Some(self.publish_until_sent(&commit, data).await?);
                }
            }
        }
        let env = &commit.found.envelope;
        if data.is_some() {
            self.stats.messages.add(1);
            self.stats.bytes.add(env.size);
        }
        *cursor = Some(Cursor {
            segment: commit.end.0,
            offset: commit.end.1,
            last_id: env.id.0,
            messages: cursor.map_or(0, |c| c.messages) + 1,
        });
        Ok(())
    }

    /// Logs a failed publish and waits before the next try; `Err(Stopped)`
    /// once SIGTERM/SIGINT came (the message is re-sent at the next start).
    async fn retry(&self, id: &str, e: &anyhow::Error, backoff: &mut Duration) -> Result<()> {
        if self.stop.load(Relaxed) {
            return Err(Stopped.into());
        }
        self.stats.retries.add(1);
        tracing::warn!(
            core = self.core,
            "message {id}: {e:#}; retrying in {backoff:?}"
        );
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        Ok(())
    }

    fn save(&self, c: &Cursor) -> Result<()> {
        cursor::write(&self.dir, c)
            .with_context(|| format!("cannot write the drain cursor in {}", self.dir.display()))
    }

    /// Deletes segments that hold nothing unacknowledged: before the
    /// cursor's segment, before any chunk of a message not yet handed on,
    /// and old enough for --retain.
    fn delete_drained<'a>(
        &self,
        tail: &Tail,
        unacknowledged: impl Iterator<Item = &'a Committed>,
        cursor: Option<&Cursor>,
    ) {
        let Some(cursor) = cursor else { return };
        let keep_from = first_to_keep(cursor, tail.oldest_needed(), unacknowledged);
        let Ok(segments) = list_segments(&self.dir) else {
            return;
        };
        let mut deleted = false;
        for (n, path) in segments.into_iter().take_while(|(n, _)| *n < keep_from) {
            if !self.retain.is_zero() {
                let age = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok());
                if age.is_none_or(|a| a < self.retain) {
                    break;
                }
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    deleted = true;
                    self.stats.segments_deleted.add(1);
                    tracing::debug!(core = self.core, "deleted drained segment {n}");
                }
                Err(e) => tracing::warn!("cannot delete {}: {e}", path.display()),
            }
        }
        if deleted {
            let _ = std::fs::File::open(&self.dir).and_then(|d| d.sync_all());
        }
    }
}

/// The oldest segment that must stay: the cursor's (serve may still write
/// there, and it holds the next records), the oldest with chunks of a
/// message the tail has not returned yet, and every segment holding a
/// part of a message read but not yet acknowledged.
fn first_to_keep<'a>(
    cursor: &Cursor,
    tail_needs: u64,
    unacknowledged: impl Iterator<Item = &'a Committed>,
) -> u64 {
    unacknowledged
        .flat_map(|c| {
            let f = &c.found;
            std::iter::once(f.segment).chain(f.chunks.iter().map(|l| l.segment))
        })
        .chain([cursor.segment, tail_needs])
        .min()
        .unwrap_or(cursor.segment)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::walk::{ChunkLoc, Found};
    use crate::spool::{QueueId, StoredEnvelope};

    fn committed(segment: u64, chunk_segments: &[u64]) -> Committed {
        Committed {
            found: Found {
                envelope: StoredEnvelope {
                    id: QueueId(1),
                    received_at_micros: 0,
                    size: 0,
                    body_crc: 0,
                    chunks: chunk_segments.len() as u32,
                    peer: String::new(),
                    helo: String::new(),
                    mail_from: String::new(),
                    rcpt_to: Vec::new(),
                    spam: None,
                    auth: None,
                    dsn: None,
                },
                segment,
                offset: 0,
                chunks: chunk_segments
                    .iter()
                    .map(|&segment| ChunkLoc {
                        segment,
                        offset: 0,
                        len: 1,
                    })
                    .collect(),
                inline: Bytes::new(),
            },
            end: (segment, 100),
            held: None,
        }
    }

    #[test]
    fn segments_with_any_unacknowledged_part_are_kept() {
        let cursor = Cursor {
            segment: 9,
            offset: 10,
            last_id: 1,
            messages: 1,
        };
        let none: [Committed; 0] = [];
        assert_eq!(first_to_keep(&cursor, 9, none.iter()), 9);
        // The tail holds chunks (message not committed yet) in segment 4.
        assert_eq!(first_to_keep(&cursor, 4, none.iter()), 4);
        // A message read but not acknowledged: its chunks reach back to 3.
        let waiting = [committed(10, &[3, 7]), committed(11, &[])];
        assert_eq!(first_to_keep(&cursor, 9, waiting.iter()), 3);
        assert_eq!(first_to_keep(&cursor, 12, [committed(10, &[])].iter()), 9);
    }
}
