//! The scheduler: steps with retries and back-off, and durable awaits (time, event, trigger)
//! that survive the death of the process that started them. This file holds the `Scheduler`
//! type: starting and closing an instance, defining steps, and the queue of work it hands
//! its host.
//!
//! Handlers live in JavaScript; this engine decides what runs where and when, and hands the
//! host "work" (run attempt N of job J, maybe as a replay) through a queue with a wake-up call.
//!
//! Where each part lives: `policy` (retry and back-off), `model` (the job and await records
//! and the store layout), `events` (the events written), `jobs` (a job's life: run, start,
//! complete, fail, end), `retries` (recording a retry, starting it when due), `awaits` (time
//! and event awaits, settling and resuming), `triggers`
//! (register, wait, fire, cancel), `timers` (the timer loop: retries, await times and
//! timeouts), `recovery` (leases, take-over, the repair pass, re-checks), `notes` (control
//! messages between instances), `flows` (durable flows: a run is a job whose handler is the
//! flow function; its steps' records and replay), `runs` (cancel and rerun a flow run, its own
//! events written once).
//!
//! Other keys (prefix `nq`): `nq:await:kind:<kind>` (hash: awaitId → match, the pending
//! event awaits, matched by the append script in the same step as the append);
//! `nq:sched:timers` (zset id → due ms), `nq:sched:inflight` (zset id → claim lease end),
//! `nq:sched:timer-data` (hash id → JSON); `nq:sched:lease:<instance>` (key with a TTL of
//! `leaseMs`), `nq:sched:instances` (set), `nq:sched:owned:<instance>` (set of job ids);
//! channels `nq:sched:wake` (a timer was added) and `nq:sched:inst:<instance>` (notes for
//! one instance).
//!
//! Exactly once: every resolution (timer, fire, cancel, timeout, matching event) is a
//! compare-and-set of the await's `status` from `pending`; only the winner emits the events
//! and routes the resume. The events (`trigger.fired`, `trigger.cancelled`,
//! `step.await.timeout`, `trigger.timeout`) are stored in the await by that compare-and-set,
//! with a timer that writes them if the winner does not (it failed or died), and the step
//! gets the outcome only once they are written. `step.resumed` is written by the instance that hands the result to
//! the step, just before it does (marked `resumed` on the await), so it always precedes what
//! the step does next. A timer is claimed by one instance (moved to in-flight atomically);
//! a claim whose instance died is claimed again after its lease, and its effect, a
//! compare-and-set, cannot happen twice.
//!
//! Where a resume runs: on the job's owner while its lease is alive (its pending `await`
//! resolves in place). When the owner is gone, an instance that defines the step takes the
//! job over (compare-and-set of `owner`) and runs the handler again; awaits already resolved
//! in that attempt return their recorded result at once (replay by call order).
//!
//! Between two store calls anything can fail, so each compare-and-set carries what must not
//! exist without it (a retry's timer, owned-set membership), and what follows it is redone by
//! a later pass until done: the owner's repair pass starts its `running` jobs that nothing
//! executes and writes unwritten last events; a take-over does the same for a dead owner's
//! jobs; a replayed await registers its match and timers again.

mod awaits;
mod events;
mod flows;
mod jobs;
mod json;
mod model;
mod notes;
mod policy;
mod recovery;
mod retries;
mod runs;
mod timers;
mod triggers;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, Notify, Semaphore};

use crate::bus::Bus;
use crate::error::{Error, ErrorCode, Result};
use crate::event::{self, StreamRef};
use crate::keys::Keys;
use crate::live::{self, Subscription};
use crate::store::Store;

pub use crate::store::awaits::RESOLVED_TTL_MS;
pub use awaits::Due;
pub use policy::{Backoff, BackoffKind, RetryPolicy};
pub use timers::FAR_FUTURE_MS;

use jobs::Attempt;
use notes::ControlChannel;

/// Handlers running at once when `SchedulerOptions::concurrency` is not given.
pub const DEFAULT_CONCURRENCY: usize = 100;

/// Options of a scheduler instance.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Stable id of this instance (default: random).
    pub instance_id: Option<String>,
    /// How long an instance counts as alive after its last heartbeat (default 5000 ms).
    pub lease_ms: u64,
    /// Most handlers running at once (at least 1; default 100). A handler parked in an await
    /// that waits does not count (see `WorkQueue`).
    pub concurrency: usize,
    /// Most notes queued on each control channel before it is cut off (it is then subscribed
    /// again, with a `CONTROL_CHANNEL_LOST` warning, and what it may have carried is looked
    /// up); default 100 000.
    pub control_queue: usize,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            instance_id: None,
            lease_ms: 5000,
            concurrency: DEFAULT_CONCURRENCY,
            control_queue: 100_000,
        }
    }
}

/// A step or flow this instance runs.
struct Definition {
    policy: RetryPolicy,
    flow: bool,
}

/// What an await resolved to, for the handler waiting on it.
type AwaitOutcome = Result<String>;

/// One scheduler instance: its identity, what it runs and waits on, and its background
/// loops' wake-ups.
struct Instance {
    bus: Bus,
    keys: Keys,
    id: String,
    lease_ms: u64,
    control_queue: usize,
    /// The steps and flows this instance runs (one namespace), with their policies.
    steps: Mutex<HashMap<String, Definition>>,
    work: WorkQueue,
    /// `run` calls waiting here, by job.
    runs: Mutex<HashMap<String, oneshot::Sender<Result<String>>>>,
    /// Handlers waiting on an await, by await id.
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<AwaitOutcome>>>>,
    /// Attempts this instance has handed to its host and not yet recorded an outcome of.
    attempts: Mutex<HashMap<String, Attempt>>,
    /// Attempts that ended here lately (since the last repair pass began, or the last reap):
    /// none of them is started again meanwhile (the store may not show the end yet to a
    /// reader that looked before it).
    ended: Mutex<HashSet<(String, u32)>>,
    wakeups: Arc<Wakeups>,
    closed: AtomicBool,
    /// A store call of this instance failed since its last repair pass.
    needs_repair: AtomicBool,
    /// The control channels it listens on.
    channels: Mutex<Vec<Arc<Subscription>>>,
    /// Counted among the bus's schedulers (its timers show in `Bus::metrics`) until it stops.
    counted: AtomicBool,
}

impl Instance {
    /// Stop at once: the background loops end, the control channels are released, pending
    /// `run` calls and waits reject with `BUS_CLOSED` and the host's wake-up call is dropped.
    /// False when it was stopped already.
    fn stop(&self) -> bool {
        if self.closed.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.wakeups.stop.notify_waiters();
        for sub in lock(&self.channels).drain(..) {
            sub.unsubscribe();
        }
        lock(&self.runs).clear();
        lock(&self.waiters).clear();
        lock(&self.work.waker).take();
        // handlers whose await ended with the close would wait for a slot for ever (none is
        // given back once outcomes are refused): a closed semaphore lets them go on at once
        self.work.slots.close();
        if self.counted.swap(false, Ordering::AcqRel) {
            self.bus.timer_counters().scheduler_stopped();
        }
        true
    }
}

/// Wake-ups of the background loops, held apart from `Instance` so a sleeping loop does not
/// keep a dropped scheduler alive.
#[derive(Default)]
struct Wakeups {
    /// A timer was added: the timer loop looks again.
    timers: Notify,
    stop: Notify,
    /// A step was defined: look for owned jobs of it that nothing runs.
    repair: Notify,
}

/// Work for the host, handed out while fewer than `concurrency` handlers hold a slot, with
/// the wake-up call that says there is some to take.
///
/// A handler holds a slot from the hand-out of its work until its outcome is recorded, except
/// while it is parked in an await that waits: a step sleeping on a timer or waiting for a
/// trigger does nothing, and letting it hold a slot would let a few long awaits starve every
/// other step. When the await resolves, the handler takes a slot again before it continues
/// (ahead of work not yet handed out), so the limit holds for handlers that run. A handler
/// that waits for something else (another `run`, say) keeps its slot.
struct WorkQueue {
    items: Mutex<VecDeque<Work>>,
    waker: Mutex<Option<live::Waker>>,
    ready: Notify,
    slots: Semaphore,
    /// Attempts handed out and not ended, by (job, attempt).
    holders: Mutex<HashMap<(String, u32), Holder>>,
}

/// An attempt to hand out.
struct Work {
    job: String,
    attempt: u32,
    /// What the host gets (see `events::work`).
    json: String,
}

/// An attempt handed out, as far as its slot is concerned.
#[derive(Default)]
struct Holder {
    /// It holds a slot now.
    holds: bool,
    /// Awaits it is parked in.
    parked: u32,
}

impl WorkQueue {
    fn new(waker: Option<live::Waker>, concurrency: usize) -> WorkQueue {
        WorkQueue {
            items: Mutex::new(VecDeque::new()),
            waker: Mutex::new(waker),
            ready: Notify::new(),
            slots: Semaphore::new(concurrency),
            holders: Mutex::new(HashMap::new()),
        }
    }

    /// Up to `max` items, each taking a slot.
    fn take(&self, max: usize) -> Vec<String> {
        let mut q = lock(&self.items);
        let mut out = Vec::new();
        while out.len() < max && !q.is_empty() {
            let Ok(slot) = self.slots.try_acquire() else {
                break;
            };
            slot.forget();
            let Some(w) = q.pop_front() else { break };
            lock(&self.holders).insert(
                (w.job, w.attempt),
                Holder {
                    holds: true,
                    parked: 0,
                },
            );
            out.push(w.json);
        }
        out
    }

    fn push(&self, job: &str, attempt: u32, json: String) {
        let was_empty = {
            let mut q = lock(&self.items);
            q.push_back(Work {
                job: job.to_owned(),
                attempt,
                json,
            });
            q.len() == 1
        };
        if was_empty {
            self.wake();
        }
    }

    /// Tell the host there may be work to take.
    fn wake(&self) {
        self.ready.notify_one();
        if let Some(w) = lock(&self.waker).as_ref() {
            w();
        }
    }

    /// A slot was given back: work waiting for one can be taken now.
    fn slot_freed(&self) {
        self.slots.add_permits(1);
        if !lock(&self.items).is_empty() {
            self.wake();
        }
    }

    /// The attempt's outcome is recorded: its slot (if it holds one) is free.
    fn ended(&self, job: &str, attempt: u32) {
        let holder = lock(&self.holders).remove(&(job.to_owned(), attempt));
        if holder.is_some_and(|h| h.holds) {
            self.slot_freed();
        }
    }

    /// The attempt waits in an await: its slot is free meanwhile.
    fn park(&self, job: &str, attempt: u32) {
        let freed = {
            let mut holders = lock(&self.holders);
            let Some(h) = holders.get_mut(&(job.to_owned(), attempt)) else {
                return;
            };
            h.parked += 1;
            std::mem::replace(&mut h.holds, false)
        };
        if freed {
            self.slot_freed();
        }
    }

    /// The attempt's await resolved: it takes a slot again (once no other await of it waits)
    /// before it continues.
    async fn unpark(&self, job: &str, attempt: u32) {
        let key = (job.to_owned(), attempt);
        let needs_slot = {
            let mut holders = lock(&self.holders);
            let Some(h) = holders.get_mut(&key) else {
                return;
            };
            h.parked = h.parked.saturating_sub(1);
            h.parked == 0 && !h.holds
        };
        if !needs_slot {
            return;
        }
        let Ok(slot) = self.slots.acquire().await else {
            return;
        };
        slot.forget();
        let mut holders = lock(&self.holders);
        match holders.get_mut(&key) {
            Some(h) => h.holds = true,
            // ended meanwhile: not its slot to keep
            None => {
                drop(holders);
                self.slot_freed();
            }
        }
    }
}

/// A scheduler instance on a bus. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    instance: Arc<Instance>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// 32 hex characters of OS randomness (128 bits).
pub fn random_id() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("no OS randomness: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The stream reference of a flow (for tests and hosts).
pub fn flow_stream(flow: &str) -> Result<StreamRef> {
    StreamRef::new("flow", flow)
}

impl Scheduler {
    /// Start an instance: register its lease, listen for work, run the timer loop.
    /// `work_waker` is called when `take_work` has something.
    pub async fn start(
        bus: &Bus,
        opts: SchedulerOptions,
        work_waker: Option<live::Waker>,
    ) -> Result<Scheduler> {
        let id = match opts.instance_id {
            Some(id) => {
                event::validate_id("instanceId", &id).map_err(|e| Error::argument(e.message))?;
                id
            }
            None => random_id()?,
        };
        if opts.lease_ms < 100 {
            return Err(Error::argument("leaseMs must be at least 100"));
        }
        if opts.concurrency == 0 {
            return Err(Error::argument("concurrency must be at least 1"));
        }
        if opts.control_queue == 0 {
            return Err(Error::argument("control_queue must be at least 1"));
        }
        let instance = Arc::new(Instance {
            bus: bus.clone(),
            keys: bus.keys().clone(),
            id,
            lease_ms: opts.lease_ms,
            control_queue: opts.control_queue,
            steps: Mutex::new(HashMap::new()),
            work: WorkQueue::new(work_waker, opts.concurrency.min(Semaphore::MAX_PERMITS)),
            runs: Mutex::new(HashMap::new()),
            waiters: Mutex::new(HashMap::new()),
            attempts: Mutex::new(HashMap::new()),
            ended: Mutex::new(HashSet::new()),
            wakeups: Arc::new(Wakeups::default()),
            closed: AtomicBool::new(false),
            needs_repair: AtomicBool::new(false),
            channels: Mutex::new(Vec::new()),
            counted: AtomicBool::new(false),
        });
        // closing the bus stops the instance: nothing it waits on would ever answer
        let stop = Arc::downgrade(&instance);
        bus.on_close(Box::new(move || {
            if let Some(i) = stop.upgrade() {
                i.stop();
            }
        }));
        let s = Scheduler { instance };
        s.renew_lease().await?;
        s.store()
            .set_update(&s.instance.keys.instances(), &s.instance.id, true)
            .await?;
        let inbox = s.listen(ControlChannel::Inbox).await?;
        let wake = s.listen(ControlChannel::Wake).await?;
        let weak = Arc::downgrade(&s.instance);
        tokio::spawn(notes::control_loop(
            weak.clone(),
            ControlChannel::Inbox,
            inbox,
        ));
        tokio::spawn(notes::control_loop(
            weak.clone(),
            ControlChannel::Wake,
            wake,
        ));
        tokio::spawn(timers::timer_loop(weak.clone()));
        tokio::spawn(recovery::lease_loop(weak));
        if !s.instance.counted.swap(true, Ordering::AcqRel) {
            bus.timer_counters().scheduler_started();
        }
        Ok(s)
    }

    /// Subscribe to one of this instance's control channels.
    async fn listen(&self, channel: ControlChannel) -> Result<Arc<Subscription>> {
        let name = match channel {
            ControlChannel::Inbox => self.instance.keys.inbox_channel(&self.instance.id),
            ControlChannel::Wake => self.instance.keys.wake_channel(),
        };
        let sub = Arc::new(
            self.instance
                .bus
                .listen(name, self.instance.control_queue)
                .await?,
        );
        lock(&self.instance.channels).push(sub.clone());
        Ok(sub)
    }

    /// Count a failure of background work nobody awaits under `code` and hand it to the
    /// bus's warning sink (see `Diagnostics`); pass the value on.
    fn report<T>(&self, code: &'static str, what: &str, r: Result<T>) -> Option<T> {
        self.instance.bus.diagnostics().check(code, what, r)
    }

    fn store(&self) -> &dyn Store {
        self.instance.bus.store()
    }

    fn keys(&self) -> &Keys {
        &self.instance.keys
    }

    fn check_open(&self) -> Result<()> {
        if self.instance.closed.load(Ordering::Acquire) {
            Err(Error::new(ErrorCode::BusClosed, "the scheduler is closed"))
        } else {
            Ok(())
        }
    }

    /// This instance's id.
    pub fn instance_id(&self) -> &str {
        &self.instance.id
    }

    /// Declare that this instance runs `step` with `policy`. Defining it again replaces its
    /// policy; a flow of that name is refused (`INVALID_ARGUMENT`): steps and flows share one
    /// namespace.
    pub fn define(&self, step: &str, policy: RetryPolicy) -> Result<()> {
        self.define_as(step, policy, false)
    }

    /// Define a step (`flow` false) or a flow, refusing a name the other kind holds.
    fn define_as(&self, name: &str, policy: RetryPolicy, flow: bool) -> Result<()> {
        self.check_open()?;
        let (what, other) = if flow {
            ("flow name", "a step")
        } else {
            ("step", "a flow")
        };
        event::validate_id(what, name).map_err(|e| Error::argument(e.message))?;
        {
            let mut steps = lock(&self.instance.steps);
            if steps.get(name).is_some_and(|d| d.flow != flow) {
                let (this, call) = if flow {
                    ("a flow", "defineFlow")
                } else {
                    ("a step", "define")
                };
                return Err(Error::argument(format!(
                    "'{name}' is already defined as {other} on this scheduler; it cannot be {this} too (steps and flows share one namespace: pick another name for {call}())"
                )));
            }
            steps.insert(name.to_owned(), Definition { policy, flow });
        }
        self.instance.wakeups.repair.notify_one();
        Ok(())
    }

    fn defines(&self, step: &str) -> bool {
        lock(&self.instance.steps).contains_key(step)
    }

    /// The policy of a step this instance defines (the default when it does not).
    fn policy(&self, step: &str) -> RetryPolicy {
        lock(&self.instance.steps)
            .get(step)
            .map(|d| d.policy.clone())
            .unwrap_or_default()
    }

    /// Take queued work (JSON objects `{jobId, step, flow, input, attempt, replay}`), at most
    /// as many as `concurrency` allows now; the waker is called again when a slot frees up.
    pub fn take_work(&self, max: usize) -> Vec<String> {
        self.instance.work.take(max)
    }

    /// Wait for work (for hosts that poll instead of being woken).
    pub async fn next_work(&self) -> Vec<String> {
        loop {
            let w = self.take_work(1000);
            if !w.is_empty() {
                return w;
            }
            self.instance.work.ready.notified().await;
        }
    }

    /// Pass `r` on; an error makes the next repair pass come sooner (at the next reap).
    fn repair_on_error<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.instance.needs_repair.store(true, Ordering::Release);
        }
        r
    }

    /// Stop background work; pending `run` calls and waits reject with `BUS_CLOSED`. Closing
    /// the bus does this too (without releasing the lease: the bus is gone).
    pub async fn close(&self) {
        if !self.instance.stop() {
            return;
        }
        // until it is gone, its jobs wait for the lease to run out before anyone takes them
        let released = self
            .store()
            .delete(&self.lease_key(&self.instance.id))
            .await;
        self.report("LEASE_RELEASE_FAILED", "releasing the lease", released);
    }
}
