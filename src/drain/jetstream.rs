//! The JetStream side of the drain: connecting to the cluster, creating or
//! checking the stream, and publishing one spooled message (through the
//! object store when it is larger than the server's max payload).
//!
//! Why it exists: everything the drain knows about NATS is here, so the
//! per-core loop reads like the spool it follows. The stream is the
//! replicated log; sluice only appends to it, with `Nats-Msg-Id` set so a
//! message handed on twice is stored once.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::object_store::{self, ObjectStore};
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::{self, Context};
use async_nats::HeaderMap;
use bytes::Bytes;
use tokio::sync::OnceCell;

use super::headers::{envelope_headers, OBJECT};
use crate::spool::StoredEnvelope;

/// How long start-up waits for the cluster to answer JetStream requests
/// (a freshly started cluster elects its leaders first).
const READY_WAIT: Duration = Duration::from_secs(60);
/// Room left in a message for the envelope headers.
const HEADER_ROOM: usize = 8 << 10;

/// Where and how messages go.
#[derive(Debug, Clone)]
pub struct Target {
    /// Comma-separated NATS URLs.
    pub urls: String,
    /// Stream name.
    pub stream: String,
    /// Subject every message is published on.
    pub subject: String,
    /// Replicas for a stream (and bucket) we create.
    pub replicas: usize,
    /// Object store bucket for messages over the max payload.
    pub bucket: String,
}

/// A connected drain.
pub struct Link {
    /// The NATS client (for its connection state).
    pub client: async_nats::Client,
    js: Context,
    target: Target,
    objects: OnceCell<ObjectStore>,
}

impl Link {
    /// Connects and makes sure the stream exists and fits.
    pub async fn connect(target: Target) -> Result<Link> {
        let urls: Vec<&str> = target.urls.split(',').map(str::trim).collect();
        let client = async_nats::ConnectOptions::new()
            .name("sluice-drain")
            .connection_timeout(Duration::from_secs(5))
            .connect(urls.as_slice())
            .await
            .with_context(|| format!("--nats {}: cannot connect", target.urls))?;
        let js = jetstream::new(client.clone());
        let link = Link {
            client,
            js,
            target,
            objects: OnceCell::new(),
        };
        link.ensure_stream().await?;
        Ok(link)
    }

    async fn ensure_stream(&self) -> Result<()> {
        let t = &self.target;
        let wanted = stream::Config {
            name: t.stream.clone(),
            subjects: vec![t.subject.clone()],
            storage: StorageType::File,
            num_replicas: t.replicas,
            duplicate_window: Duration::from_secs(10 * 60),
            ..Default::default()
        };
        let started = Instant::now();
        loop {
            match self.js.get_or_create_stream(wanted.clone()).await {
                Ok(mut s) => {
                    let info = s.info().await.context("cannot read the stream's info")?;
                    return check_stream(&info.config, t).map_err(|why| {
                        anyhow!("the existing stream {} does not fit: {why}", t.stream)
                    });
                }
                Err(e) if started.elapsed() < READY_WAIT => {
                    tracing::warn!("JetStream not ready ({e}); retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => bail!("cannot create or find the stream {}: {e}", t.stream),
            }
        }
    }

    /// Sends one message; the returned future resolves to its PubAck.
    /// Messages over the server's max payload are put in the object store
    /// first (awaited here) and a pointer message is sent instead.
    pub async fn publish(&self, env: &StoredEnvelope, data: Bytes) -> Result<PublishAckFuture> {
        let mut headers = HeaderMap::new();
        for (name, value) in envelope_headers(env) {
            headers.append(name, value.as_str());
        }
        let max = self.client.server_info().max_payload;
        let payload = if data.len() + HEADER_ROOM > max {
            let name = env.id.to_string();
            let bucket = self.objects().await?;
            bucket
                .put(name.as_str(), &mut data.as_ref())
                .await
                .with_context(|| format!("cannot store message {name} in the object store"))?;
            headers.append(OBJECT, format!("{}/{name}", self.target.bucket).as_str());
            Bytes::new()
        } else {
            data
        };
        let message = PublishMessage::build().payload(payload).headers(headers);
        self.js
            .send_publish(self.target.subject.clone(), message)
            .await
            .map_err(|e| anyhow!("publish failed: {e}"))
    }

    async fn objects(&self) -> Result<&ObjectStore> {
        self.objects
            .get_or_try_init(|| async {
                match self.js.get_object_store(&self.target.bucket).await {
                    Ok(b) => Ok(b),
                    Err(_) => self
                        .js
                        .create_object_store(object_store::Config {
                            bucket: self.target.bucket.clone(),
                            storage: StorageType::File,
                            num_replicas: self.target.replicas,
                            ..Default::default()
                        })
                        .await
                        .map_err(|e| {
                            anyhow!("cannot create the object store {}: {e}", self.target.bucket)
                        }),
                }
            })
            .await
    }
}

/// Why an existing stream cannot take our messages safely, if it cannot.
pub fn check_stream(c: &stream::Config, t: &Target) -> Result<(), String> {
    if c.storage != StorageType::File {
        return Err(
            "it keeps messages in memory; mail must survive a restart (use file storage)".into(),
        );
    }
    if c.no_ack {
        return Err("it has no_ack set, so publishes are never acknowledged".into());
    }
    if !c.subjects.iter().any(|s| subject_covers(s, &t.subject)) {
        return Err(format!(
            "its subjects {:?} do not include {}",
            c.subjects, t.subject
        ));
    }
    if c.duplicate_window < Duration::from_secs(60) {
        return Err(format!(
            "its duplicate window is {:?}; under a minute, a drain restart can store a message twice",
            c.duplicate_window
        ));
    }
    Ok(())
}

/// NATS subject matching: `*` is one token, `>` the rest.
pub fn subject_covers(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            urls: String::new(),
            stream: "MAIL".into(),
            subject: "mail.ingest".into(),
            replicas: 3,
            bucket: "b".into(),
        }
    }

    #[test]
    fn subjects_match_like_nats() {
        assert!(subject_covers("mail.ingest", "mail.ingest"));
        assert!(subject_covers("mail.*", "mail.ingest"));
        assert!(subject_covers("mail.>", "mail.ingest"));
        assert!(subject_covers(">", "mail.ingest"));
        assert!(!subject_covers("mail", "mail.ingest"));
        assert!(!subject_covers("mail.ingest.x", "mail.ingest"));
        assert!(!subject_covers("*.x", "mail.ingest"));
    }

    #[test]
    fn incompatible_streams_are_named_with_the_reason() {
        let good = stream::Config {
            name: "MAIL".into(),
            subjects: vec!["mail.>".into()],
            storage: StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        assert_eq!(check_stream(&good, &target()), Ok(()));
        let memory = stream::Config {
            storage: StorageType::Memory,
            ..good.clone()
        };
        assert!(check_stream(&memory, &target())
            .unwrap_err()
            .contains("memory"));
        let other = stream::Config {
            subjects: vec!["orders.>".into()],
            ..good.clone()
        };
        assert!(check_stream(&other, &target())
            .unwrap_err()
            .contains("do not include mail.ingest"));
        let short = stream::Config {
            duplicate_window: Duration::from_secs(5),
            ..good.clone()
        };
        assert!(check_stream(&short, &target())
            .unwrap_err()
            .contains("duplicate window"));
        let no_ack = stream::Config {
            no_ack: true,
            ..good
        };
        assert!(check_stream(&no_ack, &target())
            .unwrap_err()
            .contains("no_ack"));
    }
}
