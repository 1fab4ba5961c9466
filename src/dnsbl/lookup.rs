//! Asking every list about one client, in parallel, and adding up what
//! they say.
//!
//! Why it exists: a lookup must never hold up the executor or any other
//! session. Each list gets its own UDP socket (a fresh random source port
//! and a random message id, so a forged answer has to guess both) and its
//! own task on the core's executor; the connection awaits them while the
//! greet pause runs. A list that does not answer within the timeout, or
//! answers with an error, counts as not listing the client (the default
//! Postfix's postscreen has too): a dead list costs latency, never mail.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use glommio::net::UdpSocket;

use super::site::Site;
use super::wire::{self, Answer, MAX_TTL};

/// What the lists said about a client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Score {
    /// The sum of the weights of the lists that list the client.
    pub total: i32,
    /// The zones that list it, in the order they are configured.
    pub listed_by: Vec<String>,
    /// How long the score may be cached (0: not at all, because a list
    /// failed or gave no TTL).
    pub ttl: u32,
    /// Lists that did not answer in time or answered with an error.
    pub failures: Vec<String>,
}

impl Score {
    /// The zone to name in a refusal: the first listing zone with a
    /// positive weight.
    pub fn blocking_zone<'a>(&'a self, sites: &'a [Site]) -> Option<&'a str> {
        sites
            .iter()
            .find(|s| s.weight > 0 && self.listed_by.contains(&s.zone))
            .map(|s| s.zone.as_str())
    }
}

/// Asks every site about `ip` through `server`, each within `timeout`.
pub async fn score_client(
    ip: IpAddr,
    sites: Arc<[Site]>,
    server: SocketAddr,
    timeout: Duration,
) -> Score {
    let tasks: Vec<_> = (0..sites.len())
        .map(|i| {
            let name = wire::query_name(ip, &sites[i].zone);
            glommio::spawn_local(async move { ask(server, &name, timeout).await })
        })
        .collect();
    let mut score = Score {
        ttl: MAX_TTL,
        ..Score::default()
    };
    for (site, task) in sites.iter().zip(tasks) {
        match task.await {
            Ok(Answer::Listed { addrs, ttl }) => {
                score.ttl = score.ttl.min(ttl);
                if addrs.iter().any(|&a| site.lists(a)) {
                    score.total = score.total.saturating_add(site.weight);
                    score.listed_by.push(site.zone.clone());
                }
            }
            Ok(Answer::NotListed { ttl }) => score.ttl = score.ttl.min(ttl),
            Err(_) => {
                score.ttl = 0;
                score.failures.push(site.zone.clone());
            }
        }
    }
    if sites.is_empty() {
        score.ttl = 0;
    }
    score
}

/// Why one list gave no answer.
#[derive(Debug)]
enum AskError {
    Timeout,
    Io,
    Wire,
}

/// One query, answered within `timeout`; answers to other queries (late,
/// or forged) are ignored.
async fn ask(server: SocketAddr, name: &str, timeout: Duration) -> Result<Answer, AskError> {
    let id = random_u16();
    let query = wire::query(id, name).map_err(|_| AskError::Wire)?;
    let exchange = async {
        let local: SocketAddr = match server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).map_err(|_| AskError::Io)?;
        socket.connect(server).await.map_err(|_| AskError::Io)?;
        socket.send(&query).await.map_err(|_| AskError::Io)?;
        let mut buf = vec![0u8; 1232];
        loop {
            let n = socket.recv(&mut buf).await.map_err(|_| AskError::Io)?;
            match wire::answer(&buf[..n], id, name) {
                Ok(answer) => return Ok(answer),
                Err(wire::WireError::Mismatch) => continue,
                Err(_) => return Err(AskError::Wire),
            }
        }
    };
    future::or(exchange, async {
        glommio::timer::sleep(timeout).await;
        Err(AskError::Timeout)
    })
    .await
}

/// A message id nobody off the path can predict (std's per-process
/// random hash keys, seeded from the OS).
fn random_u16() -> u16 {
    RandomState::new().hash_one(std::time::Instant::now()) as u16
}
