//! A downstream worker: the other side of `sluice drain`.
//!
//! It reads the stream the drain fills through a durable pull consumer,
//! so several workers can share the work and a restarted worker goes on
//! where the group left off. For each message it gets the envelope from
//! the headers and the stored octets from the payload (or, for a pointer
//! message, from the object store), "delivers" it (here: prints one line),
//! and only then acknowledges it. A worker that dies before its ack gets
//! the message redelivered after `ack_wait`; deliver idempotently, keyed on
//! the queue id (`Nats-Msg-Id`).
//!
//!     cargo run --example worker -- --nats nats://127.0.0.1:4222 --max 10
//!
//! Prints `<queue id> <size> <from> -> <recipients>` per message.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, AckKind};
use clap::Parser;
use futures_lite::StreamExt;
use tokio::io::AsyncReadExt;

#[derive(Parser)]
struct Opt {
    /// NATS servers, comma-separated.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// The stream `sluice drain` publishes to.
    #[arg(long, default_value = "MAIL")]
    stream: String,
    /// Durable consumer name, shared by every worker of a group.
    #[arg(long, default_value = "workers")]
    durable: String,
    /// Stop after this many messages.
    #[arg(long)]
    max: Option<u64>,
    /// Stop after this long without a message.
    #[arg(long, default_value_t = 5)]
    idle_secs: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), async_nats::Error> {
    let opt = Opt::parse();
    let urls: Vec<&str> = opt.nats.split(',').collect();
    let client = async_nats::connect(urls.as_slice()).await?;
    let js = jetstream::new(client);
    let stream = js.get_stream(&opt.stream).await?;
    let consumer: jetstream::consumer::Consumer<pull::Config> = stream
        .get_or_create_consumer(
            &opt.durable,
            pull::Config {
                durable_name: Some(opt.durable.clone()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(60),
                ..Default::default()
            },
        )
        .await?;
    let mut done = 0u64;
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(100)
            .expires(Duration::from_secs(opt.idle_secs))
            .messages()
            .await?;
        let mut got = 0;
        while let Some(message) = batch.next().await {
            let message = message?;
            got += 1;
            let headers = message.headers.clone().unwrap_or_default();
            let header = |name: &str| {
                headers
                    .get(name)
                    .map(|v| v.as_str().to_string())
                    .unwrap_or_default()
            };
            let rcpts: Vec<String> = headers
                .get_all("Sluice-Rcpt-To")
                .map(|v| v.as_str().to_string())
                .collect();
            let data = match headers.get("Sluice-Object") {
                Some(pointer) => {
                    let (bucket, name) = pointer.as_str().split_once('/').unwrap_or_default();
                    let mut object = js.get_object_store(bucket).await?.get(name).await?;
                    let mut data = Vec::new();
                    object.read_to_end(&mut data).await?;
                    data
                }
                None => message.payload.to_vec(),
            };
            if data.len().to_string() != header("Sluice-Size") {
                // Not what the drain sent: let another attempt have it.
                message.ack_with(AckKind::Nak(None)).await?;
                continue;
            }
            println!(
                "{} {} {} -> {}",
                header("Sluice-Queue-Id"),
                data.len(),
                header("Sluice-Mail-From"),
                rcpts.join(",")
            );
            // Deliver here; acknowledge only once it is delivered.
            message.double_ack().await?;
            done += 1;
            if opt.max.is_some_and(|m| done >= m) {
                return Ok(());
            }
        }
        if got == 0 {
            return Ok(());
        }
    }
}
