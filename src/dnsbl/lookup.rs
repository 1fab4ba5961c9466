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
pub struct Lookup {
    /// Bit `i` is set when list `i` lists the client.
    pub listing: u32,
    /// How long the result may be cached (0: not at all, because a list
    /// failed or gave no TTL).
    pub ttl: u32,
    /// Lists that did not answer in time or answered with an error.
    pub failures: Vec<String>,
}

/// A client's score from a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Score<'a> {
    /// The sum of the weights of the lists that list the client.
    pub total: i32,
    /// The zone a refusal names: the first listing zone with a positive
    /// weight.
    pub zone: Option<&'a str>,
}

/// Scores `listing` (bit `i` for `sites[i]`).
pub fn score<'a>(sites: &'a [Site], listing: u32) -> Score<'a> {
    let listed = || {
        sites
            .iter()
            .enumerate()
            .filter(move |(i, _)| listing >> i & 1 == 1)
            .map(|(_, s)| s)
    };
    Score {
        total: listed().fold(0i32, |t, s| t.saturating_add(s.weight)),
        zone: listed().find(|s| s.weight > 0).map(|s| s.zone.as_str()),
    }
}

/// Asks every site (at most [`MAX_LISTS`](crate::client::MAX_LISTS)) about `ip` through `server`, each
/// within `timeout`, all at once.
pub async fn look_up(
    ip: IpAddr,
    sites: Arc<[Site]>,
    server: SocketAddr,
    timeout: Duration,
) -> Lookup {
    let tasks: Vec<_> = sites
        .iter()
        .map(|site| {
            let name = wire::query_name(ip, &site.zone);
            glommio::spawn_local(async move { ask(server, &name, timeout).await })
        })
        .collect();
    let mut lookup = Lookup {
        ttl: if sites.is_empty() { 0 } else { MAX_TTL },
        ..Lookup::default()
    };
    for (i, (site, task)) in sites.iter().zip(tasks).enumerate() {
        match task.await {
            Ok(Answer::Listed { addrs, ttl }) => {
                lookup.ttl = lookup.ttl.min(ttl);
                if addrs.iter().any(|&a| site.lists(a)) {
                    lookup.listing |= 1 << i;
                }
            }
            Ok(Answer::NotListed { ttl }) => lookup.ttl = lookup.ttl.min(ttl),
            Err(why) => {
                lookup.ttl = 0;
                lookup.failures.push(format!("{} ({why})", site.zone));
            }
        }
    }
    lookup
}

/// Why one list gave no answer.
#[derive(Debug, thiserror::Error)]
enum AskError {
    #[error("no answer in time")]
    Timeout,
    #[error("{0}")]
    Io(std::io::Error),
    #[error("{0}")]
    Wire(wire::WireError),
}

/// One query, answered within `timeout`; answers to other queries (late,
/// or forged) are ignored.
async fn ask(server: SocketAddr, name: &str, timeout: Duration) -> Result<Answer, AskError> {
    let id = random_u16();
    let query = wire::query(id, name).map_err(AskError::Wire)?;
    let exchange = async {
        let local: SocketAddr = match server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).map_err(|e| AskError::Io(e.into()))?;
        socket
            .connect(server)
            .await
            .map_err(|e| AskError::Io(e.into()))?;
        socket
            .send(&query)
            .await
            .map_err(|e| AskError::Io(e.into()))?;
        let mut buf = vec![0u8; 1232];
        loop {
            let n = socket
                .recv(&mut buf)
                .await
                .map_err(|e| AskError::Io(e.into()))?;
            match wire::answer(&buf[..n], id, name) {
                Ok(answer) => return Ok(answer),
                Err(wire::WireError::Mismatch) => continue,
                Err(e) => return Err(AskError::Wire(e)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_add_the_weights_of_the_listing_lists_and_name_a_blocking_one() {
        let sites: Vec<Site> = ["wl.test*-5", "a.test*1", "b.test*3"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            score(&sites, 0),
            Score {
                total: 0,
                zone: None
            }
        );
        assert_eq!(
            score(&sites, 0b110),
            Score {
                total: 4,
                zone: Some("a.test")
            }
        );
        assert_eq!(
            score(&sites, 0b101),
            Score {
                total: -2,
                zone: Some("b.test")
            }
        );
        assert_eq!(
            score(&sites, 0b001),
            Score {
                total: -5,
                zone: None
            }
        );
    }
}
