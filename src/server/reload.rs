//! SIGHUP: re-read the configuration (file and TLS material) and hand it
//! to new sessions.
//!
//! Why it exists: changing accepted domains, limits or a certificate must
//! not mean dropping every connection. A reload re-resolves the same flags
//! and file as start-up; a configuration that does not validate is
//! refused with a log line and the running one stays. Settings that shape
//! the running process (listeners, cores, spool, durability, segment and
//! buffer sizes, metrics address, PROXY protocol, and rspamd, which sizes
//! the message buffers) keep their start-up values, and the log says
//! which of them a restart would change.

use std::sync::Arc;

use signal_hook::consts::SIGHUP;
use signal_hook::iterator::Signals;
use tracing::{info, warn};

use super::settings::Published;
use crate::config::{Config, ServeArgs};

/// Registers the SIGHUP handler now (so an early SIGHUP does not kill the
/// process) and serves reloads on a thread.
pub fn spawn(
    args: ServeArgs,
    parsed_at_start: Config,
    published: Arc<Published>,
) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGHUP])?;
    std::thread::Builder::new()
        .name("sluice-reload".into())
        .spawn(move || {
            for _ in signals.forever() {
                reload(&args, &parsed_at_start, &published);
            }
        })?;
    Ok(())
}

/// One SIGHUP, told to systemd as a reload from start to end.
fn reload(args: &ServeArgs, parsed_at_start: &Config, published: &Published) {
    crate::service::notify_reloading();
    let status = apply(args, parsed_at_start, published);
    crate::service::notify_reloaded(status);
}

/// Re-resolves the configuration and publishes it, or keeps the running
/// one; returns the status line for systemd.
fn apply(args: &ServeArgs, parsed_at_start: &Config, published: &Published) -> &'static str {
    let mut fresh = match args.clone().resolve() {
        Ok(c) => c,
        Err(e) => {
            warn!("reload refused, the running configuration stays: {e:#}");
            return "accepting mail; the last reload was refused (see the log)";
        }
    };
    let running = published.latest();
    let needs_restart = keep_fixed(&mut fresh, parsed_at_start, &running);
    if !needs_restart.is_empty() {
        warn!(
            "reload: {} changed, which takes effect only after a restart",
            needs_restart.join(", ")
        );
    }
    if let Some(map) = &fresh.recipient_map {
        info!("reload: {}", map.summary());
    }
    published.publish(Arc::new(fresh));
    info!(
        "reloaded the configuration (generation {}): new sessions use it",
        published.generation()
    );
    "accepting mail"
}

/// Copies the settings a running process cannot change from `running`
/// into `fresh`; returns the names of those that differ from start-up.
pub fn keep_fixed(
    fresh: &mut Config,
    parsed_at_start: &Config,
    running: &Config,
) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! fixed {
        ($($field:ident => $name:literal),*) => {$(
            if fresh.$field != parsed_at_start.$field {
                changed.push($name);
            }
            fresh.$field = running.$field.clone();
        )*};
    }
    fixed!(
        listen => "listen",
        submission => "submission",
        submissions => "submissions",
        spool => "spool",
        cpus => "cores",
        durability => "durability",
        segment_size => "segment-size",
        message_memory => "message-memory",
        memory_budget => "memory-budget",
        metrics => "metrics",
        proxy_protocol => "proxy-protocol",
        rspamd => "rspamd"
    );
    changed
}
