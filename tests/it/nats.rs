//! Test support for the drain: a NATS JetStream cluster on loopback
//! (Debian's `nats-server`), and reading a stream back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{free_port, peer_program, wait_listening};

/// Nodes of a cluster; killed on drop.
pub struct Cluster {
    pub nodes: Vec<Option<Child>>,
    pub ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// One JetStream node, or `None` (the test skips) where `nats-server`
    /// is not installed and `SLUICE_REQUIRE_PEERS` is unset.
    pub fn single() -> Option<Cluster> {
        Some(Cluster::start(&peer_program("nats-server")?, 1))
    }

    /// `n` JetStream nodes (a cluster when n > 1).
    pub fn start(bin: &Path, n: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let route_list = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for i in 0..n {
            let mut cmd = Command::new(bin);
            cmd.args(["-js", "-a", "127.0.0.1", "-p", &ports[i].to_string()])
                .args(["-n", &format!("n{i}")])
                .arg("-sd")
                .arg(dir.path().join(format!("n{i}")))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if n > 1 {
                cmd.args(["--cluster_name", "sluice-test"])
                    .args(["--cluster", &format!("nats://127.0.0.1:{}", routes[i])])
                    .args(["--routes", &route_list]);
            }
            nodes.push(Some(cmd.spawn().expect("start nats-server")));
        }
        for p in &ports {
            wait_listening(format!("127.0.0.1:{p}").parse().unwrap());
        }
        Cluster {
            nodes,
            ports,
            _dir: dir,
        }
    }

    /// Every node's URL, comma-separated.
    pub fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// One message read back from the stream.
#[derive(Debug)]
pub struct Stored {
    pub headers: BTreeMap<String, Vec<String>>,
    pub payload: Vec<u8>,
}

impl Stored {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.first())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Every message in `stream` (by sequence), or `None` while the stream
/// does not exist yet.
pub fn read_stream(urls: &str, stream: &str) -> Option<Vec<Stored>> {
    runtime().block_on(async {
        let list: Vec<&str> = urls.split(',').collect();
        let client = async_nats::connect(list.as_slice()).await.ok()?;
        let js = async_nats::jetstream::new(client);
        let mut s = js.get_stream(stream).await.ok()?;
        let last = s.info().await.ok()?.state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            let m = s.get_raw_message(seq).await.ok()?;
            let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (k, vs) in m.headers.iter() {
                for v in vs {
                    headers
                        .entry(k.to_string())
                        .or_default()
                        .push(v.as_str().to_string());
                }
            }
            out.push(Stored {
                headers,
                payload: m.payload.to_vec(),
            });
        }
        Some(out)
    })
}

/// The octets of an object in a JetStream object store bucket.
pub fn read_object(urls: &str, bucket: &str, name: &str) -> Vec<u8> {
    runtime().block_on(async {
        use tokio::io::AsyncReadExt;
        let list: Vec<&str> = urls.split(',').collect();
        let client = async_nats::connect(list.as_slice()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let store = js.get_object_store(bucket).await.unwrap();
        let mut obj = store.get(name).await.unwrap();
        let mut out = Vec::new();
        obj.read_to_end(&mut out).await.unwrap();
        out
    })
}

/// Creates a stream that keeps messages in memory (to be refused).
pub fn create_memory_stream(urls: &str, name: &str, subject: &str) {
    runtime().block_on(async {
        let list: Vec<&str> = urls.split(',').collect();
        let client = async_nats::connect(list.as_slice()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: name.into(),
            subjects: vec![subject.into()],
            storage: async_nats::jetstream::stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .unwrap();
    });
}

/// Polls `f` every 100 ms until it returns `Some`, up to `limit`.
pub fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running `sluice drain`; SIGKILLed on drop.
pub struct Drain {
    pub child: Child,
    pub log: PathBuf,
}

impl Drain {
    pub fn start(spool: &Path, urls: &str, extra: &[&str], log: PathBuf) -> Drain {
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(crate::support::BIN)
            .arg("drain")
            .arg("--spool")
            .arg(spool)
            .args(["--nats", urls, "--progress-every", "1"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        Drain { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- sluice drain log ---\n{}", self.log());
        }
    }
}
