//! `NativeBus`: the core `Bus` behind napi.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lean_events_core::bus::Config;
use lean_events_core::{Bus, Error, ReadOptions, Start, StreamRef, SubscribeOptions};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{
    ThreadsafeFunction, ThreadsafeFunctionCallMode, UnknownReturnValue,
};
use napi_derive::napi;

use crate::error::{guarded, guarded_sync};
use crate::subscription::NativeSubscription;

/// Called (weakly) when a subscription has something to take.
type WakeFn = ThreadsafeFunction<(), UnknownReturnValue, (), Status, false, true>;
/// Held while the bus is open so Node stays alive, as an open socket would.
type KeepAliveFn = ThreadsafeFunction<(), UnknownReturnValue, (), Status, false, false>;
/// Called when emit outcomes are waiting in `takeSettled()` (see `Settle`).
type SettleFn = ThreadsafeFunction<(), UnknownReturnValue, (), Status, false, false>;

/// Items waiting for JavaScript, and the function that wakes it: the JavaScript thread is
/// woken once when the queue goes from empty to non-empty, then takes everything queued by
/// then in one call. Emit outcomes come back this way (one wake-up per group commit, not one
/// per emit), and so do the keys of subscriptions with something to take (one wake-up for a
/// burst over many subscriptions, no thread-safe function and libuv handle per subscription).
/// The function is dropped by `close()` (for emit outcomes, once none is pending): it refers
/// to the JavaScript bus, which refers to this one.
struct WakeQueue<T, const WEAK: bool> {
    items: Mutex<Vec<T>>,
    wake: Mutex<Option<ThreadsafeFunction<(), UnknownReturnValue, (), Status, false, WEAK>>>,
}

impl<T, const WEAK: bool> WakeQueue<T, WEAK> {
    fn new(wake: ThreadsafeFunction<(), UnknownReturnValue, (), Status, false, WEAK>) -> Self {
        WakeQueue {
            items: Mutex::new(Vec::new()),
            wake: Mutex::new(Some(wake)),
        }
    }

    fn push(&self, item: T) {
        let was_empty = {
            let mut items = lock(&self.items);
            items.push(item);
            items.len() == 1
        };
        if was_empty {
            if let Some(wake) = lock(&self.wake).as_ref() {
                wake.call((), ThreadsafeFunctionCallMode::NonBlocking);
            }
        }
    }

    fn take(&self) -> Vec<T> {
        std::mem::take(&mut *lock(&self.items))
    }
}

/// Emit outcomes by ticket; its function is referenced only while emits are pending, so a
/// pending emit keeps Node alive and an idle bus does not.
type Settle = WakeQueue<(u32, lean_events_core::Result<String>), false>;
/// Keys of subscriptions with something to take; a weak function (the bus's keep-alive holds
/// Node while it is open).
type Ready = WakeQueue<u32, true>;

/// Emits handed to the store whose outcome JavaScript has not taken yet.
struct Tickets {
    next: u32,
    pending: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
}

/// The WAIT bound of `durability`, or none for `local`.
fn replication(
    durability: Option<&str>,
    timeout_ms: Option<i64>,
) -> std::result::Result<Option<Duration>, Error> {
    let wait = positive("replicationTimeoutMs", timeout_ms)?;
    match durability {
        None | Some("local") if wait.is_some() => Err(Error::argument(
            "replicationTimeoutMs applies only with durability: 'replicated'",
        )),
        None | Some("local") => Ok(None),
        Some("replicated") => Ok(Some(Duration::from_millis(wait.unwrap_or(1000)))),
        Some(other) => Err(Error::argument(format!(
            "durability must be 'local' or 'replicated' (got '{other}')"
        ))),
    }
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

fn positive(what: &str, v: Option<i64>) -> std::result::Result<Option<u64>, Error> {
    match v {
        None => Ok(None),
        Some(n) if n >= 1 => Ok(Some(n as u64)),
        Some(n) => Err(Error::argument(format!(
            "{what} must be a positive integer (got {n})"
        ))),
    }
}

fn stream_ref(stream_type: &str, id: &str) -> std::result::Result<StreamRef, Error> {
    StreamRef::new(stream_type, id)
}

/// The event bus, native half.
#[napi]
pub struct NativeBus {
    bus: Bus,
    keep_alive: Mutex<Option<KeepAliveFn>>,
    settle: Arc<Settle>,
    tickets: Mutex<Tickets>,
    ready: Arc<Ready>,
}

#[napi]
impl NativeBus {
    /// Connect to Redis, or open the embedded store when no url is given.
    #[napi(factory)]
    pub async fn connect(
        options: ConnectOptions,
        keep_alive: KeepAliveFn,
        settled: SettleFn,
        ready: WakeFn,
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
                state_cache_size: match options.state_cache_size {
                    None => defaults.state_cache_size,
                    Some(n) if n >= 0 => n as usize,
                    Some(n) => {
                        return Err(Error::argument(format!(
                            "stateCacheSize must be 0 or more (got {n})"
                        )))
                    }
                },
                replicated: replication(
                    options.durability.as_deref(),
                    options.replication_timeout_ms,
                )?,
            };
            let bus = Bus::connect(config).await?;
            Ok(NativeBus {
                bus,
                keep_alive: Mutex::new(Some(keep_alive)),
                settle: Arc::new(Settle::new(settled)),
                tickets: Mutex::new(Tickets {
                    next: 0,
                    pending: 0,
                }),
                ready: Arc::new(Ready::new(ready)),
            })
        })
        .await
    }

    /// True when the bus runs on the embedded in-memory store.
    #[napi(getter)]
    pub fn embedded(&self) -> bool {
        self.bus.is_embedded()
    }

    /// Append one event (JSON text). Validation and the hand-off to the store happen before
    /// this returns (so emits keep their call order); returns the ticket under which the
    /// outcome, the record, shows up in `takeSettled()`.
    #[napi]
    pub fn emit(&self, env: Env, event: String, stream_type: Option<String>) -> Result<u32> {
        self.submit(&env, false, |bus, done| {
            bus.submit_one_then(&event, stream_type.as_deref(), done)
        })
    }

    /// Append a JSON array of events in one atomic step (see `emit`); the outcome is the
    /// array of records.
    #[napi]
    pub fn emit_many(&self, env: Env, events: String, stream_type: Option<String>) -> Result<u32> {
        self.submit(&env, true, |bus, done| {
            bus.submit_many_then(&events, stream_type.as_deref(), done)
        })
    }

    /// Keys of the subscriptions that may have something to take (a key can show up again
    /// after its subscription was drained another way; taking then finds nothing).
    #[napi]
    pub fn take_ready(&self) -> Vec<u32> {
        self.ready.take()
    }

    /// The emit outcomes ready so far, as JSON: `[[ticket, 1, record or [records]],
    /// [ticket, 0, "CODE: message"], ...]`.
    #[napi]
    pub fn take_settled(&self, env: Env) -> String {
        let taken = self.settle.take();
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
                    let text = serde_json::to_string(&e.to_string()).unwrap_or_default();
                    out.push_str(&format!("[{ticket},0,{text}"));
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
    #[napi]
    pub async fn read(
        &self,
        stream_type: String,
        id: String,
        options: NativeReadOptions,
    ) -> Result<String> {
        guarded(async {
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
            let records = self.bus.read(&stream, opts).await?;
            Ok(json_array(records.iter().map(|r| r.json.as_str())))
        })
        .await
    }

    /// Subscribe to a stream; `key` shows up in `takeReady()` whenever `take()` has something.
    #[napi]
    pub async fn subscribe(
        &self,
        stream_type: String,
        id: String,
        options: NativeSubscribeOptions,
        key: u32,
    ) -> Result<NativeSubscription> {
        guarded(async {
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
            let sub = self
                .bus
                .subscribe(&stream, opts, Some(waker_for(&self.ready, key)))
                .await?;
            Ok(NativeSubscription::new(sub))
        })
        .await
    }

    /// Every event of `kind` from every stream and instance, live only (`key` as in
    /// `subscribe`).
    #[napi]
    pub async fn on_kind(
        &self,
        kind: String,
        max_queue: Option<i64>,
        key: u32,
    ) -> Result<NativeSubscription> {
        guarded(async {
            let max_queue = positive("maxQueue", max_queue)?.map(|n| n as usize);
            let sub = self
                .bus
                .on_kind(&kind, max_queue, Some(waker_for(&self.ready, key)))
                .await?;
            Ok(NativeSubscription::new(sub))
        })
        .await
    }

    /// Runs of a flow, newest first, as a JSON array of `{ id, startedAt }`.
    #[napi]
    pub async fn list_runs(&self, name: String, limit: i64, offset: i64) -> Result<String> {
        guarded(async {
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
            let runs = self
                .bus
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
        .await
    }

    /// The reduced state of a stream, as JSON text.
    #[napi]
    pub async fn state(&self, stream_type: String, id: String) -> Result<String> {
        guarded(async {
            let stream = stream_ref(&stream_type, &id)?;
            Ok(self.bus.state(&stream).await?.to_string())
        })
        .await
    }

    /// Start a scheduler instance on this bus; `wake` is called when it has work.
    #[napi]
    pub async fn scheduler(
        &self,
        options: crate::scheduler::NativeSchedulerOptions,
        wake: WakeFn,
    ) -> Result<crate::scheduler::NativeScheduler> {
        guarded(async {
            let opts = lean_events_core::scheduler::SchedulerOptions {
                instance_id: options.instance_id,
                lease_ms: positive("leaseMs", options.lease_ms)?.unwrap_or(5000),
                concurrency: positive("concurrency", options.concurrency)?
                    .map_or(lean_events_core::scheduler::DEFAULT_CONCURRENCY, |n| {
                        usize::try_from(n).unwrap_or(usize::MAX)
                    }),
                ..Default::default()
            };
            let s =
                lean_events_core::scheduler::Scheduler::start(&self.bus, opts, Some(waker(wake)))
                    .await?;
            Ok(crate::scheduler::NativeScheduler::new(s))
        })
        .await
    }

    /// Open channels of this bus (for leak checks).
    #[napi(getter)]
    pub fn channel_count(&self) -> u32 {
        self.bus.channel_count() as u32
    }

    /// Open subscriptions of this bus.
    #[napi(getter)]
    pub fn subscription_count(&self) -> u32 {
        self.bus.subscription_count() as u32
    }

    /// End subscriptions, drop connections and let the process exit. Idempotent.
    #[napi]
    pub fn close(&self, env: Env) -> Result<()> {
        guarded_sync(|| {
            self.bus.close();
            Ok(())
        })?;
        // Released on the JS thread, as Node requires.
        drop(lock(&self.keep_alive).take());
        drop(lock(&self.ready.wake).take());
        let pending = lock(&self.tickets).pending;
        self.hold_process(&env, pending);
        Ok(())
    }
}

impl NativeBus {
    /// Hand an emit to the store with a callback that queues its outcome for `takeSettled()`.
    fn submit(
        &self,
        env: &Env,
        many: bool,
        hand_off: impl FnOnce(&Bus, lean_events_core::OnStored) -> lean_events_core::Result<()>,
    ) -> Result<u32> {
        let ticket = {
            let mut t = lock(&self.tickets);
            t.next = t.next.wrapping_add(1);
            t.next
        };
        let settle = self.settle.clone();
        let done: lean_events_core::OnStored = Box::new(move |outcome| {
            let outcome = outcome.and_then(|mut records| match (many, records.len()) {
                (true, _) => Ok(json_array(records.iter().map(|r| r.json.as_str()))),
                (false, 1) => Ok(records.pop().map(|r| r.json).unwrap_or_default()),
                (false, n) => Err(lean_events_core::Error::new(
                    lean_events_core::ErrorCode::Internal,
                    format!("one event appended, {n} records returned"),
                )),
            });
            settle.push((ticket, outcome));
        });
        guarded_sync(|| hand_off(&self.bus, done))?;
        let pending = {
            let mut t = lock(&self.tickets);
            t.pending += 1;
            t.pending
        };
        self.hold_process(env, pending);
        Ok(ticket)
    }

    /// Keep Node alive while emits are pending, and only then.
    #[allow(deprecated)] // ref/unref of one shared function; clones do not exist in napi 3
    /// Once the bus is closed and nothing is pending, the callback is dropped instead: it
    /// refers to the JavaScript bus, which refers to this one, and only this breaks the cycle.
    fn hold_process(&self, env: &Env, pending: u64) {
        let closed = lock(&self.keep_alive).is_none();
        let mut slot = lock(&self.settle.wake);
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

/// A subscription's waker: it queues the subscription's key on the bus's ready list.
fn waker_for(ready: &Arc<Ready>, key: u32) -> lean_events_core::live::Waker {
    let ready = ready.clone();
    Box::new(move || ready.push(key))
}

fn waker(wake: WakeFn) -> lean_events_core::live::Waker {
    Box::new(move || {
        wake.call((), ThreadsafeFunctionCallMode::NonBlocking);
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
