//! Telling systemd where the server is in its life (`sd_notify`).
//!
//! Why it exists: under `Type=notify` systemd starts the units that
//! depend on sluice only once sluice says it is ready (every core bound
//! and listening), shows a reload in `systemctl status` until it is
//! done, and knows a stop is under way. Outside systemd
//! (`NOTIFY_SOCKET` unset) each call does nothing.

use sd_notify::NotifyState;

fn tell(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify the service manager (NOTIFY_SOCKET): {e}");
    }
}

/// Every listener is open: `READY=1`.
pub fn notify_ready() {
    tell(&[NotifyState::Ready, NotifyState::Status("accepting mail")]);
}

/// A SIGHUP is being handled: `RELOADING=1` (with the monotonic time
/// `Type=notify-reload` wants).
pub fn notify_reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => tell(&[NotifyState::Reloading, now]),
        Err(_) => tell(&[NotifyState::Reloading]),
    }
}

/// The reload is done, applied or refused: `READY=1` again.
pub fn notify_reloaded(status: &str) {
    tell(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// SIGTERM or SIGINT: `STOPPING=1`.
pub fn notify_stopping() {
    tell(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}
