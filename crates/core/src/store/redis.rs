//! The Redis store: one multiplexed connection for commands, Lua scripts for every write; on a
//! Redis Cluster, a cluster connection that follows the topology (see `cluster.rs`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Script, Value};

use super::{CatchUpPage, ReadOptions, Run, DEFAULT_READ_LIMIT};
use crate::error::{Error, ErrorCode, Result};
use crate::event::{record_from_fields, IndexEntry, PreparedEvent, Record, StreamRef};
use crate::id::StreamId;

static APPEND_LUA: &str = concat!(include_str!("match.lua"), include_str!("append.lua"));
static CATCHUP_LUA: &str = include_str!("catchup.lua");

/// Connection settings for Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://` or `rediss://` URL (single node).
    pub url: String,
    /// Redis Cluster: the urls of some of its nodes (`url` is then ignored).
    pub cluster: Option<Vec<String>>,
    /// Key prefix.
    pub prefix: String,
    /// Approximate cap on entries per stream.
    pub max_len: Option<u64>,
    /// Bound on every call.
    pub timeout: Duration,
    /// Wait (at most this long) for a replica to have each append (`WAIT 1 <ms>`).
    pub replicated: Option<Duration>,
}

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
        match super::cluster::nodes_of_url(url).transpose()? {
            Some(nodes) => Ok(Conn::Cluster(
                super::cluster::client(&nodes, Duration::from_secs(5), None)?
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

/// Where the live task connects.
#[derive(Clone)]
pub enum LiveSource {
    /// One node: a Pub/Sub connection.
    Single(Box<redis::Client>),
    /// A cluster: sharded Pub/Sub for stream channels, plain Pub/Sub for the rest.
    Cluster(Vec<String>),
}

/// Events in Redis streams, published and indexed by `append.lua` (or, on a cluster, by
/// `append_cluster.lua` and `index_awaits.lua`).
pub struct RedisStore {
    live: LiveSource,
    conn: Mutex<Option<Conn>>,
    /// With `replicated` on one node: the appends' own connection, so that `WAIT` counts
    /// exactly their writes and blocks nothing else while it waits.
    append_conn: Mutex<Option<Conn>>,
    pub(crate) replicated: Option<Duration>,
    pub(crate) prefix: String,
    /// `{<prefix>}` on a cluster (every key that is not a stream shares its slot), else the prefix.
    pub(crate) coord: String,
    pub(crate) cluster: bool,
    pub(crate) max_len: Option<u64>,
    timeout: Duration,
    append_script: Script,
    catchup_script: Script,
    pub(crate) cluster_scripts: Option<super::cluster::Scripts>,
    /// Which master serves each slot (a cluster's), as last read.
    pub(crate) slot_owners: Mutex<Option<super::cluster::SlotOwners>>,
    /// When the cluster connection was last replaced.
    renewed: Mutex<Option<Instant>>,
    /// A second step failed: the outbox repair pass should run soon.
    pub(crate) repair_due: std::sync::atomic::AtomicBool,
}

impl RedisStore {
    /// Connect; fails with `STORE_UNAVAILABLE` or `TIMEOUT` when Redis does not answer in time.
    pub async fn connect(opts: &RedisOptions) -> Result<Self> {
        if let Some(nodes) = &opts.cluster {
            return Self::connect_cluster(opts, nodes).await;
        }
        let client = redis::Client::open(opts.url.as_str()).map_err(|e| {
            Error::argument(format!(
                "url '{}' is not a Redis URL ({e}); use redis://host:port or rediss://host:port",
                opts.url
            ))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(opts.timeout))
            .set_response_timeout(Some(opts.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connect = || {
            with_timeout(opts.timeout, async {
                ConnectionManager::new_with_config(client.clone(), config.clone())
                    .await
                    .map(Conn::Single)
                    .map_err(Error::from)
            })
        };
        let conn = connect().await?;
        let append_conn = match opts.replicated {
            Some(_) => Some(connect().await?),
            None => None,
        };
        Ok(Self::new(
            opts,
            LiveSource::Single(Box::new(client.clone())),
            conn,
            append_conn,
        ))
    }

    async fn connect_cluster(opts: &RedisOptions, nodes: &[String]) -> Result<Self> {
        let client = super::cluster::client(nodes, opts.timeout, None)?;
        let conn = with_timeout(opts.timeout, async {
            client
                .get_async_connection()
                .await
                .map(Conn::Cluster)
                .map_err(Error::from)
        })
        .await?;
        Ok(Self::new(
            opts,
            LiveSource::Cluster(nodes.to_vec()),
            conn,
            None,
        ))
    }

    fn new(opts: &RedisOptions, live: LiveSource, conn: Conn, append_conn: Option<Conn>) -> Self {
        let cluster = opts.cluster.is_some();
        RedisStore {
            live,
            conn: Mutex::new(Some(conn)),
            append_conn: Mutex::new(append_conn),
            replicated: opts.replicated,
            prefix: opts.prefix.clone(),
            coord: if cluster {
                format!("{{{}}}", opts.prefix)
            } else {
                opts.prefix.clone()
            },
            cluster,
            max_len: opts.max_len,
            timeout: opts.timeout,
            append_script: Script::new(APPEND_LUA),
            catchup_script: Script::new(CATCHUP_LUA),
            cluster_scripts: cluster.then(super::cluster::Scripts::new),
            repair_due: std::sync::atomic::AtomicBool::new(false),
            renewed: Mutex::new(None),
            slot_owners: Mutex::new(None),
        }
    }

    /// Where the live task connects.
    pub fn live_source(&self) -> &LiveSource {
        &self.live
    }

    /// The key of a stream: `<prefix>:<type>:<id>`, on a cluster `<prefix>:<type>:{<id>}`.
    pub fn stream_key(&self, stream: &StreamRef) -> String {
        if self.cluster {
            format!("{}:{}:{{{}}}", self.prefix, stream.stream_type, stream.id)
        } else {
            stream.key(&self.prefix)
        }
    }

    /// The bound on every call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn conn(&self) -> Result<Conn> {
        self.conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(Error::closed)
    }

    /// One request, bounded by `timeout`. A refused connection (the manager's reconnect failed
    /// while Redis was down; nothing was sent) is tried once more on the connection the manager
    /// opens next, so the first call after Redis is back does not fail for the outage before.
    ///
    /// On a cluster, a call that failed for the topology's sake (a node unreachable, the cluster
    /// down, no answer) replaces the connection with a fresh one, which reads the topology
    /// again: the cluster client alone can keep a topology from the middle of a failover. When
    /// the failure says nothing was done (refused, `CLUSTERDOWN`, `TRYAGAIN`, a redirect that
    /// led nowhere), the call is tried again on the fresh connection while `timeout` lasts, so
    /// a failover shorter than `timeout` is only a delay to the caller.
    pub(crate) async fn send<T, F, Fut>(&self, conn: &Conn, request: F) -> Result<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
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
                    if self.cluster {
                        self.renew_cluster_connection().await;
                    }
                    return Err(timed_out(self.timeout));
                }
            };
            if !self.cluster {
                return Err(e.into());
            }
            let not_done = e.is_connection_refusal()
                || matches!(
                    e.code(),
                    Some("CLUSTERDOWN" | "TRYAGAIN" | "MOVED" | "ASK" | "MASTERDOWN" | "LOADING")
                );
            if not_done || e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                self.renew_cluster_connection().await;
            }
            let pause = Duration::from_millis(100);
            if !not_done || tokio::time::Instant::now() + pause >= deadline {
                return Err(e.into());
            }
            tokio::time::sleep(pause).await;
            conn = self.conn()?;
        }
    }

    /// Replace the cluster connection with a fresh one, at most once a second.
    async fn renew_cluster_connection(&self) {
        let LiveSource::Cluster(nodes) = &self.live else {
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
        let fresh = async {
            super::cluster::client(nodes, self.timeout, None)?
                .get_async_connection()
                .await
                .map_err(Error::from)
        };
        self.forget_slot_owners();
        if let Ok(Ok(c)) = tokio::time::timeout(self.timeout, fresh).await {
            let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
            if conn.is_some() {
                *conn = Some(Conn::Cluster(c));
            }
        }
    }

    /// The connection appends go through.
    fn append_conn(&self) -> Result<Conn> {
        if self.replicated.is_none() {
            return self.conn();
        }
        self.append_conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(Error::closed)
    }

    /// Drop the command connections.
    pub fn close(&self) {
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.append_conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// One `append.lua` call for all groups.
    pub async fn append(&self, groups: &[&[PreparedEvent]]) -> Result<Vec<Result<Vec<StreamId>>>> {
        if self.cluster {
            return self.append_cluster(groups).await;
        }
        let mut inv = self.append_script.prepare_invoke();
        inv.arg(&self.prefix)
            .arg(self.max_len.unwrap_or(0))
            .arg(groups.len());
        for group in groups {
            inv.arg(group.len());
            for e in group.iter() {
                inv.key(e.stream.key(&self.prefix));
                inv.arg(&e.stream.stream_type)
                    .arg(&e.stream.id)
                    .arg(index_arg(&e.index));
                inv.arg(e.fields.len());
                for (k, v) in &e.fields {
                    inv.arg(*k).arg(v);
                }
            }
        }
        let conn = self.append_conn()?;
        let inv = &inv;
        let reply: Value = self
            .send(&conn, |mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        let Value::Array(groups_out) = reply else {
            return Err(unexpected("append", &reply));
        };
        if groups_out.len() != groups.len() {
            return Err(unexpected("append", &Value::Array(groups_out)));
        }
        let results = parse_append_reply(groups_out)?;
        match self.replicated {
            Some(wait) if results.iter().any(|r| r.is_ok()) => {
                self.wait_for_replica(&conn, wait, results).await
            }
            _ => Ok(results),
        }
    }

    /// `WAIT 1 <ms>` on the appends' connection: stored appends whose write no replica
    /// confirmed in time become `NOT_REPLICATED` (they are on the master, and were published).
    async fn wait_for_replica(
        &self,
        conn: &Conn,
        wait: Duration,
        results: Vec<Result<Vec<StreamId>>>,
    ) -> Result<Vec<Result<Vec<StreamId>>>> {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(1).arg(wait.as_millis() as u64);
        let cmd = &cmd;
        let acked: i64 = self
            .send(conn, |mut c| async move { cmd.query_async(&mut c).await })
            .await?;
        if acked >= 1 {
            return Ok(results);
        }
        let refused = not_replicated(wait);
        Ok(results
            .into_iter()
            .map(|r| r.and_then(|_| Err(refused.clone())))
            .collect())
    }
}

/// How the scripts name an index entry: "" none, "t" the trigger index, "f<name>" a run index.
pub(crate) fn index_arg(index: &Option<IndexEntry>) -> String {
    match index {
        None => String::new(),
        Some(IndexEntry::Trigger) => "t".into(),
        Some(IndexEntry::Flow(name)) => format!("f{name}"),
    }
}

/// An append stored and published on the master that no replica confirmed within `wait`.
pub(crate) fn not_replicated(wait: Duration) -> Error {
    Error::new(
        ErrorCode::NotReplicated,
        format!(
            "stored and published on the master, but no replica confirmed it within {} ms \
             (durability 'replicated'); it is lost if the master fails before a replica has it",
            wait.as_millis()
        ),
    )
}

/// Per group: `{1, id…}` stored, or `{0, message}` refused for a wrong-type key.
pub(crate) fn parse_append_reply(groups_out: Vec<Value>) -> Result<Vec<Result<Vec<StreamId>>>> {
    groups_out
        .into_iter()
        .map(|g| {
            let Value::Array(items) = g else {
                return Err(unexpected("append group", &g));
            };
            let mut it = items.into_iter();
            match it.next() {
                Some(Value::Int(1)) => Ok(Ok(it.map(|v| parse_id(&v)).collect::<Result<_>>()?)),
                Some(Value::Int(0)) => {
                    let msg = it.next().map(|v| text(&v)).unwrap_or_default();
                    Ok(Err(Error::new(ErrorCode::WrongType, msg)))
                }
                other => Err(Error::new(
                    ErrorCode::Internal,
                    format!("append.lua answered {other:?}"),
                )),
            }
        })
        .collect()
}

impl RedisStore {
    /// XRANGE / XREVRANGE with exclusive cursors.
    pub async fn read(&self, stream: &StreamRef, opts: &ReadOptions) -> Result<Vec<Record>> {
        let limit = opts.limit.unwrap_or(DEFAULT_READ_LIMIT);
        let low = opts
            .after
            .map(|a| format!("({a}"))
            .unwrap_or_else(|| "-".into());
        let high = opts
            .before
            .map(|b| format!("({b}"))
            .unwrap_or_else(|| "+".into());
        let mut cmd = if opts.reverse {
            let mut c = redis::cmd("XREVRANGE");
            c.arg(self.stream_key(stream)).arg(high).arg(low);
            c
        } else {
            let mut c = redis::cmd("XRANGE");
            c.arg(self.stream_key(stream)).arg(low).arg(high);
            c
        };
        cmd.arg("COUNT").arg(limit);
        let cmd = &cmd;
        let reply: Value = self
            .send(&self.conn()?, |mut c| async move {
                cmd.query_async(&mut c).await
            })
            .await?;
        parse_entries(reply, stream)
    }

    /// One `catchup.lua` call.
    pub async fn catch_up(
        &self,
        stream: &StreamRef,
        after: StreamId,
        count: usize,
        check_gap: bool,
    ) -> Result<CatchUpPage> {
        let mut inv = self.catchup_script.prepare_invoke();
        inv.key(self.stream_key(stream))
            .arg(after.to_string())
            .arg(count)
            .arg(if check_gap { "1" } else { "0" });
        let inv = &inv;
        let reply: Value = self
            .send(&self.conn()?, |mut c| async move {
                inv.invoke_async(&mut c).await
            })
            .await?;
        let Value::Array(mut parts) = reply else {
            return Err(unexpected("catchup", &reply));
        };
        if parts.len() != 3 {
            return Err(unexpected("catchup", &Value::Array(parts)));
        }
        let entries = parts.pop().unwrap_or(Value::Nil);
        let id_or_none = |v: &Value| -> Result<Option<StreamId>> {
            let s = text(v);
            if s.is_empty() {
                return Ok(None);
            }
            s.parse::<StreamId>()
                .map(Some)
                .map_err(|_| Error::new(ErrorCode::Internal, format!("bad stream id {s:?}")))
        };
        let max_deleted = id_or_none(&parts[0])?;
        let first_if_trimmed = id_or_none(&parts[1])?;
        // Entries after the cursor are gone if one was deleted above it, or if the stream was
        // trimmed and now starts above it (conservative: the cursor may have been the very last
        // trimmed entry, which is reported as a gap too).
        let gap = check_gap
            && (max_deleted.is_some_and(|m| m > after)
                || first_if_trimmed.is_some_and(|f| f > after.next()));
        Ok(CatchUpPage {
            records: parse_entries(entries, stream)?,
            gap,
        })
    }

    /// ZREVRANGE of `<prefix>:flows:<name>`.
    pub async fn list_runs(&self, name: &str, limit: usize, offset: usize) -> Result<Vec<Run>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = format!("{}:flows:{name}", self.coord);
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(key)
            .arg("+inf")
            .arg("-inf")
            .arg("BYSCORE")
            .arg("REV")
            .arg("LIMIT")
            .arg(offset)
            .arg(limit)
            .arg("WITHSCORES");
        let cmd = &cmd;
        let reply: Vec<(String, f64)> = self
            .send(&self.conn()?, |mut c| async move {
                cmd.query_async(&mut c).await
            })
            .await?;
        Ok(reply
            .into_iter()
            .map(|(id, score)| Run {
                id,
                started_ms: score as u64,
            })
            .collect())
    }
}

/// Bound a store call by `timeout`.
pub(crate) async fn with_timeout<T>(
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

pub(crate) fn unexpected(what: &str, v: &Value) -> Error {
    Error::new(
        ErrorCode::Internal,
        format!("unexpected reply to {what}: {v:?}"),
    )
}

pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => String::new(),
    }
}

fn parse_id(v: &Value) -> Result<StreamId> {
    let s = text(v);
    s.parse()
        .map_err(|_| Error::new(ErrorCode::Internal, format!("bad stream id {s:?}")))
}

/// XRANGE-shaped entries to records.
fn parse_entries(v: Value, stream: &StreamRef) -> Result<Vec<Record>> {
    let entries = match v {
        Value::Array(e) => e,
        Value::Nil => return Ok(Vec::new()),
        other => return Err(unexpected("XRANGE", &other)),
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(mut parts) = entry else {
            return Err(unexpected("XRANGE entry", &entry));
        };
        if parts.len() != 2 {
            return Err(unexpected("XRANGE entry", &Value::Array(parts)));
        }
        let fields = parts.pop().unwrap_or(Value::Nil);
        let id = parse_id(&parts[0])?;
        let Value::Array(fields) = fields else {
            return Err(unexpected("XRANGE fields", &fields));
        };
        let strs: Vec<&[u8]> = fields
            .iter()
            .map(|f| match f {
                Value::BulkString(b) => b.as_slice(),
                _ => &[],
            })
            .collect();
        let pairs = strs.chunks_exact(2).filter_map(|kv| {
            Some((
                std::str::from_utf8(kv[0]).ok()?,
                std::str::from_utf8(kv[1]).ok()?,
            ))
        });
        out.push(record_from_fields(
            id,
            &stream.stream_type,
            &stream.id,
            pairs,
        ));
    }
    Ok(out)
}

static CAS_LUA: &str = include_str!("cas.lua");
static TIMER_CLAIM_LUA: &str = include_str!("timer_claim.lua");

/// Scheduler primitives on Redis.
impl RedisStore {
    async fn query<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T> {
        let cmd = &cmd;
        self.send(&self.conn()?, |mut c| async move {
            cmd.query_async(&mut c).await
        })
        .await
    }

    async fn script<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T> {
        let inv = &inv;
        self.send(&self.conn()?, |mut c| async move {
            inv.invoke_async(&mut c).await
        })
        .await
    }

    pub(crate) async fn hash_get_all(
        &self,
        key: &str,
    ) -> Result<std::collections::HashMap<String, String>> {
        let mut c = redis::cmd("HGETALL");
        c.arg(key);
        self.query(c).await
    }

    pub(crate) async fn hash_set(&self, key: &str, pairs: &[(&str, String)]) -> Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut c = redis::cmd("HSET");
        c.arg(key);
        for (k, v) in pairs {
            c.arg(*k).arg(v);
        }
        self.query::<()>(c).await
    }

    pub(crate) async fn hash_cas(
        &self,
        key: &str,
        field: &str,
        expect: super::Expect<'_>,
        write: super::CasWrite<'_>,
    ) -> Result<super::CasResult> {
        let script = Script::new(CAS_LUA);
        let mut inv = script.prepare_invoke();
        inv.key(key).arg(field);
        match expect {
            super::Expect::Absent => inv.arg("1").arg(""),
            super::Expect::Value(v) => inv.arg("0").arg(v),
        };
        inv.arg(write.new).arg(write.ttl_ms);
        match write.timer {
            Some(t) => {
                let (timers, _, data) = self.timer_keys();
                inv.key(timers).key(data);
                inv.arg("1").arg(t.id).arg(t.due_ms).arg(t.payload);
            }
            None => {
                inv.arg("0");
            }
        }
        inv.arg(write.sets.len());
        for c in write.sets {
            inv.key(c.key)
                .arg(c.member)
                .arg(if c.add { "+" } else { "-" });
        }
        inv.arg(write.guards.len());
        for (f, v) in write.guards {
            inv.arg(*f).arg(*v);
        }
        for (k, v) in write.extra {
            inv.arg(*k).arg(v);
        }
        let (set, exists, current): (i64, i64, Option<String>) = self.script(inv).await?;
        Ok(super::CasResult {
            set: set == 1,
            exists: exists == 1,
            current,
        })
    }

    pub(crate) async fn hash_del(&self, key: &str, fields: &[&str]) -> Result<()> {
        let mut c = redis::cmd("HDEL");
        c.arg(key).arg(fields);
        self.query::<()>(c).await
    }

    pub(crate) async fn set_update(&self, key: &str, member: &str, add: bool) -> Result<()> {
        let mut c = redis::cmd(if add { "SADD" } else { "SREM" });
        c.arg(key).arg(member);
        self.query::<()>(c).await
    }

    pub(crate) async fn set_members(&self, key: &str) -> Result<Vec<String>> {
        let mut c = redis::cmd("SMEMBERS");
        c.arg(key);
        self.query(c).await
    }

    pub(crate) async fn lease_renew(&self, key: &str, ttl_ms: u64) -> Result<()> {
        let mut c = redis::cmd("SET");
        c.arg(key).arg("1").arg("PX").arg(ttl_ms);
        self.query::<()>(c).await
    }

    /// `SET key 1 NX PX ttl`: true when this call created the key.
    pub(crate) async fn lease_take(&self, key: &str, ttl: Duration) -> Result<bool> {
        let mut c = redis::cmd("SET");
        c.arg(key)
            .arg("1")
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64);
        Ok(self.query::<Option<String>>(c).await?.is_some())
    }

    pub(crate) async fn exists(&self, key: &str) -> Result<bool> {
        let mut c = redis::cmd("EXISTS");
        c.arg(key);
        Ok(self.query::<i64>(c).await? == 1)
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<()> {
        let mut c = redis::cmd("DEL");
        c.arg(key);
        self.query::<()>(c).await
    }

    fn timer_keys(&self) -> (String, String, String) {
        (
            format!("{}:sched:timers", self.coord),
            format!("{}:sched:inflight", self.coord),
            format!("{}:sched:timer-data", self.coord),
        )
    }

    pub(crate) async fn timer_add(&self, id: &str, due_ms: u64, payload: &str) -> Result<()> {
        let (timers, _, data) = self.timer_keys();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(&data)
            .arg(id)
            .arg(payload)
            .ignore()
            .cmd("ZADD")
            .arg(&timers)
            .arg(due_ms)
            .arg(id)
            .ignore();
        let pipe = &pipe;
        self.send(&self.conn()?, |mut c| async move {
            pipe.query_async::<()>(&mut c).await
        })
        .await
    }

    pub(crate) async fn timer_claim(
        &self,
        now_ms: u64,
        limit: usize,
        lease_ms: u64,
    ) -> Result<Vec<super::ClaimedTimer>> {
        let (timers, inflight, data) = self.timer_keys();
        let script = Script::new(TIMER_CLAIM_LUA);
        let mut inv = script.prepare_invoke();
        inv.key(timers)
            .key(inflight)
            .key(data)
            .arg(now_ms)
            .arg(limit)
            .arg(lease_ms);
        let flat: Vec<String> = self.script(inv).await?;
        Ok(flat
            .chunks_exact(3)
            .map(|c| super::ClaimedTimer {
                id: c[0].clone(),
                payload: c[1].clone(),
                due_ms: c[2].parse::<f64>().map(|f| f as u64).unwrap_or(now_ms),
            })
            .collect())
    }

    pub(crate) async fn timer_remove(&self, id: &str) -> Result<()> {
        let (timers, inflight, data) = self.timer_keys();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("ZREM")
            .arg(&timers)
            .arg(id)
            .ignore()
            .cmd("ZREM")
            .arg(&inflight)
            .arg(id)
            .ignore()
            .cmd("HDEL")
            .arg(&data)
            .arg(id)
            .ignore();
        let pipe = &pipe;
        self.send(&self.conn()?, |mut c| async move {
            pipe.query_async::<()>(&mut c).await
        })
        .await
    }

    pub(crate) async fn timer_next(&self) -> Result<Option<u64>> {
        let (timers, inflight, _) = self.timer_keys();
        let mut pipe = redis::pipe();
        pipe.cmd("ZRANGE")
            .arg(&timers)
            .arg(0)
            .arg(0)
            .arg("WITHSCORES");
        pipe.cmd("ZRANGE")
            .arg(&inflight)
            .arg(0)
            .arg(0)
            .arg("WITHSCORES");
        type Scored = Vec<(String, f64)>;
        let pipe = &pipe;
        let (a, b): (Scored, Scored) = self
            .send(&self.conn()?, |mut c| async move {
                pipe.query_async(&mut c).await
            })
            .await?;
        Ok(a.into_iter().chain(b).map(|(_, s)| s as u64).min())
    }

    pub(crate) async fn publish(&self, channel: &str, payload: &str) -> Result<()> {
        let mut c = redis::cmd("PUBLISH");
        c.arg(channel).arg(payload);
        self.query::<()>(c).await
    }
}
