//! Running a load: one thread per core, each with its own event loop
//! (`rt`), connections spread over them, closed or open loop, bounded in
//! messages and time.
//!
//! Why it exists: the generator must never be the bottleneck, so it is
//! built like the server (thread-per-core, async connections, nothing
//! shared but a few atomic counters). Open-loop latencies are measured
//! from each message's intended start, so a slow server cannot hide its
//! queueing delay (no coordinated omission).

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{Client, Mode, Outcome, Security};
use crate::rt;
use crate::stats::{CoreStats, Live};
use crate::workload::{message_header, SizeSpec, Workload};

/// Everything a run needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub target: SocketAddr,
    pub connections: usize,
    pub cpus: Vec<usize>,
    /// Total transactions to attempt (None: until the duration ends).
    pub messages: Option<u64>,
    pub duration: Option<Duration>,
    pub warmup: Duration,
    /// Hard cap on the whole run.
    pub max_time: Duration,
    pub recipients: usize,
    pub size: SizeSpec,
    pub pipelining: bool,
    pub mode: Mode,
    pub per_connection: Option<u64>,
    pub helo: String,
    pub from: String,
    pub to_domain: String,
    /// Open loop: messages per second over all connections.
    pub rate: Option<f64>,
    pub verify: bool,
    pub io_timeout: Duration,
    /// Plain, STARTTLS or implicit TLS on every connection.
    pub security: Security,
    /// `AUTH PLAIN` on every connection: the base64 response.
    pub auth: Option<String>,
}

/// State shared by all cores.
pub struct Shared {
    pub start: Instant,
    pub warm_end: Instant,
    pub stop_at: Instant,
    remaining: AtomicI64,
    pub lives: Vec<Live>,
    pub running: AtomicUsize,
    stop: AtomicBool,
}

impl Shared {
    fn finished(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || Instant::now() >= self.stop_at
    }

    /// Takes one message from the budget; false when it is spent.
    fn claim(&self) -> bool {
        self.remaining.fetch_sub(1, Ordering::Relaxed) > 0
    }

    /// Asks every connection to finish.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Runs the load; returns the merged results and the measured window.
pub fn run(settings: Arc<Settings>, shared: Arc<Shared>) -> anyhow::Result<(CoreStats, Duration)> {
    let cores = settings.cpus.len();
    let mut handles = Vec::new();
    for (k, &cpu) in settings.cpus.iter().enumerate() {
        let (settings, shared) = (settings.clone(), shared.clone());
        let conns: Vec<usize> = (0..settings.connections)
            .filter(|i| i % cores == k)
            .collect();
        let h = std::thread::Builder::new()
            .name(format!("loadgen-{k}"))
            .spawn(move || {
                pin_to(cpu);
                let result = core_main(k, conns, settings, shared.clone());
                shared.running.fetch_sub(1, Ordering::Relaxed);
                result
            })
            .map_err(|e| anyhow::anyhow!("cannot start a load thread: {e}"))?;
        handles.push(h);
    }
    let mut total = CoreStats::new();
    let mut last = shared.warm_end;
    for h in handles {
        let (stats, done) = h
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))?
            .map_err(|e| anyhow::anyhow!("the load thread's event loop failed: {e}"))?;
        total.merge(&stats);
        last = last.max(done);
    }
    Ok((total, last.saturating_duration_since(shared.warm_end)))
}

/// Pins the calling thread to `cpu` (best effort: a failure only costs
/// locality).
fn pin_to(cpu: usize) {
    // SAFETY: the set is a zeroed local that CPU_SET fills in; the call
    // reads it for its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// One core: its connections, its stats, a ticker for live p99.
fn core_main(
    k: usize,
    conns: Vec<usize>,
    settings: Arc<Settings>,
    shared: Arc<Shared>,
) -> std::io::Result<(CoreStats, Instant)> {
    let workload = Rc::new(Workload::new(&settings.size));
    let stats = Rc::new(RefCell::new(CoreStats::new()));
    let last = Rc::new(RefCell::new(shared.warm_end));
    let open = Rc::new(Cell::new(conns.len()));
    {
        let (stats, shared, last, open) =
            (stats.clone(), shared.clone(), last.clone(), open.clone());
        rt::run(async move {
            {
                let (stats, shared, open) = (stats.clone(), shared.clone(), open.clone());
                rt::spawn(async move {
                    while !shared.finished() && open.get() > 0 {
                        rt::sleep(Duration::from_millis(200)).await;
                        let p99 = stats.borrow().eod.value_at_quantile(0.99);
                        shared.lives[k].p99_us.store(p99, Ordering::Relaxed);
                    }
                });
            }
            for c in conns {
                let ctx = Conn {
                    core: k,
                    index: c,
                    settings: settings.clone(),
                    shared: shared.clone(),
                    workload: workload.clone(),
                    stats: stats.clone(),
                    last: last.clone(),
                };
                let open = open.clone();
                rt::spawn(async move {
                    ctx.run().await;
                    open.set(open.get() - 1);
                });
            }
        })?;
    }
    let done = *last.borrow();
    let stats = std::mem::replace(&mut *stats.borrow_mut(), CoreStats::new());
    Ok((stats, done))
}

/// One connection's loop.
struct Conn {
    core: usize,
    index: usize,
    settings: Arc<Settings>,
    shared: Arc<Shared>,
    workload: Rc<Workload>,
    stats: Rc<RefCell<CoreStats>>,
    last: Rc<RefCell<Instant>>,
}

impl Conn {
    async fn run(self) {
        let s = &*self.settings;
        let live = &self.shared.lives[self.core];
        let rcpts: Vec<String> = (0..s.recipients)
            .map(|r| format!("user{}.{r}@{}", self.index, s.to_domain))
            .collect();
        // Open loop: this connection's share of the rate, staggered.
        let interval = s
            .rate
            .map(|r| Duration::from_secs_f64(s.connections as f64 / r));
        let mut intended = interval
            .map(|iv| self.shared.start + iv.mul_f64(self.index as f64 / s.connections as f64));
        let mut seq = 0u64;
        let mut backoff = Duration::from_millis(50);
        let mut header = Vec::with_capacity(512);
        'connect: while !self.shared.finished() {
            let mut client = match Client::connect(
                s.target,
                &s.helo,
                s.io_timeout,
                &s.security,
                s.auth.as_deref(),
            )
            .await
            {
                Ok(c) => {
                    backoff = Duration::from_millis(50);
                    c
                }
                Err(e) => {
                    self.connection_error(live, &e);
                    rt::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            let mut on_this = 0u64;
            loop {
                if self.shared.finished() || !self.shared.claim() {
                    self.shared.stop_if_budget_spent();
                    client.quit().await;
                    break 'connect;
                }
                if let Some(at) = intended {
                    let now = Instant::now();
                    if at > now {
                        rt::sleep(at - now).await;
                    }
                }
                let started = intended.unwrap_or_else(Instant::now);
                let body = &self.workload.bodies[self.workload.schedule
                    [(seq as usize + self.index) % self.workload.schedule.len()]];
                header.clear();
                let id = format!(
                    "{}.{}.{}.{}",
                    self.core,
                    self.index,
                    seq,
                    self.shared.start.elapsed().as_nanos()
                );
                message_header(&mut header, &s.from, &rcpts[0], &id, body, s.verify);
                seq += 1;
                if let (Some(at), Some(iv)) = (intended.as_mut(), interval) {
                    *at += iv;
                }
                let outcome = client
                    .transaction(&s.from, &rcpts, &header, body, s.mode, s.pipelining)
                    .await;
                match outcome {
                    Ok(o) => {
                        let accepted = self.record(&o, started, header.len() + body.plain.len());
                        if !accepted && client.rset().await.is_err() {
                            continue 'connect;
                        }
                    }
                    Err(e) => {
                        self.connection_error(live, &e);
                        continue 'connect;
                    }
                }
                on_this += 1;
                if s.per_connection.is_some_and(|n| on_this >= n) {
                    client.quit().await;
                    continue 'connect;
                }
            }
        }
    }

    /// Counts one transaction's outcome; true if the message got its 250.
    fn record(&self, o: &Outcome, started: Instant, octets: usize) -> bool {
        let live = &self.shared.lives[self.core];
        let measured = Instant::now() >= self.shared.warm_end;
        let mut st = self.stats.borrow_mut();
        for code in &o.refusals {
            if measured {
                *st.bad_replies.entry(*code).or_default() += 1;
            }
            st.note_error(live, || format!("unexpected reply {code}"));
        }
        if o.final_code != 250 {
            if measured {
                *st.bad_replies.entry(o.final_code).or_default() += 1;
            }
            let code = o.final_code;
            st.note_error(live, || format!("message refused with {code}"));
            return false;
        }
        st.acknowledged += 1;
        live.sent.fetch_add(1, Ordering::Relaxed);
        if measured {
            st.sent += 1;
            st.bytes += octets as u64;
            let _ = st.eod.record(o.eod_latency.as_micros().max(1) as u64);
            let _ = st
                .transaction
                .record(started.elapsed().as_micros().max(1) as u64);
            *self.last.borrow_mut() = Instant::now();
        }
        true
    }

    fn connection_error(&self, live: &Live, e: &std::io::Error) {
        let mut st = self.stats.borrow_mut();
        st.connection_errors += 1;
        st.note_error(live, || format!("connection: {e}"));
    }
}

impl Shared {
    /// New shared state for a run starting now.
    pub fn new(settings: &Settings) -> Shared {
        let start = Instant::now();
        let warm_end = start + settings.warmup;
        let stop_at = match settings.duration {
            Some(d) => (warm_end + d).min(start + settings.max_time),
            None => start + settings.max_time,
        };
        Shared {
            start,
            warm_end,
            stop_at,
            remaining: AtomicI64::new(settings.messages.map_or(i64::MAX, |m| m as i64)),
            lives: (0..settings.cpus.len()).map(|_| Live::default()).collect(),
            running: AtomicUsize::new(settings.cpus.len()),
            stop: AtomicBool::new(false),
        }
    }

    fn stop_if_budget_spent(&self) {
        if self.remaining.load(Ordering::Relaxed) <= 0 {
            self.stop();
        }
    }
}
