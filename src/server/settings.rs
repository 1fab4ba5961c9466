//! The settings sessions run with, replaced as a whole when SIGHUP brings
//! a new configuration.
//!
//! Why it exists: a reload must change accepted domains, limits and TLS
//! material for new sessions without touching the ones in progress. A
//! session takes an `Rc<Settings>` when it starts and keeps it to its end;
//! a reload only swaps what the *next* session gets. The reload thread
//! publishes a validated [`Config`] once; each core picks it up on its own
//! executor (a generation number, checked a few times a second), so no
//! lock is ever taken on the connection path.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::auth::Authenticator;
use crate::config::Config;
use crate::policy::client::PolicyClient;
use crate::policy::rspamd::RspamdClient;
use crate::smtp::SessionConfig;

/// One consistent set of settings.
pub struct Settings {
    /// The configuration.
    pub config: Arc<Config>,
    /// What the session state machine needs of it.
    pub session: Rc<SessionConfig>,
    /// This core's client of the policy service, when there is one.
    pub policy: Option<Rc<PolicyClient>>,
    /// This core's rspamd client, when there is one.
    pub rspamd: Option<Rc<RspamdClient>>,
    /// How this core checks AUTH credentials, with submission listeners.
    pub authenticator: Option<Rc<Authenticator>>,
}

impl Settings {
    /// Settings from a validated configuration.
    pub fn new(config: Arc<Config>) -> Rc<Settings> {
        Rc::new(Settings {
            session: Rc::new(SessionConfig {
                hostname: config.hostname.clone(),
                max_message_size: config.max_message_size,
                max_recipients: config.max_recipients,
                accept_domains: config.accept_domains.clone(),
                max_line_length: config.max_line_length,
                bare_newlines: config.bare_newlines,
                starttls: config.tls.is_some(),
                require_tls: config.require_tls,
                hard_error_limit: config.admission.hard_error_limit,
                policy_at_rcpt: config.policy_service.as_ref().is_some_and(|p| p.at_rcpt),
                recipient_map: config.recipient_map.clone(),
                dsn: config.dsn,
            }),
            policy: config
                .policy_service
                .as_ref()
                .map(|p| Rc::new(PolicyClient::new(p.target.clone(), p.timeout))),
            rspamd: config
                .rspamd
                .as_ref()
                .map(|r| Rc::new(RspamdClient::new(r.addr, r.timeout))),
            authenticator: config.auth.as_ref().map(|a| Rc::new(Authenticator::new(a))),
            config,
        })
    }
}

/// The latest configuration, shared by every core and the reload thread.
pub struct Published {
    generation: AtomicU64,
    latest: Mutex<Arc<Config>>,
}

impl Published {
    /// Starts at generation 0 with the start-up configuration.
    pub fn new(config: Arc<Config>) -> Published {
        Published {
            generation: AtomicU64::new(0),
            latest: Mutex::new(config),
        }
    }

    /// Makes `config` the one new sessions get.
    pub fn publish(&self, config: Arc<Config>) {
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = config;
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Bumped by every [`Published::publish`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The latest configuration.
    pub fn latest(&self) -> Arc<Config> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
