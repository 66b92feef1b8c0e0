//! The bus: validated appends (group-committed where the store needs a round trip), reads,
//! the run index, reduced states and live subscriptions, over any store.
//!
//! - `config.rs`: the options and their checks (once, there);
//! - `commit.rs`: the group commit and its bound (`maxPendingEmits`);
//! - `state.rs`: reduced states and their cache.

mod commit;
pub mod config;
mod state;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::diagnostics::Diagnostics;
use crate::error::{Error, ErrorCode, Result};
use crate::event::{self, Limits, PreparedEvent, Record, StreamRef};
use crate::id::StreamId;
use crate::keys::Keys;
use crate::live::{self, Hub, SubscribeOptions, Subscription, Waker};
use crate::metrics::{Metrics, TimerCounters, TimerMetrics};
use crate::store::{self, Channel, ReadOptions, Run, Store, MAX_READ_LIMIT};
pub use commit::OnStored;
use commit::{AppendRequest, Pending, Reply};
pub use config::Config;
use state::StateCache;

/// Most events in one `emitMany`.
pub const MAX_BATCH_EVENTS: usize = 10_000;

/// Per-call options of an emit.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmitOptions<'a> {
    /// The stream type (default: `trigger` for `trigger.*` kinds, else `flow`).
    pub stream_type: Option<&'a str>,
    /// Retention for the terminal events of this call, instead of the bus's
    /// `retention.finishedRunsMs` (checked with `config::retention`).
    pub retention: Option<std::time::Duration>,
}

impl<'a> EmitOptions<'a> {
    /// Options naming only a stream type.
    pub fn of_type(stream_type: Option<&'a str>) -> Self {
        EmitOptions {
            stream_type,
            retention: None,
        }
    }
}

/// An append validated and admitted (it counts against `maxPendingEmits` until settled), not
/// yet handed to the store. Dropped unsettled, its callback learns that the bus closed.
pub struct PreparedAppend {
    events: Vec<PreparedEvent>,
    reply: Reply,
}

impl PreparedAppend {
    /// Its events, in order.
    pub fn events(&self) -> &[PreparedEvent] {
        &self.events
    }

    /// Settle it: the ids the store gave its events, in order, or why nothing was stored.
    pub fn settle(self, stored: Result<Vec<StreamId>>) {
        let PreparedAppend { events, reply } = self;
        reply.send(stored.map(|ids| (events, ids)));
    }

    /// Run `hook` once it is settled, before its callback, with the error code when it failed.
    pub fn on_settled(&mut self, hook: impl FnOnce(Option<ErrorCode>) + Send + 'static) {
        self.reply.on_settled(Box::new(hook));
    }
}

/// Everything a bus and its background tasks share.
pub(crate) struct Core {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    limits: Limits,
    max_queue: usize,
    /// `retention.finishedRunsMs`, in ms.
    retention: Option<u64>,
    closed: AtomicBool,
    /// The group commit's queue, for stores that cannot append at once.
    commits: Option<mpsc::UnboundedSender<AppendRequest>>,
    pending: Arc<Pending>,
    states: StateCache,
    diagnostics: Arc<Diagnostics>,
    /// Timers carried out by the schedulers on this bus (see `metrics`).
    timers: TimerCounters,
    /// What depends on the bus and must close with it (schedulers).
    close_hooks: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
}

impl Core {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn check_open(&self) -> Result<()> {
        if self.is_closed() {
            Err(Error::closed())
        } else {
            Ok(())
        }
    }
}

/// An event bus on Redis, a Redis Cluster or the embedded store. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    core: Arc<Core>,
}

impl Bus {
    /// Connect to Redis (`config.url` or `config.cluster`) or open the embedded store (no url).
    pub async fn connect(config: Config) -> Result<Bus> {
        Bus::connect_with_live(config, None).await
    }

    /// `connect`, with live messages from `live` instead of the store's own Pub/Sub
    /// connections (on one Redis; a cluster and the embedded store ignore it).
    pub async fn connect_with_live(
        config: Config,
        live: Option<Arc<dyn store::PubSubSource>>,
    ) -> Result<Bus> {
        let checked = config.check()?;
        let remote = checked.location != store::Location::Embedded;
        let hub = Arc::new(Hub::new(remote, config.timeout));
        let diagnostics: Arc<Diagnostics> = Default::default();
        let store = store::open(
            &checked.location,
            &checked.store,
            hub.clone(),
            diagnostics.clone(),
        )
        .await?;
        hub.set_store(Arc::downgrade(&store));
        let single = matches!(checked.location, store::Location::Redis(_));
        let source = match (store.pubsub(), live) {
            (Some(_), Some(live)) if single => Some(live),
            (own, _) => own,
        };
        if let Some(source) = source {
            tokio::spawn(live::pubsub::run(
                Arc::downgrade(&hub),
                source,
                config.timeout,
                diagnostics.clone(),
            ));
        }
        let (commits, commit_rx) = if remote {
            let (tx, rx) = mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let core = Arc::new(Core {
            store,
            hub,
            limits: checked.limits,
            max_queue: config.max_queue,
            retention: config.finished_runs_retention.map(|d| d.as_millis() as u64),
            closed: AtomicBool::new(false),
            commits,
            pending: Pending::new(config.max_pending_emits),
            states: StateCache::new(config.state_cache_size),
            diagnostics,
            timers: TimerCounters::default(),
            close_hooks: Mutex::new(Vec::new()),
        });
        if let Some(rx) = commit_rx {
            tokio::spawn(commit::run(Arc::downgrade(&core), rx));
        }
        Ok(Bus { core })
    }

    /// True for the embedded store.
    pub fn is_embedded(&self) -> bool {
        self.core.store.pubsub().is_none()
    }

    /// The names of this bus's keys and channels.
    pub fn keys(&self) -> &Keys {
        self.core.store.keys()
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        self.keys().prefix()
    }

    /// The prefix of every key that is not a stream: the key prefix, or on a Redis Cluster
    /// `{<prefix>}` (one hash slot for all of them).
    pub fn coord_prefix(&self) -> String {
        self.keys().coord().to_owned()
    }

    /// The key a stream is stored under (`<prefix>:<type>:<id>`; on a Redis Cluster the id is
    /// a hash tag: `<prefix>:<type>:{<id>}`).
    pub fn stream_key(&self, stream: &StreamRef) -> String {
        self.keys().stream(stream)
    }

    /// True on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.keys().is_cluster()
    }

    /// The store behind this bus (the scheduler's durable primitives).
    pub fn store(&self) -> &dyn Store {
        self.core.store.as_ref()
    }

    /// Largest serialized event this bus accepts, in bytes.
    pub fn max_event_bytes(&self) -> usize {
        self.core.limits.max_event_bytes
    }

    /// Warnings of this bus and what runs on it (counted by code, handed to one sink).
    pub fn diagnostics(&self) -> &Arc<Diagnostics> {
        &self.core.diagnostics
    }

    /// Count a warning from background work and hand it to the sink (see `Diagnostics`).
    pub fn warn(&self, code: &'static str, message: impl Into<String>, detail: Option<String>) {
        self.core.diagnostics.warn(code, message, detail);
    }

    /// Run `hook` when the bus closes (at once if it is closed): what depends on the bus
    /// (a scheduler) stops with it instead of waiting on a bus that will never answer.
    pub fn on_close(&self, hook: Box<dyn FnOnce() + Send>) {
        let mut hooks = self
            .core
            .close_hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if self.core.is_closed() {
            drop(hooks);
            hook();
        } else {
            hooks.push(hook);
        }
    }

    /// True once `close()` was called.
    pub fn is_closed(&self) -> bool {
        self.core.is_closed()
    }

    /// Emits handed to the store and not yet settled.
    pub fn pending_emits(&self) -> usize {
        self.core.pending.count()
    }

    /// Where the schedulers on this bus count themselves and their fired timers.
    pub fn timer_counters(&self) -> &TimerCounters {
        &self.core.timers
    }

    /// Counters (totals since connect) and gauges (now) of this bus; with a scheduler on it,
    /// its timers too (the number pending is one store call: `None` if that failed).
    pub async fn metrics(&self) -> Metrics {
        let live = self.core.hub.counters();
        let timers = &self.core.timers;
        let timer_metrics = if timers.schedulers() > 0 {
            let [p50, p99] = timers
                .lateness_quantiles([0.5, 0.99])
                .map_or([None, None], |q| q.map(Some));
            let pending = if self.core.is_closed() {
                None
            } else {
                self.core.store.timer_count().await.ok()
            };
            Some(TimerMetrics {
                pending,
                fired: timers.fired_total(),
                lateness_p50_ms: p50,
                lateness_p99_ms: p99,
            })
        } else {
            None
        };
        Metrics {
            emits: self.core.pending.outcomes.stored_total(),
            emit_errors: self.core.pending.outcomes.failed_by_code(),
            deliveries: live.deliveries(),
            live_subscriptions: self.core.hub.subscription_count(),
            pending_emits: self.core.pending.count(),
            subscriber_overflows: live.overflows(),
            warnings: self.core.diagnostics.counts(),
            timers: timer_metrics,
        }
    }

    /// Validate and append one event given as JSON; returns its record.
    pub async fn emit(&self, json: &str, stream_type: Option<&str>) -> Result<Record> {
        self.emit_with(json, EmitOptions::of_type(stream_type))
            .await
    }

    /// `emit` with per-call options.
    pub async fn emit_with(&self, json: &str, opts: EmitOptions<'_>) -> Result<Record> {
        let mut records = commit::outcome(|done| self.submit_one_with(json, opts, done)).await?;
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
        self.emit_many_with(json_array, EmitOptions::of_type(stream_type))
            .await
    }

    /// `emit_many` with per-call options.
    pub async fn emit_many_with(
        &self,
        json_array: &str,
        opts: EmitOptions<'_>,
    ) -> Result<Vec<Record>> {
        commit::outcome(|done| self.submit_many_with(json_array, opts, done)).await
    }

    /// Validate one event and hand it to the store now, so appends submitted one after another
    /// are stored in that order even if nobody waits in between. `done` is called with the
    /// outcome (on the store's task, or at once on the embedded store), so a caller settling
    /// many appends can collect the outcomes of one group commit and handle them together. An
    /// invalid event, or one past `maxPendingEmits` (`BACKPRESSURE`), is returned as the error
    /// and `done` is not called.
    pub fn submit_one_then(
        &self,
        json: &str,
        stream_type: Option<&str>,
        done: OnStored,
    ) -> Result<()> {
        self.submit_one_with(json, EmitOptions::of_type(stream_type), done)
    }

    /// `submit_one_then` with per-call options.
    pub fn submit_one_with(&self, json: &str, opts: EmitOptions<'_>, done: OnStored) -> Result<()> {
        let prepared = self.prepare_one_with(json, opts, done)?;
        self.commit(prepared);
        Ok(())
    }

    /// Validate one event and admit it (see `submit_one_then`) without handing it to the
    /// store: for a caller that appends over a connection of its own (`wire`) and settles it
    /// there, or hands it on with `commit`.
    pub fn prepare_one_with(
        &self,
        json: &str,
        opts: EmitOptions<'_>,
        done: OnStored,
    ) -> Result<PreparedAppend> {
        let prepared = self.core.check_open().and_then(|()| {
            let events = vec![event::prepare(json, opts.stream_type, self.core.limits)?];
            self.admit(events, opts, done)
        });
        self.count_refused(prepared)
    }

    /// Validate every event of a JSON array, then hand them all to the store as one atomic
    /// append (see `submit_one_then`).
    pub fn submit_many_then(
        &self,
        json_array: &str,
        stream_type: Option<&str>,
        done: OnStored,
    ) -> Result<()> {
        self.submit_many_with(json_array, EmitOptions::of_type(stream_type), done)
    }

    /// `submit_many_then` with per-call options.
    pub fn submit_many_with(
        &self,
        json_array: &str,
        opts: EmitOptions<'_>,
        done: OnStored,
    ) -> Result<()> {
        if let Some(prepared) = self.prepare_many_with(json_array, opts, done)? {
            self.commit(prepared);
        }
        Ok(())
    }

    /// Validate every event of a JSON array and admit them as one append (see
    /// `prepare_one_with`); an empty array is settled at once and gives `None`.
    pub fn prepare_many_with(
        &self,
        json_array: &str,
        opts: EmitOptions<'_>,
        done: OnStored,
    ) -> Result<Option<PreparedAppend>> {
        let prepared = self.core.check_open().and_then(|()| {
            let events = self.prepare_many(json_array, opts.stream_type)?;
            if events.is_empty() {
                done(Ok(Vec::new()));
                return Ok(None);
            }
            self.admit(events, opts, done).map(Some)
        });
        self.count_refused(prepared)
    }

    /// Count an emit refused before it reached the store (invalid, `BACKPRESSURE`, closed).
    fn count_refused<T>(&self, submitted: Result<T>) -> Result<T> {
        if let Err(e) = &submitted {
            self.core.pending.outcomes.failed(e.code);
        }
        submitted
    }

    /// Count an emit a layer above the bus refused with `code` before handing it over (the
    /// binding's own bound on outcomes JavaScript has not taken yet).
    pub fn count_refused_emit(&self, code: ErrorCode) {
        self.core.pending.outcomes.failed(code);
    }

    fn prepare_many(
        &self,
        json_array: &str,
        stream_type: Option<&str>,
    ) -> Result<Vec<PreparedEvent>> {
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

    /// Give terminal events the retention of the call, else of the bus, if any, and admit the
    /// append against `maxPendingEmits`.
    fn admit(
        &self,
        mut events: Vec<PreparedEvent>,
        opts: EmitOptions<'_>,
        done: OnStored,
    ) -> Result<PreparedAppend> {
        let retention = match opts.retention {
            Some(d) => Some(config::check_retention(
                d.as_millis().try_into().unwrap_or(u64::MAX),
            )?),
            None => self.core.retention,
        };
        if let Some(ms) = retention {
            for e in events.iter_mut() {
                if e.index.is_none() && crate::reduce::is_terminal(&e.stream.stream_type, e.kind())
                {
                    e.expire_ms = Some(ms);
                }
            }
        }
        let reply = Reply::new(done, self.core.pending.admit()?);
        Ok(PreparedAppend { events, reply })
    }

    /// Hand an admitted append to the store: one that appends at once does, others get it
    /// through the group commit. Its outcome goes to its callback.
    pub fn commit(&self, prepared: PreparedAppend) {
        let PreparedAppend { events, reply } = prepared;
        if self.core.is_closed() {
            reply.send(Err(Error::closed()));
            return;
        }
        if let Some(stored) = self.core.store.append_now(&events) {
            reply.send(stored.map(|ids| (events, ids)));
            return;
        }
        let Some(tx) = &self.core.commits else {
            reply.send(Err(Error::new(
                ErrorCode::Internal,
                "the store neither appends at once nor has a group commit",
            )));
            return;
        };
        if let Err(mpsc::error::SendError(req)) = tx.send(AppendRequest { events, reply }) {
            req.reply.send(Err(Error::closed()));
        }
    }

    /// The settings for appending over a socket driven outside Tokio, when the store allows it
    /// (see `Store::wire`).
    pub fn wire(&self) -> Option<store::redis::wire::Wire> {
        self.core.store.wire()
    }

    /// Read a range of a stream (exclusive cursors; default limit 100, at most 10 000).
    pub async fn read(&self, stream: &StreamRef, opts: ReadOptions) -> Result<Vec<Record>> {
        self.core.check_open()?;
        if let Some(l) = opts.limit {
            if l == 0 || l > MAX_READ_LIMIT {
                return Err(Error::argument(format!(
                    "limit must be 1-{MAX_READ_LIMIT} (got {l})"
                )));
            }
        }
        self.core.store.read(stream, &opts).await
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
        let channel = Channel {
            name: self.keys().live_channel(stream),
            sharded: true,
        };
        live::subscribe(&self.core.hub, channel, Some(stream.clone()), opts, waker).await
    }

    /// Every event of `kind`, from every stream and every instance, while connected.
    pub async fn on_kind(
        &self,
        kind: &str,
        max_queue: Option<usize>,
        waker: Option<Waker>,
    ) -> Result<Subscription> {
        event::validate_kind(kind).map_err(|e| Error::argument(e.message))?;
        let max_queue = max_queue.filter(|m| *m > 0).unwrap_or(self.core.max_queue);
        self.listen_with(self.keys().kind_channel(kind), max_queue, waker)
            .await
    }

    /// A live-only subscription to a plain channel (the scheduler's control channels): every
    /// message published on it while connected, at most `max_queue` queued.
    pub async fn listen(&self, channel: String, max_queue: usize) -> Result<Subscription> {
        self.listen_with(channel, max_queue, None).await
    }

    /// A live-only subscription to any plain channel, named in full: live-format messages
    /// arrive as their records, other JSON messages as they are (`event::message_record`).
    /// At most `max_queue` queued (default: the bus's `maxQueue`).
    pub async fn listen_channel(
        &self,
        channel: &str,
        max_queue: Option<usize>,
        waker: Option<Waker>,
    ) -> Result<Subscription> {
        if channel.is_empty() {
            return Err(Error::argument("a channel name must not be empty"));
        }
        let max_queue = max_queue.filter(|m| *m > 0).unwrap_or(self.core.max_queue);
        self.listen_with(channel.to_owned(), max_queue, waker).await
    }

    /// The store's keyspace calls (keys named in full; see `store::keyspace`), while the bus
    /// is open.
    pub fn keyspace(&self) -> Result<&dyn store::keyspace::Keyspace> {
        self.core.check_open()?;
        Ok(self.core.store.as_ref())
    }

    async fn listen_with(
        &self,
        channel: String,
        max_queue: usize,
        waker: Option<Waker>,
    ) -> Result<Subscription> {
        self.core.check_open()?;
        let opts = SubscribeOptions {
            max_queue,
            ..Default::default()
        };
        let channel = Channel {
            name: channel,
            sharded: false,
        };
        live::subscribe(&self.core.hub, channel, None, opts, waker).await
    }

    /// Publish a record-shaped live message (`id␟type␟subject␟k␟v…`) on a plain channel, or
    /// any other text (listeners receive it as it is when it is JSON).
    pub async fn publish(&self, channel: &str, payload: &str) -> Result<()> {
        self.core.check_open()?;
        self.core.store.publish(channel, payload).await
    }

    /// How many times the live connection was re-established (messages may have been missed).
    pub fn reconnects(&self) -> u64 {
        self.core.hub.reconnects()
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

    /// Put a run in a flow's run index at `started_ms` (Unix ms), or move it there: for callers
    /// that index runs themselves (the seed-era Nitro module's `indexAdd`). Runs started with
    /// `flow.started` / `flow.start` are indexed by their append already.
    pub async fn index_run(&self, name: &str, id: &str, started_ms: u64) -> Result<()> {
        self.core.check_open()?;
        event::validate_id("flow name", name).map_err(|e| Error::argument(e.message))?;
        event::validate_id("run id", id).map_err(|e| Error::argument(e.message))?;
        self.core.store.index_run(name, id, started_ms).await
    }

    /// The reduced state of a stream (`trigger` streams: trigger state; others: flow state).
    /// Cached: a repeated call only reads and applies the events after the cached id.
    pub async fn state(&self, stream: &StreamRef) -> Result<Value> {
        self.core.check_open()?;
        state::reduce_stream(self.core.store.as_ref(), &self.core.states, stream).await
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

    /// Close what depends on the bus, end every subscription, stop background tasks and drop
    /// connections. Idempotent.
    pub fn close(&self) {
        if self.core.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let hooks = std::mem::take(
            &mut *self
                .core
                .close_hooks
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for hook in hooks {
            hook();
        }
        self.core.hub.close();
        self.core.store.close();
    }
}
