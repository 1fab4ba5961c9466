//! Memory bounded whatever clients do: thousands of connections parked in
//! the middle of DATA, under `--memory-budget`.

use std::io::Write;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

/// Clients, and body octets each sends before it goes quiet.
const CLIENTS: usize = 3000;
const PARKED: usize = 250_000;

/// What one run measured, in KiB.
struct Figures {
    start: u64,
    peak: u64,
    settled: u64,
}

/// The body of client `n`: numbered lines, so any octet lost, doubled or
/// swapped between clients shows in the export.
fn body(n: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(PARKED + 100);
    let mut line = 0;
    while b.len() < PARKED {
        writeln!(b, "client {n:05} line {line:06} of the parked body\r").unwrap();
        line += 1;
    }
    b.truncate(PARKED);
    b
}

/// A gate every client waits at until the test opens it.
#[derive(Default)]
struct Gate(Mutex<bool>, Condvar);

impl Gate {
    fn open(&self) {
        *self.0.lock().unwrap() = true;
        self.1.notify_all();
    }

    fn wait(&self) {
        let mut open = self.0.lock().unwrap();
        while !*open {
            open = self.1.wait(open).unwrap();
        }
    }
}

/// Parks `CLIENTS` sessions mid-DATA with `PARKED` octets each, samples
/// the server, lets every client finish, and checks the spool byte-exact.
fn park_and_finish(s: &Server) -> Figures {
    let pid = s.child.id();
    let start = proc_status_kib(pid, "VmRSS");
    let gate = Arc::new(Gate::default());
    let (ready, parked) = mpsc::channel();
    let mut clients = Vec::new();
    for n in 0..CLIENTS {
        let (gate, ready, addr) = (gate.clone(), ready.clone(), s.addr);
        let client = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || {
                let mut c = Client::connect(addr);
                c.open_data();
                let body = body(n);
                c.send(&body);
                ready.send(()).unwrap();
                gate.wait();
                c.send(b"\r\n.\r\n");
                let reply = c.reply();
                assert_eq!(code_of(&reply), 250, "client {n}: {reply}");
                c.cmd("QUIT");
                (queued_id(&reply), n)
            })
            .unwrap();
        clients.push(client);
    }
    for _ in 0..CLIENTS {
        parked
            .recv_timeout(Duration::from_secs(120))
            .expect("every client parks its body");
    }
    // Whatever the server still reads of the parked bodies, it reads now.
    std::thread::sleep(Duration::from_secs(2));
    let parked_rss = proc_status_kib(pid, "VmRSS");
    gate.open();
    let ids: Vec<(String, usize)> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let peak = proc_status_kib(pid, "VmHWM");
    let left = Instant::now();
    let mut settled = proc_status_kib(pid, "VmRSS");
    while settled > start + (64 << 10) && left.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(250));
        settled = proc_status_kib(pid, "VmRSS");
    }
    eprintln!(
        "memory: start {start} KiB, parked {parked_rss} KiB, peak {peak} KiB, \
         {} ms after the clients left {settled} KiB",
        left.elapsed().as_millis()
    );
    let stored = exported(&s.spool);
    assert_eq!(
        stored.len(),
        CLIENTS,
        "every acknowledged message is stored"
    );
    for (id, n) in ids {
        let (_, data) = &stored[&id];
        let mut want = body(n);
        want.extend_from_slice(b"\r\n");
        assert!(
            without_trace(data) == want,
            "message {id} of client {n} differs"
        );
    }
    Figures {
        start,
        peak,
        settled,
    }
}

#[test]
fn three_thousand_parked_bodies_stay_within_the_memory_budget() {
    let s = Server::start(&["--cores", "2", "--memory-budget", "128M"]);
    let f = park_and_finish(&s);
    assert!(
        f.peak <= (128 + 160) << 10,
        "peak RSS {} KiB over 128 MiB + 160 MiB",
        f.peak
    );
    assert!(
        f.settled <= f.start + (64 << 10),
        "RSS {} KiB ten seconds after the clients left, {} KiB at the start",
        f.settled,
        f.start
    );
}
