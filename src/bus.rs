//! `NativeBus`: the core `Bus` behind napi.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lean_events_core::bus::config::{durability, non_negative, positive, retention};
use lean_events_core::bus::{Config, EmitOptions};
use lean_events_core::diagnostics::Warning;
use lean_events_core::store::redis::wire::Wire;
use lean_events_core::{
    Bus, Error, ErrorCode, PreparedAppend, ReadOptions, Start, StreamRef, SubscribeOptions,
};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::environment::CloseWithEnvironment;
use crate::error::{error_json, guarded, guarded_sync, spawn};
use crate::subscription::NativeSubscription;
use crate::wake_queue::{lock, WakeFn, WakeQueue, WakeSlot};

/// Called (weakly) when a subscription has something to take.
type ReadyFn = WakeFn<true>;
/// Held while the bus is open so Node stays alive, as an open socket would.
type KeepAliveFn = WakeFn<false>;
/// Called when emit outcomes are waiting in `takeSettled()`.
type SettleFn = WakeFn<false>;
/// Called (weakly) when warnings are waiting in `takeWarnings()`.
type WarnFn = WakeFn<true>;

/// Emit outcomes by ticket; its function is referenced only while emits are pending, so a
/// pending emit keeps Node alive and an idle bus does not.
type Settle = WakeQueue<(u32, lean_events_core::Result<String>), false>;
/// Keys of subscriptions with something to take; a weak function (the bus's keep-alive holds
/// Node while it is open).
pub(crate) type Ready = WakeQueue<u32, true>;
/// Warnings for `onWarning`, at most `MAX_QUEUED_WARNINGS` between two takes (all counted).
type Warnings = WakeQueue<Warning, true>;

/// Warnings kept for JavaScript between two takes; more are counted, not queued.
const MAX_QUEUED_WARNINGS: usize = 1000;

/// Emits handed to the store whose outcome JavaScript has not taken yet.
struct Tickets {
    next: u32,
    pending: u64,
    /// `maxPendingEmits`: past it an emit is refused with `BACKPRESSURE`, so the outcomes
    /// waiting for JavaScript are bounded too.
    max: u64,
}

/// Options of `NativeBus.connect`.
#[napi(object)]
pub struct ConnectOptions {
    /// `redis://` or `rediss://` URL; absent (and no `cluster`): the embedded store.
    pub url: Option<String>,
    /// Redis Cluster: urls of some of its nodes.
    pub cluster: Option<Vec<String>>,
    /// Key prefix, default `nq`.
    pub prefix: Option<String>,
    /// Approximate cap on entries per stream.
    pub max_len: Option<i64>,
    /// Largest serialized event in bytes, default 1 MiB.
    pub max_event_bytes: Option<i64>,
    /// Bound on every store call in milliseconds, default 5000.
    pub timeout_ms: Option<i64>,
    /// Default bound on a subscriber's queue, default 10 000.
    pub max_queue: Option<i64>,
    /// Reduced states kept by `state()`, default 1000; 0 disables the cache.
    pub state_cache_size: Option<i64>,
    /// `local` (default) or `replicated` (an append is acknowledged once a replica has it).
    pub durability: Option<String>,
    /// With `replicated`: how long to wait for a replica, default 1000 ms.
    pub replication_timeout_ms: Option<i64>,
    /// Most emits handed to the store and not yet settled, default 100 000; past it an emit
    /// fails at once with `BACKPRESSURE`.
    pub max_pending_emits: Option<i64>,
    /// How long finished runs and resolved triggers are kept.
    pub retention: Option<RetentionOptions>,
    /// `loop`: open the append and live connections for Node's event loop to drive (see
    /// `startEventLoop`), where the store allows it; `thread` (default): both on Tokio.
    pub transport: Option<String>,
}

/// Options of `retention`.
#[napi(object)]
pub struct RetentionOptions {
    /// A flow run's stream and run-index entry expire this many ms after its `flow.completed`
    /// or `flow.failed`; a trigger's stream and index entry this long after it resolved.
    pub finished_runs_ms: Option<i64>,
}

/// Options of `read`.
#[napi(object)]
pub struct NativeReadOptions {
    /// Exclusive lower cursor.
    pub after: Option<String>,
    /// Exclusive upper cursor.
    pub before: Option<String>,
    /// At most this many, default 100.
    pub limit: Option<i64>,
    /// Newest first.
    pub reverse: Option<bool>,
}

/// Options of `subscribe`.
#[napi(object)]
pub struct NativeSubscribeOptions {
    /// Deliver events after this id.
    pub after: Option<String>,
    /// Replay the last N events first.
    pub backfill: Option<i64>,
    /// Queue bound for this subscriber.
    pub max_queue: Option<i64>,
    /// Report trimmed ranges as gap items instead of ending with `STREAM_GAP`.
    pub notify_gaps: Option<bool>,
}

fn stream_ref(stream_type: &str, id: &str) -> std::result::Result<StreamRef, Error> {
    StreamRef::new(stream_type, id)
}

/// The event bus, native half.
#[napi]
pub struct NativeBus {
    shared: Arc<Shared>,
    tickets: Mutex<Tickets>,
    /// With `transport: 'loop'`: the settings and the connection opened for it, until
    /// `startEventLoop` takes them.
    wire: Mutex<Option<(Wire, std::net::TcpStream)>>,
    /// The event-loop transport, once started (JavaScript thread only).
    #[cfg(unix)]
    event_loop: std::cell::RefCell<Option<crate::event_loop::EventLoopAppends>>,
    /// With `transport: 'loop'` on one Redis: the live connections' source, attached to the
    /// event loop by `startEventLoop`.
    #[cfg(unix)]
    live_source: Option<Arc<crate::event_loop::live::LoopPubSub>>,
    #[cfg(unix)]
    live: std::cell::RefCell<Option<crate::event_loop::live::EventLoopLive>>,
}

/// The bus and its wake-up calls into JavaScript, closed together (by `close()`, or when the
/// environment that made them is torn down).
struct Shared {
    bus: Bus,
    keep_alive: Mutex<Option<KeepAliveFn>>,
    settle: Arc<Settle>,
    ready: Arc<Ready>,
    warnings: Arc<Warnings>,
    /// The wake-up calls of this bus's schedulers (emptied with the rest).
    scheduler_wakes: Mutex<Vec<WakeSlot<true>>>,
}

impl Shared {
    /// Close the bus and release the wake-up calls that refer to the JavaScript bus (on the
    /// JavaScript thread, as Node requires). The settle call stays while emits are pending,
    /// so their promises still settle and Node waits for them (see `hold_process`).
    fn close(&self) {
        self.bus.close();
        drop(lock(&self.keep_alive).take());
        drop(lock(&self.ready.wake).take());
        drop(lock(&self.warnings.wake).take());
        for slot in lock(&self.scheduler_wakes).drain(..) {
            slot.empty();
        }
    }
}

impl CloseWithEnvironment for Shared {
    fn close_with_environment(&self) {
        self.close();
        drop(lock(&self.settle.wake).take());
    }
}

#[napi]
impl NativeBus {
    /// Connect to Redis, or open the embedded store when no url is given. `warned` is called
    /// when warnings wait in `takeWarnings()`.
    #[napi(factory)]
    pub async fn connect(
        options: ConnectOptions,
        keep_alive: KeepAliveFn,
        settled: SettleFn,
        ready: ReadyFn,
        warned: WarnFn,
    ) -> Result<NativeBus> {
        guarded(async move {
            let defaults = Config::default();
            let config = Config {
                url: options.url,
                cluster: options.cluster,
                repair_interval: defaults.repair_interval,
                prefix: options.prefix.unwrap_or(defaults.prefix),
                max_len: positive("maxLen", options.max_len)?,
                max_event_bytes: positive("maxEventBytes", options.max_event_bytes)?
                    .map(|n| n as usize)
                    .unwrap_or(defaults.max_event_bytes),
                timeout: positive("timeoutMs", options.timeout_ms)?
                    .map(Duration::from_millis)
                    .unwrap_or(defaults.timeout),
                max_queue: positive("maxQueue", options.max_queue)?
                    .map(|n| n as usize)
                    .unwrap_or(defaults.max_queue),
                state_cache_size: non_negative("stateCacheSize", options.state_cache_size)?
                    .map(|n| n as usize)
                    .unwrap_or(defaults.state_cache_size),
                replicated: durability(
                    options.durability.as_deref(),
                    options.replication_timeout_ms,
                )?,
                max_pending_emits: positive("maxPendingEmits", options.max_pending_emits)?
                    .map(|n| n as usize)
                    .unwrap_or(defaults.max_pending_emits),
                finished_runs_retention: retention(
                    options.retention.and_then(|r| r.finished_runs_ms),
                )?,
            };
            let max_pending = config.max_pending_emits as u64;
            let want_loop = match options.transport.as_deref() {
                None | Some("thread") => false,
                Some("loop") => true,
                Some(other) => {
                    return Err(Error::argument(format!(
                        "transport must be 'loop' or 'thread' (got '{other}')"
                    )))
                }
            };
            #[cfg(unix)]
            let live_source = match (&config.url, &config.cluster) {
                (Some(url), None) if want_loop => Wire::for_url(
                    url,
                    lean_events_core::keys::Keys::single(&config.prefix),
                    None,
                    config.timeout,
                )
                .map(|w| Arc::new(crate::event_loop::live::LoopPubSub::new(w))),
                _ => None,
            };
            #[cfg(unix)]
            let live: Option<Arc<dyn lean_events_core::store::PubSubSource>> =
                live_source.clone().map(|s| s as _);
            #[cfg(not(unix))]
            let live = None;
            let bus = Bus::connect_with_live(config, live).await?;
            let wire = match bus.wire() {
                Some(wire) if want_loop => match wire.connect().await {
                    Ok(stream) => Some((wire, stream)),
                    Err(e) => {
                        bus.close();
                        return Err(e);
                    }
                },
                _ => None,
            };
            let warnings = Arc::new(Warnings::new(warned, Some(MAX_QUEUED_WARNINGS)));
            let sink = warnings.clone();
            bus.diagnostics()
                .set_sink(Some(Arc::new(move |w: &Warning| {
                    sink.push(w.clone());
                })));
            Ok(NativeBus {
                shared: Arc::new(Shared {
                    bus,
                    keep_alive: Mutex::new(Some(keep_alive)),
                    settle: Arc::new(Settle::new(settled, None).loop_aware()),
                    ready: Arc::new(Ready::new(ready, None).loop_aware()),
                    warnings,
                    scheduler_wakes: Mutex::new(Vec::new()),
                }),
                tickets: Mutex::new(Tickets {
                    next: 0,
                    pending: 0,
                    max: max_pending,
                }),
                wire: Mutex::new(wire),
                #[cfg(unix)]
                event_loop: std::cell::RefCell::new(None),
                #[cfg(unix)]
                live_source,
                #[cfg(unix)]
                live: std::cell::RefCell::new(None),
            })
        })
        .await
    }

    /// Close this bus when the Node environment that calls this (the main thread, or a worker
    /// thread) is torn down, before its wake-up calls would outlive it.
    #[napi]
    pub fn close_with_environment(&self, env: Env) -> Result<()> {
        let shared: Arc<dyn CloseWithEnvironment> = self.shared.clone();
        crate::environment::close_with(&env, Arc::downgrade(&shared))
    }

    /// Drive this bus's appends and live connection from Node's event loop (what
    /// `transport: 'loop'` opened); `settle` takes settled outcomes and `ready` wakes
    /// subscriptions (as the `settled` and `ready` of `connect`). Returns false when there is
    /// nothing to drive (the embedded store, a cluster, TLS, or `transport` was not `loop`):
    /// everything then stays on Tokio. With `durability: 'replicated'` only the live
    /// connection moves.
    #[napi]
    pub fn start_event_loop(
        &self,
        env: Env,
        settle: Function<(), Unknown>,
        ready: Function<(), Unknown>,
    ) -> Result<bool> {
        #[cfg(unix)]
        {
            let mut started = false;
            if let Some(source) = &self.live_source {
                let live =
                    crate::event_loop::live::EventLoopLive::start(env.raw(), source, ready.raw())?;
                *self.live.borrow_mut() = Some(live);
                started = true;
            }
            if let Some((wire, stream)) = lock(&self.wire).take() {
                let appends = crate::event_loop::EventLoopAppends::start(
                    env.raw(),
                    self.shared.bus.clone(),
                    wire,
                    stream,
                    settle.raw(),
                )?;
                *self.event_loop.borrow_mut() = Some(appends);
                started = true;
            }
            Ok(started)
        }
        #[cfg(not(unix))]
        {
            let _ = (env, settle, ready);
            Ok(false)
        }
    }

    /// Write the emits of this turn (event-loop transport; nothing to do otherwise).
    #[napi]
    pub fn flush(&self) {
        #[cfg(unix)]
        if let Some(l) = self.event_loop.borrow().as_ref() {
            l.flush();
        }
    }

    /// `loop` when Node's event loop drives this bus's appends or live connection, else
    /// `thread`.
    #[napi(getter)]
    pub fn transport(&self) -> &'static str {
        #[cfg(unix)]
        if self.event_loop.borrow().is_some() || self.live.borrow().is_some() {
            return "loop";
        }
        "thread"
    }

    /// True when the bus runs on the embedded in-memory store.
    #[napi(getter)]
    pub fn embedded(&self) -> bool {
        self.shared.bus.is_embedded()
    }

    /// The key prefix.
    #[napi(getter)]
    pub fn prefix(&self) -> String {
        self.shared.bus.prefix().to_owned()
    }

    /// Append one event (JSON text). Validation and the hand-off to the store happen before
    /// this returns (so emits keep their call order); returns the ticket under which the
    /// outcome, the record, shows up in `takeSettled()`.
    /// `retention_ms`: the retention of this call's terminal events, instead of the bus's.
    #[napi]
    pub fn emit(
        &self,
        env: Env,
        event: String,
        stream_type: Option<String>,
        retention_ms: Option<i64>,
    ) -> Result<u32> {
        self.submit(&env, false, |bus, done| {
            let retention = call_retention(bus, retention_ms)?;
            let opts = EmitOptions {
                stream_type: stream_type.as_deref(),
                retention,
            };
            bus.prepare_one_with(&event, opts, done).map(Some)
        })
    }

    /// Append a JSON array of events in one atomic step (see `emit`); the outcome is the
    /// array of records.
    #[napi]
    pub fn emit_many(
        &self,
        env: Env,
        events: String,
        stream_type: Option<String>,
        retention_ms: Option<i64>,
    ) -> Result<u32> {
        self.submit(&env, true, |bus, done| {
            let retention = call_retention(bus, retention_ms)?;
            let opts = EmitOptions {
                stream_type: stream_type.as_deref(),
                retention,
            };
            bus.prepare_many_with(&events, opts, done)
        })
    }

    /// Warnings queued since the last call, as a JSON array of `{code, message, detail?}`.
    #[napi]
    pub fn take_warnings(&self) -> String {
        let taken: Vec<serde_json::Value> = self
            .shared
            .warnings
            .take()
            .into_iter()
            .map(
                |w| serde_json::json!({ "code": w.code, "message": w.message, "detail": w.detail }),
            )
            .collect();
        serde_json::Value::Array(taken).to_string()
    }

    /// How many warnings of each code this bus raised, as a JSON object `{CODE: count}`.
    #[napi(getter)]
    pub fn warning_counts(&self) -> String {
        serde_json::to_string(&self.shared.bus.diagnostics().counts()).unwrap_or_default()
    }

    /// Counters and gauges of this bus (see the core's `metrics::Metrics`), as JSON text.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn metrics(&self, env: Env) -> Result<PromiseRaw<'static, String>> {
        let bus = self.shared.bus.clone();
        spawn(env, async move {
            serde_json::to_string(&bus.metrics().await)
                .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))
        })
    }

    /// Keys of the subscriptions that may have something to take (a key can show up again
    /// after its subscription was drained another way; taking then finds nothing).
    #[napi]
    pub fn take_ready(&self) -> Vec<u32> {
        self.shared.ready.take()
    }

    /// The emit outcomes ready so far, as JSON: `[[ticket, 1, record or [records]],
    /// [ticket, 0, {code, message, …}], ...]` (the error as `error::error_json` writes it).
    #[napi]
    pub fn take_settled(&self, env: Env) -> String {
        let taken = self.shared.settle.take();
        let mut out = String::with_capacity(2 + taken.len() * 300);
        out.push('[');
        for (i, (ticket, outcome)) in taken.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            match outcome {
                Ok(json) => {
                    out.push_str(&format!("[{ticket},1,"));
                    out.push_str(json);
                }
                Err(e) => {
                    out.push_str(&format!("[{ticket},0,"));
                    out.push_str(&error_json(e));
                }
            }
            out.push(']');
        }
        out.push(']');
        let mut t = lock(&self.tickets);
        t.pending = t.pending.saturating_sub(taken.len() as u64);
        let pending = t.pending;
        drop(t);
        self.hold_process(&env, pending);
        out
    }

    /// Read a range of a stream; resolves to a JSON array of records.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn read(
        &self,
        env: Env,
        stream_type: String,
        id: String,
        options: NativeReadOptions,
    ) -> Result<PromiseRaw<'static, String>> {
        let bus = self.shared.bus.clone();
        spawn(env, async move {
            let stream = stream_ref(&stream_type, &id)?;
            let opts = ReadOptions {
                after: options.after.as_deref().map(str::parse).transpose()?,
                before: options.before.as_deref().map(str::parse).transpose()?,
                limit: match options.limit {
                    None => None,
                    Some(l) if l >= 1 => Some(l as usize),
                    Some(l) => {
                        return Err(Error::argument(format!("limit must be 1-10000 (got {l})")))
                    }
                },
                reverse: options.reverse.unwrap_or(false),
            };
            let records = bus.read(&stream, opts).await?;
            Ok(json_array(records.iter().map(|r| r.json.as_str())))
        })
    }

    /// Subscribe to a stream; `key` shows up in `takeReady()` whenever `take()` has something.
    #[napi(ts_return_type = "Promise<NativeSubscription>")]
    pub fn subscribe(
        &self,
        env: Env,
        stream_type: String,
        id: String,
        options: NativeSubscribeOptions,
        key: u32,
    ) -> Result<PromiseRaw<'static, NativeSubscription>> {
        let (bus, waker) = (self.shared.bus.clone(), waker_for(&self.shared.ready, key));
        spawn(env, async move {
            let stream = stream_ref(&stream_type, &id)?;
            let start = match (options.after, options.backfill) {
                (Some(_), Some(_)) => {
                    return Err(Error::argument("give either after or backfill, not both"))
                }
                (Some(after), None) => Start::After(after.parse()?),
                (None, Some(n)) => {
                    Start::Backfill(positive("backfill", Some(n))?.unwrap_or(1) as usize)
                }
                (None, None) => Start::Live,
            };
            let opts = SubscribeOptions {
                start,
                max_queue: positive("maxQueue", options.max_queue)?.unwrap_or(0) as usize,
                notify_gaps: options.notify_gaps.unwrap_or(false),
            };
            let sub = bus.subscribe(&stream, opts, Some(waker)).await?;
            Ok(NativeSubscription::new(sub))
        })
    }

    /// Every event of `kind` from every stream and instance, live only (`key` as in
    /// `subscribe`).
    #[napi(ts_return_type = "Promise<NativeSubscription>")]
    pub fn on_kind(
        &self,
        env: Env,
        kind: String,
        max_queue: Option<i64>,
        key: u32,
    ) -> Result<PromiseRaw<'static, NativeSubscription>> {
        let (bus, waker) = (self.shared.bus.clone(), waker_for(&self.shared.ready, key));
        spawn(env, async move {
            let max_queue = positive("maxQueue", max_queue)?.map(|n| n as usize);
            let sub = bus.on_kind(&kind, max_queue, Some(waker)).await?;
            Ok(NativeSubscription::new(sub))
        })
    }

    /// Runs of a flow, newest first, as a JSON array of `{ id, startedAt }`.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn list_runs(
        &self,
        env: Env,
        name: String,
        limit: i64,
        offset: i64,
    ) -> Result<PromiseRaw<'static, String>> {
        let bus = self.shared.bus.clone();
        spawn(env, async move {
            if !(1..=10_000).contains(&limit) {
                return Err(Error::argument(format!(
                    "limit must be 1-10000 (got {limit})"
                )));
            }
            if offset < 0 {
                return Err(Error::argument(format!(
                    "offset must be 0 or more (got {offset})"
                )));
            }
            let runs = bus
                .list_runs(&name, limit as usize, offset as usize)
                .await?;
            let items: Vec<String> = runs
                .iter()
                .map(|r| {
                    format!(
                        "{{\"id\":{},\"startedAt\":\"{}\"}}",
                        serde_json::to_string(&r.id).unwrap_or_default(),
                        lean_events_core::id::iso_from_ms(r.started_ms)
                    )
                })
                .collect();
            Ok(json_array(items.iter().map(String::as_str)))
        })
    }

    /// Put a run in a flow's run index at `startedMs` (Unix ms), or move it there.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn index_run(
        &self,
        env: Env,
        name: String,
        id: String,
        started_ms: i64,
    ) -> Result<PromiseRaw<'static, ()>> {
        let bus = self.shared.bus.clone();
        spawn(env, async move {
            if started_ms < 0 {
                return Err(Error::argument(format!(
                    "startedMs must be 0 or more (got {started_ms})"
                )));
            }
            bus.index_run(&name, &id, started_ms as u64).await
        })
    }

    /// The reduced state of a stream, as JSON text.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn state(
        &self,
        env: Env,
        stream_type: String,
        id: String,
    ) -> Result<PromiseRaw<'static, String>> {
        let bus = self.shared.bus.clone();
        spawn(env, async move {
            let stream = stream_ref(&stream_type, &id)?;
            Ok(bus.state(&stream).await?.to_string())
        })
    }

    /// Start a scheduler instance on this bus; `wake` is called when it has work.
    #[napi(ts_return_type = "Promise<NativeScheduler>")]
    pub fn scheduler(
        &self,
        env: Env,
        options: crate::scheduler::NativeSchedulerOptions,
        wake: ReadyFn,
    ) -> Result<PromiseRaw<'static, crate::scheduler::NativeScheduler>> {
        let bus = self.shared.bus.clone();
        let slot = WakeSlot::new(wake);
        lock(&self.shared.scheduler_wakes).push(slot.clone());
        spawn(env, async move {
            let opts = lean_events_core::scheduler::SchedulerOptions {
                instance_id: options.instance_id,
                lease_ms: positive("leaseMs", options.lease_ms)?.unwrap_or(5000),
                concurrency: positive("concurrency", options.concurrency)?
                    .map_or(lean_events_core::scheduler::DEFAULT_CONCURRENCY, |n| {
                        usize::try_from(n).unwrap_or(usize::MAX)
                    }),
                ..Default::default()
            };
            let waker: lean_events_core::live::Waker = Box::new(move || slot.call());
            let s = lean_events_core::scheduler::Scheduler::start(&bus, opts, Some(waker)).await?;
            Ok(crate::scheduler::NativeScheduler::new(s))
        })
    }

    /// Open channels of this bus (for leak checks).
    #[napi(getter)]
    pub fn channel_count(&self) -> u32 {
        self.shared.bus.channel_count() as u32
    }

    /// Open subscriptions of this bus.
    #[napi(getter)]
    pub fn subscription_count(&self) -> u32 {
        self.shared.bus.subscription_count() as u32
    }

    /// End subscriptions, drop connections and let the process exit. Idempotent.
    #[napi]
    pub fn close(&self, env: Env) -> Result<()> {
        guarded_sync(|| {
            self.shared.close();
            Ok(())
        })?;
        #[cfg(unix)]
        {
            if let Some(l) = self.event_loop.borrow().as_ref() {
                l.close();
            }
            if let Some(l) = self.live.borrow().as_ref() {
                l.close();
            }
        }
        drop(lock(&self.wire).take());
        let pending = lock(&self.tickets).pending;
        self.hold_process(&env, pending);
        Ok(())
    }
}

impl NativeBus {
    /// The core bus, for a call that owns it.
    pub(crate) fn bus(&self) -> Bus {
        self.shared.bus.clone()
    }

    /// The ready list subscriptions of this bus are woken through.
    pub(crate) fn ready(&self) -> Arc<Ready> {
        self.shared.ready.clone()
    }

    /// Hand an emit to the store with a callback that queues its outcome for `takeSettled()`.
    fn submit(
        &self,
        env: &Env,
        many: bool,
        prepare: impl FnOnce(
            &Bus,
            lean_events_core::OnStored,
        ) -> lean_events_core::Result<Option<PreparedAppend>>,
    ) -> Result<u32> {
        let ticket = {
            let mut t = lock(&self.tickets);
            if t.pending >= t.max {
                self.shared.bus.count_refused_emit(ErrorCode::Backpressure);
                return Err(crate::error::to_napi(Error::new(
                    ErrorCode::Backpressure,
                    format!(
                        "{} emits are waiting to settle already (maxPendingEmits); wait for some \
                         to settle, or raise maxPendingEmits",
                        t.max
                    ),
                )));
            }
            t.next = t.next.wrapping_add(1);
            t.next
        };
        let settle = self.shared.settle.clone();
        let done: lean_events_core::OnStored = Box::new(move |outcome| {
            let outcome = outcome.and_then(|mut records| match (many, records.len()) {
                (true, _) => Ok(json_array(records.iter().map(|r| r.json.as_str()))),
                (false, 1) => Ok(records.pop().map(|r| r.json).unwrap_or_default()),
                (false, n) => Err(Error::new(
                    ErrorCode::Internal,
                    format!("one event appended, {n} records returned"),
                )),
            });
            settle.push((ticket, outcome));
        });
        if let Some(prepared) = guarded_sync(|| prepare(&self.shared.bus, done))? {
            self.hand_over(prepared);
        }
        let pending = {
            let mut t = lock(&self.tickets);
            t.pending += 1;
            t.pending
        };
        self.hold_process(env, pending);
        Ok(ticket)
    }

    /// An admitted append to the event-loop connection when there is one, else to the group
    /// commit on Tokio.
    fn hand_over(&self, prepared: PreparedAppend) {
        #[cfg(unix)]
        if let Some(l) = self.event_loop.borrow().as_ref() {
            l.submit(prepared);
            return;
        }
        self.shared.bus.commit(prepared);
    }

    /// Keep Node alive while emits are pending, and only then.
    #[allow(deprecated)] // ref/unref of one shared function; clones do not exist in napi 3
    /// Once the bus is closed and nothing is pending, the callback is dropped instead: it
    /// refers to the JavaScript bus, which refers to this one, and only this breaks the cycle.
    fn hold_process(&self, env: &Env, pending: u64) {
        let closed = lock(&self.shared.keep_alive).is_none();
        let mut slot = lock(&self.shared.settle.wake);
        if pending == 0 && closed {
            drop(slot.take());
        } else if let Some(wake) = slot.as_mut() {
            let _ = if pending > 0 {
                wake.refer(env)
            } else {
                wake.unref(env)
            };
        }
    }
}

/// The retention an emit names (`retention.finishedRunsMs`), checked; a bad one counts as a
/// refused emit.
fn call_retention(
    bus: &Bus,
    retention_ms: Option<i64>,
) -> lean_events_core::Result<Option<Duration>> {
    retention(retention_ms).inspect_err(|e| bus.count_refused_emit(e.code))
}

/// A subscription's waker: it queues the subscription's key on the bus's ready list.
pub(crate) fn waker_for(ready: &Arc<Ready>, key: u32) -> lean_events_core::live::Waker {
    let ready = ready.clone();
    Box::new(move || {
        ready.push(key);
    })
}

fn json_array<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::from("[");
    for (i, s) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(s);
    }
    out.push(']');
    out
}
