//! The Redis backend: commands on one multiplexed connection, Lua scripts for every write
//! (`lua/`), and live messages from a RESP3 Pub/Sub connection. The append path is the one
//! thing one Redis and a Redis Cluster do differently ([`AppendPath`]): one `append.lua`
//! call here (`append.rs`), two steps on a cluster (`store::cluster`).

pub mod append;
pub mod commands;
pub mod connection;
pub mod keyspace;
pub mod pubsub;
pub mod reply;
pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::event::{PreparedEvent, Record, StreamRef};
use crate::id::StreamId;
use crate::keys::Keys;
use crate::store::{
    CasResult, CasWrite, CatchUpPage, ClaimedTimer, Coordination, EventLog, Expect, GroupResults,
    PubSubSource, ReadOptions, Run, Store, StoreOptions,
};
use commands::Commands;
use connection::{single_client, Connection};

/// How a backend built on these commands appends a group commit.
#[async_trait]
pub trait AppendPath: Send + Sync {
    /// Append the groups (see `EventLog::append`).
    async fn append(&self, cmds: &Commands, groups: &[&[PreparedEvent]]) -> Result<GroupResults>;

    /// The settings for appending over a socket driven elsewhere (`wire`), when this path can
    /// (one Redis, a plain TCP url, no `WAIT` after the appends).
    fn wire(&self, _url: &str, _keys: &Keys, _timeout: Duration) -> Option<wire::Wire> {
        None
    }

    /// Stop background work and drop connections of its own.
    fn close(&self) {}
}

/// Events in Redis streams, and the scheduler's state beside them.
pub struct RedisStore {
    cmds: Arc<Commands>,
    append: Box<dyn AppendPath>,
    pubsub: Arc<dyn PubSubSource>,
    /// The url of one Redis (none on a cluster), for `wire`.
    url: Option<String>,
    timeout: Duration,
}

impl RedisStore {
    /// A store from its parts (a cluster brings its own append path and live connections).
    pub fn new(
        cmds: Arc<Commands>,
        append: Box<dyn AppendPath>,
        pubsub: Arc<dyn PubSubSource>,
    ) -> Self {
        RedisStore {
            cmds,
            append,
            pubsub,
            url: None,
            timeout: Duration::from_secs(5),
        }
    }

    /// Connect to one Redis at `url`; fails with `STORE_UNAVAILABLE` or `TIMEOUT` when it
    /// does not answer within `opts.timeout`.
    pub async fn connect(url: &str, opts: &StoreOptions) -> Result<Self> {
        let client = single_client(url)?;
        let conn = Connection::single(&client, opts.timeout).await?;
        let replicated = match opts.replicated {
            Some(wait) => Some((wait, Connection::single(&client, opts.timeout).await?)),
            None => None,
        };
        let pubsub = pubsub::SingleNodePubSub::new(&client, opts.timeout)?;
        let mut store = RedisStore::new(
            Arc::new(Commands::new(conn, Keys::single(&opts.prefix))),
            Box::new(append::SingleNodeAppend::new(opts.max_len, replicated)),
            Arc::new(pubsub),
        );
        store.url = Some(url.to_owned());
        store.timeout = opts.timeout;
        Ok(store)
    }

    /// The commands this store runs on.
    pub fn commands(&self) -> &Arc<Commands> {
        &self.cmds
    }
}

#[async_trait]
impl EventLog for RedisStore {
    async fn append(&self, groups: &[&[PreparedEvent]]) -> Result<GroupResults> {
        self.append.append(&self.cmds, groups).await
    }

    async fn read(&self, stream: &StreamRef, opts: &ReadOptions) -> Result<Vec<Record>> {
        self.cmds.read(stream, opts).await
    }

    async fn catch_up(
        &self,
        stream: &StreamRef,
        after: StreamId,
        count: usize,
        check_gap: bool,
    ) -> Result<CatchUpPage> {
        self.cmds.catch_up(stream, after, count, check_gap).await
    }

    async fn list_runs(&self, name: &str, limit: usize, offset: usize) -> Result<Vec<Run>> {
        self.cmds.list_runs(name, limit, offset).await
    }

    async fn index_run(&self, name: &str, id: &str, started_ms: u64) -> Result<()> {
        self.cmds.index_run(name, id, started_ms).await
    }
}

#[async_trait]
impl Coordination for RedisStore {
    async fn hash_get_all(&self, key: &str) -> Result<HashMap<String, String>> {
        self.cmds.hash_get_all(key).await
    }

    async fn hash_set(&self, key: &str, pairs: &[(&str, String)]) -> Result<()> {
        self.cmds.hash_set(key, pairs).await
    }

    async fn compare_and_set(
        &self,
        key: &str,
        field: &str,
        expect: Expect<'_>,
        write: CasWrite<'_>,
    ) -> Result<CasResult> {
        self.cmds.compare_and_set(key, field, expect, write).await
    }

    async fn hash_del(&self, key: &str, fields: &[&str]) -> Result<()> {
        self.cmds.hash_del(key, fields).await
    }

    async fn set_update(&self, key: &str, member: &str, add: bool) -> Result<()> {
        self.cmds.set_update(key, member, add).await
    }

    async fn set_members(&self, key: &str) -> Result<Vec<String>> {
        self.cmds.set_members(key).await
    }

    async fn lease_renew(&self, key: &str, ttl_ms: u64) -> Result<()> {
        self.cmds.lease_renew(key, ttl_ms).await
    }

    async fn lease_take(&self, key: &str, ttl_ms: u64) -> Result<bool> {
        self.cmds.lease_take(key, ttl_ms).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.cmds.exists(key).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.cmds.delete(key).await
    }

    async fn timer_add(&self, id: &str, due_ms: u64, payload: &str) -> Result<()> {
        self.cmds.timer_add(id, due_ms, payload).await
    }

    async fn timer_claim(
        &self,
        now_ms: u64,
        limit: usize,
        lease_ms: u64,
    ) -> Result<Vec<ClaimedTimer>> {
        self.cmds.timer_claim(now_ms, limit, lease_ms).await
    }

    async fn timer_remove(&self, id: &str) -> Result<()> {
        self.cmds.timer_remove(id).await
    }

    async fn timer_next(&self) -> Result<Option<u64>> {
        self.cmds.timer_next().await
    }

    async fn timer_count(&self) -> Result<u64> {
        self.cmds.timer_count().await
    }

    async fn publish(&self, channel: &str, payload: &str) -> Result<()> {
        self.cmds.publish(channel, payload).await
    }
}

impl Store for RedisStore {
    fn keys(&self) -> &Keys {
        &self.cmds.keys
    }

    fn pubsub(&self) -> Option<Arc<dyn PubSubSource>> {
        Some(self.pubsub.clone())
    }

    fn wire(&self) -> Option<wire::Wire> {
        self.append
            .wire(self.url.as_deref()?, &self.cmds.keys, self.timeout)
    }

    fn close(&self) {
        self.append.close();
        self.cmds.conn.close();
    }
}
