//! Where events and the scheduler's state live, behind three traits every backend implements:
//! [`EventLog`] (append, read, catch up, the run index), [`Coordination`] (hashes with
//! compare-and-set, sets, leases, durable timers, publishing) and [`keyspace::Keyspace`]
//! (keys named in full by an adapter for another key layout). A backend also says where live
//! messages come from ([`PubSubSource`], on Redis) or hands them to a [`Fanout`] itself (the
//! embedded store).
//!
//! Backends: [`memory`] (embedded, one process), [`redis`] (one Redis) and [`cluster`] (a
//! Redis Cluster: the Redis backend with a two-step append). A new backend implements the
//! traits and passes the behaviour suite (`suite.rs`), which runs on every backend; nothing
//! above the store changes. [`awaits`] is the await-resolution contract all of them follow.

pub mod awaits;
pub mod cluster;
pub mod keyspace;
#[cfg(test)]
mod keyspace_suite;
pub mod memory;
pub mod redis;
#[cfg(test)]
mod suite;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::diagnostics::Diagnostics;
use crate::error::Result;
use crate::event::{PreparedEvent, Record, SharedRecord, StreamRef};
use crate::id::StreamId;
use crate::keys::Keys;

/// Most entries one `read` returns.
pub const MAX_READ_LIMIT: usize = 10_000;
/// Entries one `read` returns when no limit is given.
pub const DEFAULT_READ_LIMIT: usize = 100;

/// Options of `read`: exclusive cursors, a limit and a direction.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Only entries with an id greater than this.
    pub after: Option<StreamId>,
    /// Only entries with an id smaller than this.
    pub before: Option<StreamId>,
    /// At most this many (default 100, at most 10 000).
    pub limit: Option<usize>,
    /// Newest first.
    pub reverse: bool,
}

/// One page of a subscriber's catch-up read.
#[derive(Debug, Default)]
pub struct CatchUpPage {
    /// Entries after the cursor, oldest first.
    pub records: Vec<Record>,
    /// Entries after the cursor were removed (trimmed or deleted) before they could be read.
    pub gap: bool,
}

/// A flow run from the run index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The flow run id (the stream's subject).
    pub id: String,
    /// Milliseconds of its `flow.started` event.
    pub started_ms: u64,
}

/// Per group of an append: the ids of its events, or why the whole group was refused
/// (nothing of it was written).
pub type GroupResults = Vec<Result<Vec<StreamId>>>;

/// The event log: streams, their live publication and the run and trigger indexes.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Append groups of events; each group is stored, published and indexed atomically (on a
    /// cluster: per master, see `cluster`). The outer error fails every group (the call did
    /// not happen or its outcome is unknown); an inner error refuses one group, and nothing of
    /// it was written.
    async fn append(&self, groups: &[&[PreparedEvent]]) -> Result<GroupResults>;

    /// Append one group at once, for a store that needs no round trip (the embedded store):
    /// appends submitted one after another are then stored in that order without a queue.
    /// `None`: this store takes appends through `append` only (group-committed by the bus).
    fn append_now(&self, _group: &[PreparedEvent]) -> Option<Result<Vec<StreamId>>> {
        None
    }

    /// A range of a stream (`XRANGE`/`XREVRANGE` semantics with exclusive cursors).
    async fn read(&self, stream: &StreamRef, opts: &ReadOptions) -> Result<Vec<Record>>;

    /// The next `count` entries after `after`, oldest first; with `check_gap`, whether
    /// entries after `after` were removed.
    async fn catch_up(
        &self,
        stream: &StreamRef,
        after: StreamId,
        count: usize,
        check_gap: bool,
    ) -> Result<CatchUpPage>;

    /// Runs of a flow by start time, newest first.
    async fn list_runs(&self, name: &str, limit: usize, offset: usize) -> Result<Vec<Run>>;

    /// Put a run in a flow's run index at `started_ms`, or move it there (`ZADD`): for callers
    /// that index runs themselves, as the seed-era Nitro module does after its append.
    async fn index_run(&self, name: &str, id: &str, started_ms: u64) -> Result<()>;
}

/// What a compare-and-set expects the field to hold.
#[derive(Debug, Clone, Copy)]
pub enum Expect<'a> {
    /// The field must not exist.
    Absent,
    /// The field must hold exactly this.
    Value(&'a str),
}

/// Outcome of a compare-and-set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasResult {
    /// The field matched and the new values were written.
    pub set: bool,
    /// The hash existed before the call.
    pub exists: bool,
    /// The field's value before the call.
    pub current: Option<String>,
}

/// A timer to add together with a compare-and-set.
#[derive(Debug, Clone, Copy)]
pub struct NewTimer<'a> {
    /// Timer id (unique; adding an existing id moves it).
    pub id: &'a str,
    /// When it is due, Unix ms.
    pub due_ms: u64,
    /// What to do when it fires (JSON).
    pub payload: &'a str,
}

/// A set membership to change together with a compare-and-set.
#[derive(Debug, Clone, Copy)]
pub struct SetChange<'a> {
    /// The set.
    pub key: &'a str,
    /// The member.
    pub member: &'a str,
    /// Add (true) or remove (false).
    pub add: bool,
}

/// What a compare-and-set writes when the field matched (and every guard holds).
#[derive(Debug, Clone, Copy)]
pub struct CasWrite<'a> {
    /// The field's new value.
    pub new: &'a str,
    /// Expire the hash after this many ms (0: keep its expiry as it is).
    pub ttl_ms: u64,
    /// More fields to set.
    pub extra: &'a [(&'a str, String)],
    /// A timer to add.
    pub timer: Option<NewTimer<'a>>,
    /// Set memberships to change.
    pub sets: &'a [SetChange<'a>],
    /// Other fields of the hash that must hold these values too.
    pub guards: &'a [(&'a str, &'a str)],
}

/// A claimed timer.
#[derive(Debug, Clone)]
pub struct ClaimedTimer {
    /// Timer id.
    pub id: String,
    /// What to do (JSON).
    pub payload: String,
    /// When it was due (ms).
    pub due_ms: u64,
}

/// Durable primitives of the scheduler: hashes with compare-and-set, sets, leases, timers and
/// plain publishing. Keys are full keys (see `Keys`).
#[async_trait]
pub trait Coordination: Send + Sync {
    /// Every field of a hash (empty when missing or expired).
    async fn hash_get_all(&self, key: &str) -> Result<HashMap<String, String>>;

    /// Set fields of a hash.
    async fn hash_set(&self, key: &str, pairs: &[(&str, String)]) -> Result<()>;

    /// Compare-and-set `field` against `expect`; when it matches and every guard holds, apply
    /// `write` in the same step: all of it or nothing.
    async fn compare_and_set(
        &self,
        key: &str,
        field: &str,
        expect: Expect<'_>,
        write: CasWrite<'_>,
    ) -> Result<CasResult>;

    /// Delete fields of a hash.
    async fn hash_del(&self, key: &str, fields: &[&str]) -> Result<()>;

    /// Add to or remove from a set.
    async fn set_update(&self, key: &str, member: &str, add: bool) -> Result<()>;

    /// Members of a set.
    async fn set_members(&self, key: &str) -> Result<Vec<String>>;

    /// Set a key that expires after `ttl_ms` (an instance lease).
    async fn lease_renew(&self, key: &str, ttl_ms: u64) -> Result<()>;

    /// Take a lease if nobody holds it (`SET NX PX`): true when this call took it.
    async fn lease_take(&self, key: &str, ttl_ms: u64) -> Result<bool>;

    /// Whether a lease (or any key) exists.
    async fn exists(&self, key: &str) -> Result<bool>;

    /// Remove a key.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Add (or move) a timer.
    async fn timer_add(&self, id: &str, due_ms: u64, payload: &str) -> Result<()>;

    /// Claim up to `limit` timers due at `now_ms` for `lease_ms`: a claim whose claimer does
    /// not remove the timer within its lease is due again.
    async fn timer_claim(
        &self,
        now_ms: u64,
        limit: usize,
        lease_ms: u64,
    ) -> Result<Vec<ClaimedTimer>>;

    /// Forget a timer (done, or cancelled).
    async fn timer_remove(&self, id: &str) -> Result<()>;

    /// The earliest due time (or in-flight lease end), if any timer exists.
    async fn timer_next(&self) -> Result<Option<u64>>;

    /// How many timers exist (due later, or claimed and not yet removed).
    async fn timer_count(&self) -> Result<u64>;

    /// Publish a live-format message on a plain channel.
    async fn publish(&self, channel: &str, payload: &str) -> Result<()>;

    /// Compare-and-set `field`; on success also set `extra` and, when `ttl_ms > 0`, expire
    /// the hash after `ttl_ms`.
    async fn hash_cas(
        &self,
        key: &str,
        field: &str,
        expect: Expect<'_>,
        new: &str,
        ttl_ms: u64,
        extra: &[(&str, String)],
    ) -> Result<CasResult> {
        let write = CasWrite {
            new,
            ttl_ms,
            extra,
            timer: None,
            sets: &[],
            guards: &[],
        };
        self.compare_and_set(key, field, expect, write).await
    }

    /// Compare-and-set `field`, when the `guards` fields hold their values too; on success
    /// also set `extra`, add `timer` and apply `sets`, in the same step. `ttl_ms > 0` expires
    /// the hash after `ttl_ms`.
    async fn hash_cas_with(
        &self,
        key: &str,
        (field, expect, new): (&str, Expect<'_>, &str),
        guards: &[(&str, &str)],
        (extra, ttl_ms): (&[(&str, String)], u64),
        timer: Option<NewTimer<'_>>,
        sets: &[SetChange<'_>],
    ) -> Result<CasResult> {
        let write = CasWrite {
            new,
            ttl_ms,
            extra,
            timer,
            sets,
            guards,
        };
        self.compare_and_set(key, field, expect, write).await
    }
}

/// A channel the live task subscribes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Channel {
    /// Its name (see `Keys`).
    pub name: String,
    /// A stream's channel: sharded Pub/Sub (`SSUBSCRIBE`) on a Redis Cluster; plain elsewhere.
    pub sharded: bool,
}

/// What a Pub/Sub connection pushes to its handler.
#[derive(Debug)]
pub enum Push<'a> {
    /// A message published on a subscribed channel.
    Message {
        /// The channel.
        channel: &'a str,
        /// The live-format payload.
        payload: &'a str,
    },
    /// The connection is gone: every subscription on it is lost.
    Lost,
}

/// Receives what a Pub/Sub connection pushes, on the connection's own task, in order.
pub type PushHandler = Arc<dyn Fn(Push<'_>) + Send + Sync>;

/// Opens live (Pub/Sub) connections to a store (Redis).
#[async_trait]
pub trait PubSubSource: Send + Sync {
    /// A new connection whose messages, and whose loss, go to `on_push`.
    async fn connect(&self, on_push: PushHandler) -> Result<Box<dyn PubSubConnection>>;
}

/// One live connection: subscribes and unsubscribes channels, confirmed by the server.
#[async_trait]
pub trait PubSubConnection: Send + Sync {
    /// Subscribe `channels` (resolves once the server confirmed them).
    async fn subscribe(&mut self, channels: &[Channel]) -> Result<()>;
    /// Unsubscribe `channels`.
    async fn unsubscribe(&mut self, channels: &[Channel]) -> Result<()>;
}

/// Where the embedded store delivers what it publishes: the live hub of its bus.
pub trait Fanout: Send + Sync {
    /// Deliver one record to the subscribers of `channel`, in the caller's order.
    fn deliver(&self, channel: &str, record: &SharedRecord);
}

/// A store: the event log, the scheduler's primitives and where live messages come from.
pub trait Store: EventLog + Coordination + keyspace::Keyspace {
    /// The names of its keys and channels.
    fn keys(&self) -> &Keys;

    /// Where live messages come from (Redis); `None` when the store hands them to its
    /// `Fanout` itself (the embedded store).
    fn pubsub(&self) -> Option<Arc<dyn PubSubSource>>;

    /// The settings for appending over a socket driven outside Tokio (Node's event loop),
    /// when this store can: one Redis over plain TCP, `durability: 'local'`.
    fn wire(&self) -> Option<redis::wire::Wire> {
        None
    }

    /// Release connections and background tasks; later calls fail with `BUS_CLOSED`.
    fn close(&self);
}

/// Where a store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The embedded in-memory store of this process.
    Embedded,
    /// One Redis: `redis://` or `rediss://` url.
    Redis(String),
    /// A Redis Cluster: urls of some of its nodes.
    Cluster(Vec<String>),
}

/// Settings every backend takes (validated by the bus's config).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Key prefix.
    pub prefix: String,
    /// Approximate cap on entries per stream (`MAXLEN ~`).
    pub max_len: Option<u64>,
    /// Bound on every Redis call.
    pub timeout: Duration,
    /// Redis: acknowledge an append once a replica has it, waiting at most this long.
    pub replicated: Option<Duration>,
    /// Redis Cluster: period of the outbox repair pass, and the age an entry needs for it.
    pub repair_interval: Duration,
}

/// Open the store at `location`. The embedded store delivers what it publishes to `fanout`;
/// background failures (a cluster's repair pass) are reported to `diagnostics`.
pub async fn open(
    location: &Location,
    opts: &StoreOptions,
    fanout: Arc<dyn Fanout>,
    diagnostics: Arc<Diagnostics>,
) -> Result<Arc<dyn Store>> {
    Ok(match location {
        Location::Embedded => Arc::new(memory::MemoryStore::new(opts, fanout)),
        Location::Redis(url) => Arc::new(redis::RedisStore::connect(url, opts).await?),
        Location::Cluster(nodes) => cluster::connect(nodes, opts, diagnostics).await?,
    })
}
