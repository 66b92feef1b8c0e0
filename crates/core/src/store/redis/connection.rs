//! Command connections to Redis: one node (a reconnecting multiplexed connection) or a whole
//! cluster, every call bounded by the store's timeout and retried only when nothing was done.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::error::{Error, ErrorCode, Result};

/// A command connection: one node, or a whole cluster.
#[derive(Clone)]
pub enum Conn {
    /// One Redis.
    Single(ConnectionManager),
    /// A Redis Cluster (follows MOVED/ASK and failovers).
    Cluster(ClusterConnection),
}

impl Conn {
    /// A connection to `url`, one Redis or a cluster url (`redis+cluster://host:port,…`), for
    /// tools and tests that inspect what the store wrote.
    pub async fn open(url: &str) -> Result<Conn> {
        match nodes_of_url(url).transpose()? {
            Some(nodes) => Ok(Conn::Cluster(
                cluster_client(&nodes, Duration::from_secs(5), None)?
                    .get_async_connection()
                    .await?,
            )),
            None => {
                let client = redis::Client::open(url)
                    .map_err(|e| Error::argument(format!("url '{url}': {e}")))?;
                Ok(Conn::Single(ConnectionManager::new(client).await?))
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The nodes of a cluster url, `redis+cluster://host:port,host:port` (or `rediss+cluster://`
/// for TLS; user and password, if any, go before the first host and apply to every node):
/// `None` when `url` is not of that form.
pub fn nodes_of_url(url: &str) -> Option<Result<Vec<String>>> {
    let (scheme, rest) = if let Some(r) = url.strip_prefix("redis+cluster://") {
        ("redis", r)
    } else if let Some(r) = url.strip_prefix("rediss+cluster://") {
        ("rediss", r)
    } else {
        return None;
    };
    let (auth, hosts) = match rest.rfind('@') {
        Some(at) => (&rest[..=at], &rest[at + 1..]),
        None => ("", rest),
    };
    let hosts = hosts.trim_end_matches('/');
    let nodes: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| format!("{scheme}://{auth}{h}"))
        .collect();
    if nodes.is_empty() {
        return Some(Err(Error::argument(format!(
            "url '{url}' names no node; use redis+cluster://host:port,host:port"
        ))));
    }
    Some(Ok(nodes))
}

/// A cluster client for `nodes` (each `redis://host:port`); with `push`, a RESP3 client whose
/// messages and subscription changes go there.
pub fn cluster_client(
    nodes: &[String],
    timeout: Duration,
    push: Option<Box<dyn Fn(redis::PushInfo) + Send + Sync>>,
) -> Result<ClusterClient> {
    if nodes.is_empty() {
        return Err(Error::argument(
            "cluster must list at least one node url (redis://host:port)",
        ));
    }
    for n in nodes {
        redis::Client::open(n.as_str()).map_err(|e| {
            Error::argument(format!(
                "cluster node '{n}' is not a Redis URL ({e}); use redis://host:port"
            ))
        })?;
    }
    let mut b = ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(8)
        .min_retry_wait(50)
        .max_retry_wait(1000);
    if let Some(push) = push {
        b = b.use_protocol(redis::ProtocolVersion::RESP3).push_sender(
            move |info| -> std::result::Result<(), ()> {
                push(info);
                Ok(())
            },
        );
    }
    b.build()
        .map_err(|e| Error::argument(format!("cluster: {e}")))
}

/// A redis client for `url`, with a message that says what a Redis url looks like.
pub fn single_client(url: &str) -> Result<redis::Client> {
    redis::Client::open(url).map_err(|e| {
        Error::argument(format!(
            "url '{url}' is not a Redis URL ({e}); use redis://host:port or rediss://host:port"
        ))
    })
}

/// What a command connection is connected to.
enum Target {
    Single,
    /// The cluster's node urls, to build a fresh connection from after a failover.
    Cluster(Vec<String>),
}

/// A command connection with the store's bound on every call. On a cluster it replaces its
/// connection after a failure that may come from a topology change (see `send`).
pub struct Connection {
    conn: Mutex<Option<Conn>>,
    target: Target,
    timeout: Duration,
    /// When the cluster connection was last replaced.
    renewed: Mutex<Option<Instant>>,
    /// How many times it was replaced (a slot map read before the last one is stale).
    renewals: AtomicU64,
}

impl Connection {
    /// Connect to one Redis; fails with `STORE_UNAVAILABLE` or `TIMEOUT` when it does not
    /// answer within `timeout`.
    pub async fn single(client: &redis::Client, timeout: Duration) -> Result<Connection> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = with_timeout(timeout, async {
            ConnectionManager::new_with_config(client.clone(), config)
                .await
                .map(Conn::Single)
                .map_err(Error::from)
        })
        .await?;
        Ok(Self::new(conn, Target::Single, timeout))
    }

    /// Connect to a Redis Cluster through some of its `nodes`.
    pub async fn cluster(nodes: &[String], timeout: Duration) -> Result<Connection> {
        let client = cluster_client(nodes, timeout, None)?;
        let conn = with_timeout(timeout, async {
            client
                .get_async_connection()
                .await
                .map(Conn::Cluster)
                .map_err(Error::from)
        })
        .await?;
        Ok(Self::new(conn, Target::Cluster(nodes.to_vec()), timeout))
    }

    fn new(conn: Conn, target: Target, timeout: Duration) -> Connection {
        Connection {
            conn: Mutex::new(Some(conn)),
            target,
            timeout,
            renewed: Mutex::new(None),
            renewals: AtomicU64::new(0),
        }
    }

    /// The bound on every call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How many times the cluster connection was replaced so far.
    pub fn renewals(&self) -> u64 {
        self.renewals.load(Ordering::Acquire)
    }

    /// The current connection (`BUS_CLOSED` once closed).
    pub fn get(&self) -> Result<Conn> {
        self.conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(Error::closed)
    }

    /// Drop the connection; later calls fail with `BUS_CLOSED`.
    pub fn close(&self) {
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// One request on the current connection, bounded by the timeout (see `send_on`).
    pub async fn send<T, F, Fut>(&self, request: F) -> Result<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.send_on(&self.get()?, request).await
    }

    /// One request on `conn`, bounded by the timeout. A refused connection (the manager's
    /// reconnect failed while Redis was down; nothing was sent) is tried once more on the
    /// connection the manager opens next, so the first call after Redis is back does not fail
    /// for the outage before.
    ///
    /// On a cluster, a call that failed for the topology's sake (a node unreachable, the
    /// cluster down, no answer) replaces the connection with a fresh one, which reads the
    /// topology again: the cluster client alone can keep a topology from the middle of a
    /// failover. When the failure says nothing was done (refused, `CLUSTERDOWN`, `TRYAGAIN`, a
    /// redirect that led nowhere), the call is tried again on the fresh connection while the
    /// timeout lasts, so a failover shorter than the timeout is only a delay to the caller.
    pub async fn send_on<T, F, Fut>(&self, conn: &Conn, request: F) -> Result<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let cluster = matches!(self.target, Target::Cluster(_));
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut conn = conn.clone();
        loop {
            let attempt = tokio::time::timeout_at(deadline, async {
                match request(conn.clone()).await {
                    Err(e) if e.is_connection_refusal() => request(conn.clone()).await,
                    r => r,
                }
            })
            .await;
            let e = match attempt {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => e,
                Err(_) => {
                    if cluster {
                        self.renew().await;
                    }
                    return Err(timed_out(self.timeout));
                }
            };
            if !cluster {
                return Err(e.into());
            }
            let not_done = e.is_connection_refusal()
                || matches!(
                    e.code(),
                    Some("CLUSTERDOWN" | "TRYAGAIN" | "MOVED" | "ASK" | "MASTERDOWN" | "LOADING")
                );
            if not_done || e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                self.renew().await;
            }
            let pause = Duration::from_millis(100);
            if !not_done || tokio::time::Instant::now() + pause >= deadline {
                return Err(e.into());
            }
            tokio::time::sleep(pause).await;
            conn = self.get()?;
        }
    }

    /// Replace the cluster connection with a fresh one, at most once a second.
    pub async fn renew(&self) {
        let Target::Cluster(nodes) = &self.target else {
            return;
        };
        let now = Instant::now();
        {
            let mut last = self.renewed.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
                return;
            }
            *last = Some(now);
        }
        self.renewals.fetch_add(1, Ordering::AcqRel);
        let fresh = async {
            cluster_client(nodes, self.timeout, None)?
                .get_async_connection()
                .await
                .map_err(Error::from)
        };
        if let Ok(Ok(c)) = tokio::time::timeout(self.timeout, fresh).await {
            let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
            if conn.is_some() {
                *conn = Some(Conn::Cluster(c));
            }
        }
    }
}

/// Bound a store call by `timeout`.
pub async fn with_timeout<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(timed_out(timeout)),
    }
}

/// A store call got no answer within `timeout`.
fn timed_out(timeout: Duration) -> Error {
    Error::new(
        ErrorCode::Timeout,
        format!(
            "Redis did not answer within {} ms (timeoutMs); the outcome of a write is unknown",
            timeout.as_millis()
        ),
    )
}
