//! The glommio sluice carries (vendor/glommio/SLUICE-PATCH.md) parks an
//! executor with a fence instead of `membarrier`. These tests make the
//! wake-ups that handshake protects happen many thousands of times, with
//! the executor parked in between: a lost wake-up leaves it asleep and the
//! test fails at its deadline. And a server under load, traced, makes no
//! `membarrier` call at all.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use glommio::channels::shared_channel;
use glommio::{LocalExecutorBuilder, Placement};

use crate::support::{peer_program, Server};

/// Round trips per test: each one parks the executor that waits.
const ROUNDS: usize = 20_000;
/// A test that has not finished by then lost a wake-up.
const DEADLINE: Duration = Duration::from_secs(120);

/// Runs `body` on its own glommio executor thread and fails if it does not
/// finish by the deadline (a lost wake-up parks it for good).
fn on_executor<F, Fut>(name: &str, body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = usize> + 'static,
{
    let (done, finished) = mpsc::channel();
    let name = name.to_string();
    std::thread::spawn(move || {
        let ex = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&name)
            .make()
            .expect("an executor");
        let _ = done.send(ex.run(body()));
    });
    let rounds = finished
        .recv_timeout(DEADLINE)
        .expect("a parked executor was never woken");
    assert_eq!(rounds, ROUNDS);
}

/// A one-shot slot a plain thread fills and wakes the waiting task.
#[derive(Default)]
struct Slot {
    value: Option<usize>,
    waker: Option<Waker>,
}

#[test]
fn a_parked_executor_is_woken_by_a_plain_thread_every_time() {
    on_executor("foreign-wake", || async {
        let mut seen = 0;
        for round in 0..ROUNDS {
            let slot = Arc::new(Mutex::new(Slot::default()));
            let theirs = slot.clone();
            std::thread::spawn(move || {
                // Sometimes at once (a race with the park), sometimes
                // after the executor is surely asleep.
                if round % 3 == 0 {
                    std::thread::sleep(Duration::from_micros(50));
                }
                let mut s = theirs.lock().unwrap();
                s.value = Some(round);
                if let Some(w) = s.waker.take() {
                    w.wake();
                }
            });
            let got = std::future::poll_fn(|cx| {
                let mut s = slot.lock().unwrap();
                match s.value.take() {
                    Some(v) => Poll::Ready(v),
                    None => {
                        s.waker = Some(cx.waker().clone());
                        Poll::Pending
                    }
                }
            })
            .await;
            assert_eq!(got, round);
            seen += 1;
        }
        seen
    });
}

#[test]
fn a_parked_executor_gets_every_blocking_result() {
    on_executor("blocking-wake", || async {
        let mut seen = 0;
        for round in 0..ROUNDS {
            let back = glommio::executor().spawn_blocking(move || round * 2).await;
            assert_eq!(back, round * 2);
            seen += 1;
        }
        seen
    });
}

#[test]
fn two_executors_ping_pong_over_shared_channels_without_a_lost_wake() {
    let (ping_tx, ping_rx) = shared_channel::new_bounded::<usize>(1);
    let (pong_tx, pong_rx) = shared_channel::new_bounded::<usize>(1);
    let echo = std::thread::spawn(move || {
        LocalExecutorBuilder::new(Placement::Unbound)
            .name("pong")
            .make()
            .expect("an executor")
            .run(async move {
                let rx = ping_rx.connect().await;
                let tx = pong_tx.connect().await;
                while let Some(n) = rx.recv().await {
                    tx.send(n + 1).await.expect("the pinger listens");
                }
            })
    });
    on_executor("ping", move || async move {
        let tx = ping_tx.connect().await;
        let rx = pong_rx.connect().await;
        let mut seen = 0;
        for round in 0..ROUNDS {
            tx.send(round).await.expect("the echo listens");
            assert_eq!(rx.recv().await, Some(round + 1));
            seen += 1;
        }
        seen
    });
    echo.join()
        .expect("the echo executor ends when the pinger hangs up");
}

#[test]
fn a_server_under_load_makes_no_membarrier_call() {
    let Some(strace) = peer_program("strace") else {
        return;
    };
    let server = Server::start(&["--cores", "2"]);
    let trace = server.spool.with_file_name("membarrier.trace");
    let pid = server.child.id().to_string();
    let mut tracer = std::process::Command::new(strace)
        .args(["-f", "-qq", "-e", "trace=membarrier,io_uring_enter"])
        .args(["-o", trace.to_str().unwrap(), "-p", &pid])
        .spawn()
        .expect("strace runs");
    std::thread::sleep(Duration::from_millis(500));
    // Sessions with pauses between them: the cores park in between.
    for n in 0..40 {
        let mut c = server.connect();
        let reply = c.send_mail("a@x.test", "b@y.test", format!("n {n}\r\n").as_bytes());
        assert!(reply.starts_with("250 "), "{reply}");
        assert_eq!(c.code("QUIT"), 221);
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: a plain signal to the tracer we started; it detaches.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    tracer.wait().unwrap();
    let calls = std::fs::read_to_string(&trace).unwrap();
    // The trace saw the cores park (so it was attached and working) ...
    assert!(
        calls.matches("io_uring_enter(").count() >= 40,
        "too few io_uring_enter calls traced:\n{calls}"
    );
    // ... and none of them issued a membarrier.
    assert_eq!(calls.matches("membarrier(").count(), 0, "{calls}");
}
