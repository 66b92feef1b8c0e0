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
