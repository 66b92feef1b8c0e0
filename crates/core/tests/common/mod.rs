//! Shared helpers: unique prefixes, both stores, waiting with deadlines.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lean_events_core::{Bus, Config, Item, ReadOptions, StreamId, StreamRef, Subscription};
use serde_json::Value;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The nodes of the Redis Cluster the Redis tests run on, when `REDIS_URL` is a cluster url
/// (`redis+cluster://host:port,…`; `scripts/cluster.sh start` prints one).
pub fn cluster_nodes() -> Option<Vec<String>> {
    lean_events_core::store::cluster::nodes_of_url(&redis_url()).map(|n| n.expect("cluster url"))
}

/// A raw connection to the Redis the tests use (one node, or the cluster).
pub async fn raw_connection() -> lean_events_core::RawConnection {
    lean_events_core::RawConnection::open(&redis_url())
        .await
        .expect("a raw Redis connection")
}

/// A key prefix no other test (or test run) uses.
pub fn unique_prefix(name: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test-{name}-{}-{nanos}-{n}", std::process::id())
}

/// The backends every behaviour is checked on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Redis,
    Memory,
}

pub const BACKENDS: [Backend; 2] = [Backend::Redis, Backend::Memory];

pub async fn connect_with(backend: Backend, name: &str, f: impl FnOnce(&mut Config)) -> Bus {
    let mut config = Config {
        url: match backend {
            Backend::Redis => Some(redis_url()),
            Backend::Memory => None,
        },
        prefix: unique_prefix(name),
        ..Config::default()
    };
    f(&mut config);
    Bus::connect(config).await.expect("connect")
}

pub async fn connect(backend: Backend, name: &str) -> Bus {
    connect_with(backend, name, |_| {}).await
}

/// Collect event ids from `sub` until `done(ids)` holds; panics after `secs` seconds.
pub async fn collect_until(
    sub: &Subscription,
    secs: u64,
    done: impl Fn(&[StreamId]) -> bool,
) -> Vec<StreamId> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut ids = Vec::new();
    while !done(&ids) {
        let left = deadline.saturating_duration_since(Instant::now());
        let taken = tokio::time::timeout(left, sub.next_batch(1000))
            .await
            .unwrap_or_else(|_| {
                panic!("timed out with {} events: {}", ids.len(), sub.debug_state())
            });
        for item in taken.items {
            if let Item::Event(r) = item {
                ids.push(r.id);
            }
        }
        if let Some(end) = taken.end {
            panic!(
                "subscription ended early: {end:?} after {} events",
                ids.len()
            );
        }
    }
    ids
}

pub fn event(kind: &str, subject: &str, n: usize) -> String {
    format!(r#"{{"kind":"{kind}","subject":"{subject}","data":{{"n":{n}}}}}"#)
}

/// Poll `cond` until it holds; panics after `secs` seconds.
pub async fn wait_until(secs: u64, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "condition not met within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The events of a flow run (at most 1000), parsed.
pub async fn events(bus: &Bus, flow: &str) -> Vec<Value> {
    bus.read(
        &StreamRef::new("flow", flow).unwrap(),
        ReadOptions {
            limit: Some(1000),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .iter()
    .map(|r| serde_json::from_str(&r.json).unwrap())
    .collect()
}

/// The kinds of `evs`, in order.
pub fn kinds(evs: &[Value]) -> Vec<String> {
    evs.iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server of the test's own on a free port (never the shared one): stopped, paused
/// and restarted by the test, killed when dropped.
pub struct OwnRedis {
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<tokio::process::Child>,
}

impl OwnRedis {
    /// Start one and wait until it answers.
    pub async fn start(name: &str) -> OwnRedis {
        let port = free_port();
        let dir = std::env::temp_dir().join(unique_prefix(name));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = OwnRedis {
            port,
            dir,
            child: None,
        };
        r.restart().await;
        r
    }

    /// Its url.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Start it (again) on the same port and wait until it answers.
    pub async fn restart(&mut self) {
        self.child = Some(
            tokio::process::Command::new("redis-server")
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&self.dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("redis-server on PATH"),
        );
        let client = redis::Client::open(self.url()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.get_multiplexed_async_connection().await.is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kill it and wait until it is gone.
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.unwrap();
        }
    }

    /// Freeze it (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Let a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().and_then(|c| c.id()).expect("running");
        let ok = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// A plain connection to it.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
