//! `--spool-max-bytes`: watches how much spool the drain has not handed
//! on yet and turns new mail away (452 4.3.1) while it is over the limit.
//!
//! Why it exists: an edge node whose downstream is gone must not fill its
//! disk and then fail in worse ways. One thread measures every core's
//! undrained bytes from the files and drain cursors (the same measure the
//! drain reports), publishes them as metrics, and sets one flag that the
//! cores read before each command batch: a relaxed load of a line that
//! changes only when the state flips.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use super::settings::Published;
use crate::metrics::CoreMetrics;
use crate::spool::backlog::undrained_bytes;
use crate::spool::walk::core_dir;

/// How often the spool is measured.
const EVERY: Duration = Duration::from_millis(200);

/// Starts the watcher; `full` is set while the limit is exceeded.
pub fn spawn(
    spool: PathBuf,
    published: Arc<Published>,
    metrics: Vec<Arc<CoreMetrics>>,
    full: Arc<AtomicBool>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("sluice-backlog".into())
        .spawn(move || loop {
            let mut total = 0;
            for (core, m) in metrics.iter().enumerate() {
                match undrained_bytes(&core_dir(&spool, core)) {
                    Ok(bytes) => {
                        m.undrained_bytes.set(bytes);
                        total += bytes;
                    }
                    Err(e) => tracing::warn!(core, "cannot measure the spool: {e}"),
                }
            }
            let limit = published.latest().spool_max_bytes;
            let over = limit.is_some_and(|l| total > l);
            if over != full.load(Relaxed) {
                full.store(over, Relaxed);
                let limit = limit.unwrap_or(0);
                if over {
                    tracing::warn!(
                        "the undrained spool ({total} bytes) is over --spool-max-bytes ({limit}): new mail gets 452 4.3.1 until the drain catches up"
                    );
                } else {
                    tracing::warn!(
                        "the undrained spool ({total} bytes) is back under --spool-max-bytes ({limit}): accepting mail again"
                    );
                }
            }
            std::thread::sleep(EVERY);
        })?;
    Ok(())
}
