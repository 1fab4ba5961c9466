//! Shutdown: SIGTERM/SIGINT set one process-wide flag; each core watches
//! it and wakes its own tasks.
//!
//! Why it exists: signals arrive on an arbitrary thread, but connection
//! tasks live on pinned executors that share nothing. The only shared
//! thing is one atomic flag, polled by one small task per core (not on any
//! hot path); that task then wakes the core's waiters locally.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

/// How often each core looks at the process-wide flag.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// The process-wide "please stop" flag, set from signal handlers.
pub fn install_signal_flag() -> std::io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(flag)
}

/// One core's view of shutdown: triggered once, wakes every waiter.
#[derive(Default)]
pub struct Shutdown {
    triggered: Cell<bool>,
    /// Waker slots; a waiting future owns one slot and frees it on drop,
    /// so long sessions that wait many times do not grow this.
    waiters: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl Shutdown {
    /// Whether shutdown has begun.
    pub fn is_triggered(&self) -> bool {
        self.triggered.get()
    }

    /// Begins shutdown and wakes everyone waiting.
    pub fn trigger(&self) {
        self.triggered.set(true);
        let wakers: Vec<Waker> = self
            .waiters
            .borrow_mut()
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for w in wakers {
            w.wake();
        }
    }

    /// Resolves once shutdown has begun.
    pub fn wait(&self) -> Wait<'_> {
        Wait {
            shutdown: self,
            slot: None,
        }
    }

    /// Watches the process-wide flag and triggers this core's shutdown.
    pub async fn watch(self: Rc<Self>, flag: Arc<AtomicBool>) {
        while !flag.load(Ordering::Relaxed) && !self.triggered.get() {
            glommio::timer::sleep(POLL_EVERY).await;
        }
        self.trigger();
    }
}

/// The future of [`Shutdown::wait`].
pub struct Wait<'a> {
    shutdown: &'a Shutdown,
    slot: Option<usize>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.shutdown.triggered.get() {
            return Poll::Ready(());
        }
        let slot = match self.slot {
            Some(slot) => slot,
            None => {
                let mut waiters = self.shutdown.waiters.borrow_mut();
                let slot = self.shutdown.free.borrow_mut().pop().unwrap_or_else(|| {
                    waiters.push(None);
                    waiters.len() - 1
                });
                drop(waiters);
                self.slot = Some(slot);
                slot
            }
        };
        self.shutdown.waiters.borrow_mut()[slot] = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            self.shutdown.waiters.borrow_mut()[slot] = None;
            self.shutdown.free.borrow_mut().push(slot);
        }
    }
}
