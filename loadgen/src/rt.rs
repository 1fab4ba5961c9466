//! A tiny single-threaded async runtime for the load generator: an
//! executor, an edge-triggered epoll reactor, timers and a TCP socket.
//!
//! Why it exists: a load generator spends almost all of its time waiting
//! for small replies on many sockets. Measured against Postfix's
//! smtp-source (one `select()` loop), glommio's io_uring sockets cost this
//! client ~1.7× the CPU per message: every short read arms a new poll, and
//! every executor park issues a `membarrier`. Here each socket is
//! registered once (edge-triggered); a read is attempted only when the
//! socket is known or presumed readable, so a reply costs one `epoll_wait`
//! share and one `recv`. One runtime runs per core thread; nothing in it
//! is shared between threads.

use std::cell::{Cell, RefCell};
use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

type Task = Pin<Box<dyn Future<Output = ()>>>;

/// Readiness of one registered socket.
#[derive(Default)]
struct Slot {
    readable: Cell<bool>,
    writable: Cell<bool>,
    reader: RefCell<Option<Waker>>,
    writer: RefCell<Option<Waker>>,
}

/// A timer waiting to fire (ordered by deadline, earliest first).
struct Timer {
    at: Instant,
    seq: u64,
    waker: Waker,
    /// Set when its future is dropped before firing.
    cancelled: Rc<Cell<bool>>,
}

impl PartialEq for Timer {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timer {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

struct Runtime {
    epoll: OwnedFd,
    tasks: RefCell<Vec<Option<Task>>>,
    free_tasks: RefCell<Vec<usize>>,
    ready: RefCell<VecDeque<usize>>,
    slots: RefCell<Vec<Option<Rc<Slot>>>>,
    free_slots: RefCell<Vec<usize>>,
    timers: RefCell<BinaryHeap<Timer>>,
    timer_seq: Cell<u64>,
    /// Timers cancelled but still in the heap (removed lazily).
    cancelled_timers: Cell<usize>,
}

thread_local! {
    static RT: RefCell<Option<Rc<Runtime>>> = const { RefCell::new(None) };
}

fn rt() -> Rc<Runtime> {
    RT.with(|r| r.borrow().clone()).expect("inside rt::run")
}

// A waker is the task's index; waking queues it on this thread's runtime.
// Wakers never leave the thread that made them (nothing here is Send).
const VTABLE: RawWakerVTable = RawWakerVTable::new(
    |p| RawWaker::new(p, &VTABLE),
    |p| wake_index(p as usize),
    |p| wake_index(p as usize),
    |_| {},
);

fn wake_index(i: usize) {
    RT.with(|r| {
        if let Some(rt) = r.borrow().as_ref() {
            rt.ready.borrow_mut().push_back(i);
        }
    });
}

fn waker_for(i: usize) -> Waker {
    // SAFETY: the vtable functions only treat the pointer as an index and
    // never dereference it.
    unsafe { Waker::from_raw(RawWaker::new(i as *const (), &VTABLE)) }
}

/// Runs `main` and every task it spawns until all have finished.
pub fn run<F: Future<Output = T> + 'static, T: 'static>(main: F) -> io::Result<T> {
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let epoll = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let runtime = Rc::new(Runtime {
        epoll,
        tasks: RefCell::default(),
        free_tasks: RefCell::default(),
        ready: RefCell::default(),
        slots: RefCell::default(),
        free_slots: RefCell::default(),
        timers: RefCell::default(),
        timer_seq: Cell::new(0),
        cancelled_timers: Cell::new(0),
    });
    RT.with(|r| *r.borrow_mut() = Some(runtime.clone()));
    let out = Rc::new(RefCell::new(None));
    let o = out.clone();
    spawn(async move {
        *o.borrow_mut() = Some(main.await);
    });
    let result = runtime.event_loop();
    RT.with(|r| *r.borrow_mut() = None);
    result?;
    let value = out.borrow_mut().take().expect("main finished");
    Ok(value)
}

/// Starts a task on this thread's runtime.
pub fn spawn(fut: impl Future<Output = ()> + 'static) {
    let rt = rt();
    let mut tasks = rt.tasks.borrow_mut();
    let i = match rt.free_tasks.borrow_mut().pop() {
        Some(i) => {
            tasks[i] = Some(Box::pin(fut));
            i
        }
        None => {
            tasks.push(Some(Box::pin(fut)));
            tasks.len() - 1
        }
    };
    rt.ready.borrow_mut().push_back(i);
}

impl Runtime {
    fn event_loop(&self) -> io::Result<()> {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
        loop {
            loop {
                let next = self.ready.borrow_mut().pop_front();
                let Some(i) = next else { break };
                let task = self.tasks.borrow_mut().get_mut(i).and_then(Option::take);
                let Some(mut task) = task else { continue };
                let waker = waker_for(i);
                if task
                    .as_mut()
                    .poll(&mut Context::from_waker(&waker))
                    .is_pending()
                {
                    self.tasks.borrow_mut()[i] = Some(task);
                } else {
                    self.free_tasks.borrow_mut().push(i);
                }
            }
            if self.tasks.borrow().iter().all(Option::is_none) {
                return Ok(());
            }
            let timeout = self.fire_timers();
            if !self.ready.borrow().is_empty() {
                continue;
            }
            // SAFETY: `events` is a valid buffer of its length.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    timeout,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let slots = self.slots.borrow();
            for ev in &events[..n as usize] {
                let Some(Some(slot)) = slots.get(ev.u64 as usize) else {
                    continue;
                };
                let bits = ev.events;
                let hangup = bits & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0;
                if bits & (libc::EPOLLIN | libc::EPOLLRDHUP) as u32 != 0 || hangup {
                    slot.readable.set(true);
                    if let Some(w) = slot.reader.borrow_mut().take() {
                        w.wake();
                    }
                }
                if bits & libc::EPOLLOUT as u32 != 0 || hangup {
                    slot.writable.set(true);
                    if let Some(w) = slot.writer.borrow_mut().take() {
                        w.wake();
                    }
                }
            }
        }
    }

    /// Wakes due timers; returns the epoll timeout (ms) until the next.
    fn fire_timers(&self) -> i32 {
        let now = Instant::now();
        let mut timers = self.timers.borrow_mut();
        // I/O timeouts are mostly cancelled: drop them in bulk once they
        // outnumber the live ones, so the heap stays small.
        if self.cancelled_timers.get() > 1024 && self.cancelled_timers.get() * 2 > timers.len() {
            timers.retain(|t| !t.cancelled.get());
            self.cancelled_timers.set(0);
        }
        while timers
            .peek()
            .is_some_and(|t| t.at <= now || t.cancelled.get())
        {
            let t = timers.pop().expect("peeked");
            if t.cancelled.get() {
                self.cancelled_timers
                    .set(self.cancelled_timers.get().saturating_sub(1));
            } else {
                t.waker.wake();
            }
        }
        match timers.peek() {
            None => -1,
            // Round up so a timer is never woken early.
            Some(t) => (t.at - now).as_micros().div_ceil(1000).min(60_000) as i32,
        }
    }

    fn register(&self, fd: i32) -> io::Result<(usize, Rc<Slot>)> {
        let slot = Rc::new(Slot::default());
        let mut slots = self.slots.borrow_mut();
        let i = match self.free_slots.borrow_mut().pop() {
            Some(i) => {
                slots[i] = Some(slot.clone());
                i
            }
            None => {
                slots.push(Some(slot.clone()));
                slots.len() - 1
            }
        };
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: i as u64,
        };
        // SAFETY: both descriptors are open; `ev` is valid for the call.
        if unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0
        {
            slots[i] = None;
            self.free_slots.borrow_mut().push(i);
            return Err(io::Error::last_os_error());
        }
        Ok((i, slot))
    }
}

/// Waits for `dur`.
pub async fn sleep(dur: Duration) {
    sleep_until(Instant::now() + dur).await
}

/// Waits until `at`.
pub fn sleep_until(at: Instant) -> Sleep {
    Sleep { at, armed: None }
}

/// The future of [`sleep_until`]; dropping it cancels its timer.
pub struct Sleep {
    at: Instant,
    armed: Option<Rc<Cell<bool>>>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            self.armed = None;
            return Poll::Ready(());
        }
        if self.armed.is_none() {
            let rt = rt();
            let seq = rt.timer_seq.get() + 1;
            rt.timer_seq.set(seq);
            let cancelled = Rc::new(Cell::new(false));
            rt.timers.borrow_mut().push(Timer {
                at: self.at,
                seq,
                waker: cx.waker().clone(),
                cancelled: cancelled.clone(),
            });
            self.armed = Some(cancelled);
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(c) = self.armed.take() {
            if Rc::strong_count(&c) > 1 {
                c.set(true);
                RT.with(|r| {
                    if let Some(rt) = r.borrow().as_ref() {
                        rt.cancelled_timers.set(rt.cancelled_timers.get() + 1);
                    }
                });
            }
        }
    }
}

/// Runs `fut` with a deadline: `TimedOut` if it has not finished by then.
pub async fn timeout<T>(dur: Duration, fut: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    futures_lite::future::or(fut, async {
        sleep(dur).await;
        Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"))
    })
    .await
}

/// A non-blocking TCP socket driven by the reactor.
pub struct TcpStream {
    socket: Socket,
    index: usize,
    slot: Rc<Slot>,
}

impl TcpStream {
    /// Connects without blocking the thread.
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        socket.set_nodelay(true)?;
        let (index, slot) = rt().register(socket.as_raw_fd())?;
        let stream = TcpStream {
            socket,
            index,
            slot,
        };
        match stream.socket.connect(&addr.into()) {
            Ok(()) => return Ok(stream),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        std::future::poll_fn(|cx| stream.wait(&stream.slot.writable, &stream.slot.writer, cx))
            .await;
        match stream.socket.take_error()? {
            Some(e) => Err(e),
            None => Ok(stream),
        }
    }

    fn wait(
        &self,
        flag: &Cell<bool>,
        waiter: &RefCell<Option<Waker>>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        if flag.get() {
            Poll::Ready(())
        } else {
            *waiter.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    /// Reads what is there (waiting until something is); 0 at end of stream.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            std::future::poll_fn(|cx| self.wait(&self.slot.readable, &self.slot.reader, cx)).await;
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    self.socket.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                )
            };
            if n >= 0 {
                // A short read emptied the socket: wait for the next edge
                // instead of asking again and getting EAGAIN.
                if (n as usize) < buf.len() && n > 0 {
                    self.slot.readable.set(false);
                }
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => self.slot.readable.set(false),
                io::ErrorKind::Interrupted => {}
                _ => return Err(e),
            }
        }
    }

    /// Writes all of `buf`.
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            std::future::poll_fn(|cx| self.wait(&self.slot.writable, &self.slot.writer, cx)).await;
            // SAFETY: `buf` is valid for reads of its length.
            let n = unsafe {
                libc::send(
                    self.socket.as_raw_fd(),
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                buf = &buf[n as usize..];
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => self.slot.writable.set(false),
                io::ErrorKind::Interrupted => {}
                _ => return Err(e),
            }
        }
        Ok(())
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        // Closing the socket removes it from the epoll set; free the slot.
        RT.with(|r| {
            if let Some(rt) = r.borrow().as_ref() {
                rt.slots.borrow_mut()[self.index] = None;
                rt.free_slots.borrow_mut().push(self.index);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn echo_round_trips_and_timers_fire_in_order() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 64];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        let got = run(async move {
            let order = Rc::new(RefCell::new(Vec::new()));
            for (k, ms) in [(2, 30u64), (1, 10)] {
                let o = order.clone();
                spawn(async move {
                    sleep(Duration::from_millis(ms)).await;
                    o.borrow_mut().push(k);
                });
            }
            let s = TcpStream::connect(addr).await.unwrap();
            let mut echoed = Vec::new();
            for round in 0..100u8 {
                s.write_all(&[round; 10]).await.unwrap();
                let mut buf = [0u8; 10];
                let mut have = 0;
                while have < 10 {
                    have += s.read(&mut buf[have..]).await.unwrap();
                }
                echoed.push(buf[0]);
            }
            sleep(Duration::from_millis(40)).await;
            let timers = order.borrow().clone();
            (echoed, timers)
        })
        .unwrap();
        assert_eq!(got.0, (0..100).collect::<Vec<u8>>());
        assert_eq!(got.1, vec![1, 2]);
    }

    #[test]
    fn timeout_fires_when_nothing_arrives() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let r = run(async move {
            let s = TcpStream::connect(addr).await.unwrap();
            let mut buf = [0u8; 4];
            timeout(Duration::from_millis(50), s.read(&mut buf)).await
        })
        .unwrap();
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
        drop(listener);
    }
}
