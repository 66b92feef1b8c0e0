//! The bus: validated appends (group-committed on Redis), reads, the run index and live
//! subscriptions, over either store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, ErrorCode, Result};
use crate::event::{self, Limits, PreparedEvent, Record, StreamRef};
use crate::id::StreamId;
use crate::live::{self, Hub, SubscribeOptions, Subscription, Waker};
use crate::reduce;
use crate::store::memory::MemoryStore;
use crate::store::redis::{LiveSource, RedisOptions, RedisStore};
use crate::store::{ReadOptions, Run, Store, MAX_READ_LIMIT};

/// Most events in one `emitMany`.
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// Most events the group commit puts in one script call (one emitMany may exceed it alone).
const GROUP_COMMIT_EVENTS: usize = 512;

/// How to connect.
#[derive(Debug, Clone)]
pub struct Config {
    /// `redis://…` or `rediss://…`; `None` (and no `cluster`) selects the embedded store.
    pub url: Option<String>,
    /// Redis Cluster: urls of some of its nodes (instead of `url`).
    pub cluster: Option<Vec<String>>,
    /// Redis Cluster: how often the outbox repair pass looks for appends whose second step
    /// (index entry, event awaits) did not happen, and how old such an entry must be.
    pub repair_interval: Duration,
    /// Key prefix (default `nq`).
    pub prefix: String,
    /// Approximate cap on entries per stream.
    pub max_len: Option<u64>,
    /// Largest serialized event.
    pub max_event_bytes: usize,
    /// Bound on every store call.
    pub timeout: Duration,
    /// Default bound on a subscriber's queue.
    pub max_queue: usize,
    /// How many reduced states `state()` keeps (least recently used go first); 0 disables.
    pub state_cache_size: usize,
    /// Redis only: acknowledge an append once a replica has it too (`WAIT 1 <ms>` after each
    /// group commit), waiting at most this long; `None` acknowledges on the master's word.
    pub replicated: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            url: None,
            cluster: None,
            repair_interval: Duration::from_secs(10),
            prefix: "nq".into(),
            max_len: None,
            max_event_bytes: event::DEFAULT_MAX_EVENT_BYTES,
            timeout: Duration::from_millis(5000),
            max_queue: 10_000,
            state_cache_size: 1000,
            replicated: None,
        }
    }
}

/// Everything a bus and its background tasks share.
pub struct Core {
    pub(crate) store: Store,
    pub(crate) hub: Hub,
    pub(crate) timeout: Duration,
    keys: crate::keys::Keys,
    diagnostics: Arc<crate::diagnostics::Diagnostics>,
    limits: Limits,
    max_queue: usize,
    closed: AtomicBool,
    appender: Option<mpsc::UnboundedSender<AppendRequest>>,
    states: StateCache,
}

/// The events handed back with their ids (so they need not be copied to be kept).
type AppendReply = Result<(Vec<PreparedEvent>, Vec<StreamId>)>;

/// Called once with the outcome of an append handed over by `submit_one_then` or
/// `submit_many_then`: the stored records in order, or why nothing was stored.
pub type OnStored = Box<dyn FnOnce(Result<Vec<Record>>) + Send>;

/// Where the outcome of a queued append goes. Dropped unanswered (the store task ended), it
/// tells its callback that the bus closed.
struct Reply(Option<OnStored>);

impl Reply {
    fn send(mut self, r: AppendReply) {
        if let Some(done) = self.0.take() {
            done(r.map(|(events, ids)| to_records(&events, ids)));
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            done(Err(Error::closed()));
        }
    }
}

/// Hand an append over with a callback and wait for the outcome.
async fn outcome(hand_off: impl FnOnce(OnStored) -> Result<()>) -> Result<Vec<Record>> {
    let (tx, rx) = oneshot::channel();
    hand_off(Box::new(move |r| {
        let _ = tx.send(r);
    }))?;
    rx.await.unwrap_or_else(|_| Err(Error::closed()))
}

fn to_records(events: &[PreparedEvent], ids: Vec<StreamId>) -> Vec<Record> {
    events
        .iter()
        .zip(ids)
        .map(|(e, id)| e.to_record(id))
        .collect()
}

struct AppendRequest {
    events: Vec<PreparedEvent>,
    reply: Reply,
}

impl Core {
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::closed())
        } else {
            Ok(())
        }
    }

    /// The live channel of a stream: `<stream key>:live`.
    pub(crate) fn live_channel(&self, stream: &StreamRef) -> String {
        self.keys.live_channel(stream)
    }

    pub(crate) async fn read(&self, stream: &StreamRef, opts: &ReadOptions) -> Result<Vec<Record>> {
        self.check_open()?;
        self.store.read(stream, opts).await
    }
}

/// An event bus on Redis or on the embedded store.
#[derive(Clone)]
pub struct Bus {
    core: Arc<Core>,
}

impl Bus {
    /// Connect to Redis (`config.url`) or open the embedded store (no url).
    pub async fn connect(mut config: Config) -> Result<Bus> {
        if config.url.is_some() && config.cluster.is_some() {
            return Err(Error::argument(
                "give url (one Redis) or cluster (a Redis Cluster), not both",
            ));
        }
        if let Some(nodes) = config
            .url
            .as_deref()
            .and_then(crate::store::cluster::nodes_of_url)
        {
            config.cluster = Some(nodes?);
            config.url = None;
        }
        if config.prefix.is_empty()
            || config.prefix.len() > 64
            || config
                .prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '{' || c == '}')
        {
            return Err(Error::argument(
                "prefix must be 1-64 printable characters without spaces or braces",
            ));
        }
        if config.max_event_bytes == 0 {
            return Err(Error::argument("maxEventBytes must be at least 1"));
        }
        if config.max_queue == 0 {
            return Err(Error::argument("maxQueue must be at least 1"));
        }
        if config.max_len == Some(0) {
            return Err(Error::argument("maxLen must be at least 1 when given"));
        }
        if config.timeout.is_zero() {
            return Err(Error::argument("timeoutMs must be at least 1"));
        }
        if config.repair_interval.is_zero() {
            return Err(Error::argument("repair_interval must be above zero"));
        }
        if let Some(wait) = config.replicated {
            if config.url.is_none() && config.cluster.is_none() {
                return Err(Error::argument(
                    "durability 'replicated' needs Redis (a url): the embedded store has no replicas",
                ));
            }
            if wait.is_zero() || wait >= config.timeout {
                return Err(Error::argument(format!(
                    "replicationTimeoutMs must be at least 1 and below timeoutMs ({} ms)",
                    config.timeout.as_millis()
                )));
            }
        }
        let limits = Limits {
            max_event_bytes: config.max_event_bytes,
        };
        let core = match (&config.url, &config.cluster) {
            (None, None) => Arc::new(Core {
                store: Store::Memory(Box::new(MemoryStore::new(&config.prefix, config.max_len))),
                hub: Hub::new(None),
                timeout: config.timeout,
                keys: crate::keys::Keys::single(&config.prefix),
                diagnostics: Default::default(),
                limits,
                max_queue: config.max_queue,
                closed: AtomicBool::new(false),
                appender: None,
                states: StateCache::new(config.state_cache_size),
            }),
            (url, cluster) => {
                let store = RedisStore::connect(&RedisOptions {
                    url: url.clone().unwrap_or_default(),
                    cluster: cluster.clone(),
                    prefix: config.prefix.clone(),
                    max_len: config.max_len,
                    timeout: config.timeout,
                    replicated: config.replicated,
                })
                .await?;
                let live_source = store.live_source().clone();
                let cluster = store.cluster;
                let (live_tx, live_rx) = mpsc::unbounded_channel();
                let (append_tx, append_rx) = mpsc::unbounded_channel();
                let core = Arc::new(Core {
                    store: Store::Redis(Box::new(store)),
                    hub: Hub::new(Some(live_tx)),
                    timeout: config.timeout,
                    keys: if cluster {
                        crate::keys::Keys::cluster(&config.prefix)
                    } else {
                        crate::keys::Keys::single(&config.prefix)
                    },
                    diagnostics: Default::default(),
                    limits,
                    max_queue: config.max_queue,
                    closed: AtomicBool::new(false),
                    appender: Some(append_tx),
                    states: StateCache::new(config.state_cache_size),
                });
                match live_source {
                    LiveSource::Single(client) => tokio::spawn(live::run_redis_live(
                        *client,
                        Arc::downgrade(&core),
                        live_rx,
                        config.timeout,
                    )),
                    LiveSource::Cluster(nodes) => tokio::spawn(live::run_cluster_live(
                        nodes,
                        Arc::downgrade(&core),
                        live_rx,
                        config.timeout,
                    )),
                };
                if cluster {
                    tokio::spawn(outbox_repair_loop(
                        Arc::downgrade(&core),
                        config.repair_interval,
                    ));
                }
                tokio::spawn(group_commit(Arc::downgrade(&core), append_rx));
                core
            }
        };
        core.hub.set_core(Arc::downgrade(&core));
        Ok(Bus { core })
    }

    /// True for the embedded store.
    pub fn is_embedded(&self) -> bool {
        matches!(self.core.store, Store::Memory(_))
    }

    /// The names of this bus's keys and channels.
    pub fn keys(&self) -> &crate::keys::Keys {
        &self.core.keys
    }

    /// Warnings of this bus and what runs on it (counted by code, handed to one sink).
    pub fn diagnostics(&self) -> &Arc<crate::diagnostics::Diagnostics> {
        &self.core.diagnostics
    }

    /// Count a warning from background work and hand it to the sink (see `Diagnostics`).
    pub fn warn(&self, code: &'static str, message: impl Into<String>, detail: Option<String>) {
        self.core.diagnostics.warn(code, message, detail);
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        self.core.keys.prefix()
    }

    /// The prefix of every key that is not a stream: the key prefix, or on a Redis Cluster
    /// `{<prefix>}` (one hash slot for all of them).
    pub fn coord_prefix(&self) -> String {
        self.core.keys.coord().to_owned()
    }

    /// The key a stream is stored under (`<prefix>:<type>:<id>`; on a Redis Cluster the id is
    /// a hash tag: `<prefix>:<type>:{<id>}`).
    pub fn stream_key(&self, stream: &StreamRef) -> String {
        self.core.keys.stream(stream)
    }

    /// The store behind this bus (the scheduler's durable primitives).
    pub fn store(&self) -> &Store {
        &self.core.store
    }

    /// Largest serialized event this bus accepts, in bytes.
    pub fn max_event_bytes(&self) -> usize {
        self.core.limits.max_event_bytes
    }

    /// A live-only subscription to a plain channel (the scheduler's control channels): every
    /// message published on it while connected, at most `max_queue` queued.
    pub async fn listen(&self, channel: String, max_queue: usize) -> Result<Subscription> {
        self.core.check_open()?;
        let opts = SubscribeOptions {
            max_queue,
            ..Default::default()
        };
        live::subscribe(&self.core, channel, None, opts, None).await
    }

    /// Publish a record-shaped live message (`id␟type␟subject␟k␟v…`) on `channel`.
    pub async fn publish(&self, channel: &str, payload: &str) -> Result<()> {
        self.core.check_open()?;
        self.core
            .store
            .publish(channel, payload, &self.core.hub)
            .await
    }

    /// How many times the live connection was re-established (messages may have been missed).
    pub fn reconnects(&self) -> u64 {
        self.core.hub.reconnects()
    }

    /// True on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(&self.core.store, Store::Redis(s) if s.cluster)
    }

    /// Validate and append one event given as JSON; returns its record.
    pub async fn emit(&self, json: &str, stream_type: Option<&str>) -> Result<Record> {
        let mut records = outcome(|done| self.submit_one_then(json, stream_type, done)).await?;
        records
            .pop()
            .ok_or_else(|| Error::new(ErrorCode::Internal, "no record"))
    }

    /// Validate every event of a JSON array, then append them all in one atomic step.
    pub async fn emit_many(
        &self,
        json_array: &str,
        stream_type: Option<&str>,
    ) -> Result<Vec<Record>> {
        outcome(|done| self.submit_many_then(json_array, stream_type, done)).await
    }

    /// Validate one event and hand it to the store now, so appends submitted one after another
    /// are stored in that order even if nobody waits in between. `done` is called with the
    /// outcome (on the store's task, or at once on the embedded store), so a caller settling
    /// many appends can collect the outcomes of one group commit and handle them together. An
    /// invalid event is returned as the error and `done` is not called.
    pub fn submit_one_then(
        &self,
        json: &str,
        stream_type: Option<&str>,
        done: OnStored,
    ) -> Result<()> {
        let events = self.prepare_one(json, stream_type)?;
        self.submit_then(events, done);
        Ok(())
    }

    /// Validate every event of a JSON array, then hand them all to the store as one atomic
    /// append (see `submit_one_then`).
    pub fn submit_many_then(
        &self,
        json_array: &str,
        stream_type: Option<&str>,
        done: OnStored,
    ) -> Result<()> {
        let events = self.prepare_many(json_array, stream_type)?;
        if events.is_empty() {
            done(Ok(Vec::new()));
        } else {
            self.submit_then(events, done);
        }
        Ok(())
    }

    fn prepare_one(&self, json: &str, stream_type: Option<&str>) -> Result<Vec<PreparedEvent>> {
        self.core.check_open()?;
        Ok(vec![event::prepare(json, stream_type, self.core.limits)?])
    }

    fn prepare_many(
        &self,
        json_array: &str,
        stream_type: Option<&str>,
    ) -> Result<Vec<PreparedEvent>> {
        self.core.check_open()?;
        let raw: Vec<&RawValue> = serde_json::from_str(json_array)
            .map_err(|e| Error::invalid(format!("emitMany takes an array of events ({e})")))?;
        if raw.len() > MAX_BATCH_EVENTS {
            return Err(Error::argument(format!(
                "emitMany takes at most {MAX_BATCH_EVENTS} events (got {})",
                raw.len()
            )));
        }
        raw.iter()
            .enumerate()
            .map(|(i, r)| {
                event::prepare(r.get(), stream_type, self.core.limits).map_err(|mut e| {
                    e.message = format!("event {i}: {}", e.message);
                    e
                })
            })
            .collect()
    }

    /// The embedded store appends at once; Redis appends are queued for the group commit (a
    /// closed bus answers at once).
    fn submit_then(&self, events: Vec<PreparedEvent>, done: OnStored) {
        let reply = Reply(Some(done));
        let Some(tx) = &self.core.appender else {
            return reply.send(self.append_now(events));
        };
        if let Err(mpsc::error::SendError(req)) = tx.send(AppendRequest { events, reply }) {
            req.reply.send(Err(Error::closed()));
        }
    }

    /// Append to the embedded store.
    fn append_now(&self, events: Vec<PreparedEvent>) -> AppendReply {
        let Store::Memory(m) = &self.core.store else {
            return Err(Error::new(ErrorCode::Internal, "no appender"));
        };
        let groups = [events.as_slice()];
        match m.append(&groups, &self.core.hub).pop() {
            Some(Ok(ids)) => Ok((events, ids)),
            Some(Err(e)) => Err(e),
            None => Err(Error::new(ErrorCode::Internal, "no result")),
        }
    }

    /// Read a range of a stream (exclusive cursors; default limit 100, at most 10 000).
    pub async fn read(&self, stream: &StreamRef, opts: ReadOptions) -> Result<Vec<Record>> {
        if let Some(l) = opts.limit {
            if l == 0 || l > MAX_READ_LIMIT {
                return Err(Error::argument(format!(
                    "limit must be 1-{MAX_READ_LIMIT} (got {l})"
                )));
            }
        }
        self.core.read(stream, &opts).await
    }

    /// Subscribe to a stream: catch up as `opts.start` says, then live, gap-free.
    pub async fn subscribe(
        &self,
        stream: &StreamRef,
        mut opts: SubscribeOptions,
        waker: Option<Waker>,
    ) -> Result<Subscription> {
        self.core.check_open()?;
        if opts.max_queue == 0 {
            opts.max_queue = self.core.max_queue;
        }
        if let live::Start::Backfill(n) = opts.start {
            if n == 0 || n > opts.max_queue.min(MAX_READ_LIMIT) {
                return Err(Error::argument(format!(
                    "backfill must be 1-{} (at most maxQueue)",
                    opts.max_queue.min(MAX_READ_LIMIT)
                )));
            }
        }
        live::subscribe(
            &self.core,
            self.core.live_channel(stream),
            Some(stream.clone()),
            opts,
            waker,
        )
        .await
    }

    /// Every event of `kind`, from every stream and every instance, while connected.
    pub async fn on_kind(
        &self,
        kind: &str,
        max_queue: Option<usize>,
        waker: Option<Waker>,
    ) -> Result<Subscription> {
        self.core.check_open()?;
        event::validate_kind(kind).map_err(|e| Error::argument(e.message))?;
        let opts = SubscribeOptions {
            max_queue: max_queue.filter(|m| *m > 0).unwrap_or(self.core.max_queue),
            ..Default::default()
        };
        live::subscribe(
            &self.core,
            self.core.keys.kind_channel(kind),
            None,
            opts,
            waker,
        )
        .await
    }

    /// Runs of a flow by start time, newest first.
    pub async fn list_runs(&self, name: &str, limit: usize, offset: usize) -> Result<Vec<Run>> {
        self.core.check_open()?;
        event::validate_id("flow name", name).map_err(|e| Error::argument(e.message))?;
        if limit > MAX_READ_LIMIT {
            return Err(Error::argument(format!(
                "limit must be at most {MAX_READ_LIMIT} (got {limit})"
            )));
        }
        self.core.store.list_runs(name, limit, offset).await
    }

    /// The reduced state of a stream (`trigger` streams: trigger state; others: flow state).
    /// Cached: a repeated call only reads and applies the events after the cached id.
    pub async fn state(&self, stream: &StreamRef) -> Result<Value> {
        self.core.check_open()?;
        let cached = self.core.states.get(stream);
        let is_trigger = stream.stream_type == "trigger";
        let (mut state, mut last) = cached.unwrap_or_else(|| {
            let initial = if is_trigger {
                reduce::initial_trigger_state()
            } else {
                reduce::initial_flow_state()
            };
            (initial, StreamId::ZERO)
        });
        loop {
            let page = self
                .core
                .read(
                    stream,
                    &ReadOptions {
                        after: Some(last),
                        limit: Some(MAX_READ_LIMIT),
                        ..Default::default()
                    },
                )
                .await?;
            for r in &page {
                let event: Value = serde_json::from_str(&r.json).map_err(|e| {
                    Error::new(
                        ErrorCode::Internal,
                        format!("stored event {} is not JSON: {e}", r.id),
                    )
                })?;
                if is_trigger {
                    reduce::apply_trigger_event(&mut state, &event);
                } else {
                    reduce::apply_flow_event(&mut state, &event);
                }
                last = r.id;
            }
            if page.len() < MAX_READ_LIMIT {
                break;
            }
        }
        if last != StreamId::ZERO {
            self.core.states.put(stream, &state, last);
        }
        Ok(state)
    }

    /// How many channels this process is subscribed to (for leak checks).
    pub fn channel_count(&self) -> usize {
        self.core.hub.channel_count()
    }

    /// How many reduced states are cached.
    pub fn cached_states(&self) -> usize {
        self.core.states.len()
    }

    /// How many subscriptions are open.
    pub fn subscription_count(&self) -> usize {
        self.core.hub.subscription_count()
    }

    /// End every subscription, stop background tasks and drop connections. Idempotent.
    pub fn close(&self) {
        if self.core.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.core.hub.close();
        self.core.store.close();
    }
}

/// The group commit: every append queued while the previous script call was in flight goes
/// to Redis in the next single call, one batch at a time, in arrival order.
async fn group_commit(core: std::sync::Weak<Core>, mut rx: mpsc::UnboundedReceiver<AppendRequest>) {
    let mut pending: Option<AppendRequest> = None;
    loop {
        let first = match pending.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        let mut batch = vec![first];
        let mut count = batch[0].events.len();
        while count < GROUP_COMMIT_EVENTS {
            match rx.try_recv() {
                Ok(r) if count + r.events.len() <= GROUP_COMMIT_EVENTS => {
                    count += r.events.len();
                    batch.push(r);
                }
                Ok(r) => {
                    pending = Some(r);
                    break;
                }
                Err(_) => break,
            }
        }
        let Some(c) = core.upgrade() else { return };
        let result = if c.closed.load(Ordering::Acquire) {
            Err(Error::closed())
        } else {
            let groups: Vec<&[PreparedEvent]> = batch.iter().map(|r| r.events.as_slice()).collect();
            c.store.append(&groups, &c.hub).await
        };
        drop(c);
        match result {
            Ok(per_group) => {
                for (req, r) in batch.into_iter().zip(per_group) {
                    req.reply.send(r.map(|ids| (req.events, ids)));
                }
            }
            Err(e) => {
                for req in batch {
                    req.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Redis Cluster: the outbox repair pass, every `interval` (sooner after a failed second step).
/// One process at a time runs the periodic pass (a lease in the coordination slot).
async fn outbox_repair_loop(core: std::sync::Weak<Core>, interval: Duration) {
    let tick = interval.min(Duration::from_secs(1));
    let mut since = Duration::ZERO;
    loop {
        tokio::time::sleep(tick).await;
        since += tick;
        let Some(c) = core.upgrade() else { return };
        if c.closed.load(Ordering::Acquire) {
            return;
        }
        let Store::Redis(s) = &c.store else { return };
        let due = s.take_repair_due();
        if !due && since < interval {
            continue;
        }
        since = Duration::ZERO;
        let lease = format!("{}:outbox-repair", s.coord);
        let mine = due || s.lease_take(&lease, interval).await.unwrap_or(false);
        if mine && s.repair_outbox(interval).await.is_err() {
            s.repair_due.store(true, Ordering::Release);
        }
    }
}

/// Reduced states by stream with the last applied id, least recently used evicted first.
struct StateCache {
    capacity: usize,
    inner: std::sync::Mutex<StateCacheInner>,
}

#[derive(Default)]
struct StateCacheInner {
    tick: u64,
    entries: std::collections::HashMap<StreamRef, (Value, StreamId, u64)>,
}

impl StateCache {
    fn new(capacity: usize) -> Self {
        StateCache {
            capacity,
            inner: Default::default(),
        }
    }

    fn get(&self, stream: &StreamRef) -> Option<(Value, StreamId)> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.tick += 1;
        let tick = inner.tick;
        let entry = inner.entries.get_mut(stream)?;
        entry.2 = tick;
        Some((entry.0.clone(), entry.1))
    }

    fn put(&self, stream: &StreamRef, state: &Value, last: StreamId) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.tick += 1;
        let tick = inner.tick;
        if let Some(entry) = inner.entries.get_mut(stream) {
            // a concurrent call may have stored a newer state already
            if entry.1 < last {
                *entry = (state.clone(), last, tick);
            }
            return;
        }
        if inner.entries.len() >= self.capacity {
            let oldest = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.2)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                inner.entries.remove(&k);
            }
        }
        inner
            .entries
            .insert(stream.clone(), (state.clone(), last, tick));
    }

    fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .len()
    }
}
