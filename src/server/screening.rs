//! The stage before the greeting: DNS lists, looked up while the greet
//! pause runs.
//!
//! Why it exists: postscreen's insight is that the wait before the 220
//! is free time: the lookups for a client start the moment it is
//! admitted and run (on the core's executor, never blocking it) while
//! `--greet-pause` watches for a client that talks first. This module
//! starts the lookups, answers from the client table's cache when it
//! can, and turns the lists' answers into a verdict; the connection does
//! the waiting and the talking.

use std::net::IpAddr;

use glommio::task::JoinHandle;

use super::shard::Shard;
use crate::client::ClientHold;
use crate::config::DnsLists;
use crate::dnsbl::{self, Lookup};

/// DNS lists being asked about a client.
pub enum Pending {
    /// The client table had the answer.
    Cached(u32),
    /// Queries are out.
    Asking(JoinHandle<Lookup>),
}

/// Starts looking `ip` up in `lists`, unless `hold`'s slot has a fresh
/// answer.
pub fn start(shard: &Shard, lists: &DnsLists, ip: IpAddr, hold: Option<&ClientHold>) -> Pending {
    if let Some(listing) = hold.and_then(|h| h.cached_listing(lists.tag)) {
        return Pending::Cached(listing);
    }
    shard.metrics().dnsbl_lookups.add(1);
    let task = glommio::spawn_local(dnsbl::look_up(
        ip,
        lists.sites.clone(),
        lists.server,
        lists.timeout,
    ));
    Pending::Asking(task.detach())
}

/// The lists' answer: which lists list the client (bit `i` for list `i`).
/// Fresh answers are cached in `hold`'s slot for their TTL.
pub async fn finish(
    pending: Pending,
    shard: &Shard,
    lists: &DnsLists,
    hold: Option<&ClientHold>,
) -> u32 {
    let lookup = match pending {
        Pending::Cached(listing) => return listing,
        Pending::Asking(task) => task.await.unwrap_or_default(),
    };
    if !lookup.failures.is_empty() {
        shard
            .metrics()
            .dnsbl_failures
            .add(lookup.failures.len() as u64);
        shard.repeated_error(format_args!(
            "DNS lists without an answer (counted as not listed): {}",
            lookup.failures.join(", ")
        ));
    }
    if let Some(h) = hold {
        h.cache_listing(lists.tag, lookup.listing, lookup.ttl);
    }
    lookup.listing
}
