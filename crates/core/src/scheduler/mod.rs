//! The scheduler: steps with retries and back-off, and durable awaits (time, event, trigger)
//! that survive the death of the process that started them.
//!
//! Handlers live in JavaScript; this engine decides what runs where and when, and hands the
//! host "work" (run attempt N of job J, maybe as a replay) through a queue with a wake-up call.
//!
//! Store layout (prefix `nq`):
//! - `nq:sched:job:<jobId>` (hash): step, flow, input, attempt, startedAttempt, status
//!   (running | failing | retrying | completed | failed; `failing`: the retry timer is set, its
//!   step.failed / step.retry not yet written, since `failingMs`), owner, result/error,
//!   `finalEvent` (the last event, until it is written; then empty) and `endedMs`, `runner`
//!   (the instance whose `run` call waits), `errorDetail`, `t:<attempt>:<seq>` → trigger id
//!   of an `await.trigger` call. Expires 7 days after the job ends.
//! - `nq:await:<awaitId>` (hash): type (time | event | trigger), job, flow, step, attempt, seq,
//!   owner, status (pending | resolved | timeout | cancelled), createdMs, result, `announced`
//!   (its `step.await.*` event is written), `resumed` (its `step.resumed` is written), and
//!   per type resumeAt / kind + match / triggerType. `awaitId` is `<jobId>:<attempt>:<seq>`,
//!   or for a trigger its id: 32 random hex characters (128 bits), a capability. Expires 7 days after it resolves; `fire` on an
//!   expired trigger is `TRIGGER_NOT_FOUND`.
//! - `nq:await:kind:<kind>` (hash): awaitId → match, the pending event awaits, matched by the
//!   append script in the same step as the append.
//! - `nq:sched:timers` (zset id → due ms), `nq:sched:inflight` (zset id → claim lease end),
//!   `nq:sched:timer-data` (hash id → JSON): retry back-offs, `await.time`, await timeouts.
//! - `nq:sched:lease:<instance>` (key with a TTL of `leaseMs`), `nq:sched:instances` (set),
//!   `nq:sched:owned:<instance>` (set of job ids).
//! - channels `nq:sched:wake` (a timer was added) and `nq:sched:inst:<instance>` (work for one
//!   instance: an await it waits on resolved, or a retry it owns is due).
//!
//! Exactly once: every resolution (timer, fire, cancel, timeout, matching event) is a
//! compare-and-set of the await's `status` from `pending`; only the winner emits the events
//! and routes the resume. `step.resumed` is written by the instance that hands the result to
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
//! a later pass until done: the owner's repair pass (`repair`) starts its `running` jobs that
//! nothing executes and writes unwritten last events; a take-over (`adopt`) does the same for
//! a dead owner's jobs; a replayed await registers its match and timers again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{oneshot, Notify};

use crate::bus::Bus;
use crate::clock::now_ms;
use crate::error::{Error, ErrorCode, Result};
use crate::event::{self, record_from_live, StreamRef, LIVE_SEP};
use crate::id::iso_from_ms;
use crate::keys::Keys;
use crate::live::{self, Item, Subscription};
use crate::store::{Expect, NewTimer, SetChange, Store};

pub use crate::store::awaits::RESOLVED_TTL_MS;
/// Timers claimed per store call.
const CLAIM_BATCH: usize = 256;
/// Longest error message carried by `step.failed` / `step.retry` (bytes; less when half of
/// `maxEventBytes` is less).
const MAX_ERROR_MESSAGE: usize = 8192;
/// Longest sleep of the timer loop without a wake-up (a safety re-check).
const TIMER_RECHECK: Duration = Duration::from_secs(30);

/// Back-off between attempts.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backoff {
    /// `fixed` or `exponential`.
    #[serde(rename = "type", default = "default_backoff_type")]
    pub kind: String,
    /// Base delay in ms.
    #[serde(default = "default_delay")]
    pub delay_ms: u64,
    /// Upper bound in ms.
    #[serde(default)]
    pub max_delay_ms: Option<u64>,
    /// Random spread: the delay is multiplied by a factor in `[1 - jitter, 1 + jitter]`.
    #[serde(default)]
    pub jitter: Option<f64>,
}

fn default_backoff_type() -> String {
    "exponential".into()
}

fn default_delay() -> u64 {
    1000
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            kind: default_backoff_type(),
            delay_ms: default_delay(),
            max_delay_ms: None,
            jitter: None,
        }
    }
}

/// When and how often a failed step is tried again.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Total attempts, at least 1 (default 1: no retry).
    #[serde(default)]
    pub attempts: Option<u32>,
    /// The back-off.
    #[serde(default)]
    pub backoff: Backoff,
    /// Only errors whose `name` or `code` is listed are retried.
    #[serde(default)]
    pub retriable_errors: Option<Vec<String>>,
}

impl RetryPolicy {
    /// Parse and check a policy given as JSON (`null` or empty: no retries).
    pub fn from_json(json: &str) -> Result<RetryPolicy> {
        if json.trim().is_empty() || json.trim() == "null" {
            return Ok(RetryPolicy::default());
        }
        let p: RetryPolicy = serde_json::from_str(json)
            .map_err(|e| Error::argument(format!("retry policy is invalid: {e}")))?;
        if p.attempts == Some(0) {
            return Err(Error::argument("retry.attempts must be at least 1"));
        }
        if !matches!(p.backoff.kind.as_str(), "fixed" | "exponential") {
            return Err(Error::argument(format!(
                "retry.backoff.type must be 'fixed' or 'exponential' (got '{}')",
                p.backoff.kind
            )));
        }
        if let Some(j) = p.backoff.jitter {
            if !(0.0..=1.0).contains(&j) {
                return Err(Error::argument(
                    "retry.backoff.jitter must be between 0 and 1",
                ));
            }
        }
        Ok(p)
    }

    fn max_attempts(&self) -> u32 {
        self.attempts.unwrap_or(1).max(1)
    }

    /// The delay before attempt `failed + 1`, after attempt `failed` failed.
    pub fn delay_ms(&self, failed: u32) -> u64 {
        let b = &self.backoff;
        let base = if b.kind == "fixed" {
            b.delay_ms as f64
        } else {
            b.delay_ms as f64 * 2f64.powi(failed.saturating_sub(1).min(60) as i32)
        };
        let capped = match b.max_delay_ms {
            Some(m) => base.min(m as f64),
            None => base,
        };
        let jittered = match b.jitter {
            Some(j) if j > 0.0 => capped * (1.0 - j + 2.0 * j * random_unit()),
            _ => capped,
        };
        jittered.max(0.0).min(u64::MAX as f64 / 2.0) as u64
    }
}

fn random_unit() -> f64 {
    (getrandom::u64().unwrap_or(0) >> 11) as f64 / (1u64 << 53) as f64
}

/// 32 hex characters of OS randomness (128 bits).
pub fn random_id() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("no OS randomness: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The error a `run` rejects with when its step failed for good.
fn step_failed(step: &str, attempt: u32, message: &str, detail: &str) -> Error {
    let mut err = Error::new(
        ErrorCode::StepFailed,
        format!("step '{step}' failed after {attempt} attempt(s): {message}"),
    );
    if !detail.is_empty() {
        err.detail = Some(detail.to_owned());
    }
    err
}

fn is_trigger_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Options of a scheduler instance.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Stable id of this instance (default: random).
    pub instance_id: Option<String>,
    /// How long an instance counts as alive after its last heartbeat (default 5000 ms).
    pub lease_ms: u64,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            instance_id: None,
            lease_ms: 5000,
        }
    }
}

/// What an await resolved to, for the handler waiting on it.
type AwaitOutcome = Result<String>;

struct Inner {
    bus: Bus,
    keys: Keys,
    id: String,
    lease_ms: u64,
    defs: Mutex<HashMap<String, RetryPolicy>>,
    work: Mutex<std::collections::VecDeque<String>>,
    work_waker: Mutex<Option<live::Waker>>,
    work_ready: Notify,
    runs: Mutex<HashMap<String, oneshot::Sender<Result<String>>>>,
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<AwaitOutcome>>>>,
    /// Attempts this instance has handed to its host and not yet recorded an outcome of.
    running: Mutex<HashMap<String, Active>>,
    /// Attempts that ended here lately (since the last repair pass began, or the last reap):
    /// none of them is started again meanwhile (the store may not show the end yet to a
    /// reader that looked before it).
    ended: Mutex<HashSet<(String, u32)>>,
    signals: Arc<Signals>,
    closed: AtomicBool,
    /// A store call of this instance failed since its last repair pass.
    dirty: AtomicBool,
    subs: Mutex<Vec<Arc<Subscription>>>,
}

/// An attempt handed to the host.
#[derive(Clone)]
struct Active {
    attempt: u32,
    since: Instant,
    step: String,
    flow: String,
    /// The instance whose `run` call waits for the job.
    runner: String,
}

/// What recording a thrown error came to.
enum Failure {
    /// A retry is due at `due` (ms).
    Retry { due: u64 },
    /// The job failed: its last event is to be announced, and `run` (on `runner`) rejects
    /// with `err`.
    Final {
        event: String,
        err: Error,
        runner: String,
    },
    /// The job was not running this attempt here (any more): nothing was recorded.
    Lost { runner: String },
}

/// An await opened by `open_await`.
struct Opened {
    /// Its events are still to be written (a new await, or a replay of one whose first run
    /// did not get that far).
    announce: bool,
    /// It is pending: its registration (timer, event match) is made, or made again.
    pending: bool,
    rx: oneshot::Receiver<AwaitOutcome>,
    /// The job's fields.
    job: HashMap<String, String>,
    /// When the await was first created (ms): timeouts count from there, also on a replay.
    created_ms: u64,
}

/// Who asks `start_attempt` to start an attempt.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// What made the job running (its creation, a due retry, a take-over, a note from there).
    Moved,
    /// A repair pass that found the job running here with nothing executing it: it yields to
    /// any attempt of the job this instance executes.
    Repair,
}

/// Wake-ups of the background loops, held apart from `Inner` so a sleeping loop does not
/// keep a dropped scheduler alive.
#[derive(Default)]
struct Signals {
    timer_wake: Notify,
    stop: Notify,
    /// A step was defined: look for owned jobs of it that nothing runs.
    repair: Notify,
}

/// A scheduler instance on a bus. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
        let inner = Arc::new(Inner {
            bus: bus.clone(),
            keys: bus.keys().clone(),
            id,
            lease_ms: opts.lease_ms,
            defs: Mutex::new(HashMap::new()),
            work: Mutex::new(Default::default()),
            work_waker: Mutex::new(work_waker),
            work_ready: Notify::new(),
            runs: Mutex::new(HashMap::new()),
            waiters: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            ended: Mutex::new(HashSet::new()),
            signals: Arc::new(Signals::default()),
            closed: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            subs: Mutex::new(Vec::new()),
        });
        let s = Scheduler { inner };
        s.store()
            .lease_renew(&s.lease_key(&s.inner.id), s.inner.lease_ms)
            .await?;
        s.store()
            .set_update(&s.inner.keys.instances(), &s.inner.id, true)
            .await?;
        let inbox = s.listen(s.inner.keys.inbox_channel(&s.inner.id)).await?;
        let wake = s.listen(s.inner.keys.wake_channel()).await?;
        tokio::spawn(inbox_loop(Arc::downgrade(&s.inner), inbox));
        tokio::spawn(wake_loop(Arc::downgrade(&s.inner), wake));
        tokio::spawn(timer_loop(Arc::downgrade(&s.inner)));
        tokio::spawn(lease_loop(Arc::downgrade(&s.inner)));
        Ok(s)
    }

    async fn listen(&self, channel: String) -> Result<Arc<Subscription>> {
        let sub = Arc::new(self.inner.bus.listen(channel, 100_000).await?);
        lock(&self.inner.subs).push(sub.clone());
        Ok(sub)
    }

    fn store(&self) -> &dyn Store {
        self.inner.bus.store()
    }

    /// How long after a job ended another instance may write its last event for the owner.
    fn final_event_grace_ms(&self) -> u64 {
        self.claim_lease_ms().max(10_000)
    }

    /// How long a claimed timer stays with its claimer before any instance may claim it again.
    fn claim_lease_ms(&self) -> u64 {
        self.inner.lease_ms.max(1000)
    }

    fn job_key(&self, job: &str) -> String {
        self.inner.keys.job(job)
    }

    fn await_key(&self, id: &str) -> String {
        self.inner.keys.await_state(id)
    }

    fn lease_key(&self, instance: &str) -> String {
        self.inner.keys.lease(instance)
    }

    fn owned_key(&self, instance: &str) -> String {
        self.inner.keys.owned_jobs(instance)
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::new(ErrorCode::BusClosed, "the scheduler is closed"))
        } else {
            Ok(())
        }
    }

    /// This instance's id.
    pub fn instance_id(&self) -> &str {
        &self.inner.id
    }

    /// Declare that this instance runs `step` with `policy`.
    pub fn define(&self, step: &str, policy: RetryPolicy) -> Result<()> {
        self.check_open()?;
        event::validate_id("step", step).map_err(|e| Error::argument(e.message))?;
        lock(&self.inner.defs).insert(step.to_owned(), policy);
        self.inner.signals.repair.notify_one();
        Ok(())
    }

    fn defines(&self, step: &str) -> bool {
        lock(&self.inner.defs).contains_key(step)
    }

    /// Take queued work (JSON objects `{jobId, step, flow, input, attempt, replay}`).
    pub fn take_work(&self, max: usize) -> Vec<String> {
        let mut q = lock(&self.inner.work);
        let n = q.len().min(max);
        q.drain(..n).collect()
    }

    /// Wait for work (for hosts that poll instead of being woken).
    pub async fn next_work(&self) -> Vec<String> {
        loop {
            let w = self.take_work(1000);
            if !w.is_empty() {
                return w;
            }
            self.inner.work_ready.notified().await;
        }
    }

    fn push_work(&self, work: String) {
        let was_empty = {
            let mut q = lock(&self.inner.work);
            q.push_back(work);
            q.len() == 1
        };
        if was_empty {
            self.inner.work_ready.notify_one();
            if let Some(w) = lock(&self.inner.work_waker).as_ref() {
                w();
            }
        }
    }

    async fn emit(&self, event: Value, stream_type: Option<&str>) -> Result<()> {
        self.inner
            .bus
            .emit(&event.to_string(), stream_type)
            .await
            .map(|_| ())
    }

    /// Run `step` for `flow` with `input` (JSON); resolves to the handler's result (JSON).
    pub async fn run(
        &self,
        step: &str,
        flow: &str,
        input: &str,
        job_id: Option<&str>,
    ) -> Result<String> {
        self.check_open()?;
        if !self.defines(step) {
            return Err(Error::argument(format!(
                "step '{step}' is not defined on this scheduler; call define() first"
            )));
        }
        event::validate_id("flow", flow).map_err(|e| Error::argument(e.message))?;
        let input_value: Value = serde_json::from_str(input)
            .map_err(|e| Error::argument(format!("input is not JSON: {e}")))?;
        let job = match job_id {
            Some(j) => {
                event::validate_id("jobId", j).map_err(|e| Error::argument(e.message))?;
                j.to_owned()
            }
            None => random_id()?,
        };
        // every start writes this event: one the bus would refuse is refused here, before the
        // job exists
        self.fits(
            &json!({ "kind": "step.started", "subject": flow, "step": step,
            "data": { "input": input_value }, "meta": { "attempt": 1, "jobId": job } })
            .to_string(),
        )?;
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.runs).insert(job.clone(), tx);
        // created and entered in this instance's owned set in one step: a job nobody can find
        // when its owner dies would never run
        let owned = self.owned_key(&self.inner.id);
        let fields = [
            ("step", step.to_owned()),
            ("flow", flow.to_owned()),
            ("input", input_value.to_string()),
            ("attempt", "1".into()),
            ("owner", self.inner.id.clone()),
            ("runner", self.inner.id.clone()),
            ("createdMs", now_ms().to_string()),
        ];
        let created = self
            .store()
            .hash_cas_with(
                &self.job_key(&job),
                ("status", Expect::Absent, "running"),
                &[],
                (&fields, 0),
                None,
                &[SetChange {
                    key: &owned,
                    member: &job,
                    add: true,
                }],
            )
            .await;
        match created {
            Ok(c) if c.set => {}
            Ok(_) => {
                lock(&self.inner.runs).remove(&job);
                return Err(Error::new(
                    ErrorCode::JobExists,
                    format!("a job with id '{job}' exists already"),
                ));
            }
            Err(e) => {
                lock(&self.inner.runs).remove(&job);
                return Err(e);
            }
        }
        // From here the job exists and runs: when starting it fails (the store is away), the
        // repair pass starts it later, and this call waits for its outcome all the same.
        let fields: HashMap<String, String> =
            fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let _ = self
            .start_attempt(&job, &fields, 1, Start::Moved, None)
            .await;
        rx.await.unwrap_or_else(|_| Err(Error::closed()))
    }

    /// Hand attempt `attempt` of `job` to the host, announcing it with `step.started` unless
    /// an earlier start of this attempt did (then the handler runs as a replay). Does nothing
    /// when this instance is executing the job already. On an error nothing is left behind
    /// here: the job stays `running` in the store for the repair pass.
    async fn start_attempt(
        &self,
        job: &str,
        fields: &HashMap<String, String>,
        attempt: u32,
        by: Start,
        late_ms: Option<u64>,
    ) -> Result<()> {
        let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
        let (step, flow) = (get("step"), get("flow"));
        {
            let mut running = lock(&self.inner.running);
            let busy = match running.get(job) {
                Some(a) => by == Start::Repair || a.attempt == attempt,
                None => false,
            } || lock(&self.inner.ended).contains(&(job.to_owned(), attempt));
            if busy {
                return Ok(());
            }
            running.insert(
                job.to_owned(),
                Active {
                    attempt,
                    since: Instant::now(),
                    step: step.clone(),
                    flow: flow.clone(),
                    runner: get("runner"),
                },
            );
        }
        let started: u32 = get("startedAttempt").parse().unwrap_or(0);
        let fresh = started < attempt;
        let input: Value = serde_json::from_str(&get("input")).unwrap_or(Value::Null);
        if fresh {
            let mut meta = json!({ "attempt": attempt, "jobId": job });
            if let Some(l) = late_ms {
                meta["lateMs"] = l.into();
            }
            let announced = async {
                self.emit(
                    json!({ "kind": "step.started", "subject": flow, "step": step, "data": { "input": input }, "meta": meta }),
                    None,
                )
                .await?;
                self.store()
                    .hash_set(
                        &self.job_key(job),
                        &[("startedAttempt", attempt.to_string())],
                    )
                    .await
            }
            .await;
            if let Err(e) = announced {
                self.forget_attempt(job, attempt);
                return self.noted(Err(e));
            }
        }
        self.push_work(
            json!({ "jobId": job, "step": step, "flow": flow, "input": input, "attempt": attempt, "replay": !fresh })
                .to_string(),
        );
        Ok(())
    }

    /// The attempt `attempt` of `job` is no longer executed here.
    fn forget_attempt(&self, job: &str, attempt: u32) {
        lock(&self.inner.ended).insert((job.to_owned(), attempt));
        let mut running = lock(&self.inner.running);
        if running.get(job).is_some_and(|a| a.attempt == attempt) {
            running.remove(job);
        }
    }

    /// `job` as this instance runs `attempt` of it (read from the store if it does not).
    async fn attempt_info(&self, job: &str, attempt: u32) -> Result<Active> {
        let active = lock(&self.inner.running)
            .get(job)
            .filter(|a| a.attempt == attempt)
            .cloned();
        if let Some(a) = active {
            return Ok(a);
        }
        let fields = self.store().hash_get_all(&self.job_key(job)).await?;
        let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
        Ok(Active {
            attempt,
            since: Instant::now(),
            step: get("step"),
            flow: get("flow"),
            runner: get("runner"),
        })
    }

    /// A job ended: settle its `run` call, here or (with a note) on the instance that made it.
    /// `outcome` is the run's result when this instance ended the job; `None` when it does not
    /// know it (then it is read from the store, where the job has ended or not).
    async fn end_run(
        &self,
        job: &str,
        runner: &str,
        outcome: Option<Result<String>>,
    ) -> Result<()> {
        match outcome {
            Some(outcome) => {
                if let Some(tx) = lock(&self.inner.runs).remove(job) {
                    let _ = tx.send(outcome);
                    return Ok(());
                }
            }
            None => self.settle_run(job).await?,
        }
        if runner.is_empty() || runner == self.inner.id {
            return Ok(());
        }
        let data = json!({ "job": job }).to_string();
        self.notify(
            &self.inner.keys.inbox_channel(runner),
            runner,
            "sched.ended",
            &data,
        )
        .await
    }

    /// Settle the `run` call waiting here for `job` if the job has ended (wherever it ended)
    /// and its last event is written.
    async fn settle_run(&self, job: &str) -> Result<()> {
        if !lock(&self.inner.runs).contains_key(job) {
            return Ok(());
        }
        let fields = self.store().hash_get_all(&self.job_key(job)).await?;
        let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
        if !get("finalEvent").is_empty() {
            // ended, its last event not yet written: whoever writes it says so
            return Ok(());
        }
        let outcome = match get("status") {
            "completed" => Ok(get("result").to_owned()),
            "failed" => Err(step_failed(
                get("step"),
                get("attempt").parse().unwrap_or(0),
                get("error"),
                get("errorDetail"),
            )),
            _ => return Ok(()),
        };
        if let Some(tx) = lock(&self.inner.runs).remove(job) {
            let _ = tx.send(outcome);
        }
        Ok(())
    }

    /// The handler of `job`'s attempt returned `result` (JSON).
    pub async fn complete(&self, job: &str, attempt: u32, result: &str) -> Result<()> {
        // A closed instance records nothing: its jobs stay resumable elsewhere.
        self.check_open()?;
        let result: Value = serde_json::from_str(result)
            .map_err(|e| Error::argument(format!("result is not JSON: {e}")))?;
        let finished: Result<(Option<String>, String)> = async {
            let a = self.attempt_info(job, attempt).await?;
            let duration = a.since.elapsed().as_millis() as u64;
            let event = json!({ "kind": "step.completed", "subject": a.flow, "step": a.step,
                "data": { "result": result }, "meta": { "attempt": attempt, "duration": duration, "jobId": job } })
                .to_string();
            self.fits(&event)?;
            let event = self
                .finish_job(
                    job,
                    attempt,
                    "completed",
                    &[("result", result.to_string())],
                    event,
                )
                .await?;
            Ok((event, a.runner))
        }
        .await;
        if let Err(e) = &finished {
            if matches!(e.code, ErrorCode::PayloadTooLarge | ErrorCode::EventInvalid) {
                // a result its event cannot carry fails the step, for good
                let thrown = json!({ "message": format!("the step's result cannot be recorded: {}", e.message),
                    "code": e.code.as_str(), "retriable": false });
                return self.fail(job, attempt, &thrown.to_string()).await;
            }
        }
        let announced = match finished {
            Ok((Some(event), runner)) => {
                // the run resolves after its last event is written, or could not be
                let announced = self.announce_final(job, &event).await;
                let ended = self
                    .end_run(job, &runner, Some(Ok(result.to_string())))
                    .await;
                announced.and(ended)
            }
            // not this instance's to end: maybe another one ended it
            Ok((None, runner)) => self.end_run(job, &runner, None).await,
            Err(e) => Err(e),
        };
        // Only now is the attempt no longer handled here (the repair pass leaves it alone until
        // then). When its outcome could not be recorded the job is still `running`, and the
        // repair pass runs the attempt again; an unwritten last event it writes.
        self.forget_attempt(job, attempt);
        self.noted(announced)
    }

    /// Pass `r` on; an error makes the next repair pass come sooner (at the next reap).
    fn noted<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.inner.dirty.store(true, Ordering::Release);
        }
        r
    }

    /// The handler of `job`'s attempt threw `error` (JSON `{message, name?, code?,
    /// retriable?, retryAfter?}`): retry after a durable back-off, or fail the step.
    pub async fn fail(&self, job: &str, attempt: u32, error: &str) -> Result<()> {
        // An await interrupted by close() is not a failure of the step.
        self.check_open()?;
        let outcome = match self.record_failure(job, attempt, error).await {
            Ok(Failure::Final { event, err, runner }) => {
                // as in `complete`
                let announced = self.announce_final(job, &event).await;
                let ended = self.end_run(job, &runner, Some(Err(err))).await;
                announced.and(ended)
            }
            Ok(Failure::Lost { runner }) => self.end_run(job, &runner, None).await,
            Ok(Failure::Retry { due }) => {
                self.forget_attempt(job, attempt);
                return self.wake_timers(due).await;
            }
            other => other.map(|_| ()),
        };
        self.forget_attempt(job, attempt);
        self.noted(outcome)
    }

    /// Record that an attempt threw: the retry (with its events), or the end of the job.
    async fn record_failure(&self, job: &str, attempt: u32, error: &str) -> Result<Failure> {
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase")]
        struct Thrown {
            #[serde(default)]
            message: Option<String>,
            #[serde(default)]
            name: Option<String>,
            #[serde(default)]
            code: Option<Value>,
            #[serde(default)]
            retriable: Option<bool>,
            #[serde(default)]
            retry_after: Option<f64>,
        }
        let thrown: Thrown = serde_json::from_str(error).unwrap_or_default();
        let mut message = thrown
            .message
            .clone()
            .unwrap_or_else(|| "step failed".into());
        // the events carrying it must fit in maxEventBytes; the whole error stays in the job
        let limit = (self.inner.bus.max_event_bytes().saturating_sub(1024) / 2)
            .clamp(64, MAX_ERROR_MESSAGE);
        if message.len() > limit {
            let mut end = limit;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        let Active {
            step, flow, runner, ..
        } = self.attempt_info(job, attempt).await?;
        let policy = lock(&self.inner.defs)
            .get(&step)
            .cloned()
            .unwrap_or_default();
        let max = policy.max_attempts();
        let code = thrown.code.as_ref().map(|c| match c {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        let listed = match &policy.retriable_errors {
            None => true,
            Some(list) => list
                .iter()
                .any(|e| Some(e) == thrown.name.as_ref() || Some(e) == code.as_ref()),
        };
        let will_retry = attempt < max && thrown.retriable != Some(false) && listed;
        if will_retry {
            let delay = match thrown.retry_after {
                Some(ms) if ms.is_finite() && ms >= 0.0 => ms as u64,
                _ => policy.delay_ms(attempt),
            };
            let due = now_ms() + delay;
            let payload =
                json!({ "type": "retry", "job": job, "attempt": attempt + 1 }).to_string();
            let timer = NewTimer {
                id: &format!("retry:{job}:{}", attempt + 1),
                due_ms: due,
                payload: &payload,
            };
            // Three steps, each safe to die after: `failing` + the retry timer (one step, so the
            // retry cannot be lost), the events, then `retrying`. A timer that finds the job
            // still `failing` waits for the events (see `on_timer`); `adopt` finishes the move
            // for an instance that died between the steps.
            let attempt_s = attempt.to_string();
            let moved = self
                .store()
                .hash_cas_with(
                    &self.job_key(job),
                    ("status", Expect::Value("running"), "failing"),
                    &[("owner", &self.inner.id), ("attempt", &attempt_s)],
                    (&[("failingMs", now_ms().to_string())], 0),
                    Some(timer),
                    &[],
                )
                .await?;
            if !moved.set {
                return Ok(Failure::Lost { runner });
            }
            self.emit(
                json!({ "kind": "step.failed", "subject": flow, "step": step,
                        "data": { "error": message, "willRetry": true, "nextRetryAt": iso_from_ms(due) },
                        "meta": { "attempt": attempt, "maxAttempts": max, "backoff": policy.backoff.kind, "jobId": job } }),
                None,
            )
            .await?;
            self.emit(
                json!({ "kind": "step.retry", "subject": flow, "step": step,
                        "data": { "reason": message, "delayMs": delay },
                        "meta": { "attempt": attempt + 1, "scheduledAt": iso_from_ms(due), "jobId": job } }),
                None,
            )
            .await?;
            self.retry_announced(job).await?;
            return Ok(Failure::Retry { due });
        }
        let finished = self
            .finish_job(
                job,
                attempt,
                "failed",
                &[
                    ("error", message.clone()),
                    ("errorDetail", error.to_owned()),
                ],
                json!({ "kind": "step.failed", "subject": flow, "step": step,
                        "data": { "error": message, "willRetry": false },
                        "meta": { "attempt": attempt, "maxAttempts": max, "jobId": job } })
                .to_string(),
            )
            .await?;
        let Some(event) = finished else {
            return Ok(Failure::Lost { runner });
        };
        let err = step_failed(&step, attempt, &message, error);
        Ok(Failure::Final { event, err, runner })
    }

    /// The last step of recording a retry: `failing` (timer set) → `retrying`.
    async fn retry_announced(&self, job: &str) -> Result<()> {
        self.store()
            .hash_cas(
                &self.job_key(job),
                "status",
                Expect::Value("failing"),
                "retrying",
                0,
                &[],
            )
            .await
            .map(|_| ())
    }

    /// Move a job this instance runs at `attempt` to a final status (once: a compare-and-set
    /// that also checks owner and attempt, so an instance that lost the job cannot end it).
    /// The last event is kept in the job (`finalEvent`) until `announce_final` has written it.
    /// Returns that event when this call ended the job.
    async fn finish_job(
        &self,
        job: &str,
        attempt: u32,
        status: &str,
        fields: &[(&str, String)],
        event: String,
    ) -> Result<Option<String>> {
        let attempt_s = attempt.to_string();
        let done = self
            .store()
            .hash_cas_with(
                &self.job_key(job),
                ("status", Expect::Value("running"), status),
                &[("owner", &self.inner.id), ("attempt", &attempt_s)],
                (
                    &[
                        fields,
                        &[
                            ("finalEvent", event.clone()),
                            ("endedMs", now_ms().to_string()),
                        ],
                    ]
                    .concat(),
                    RESOLVED_TTL_MS,
                ),
                None,
                &[],
            )
            .await?;
        Ok(done.set.then_some(event))
    }

    /// Write the last event of an ended job, then (one step) mark it written and drop the job
    /// from this instance's owned set. Dying in between writes the event twice, never zero
    /// times: the repair pass announces what is still marked.
    async fn announce_final(&self, job: &str, event: &str) -> Result<()> {
        let emitted = self.inner.bus.emit(event, None).await.map(|_| ());
        if let Err(e) = &emitted {
            if !matches!(e.code, ErrorCode::PayloadTooLarge | ErrorCode::EventInvalid) {
                return self.noted(emitted);
            }
            // refused for good (checked before the job ended, so not expected): not retried
        }
        let owned = self.owned_key(&self.inner.id);
        self.store()
            .hash_cas_with(
                &self.job_key(job),
                ("finalEvent", Expect::Value(event), ""),
                &[],
                (&[], 0),
                None,
                &[SetChange {
                    key: &owned,
                    member: job,
                    add: false,
                }],
            )
            .await?;
        emitted
    }

    /// Refuse an event of this scheduler's that the bus would refuse: only its size can be
    /// wrong (its names are checked when given), with a margin for fields added later.
    fn fits(&self, event: &str) -> Result<()> {
        let max = self.inner.bus.max_event_bytes().saturating_sub(64);
        if event.len() > max {
            return Err(Error::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the event is {} bytes serialized; the limit is {max} (maxEventBytes, less 64 bytes for fields added later)",
                    event.len()
                ),
            ));
        }
        Ok(())
    }

    async fn add_timer(&self, id: &str, due: u64, payload: Value) -> Result<()> {
        self.store()
            .timer_add(id, due, &payload.to_string())
            .await?;
        self.wake_timers(due).await
    }

    /// A timer due at `due` was added: wake the timer loops of every instance.
    async fn wake_timers(&self, due: u64) -> Result<()> {
        self.inner.signals.timer_wake.notify_one();
        self.notify(
            &self.inner.keys.wake_channel(),
            "wake",
            "sched.wake",
            &due.to_string(),
        )
        .await
    }

    /// Publish a scheduler note (a record-shaped live message) on `<prefix>:<channel>`.
    async fn notify(&self, channel: &str, subject: &str, kind: &str, data: &str) -> Result<()> {
        let note = format!(
            "0-0{LIVE_SEP}sched{LIVE_SEP}{subject}{LIVE_SEP}kind{LIVE_SEP}{kind}{LIVE_SEP}data{LIVE_SEP}{data}"
        );
        self.inner.bus.publish(channel, &note).await
    }

    fn await_id(job: &str, attempt: u32, seq: u32) -> String {
        format!("{job}:{attempt}:{seq}")
    }

    /// Create the await hash (or find the one a previous run of this attempt made) and
    /// register a waiter.
    async fn open_await(
        &self,
        await_id: &str,
        job: &str,
        attempt: u32,
        seq: u32,
        extra: Vec<(&str, String)>,
    ) -> Result<Opened> {
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.waiters)
            .entry(await_id.to_owned())
            .or_default()
            .push(tx);
        let opened: Result<(bool, bool, HashMap<String, String>, u64)> = async {
            let fields = self.store().hash_get_all(&self.job_key(job)).await?;
            if fields.is_empty() {
                return Err(Error::argument(format!("job '{job}' does not exist")));
            }
            let now = now_ms();
            let mut all = vec![
                ("job", job.to_owned()),
                ("flow", fields.get("flow").cloned().unwrap_or_default()),
                ("step", fields.get("step").cloned().unwrap_or_default()),
                ("attempt", attempt.to_string()),
                ("seq", seq.to_string()),
                ("owner", self.inner.id.clone()),
                ("createdMs", now.to_string()),
            ];
            all.extend(extra);
            let key = self.await_key(await_id);
            let created = self
                .store()
                .hash_cas(&key, "status", Expect::Absent, "pending", 0, &all)
                .await?;
            if created.set {
                return Ok((true, true, fields, now));
            }
            // A replay: this instance now owns the await; settle at once if already resolved.
            self.store()
                .hash_set(&key, &[("owner", self.inner.id.clone())])
                .await?;
            if created.current.as_deref() != Some("pending") {
                self.settle(await_id).await?;
                return Ok((false, false, fields, now));
            }
            let state = self.store().hash_get_all(&key).await?;
            let created_ms = state
                .get("createdMs")
                .and_then(|c| c.parse().ok())
                .unwrap_or(now);
            Ok((!state.contains_key("announced"), true, fields, created_ms))
        }
        .await;
        match opened {
            Ok((announce, pending, job_fields, created_ms)) => Ok(Opened {
                announce,
                pending,
                rx,
                job: job_fields,
                created_ms,
            }),
            Err(e) => {
                lock(&self.inner.waiters).remove(await_id);
                Err(e)
            }
        }
    }

    /// The events of an await are written: a replay does not write them again. `timer` is
    /// added in the same step; returns whether it was.
    async fn await_announced(
        &self,
        await_id: &str,
        job: &str,
        timer: Option<NewTimer<'_>>,
    ) -> Result<bool> {
        self.store()
            .hash_cas_with(
                &self.await_key(await_id),
                ("announced", Expect::Absent, "1"),
                &[("job", job)],
                (&[], 0),
                timer,
                &[],
            )
            .await
            .map(|r| r.set)
    }

    async fn wait(rx: oneshot::Receiver<AwaitOutcome>) -> Result<String> {
        rx.await.unwrap_or_else(|_| Err(Error::closed()))
    }

    /// `ctx.await.time`: resolves (to `null`) at `resume_at_ms`, durably.
    pub async fn await_time(
        &self,
        job: &str,
        attempt: u32,
        seq: u32,
        resume_at_ms: u64,
    ) -> Result<String> {
        self.check_open()?;
        let id = Self::await_id(job, attempt, seq);
        let o = self
            .open_await(
                &id,
                job,
                attempt,
                seq,
                vec![
                    ("type", "time".into()),
                    ("resumeAt", resume_at_ms.to_string()),
                ],
            )
            .await?;
        // Each step below is repeated by a replay while the await is pending, so an instance
        // dying between them leaves nothing undone (registering twice is harmless).
        if o.pending {
            let (timer_id, payload) = (
                format!("time:{id}"),
                json!({ "type": "time", "await": id }).to_string(),
            );
            let timer = NewTimer {
                id: &timer_id,
                due_ms: resume_at_ms,
                payload: &payload,
            };
            let mut added = false;
            if o.announce {
                self.emit(
                    json!({ "kind": "step.await.time", "subject": o.job.get("flow"), "step": o.job.get("step"),
                            "data": { "resumeAt": iso_from_ms(resume_at_ms) }, "meta": { "jobId": job } }),
                    None,
                )
                .await?;
                added = self.await_announced(&id, job, Some(timer)).await?;
            }
            if !added {
                self.store()
                    .timer_add(timer.id, timer.due_ms, timer.payload)
                    .await?;
            }
            self.wake_timers(resume_at_ms).await?;
        }
        Self::wait(o.rx).await
    }

    /// `ctx.await.event`: resolves to the first event of `kind` matching `condition` (JSON)
    /// stored after registration, on any instance.
    pub async fn await_event(
        &self,
        job: &str,
        attempt: u32,
        seq: u32,
        kind: &str,
        condition: &str,
        timeout_ms: Option<u64>,
    ) -> Result<String> {
        self.check_open()?;
        event::validate_kind(kind).map_err(|e| Error::argument(e.message))?;
        let cond: Value = serde_json::from_str(if condition.is_empty() {
            "{}"
        } else {
            condition
        })
        .map_err(|e| Error::argument(format!("match is not JSON: {e}")))?;
        crate::matching::validate(&cond)?;
        let id = Self::await_id(job, attempt, seq);
        let mut extra = vec![
            ("type", "event".to_owned()),
            ("kind", kind.to_owned()),
            ("match", cond.to_string()),
        ];
        if let Some(t) = timeout_ms {
            extra.push(("timeoutMs", t.to_string()));
        }
        let o = self.open_await(&id, job, attempt, seq, extra).await?;
        // as in `await_time`; the match is registered before the event announcing the await
        if o.pending {
            self.store()
                .hash_set(
                    &self.inner.keys.event_awaits(kind),
                    &[(id.as_str(), cond.to_string())],
                )
                .await?;
            let mut data = json!({ "eventKind": kind, "match": cond });
            if let Some(t) = timeout_ms {
                data["timeout"] = t.into();
                self.add_timer(
                    &format!("timeout:{id}"),
                    o.created_ms.saturating_add(t),
                    json!({ "type": "timeout", "await": id }),
                )
                .await?;
            }
            if o.announce {
                self.emit(
                    json!({ "kind": "step.await.event", "subject": o.job.get("flow"), "step": o.job.get("step"),
                            "data": data, "meta": { "jobId": job } }),
                    None,
                )
                .await?;
                self.await_announced(&id, job, None).await?;
            }
        }
        Self::wait(o.rx).await
    }

    /// `ctx.await.trigger`: registers a trigger (a fresh 128-bit id, or on replay the id this
    /// call got before) and returns its id; `wait_trigger` waits for it.
    pub async fn register_trigger(
        &self,
        job: &str,
        attempt: u32,
        seq: u32,
        trigger_type: &str,
        payload: Option<&str>,
        timeout_ms: Option<u64>,
    ) -> Result<String> {
        self.check_open()?;
        event::validate_id("trigger type", trigger_type).map_err(|e| Error::argument(e.message))?;
        let payload: Option<Value> = payload
            .map(|p| {
                serde_json::from_str(p)
                    .map_err(|e| Error::argument(format!("payload is not JSON: {e}")))
            })
            .transpose()?;
        let slot = format!("t:{attempt}:{seq}");
        let candidate = random_id()?;
        let claimed = self
            .store()
            .hash_cas(
                &self.job_key(job),
                &slot,
                Expect::Absent,
                &candidate,
                0,
                &[],
            )
            .await?;
        if !claimed.exists {
            return Err(Error::argument(format!("job '{job}' does not exist")));
        }
        let id = if claimed.set {
            candidate
        } else {
            claimed.current.unwrap_or_default()
        };
        let mut extra = vec![
            ("type", "trigger".to_owned()),
            ("triggerType", trigger_type.to_owned()),
        ];
        if let Some(t) = timeout_ms {
            extra.push(("timeoutMs", t.to_string()));
        }
        let o = self.open_await(&id, job, attempt, seq, extra).await?;
        lock(&self.inner.waiters).remove(&id);
        // as in `await_time`
        if o.pending {
            let flow = o.job.get("flow").cloned().unwrap_or_default();
            let mut reg = json!({ "type": trigger_type });
            let mut data = json!({ "triggerId": id, "triggerType": trigger_type });
            if let Some(p) = &payload {
                data["payload"] = p.clone();
            }
            if let Some(t) = timeout_ms {
                reg["timeout"] = t.into();
                data["timeout"] = t.into();
                self.add_timer(
                    &format!("timeout:{id}"),
                    o.created_ms.saturating_add(t),
                    json!({ "type": "timeout", "await": id }),
                )
                .await?;
            }
            if o.announce {
                self.emit(
                    json!({ "kind": "trigger.registered", "subject": id, "correlationId": flow, "data": reg }),
                    None,
                )
                .await?;
                self.emit(
                    json!({ "kind": "step.await.trigger", "subject": flow, "step": o.job.get("step"),
                            "data": data, "meta": { "jobId": job } }),
                    None,
                )
                .await?;
                self.await_announced(&id, job, None).await?;
            }
        }
        Ok(id)
    }

    /// Wait for a trigger registered by `register_trigger`: resolves to the fired payload.
    pub async fn wait_trigger(&self, trigger_id: &str) -> Result<String> {
        self.check_open()?;
        if !is_trigger_id(trigger_id) {
            return Err(Error::new(ErrorCode::TriggerNotFound, "no such trigger"));
        }
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.waiters)
            .entry(trigger_id.to_owned())
            .or_default()
            .push(tx);
        let fields = self
            .store()
            .hash_get_all(&self.await_key(trigger_id))
            .await?;
        if fields.is_empty() {
            lock(&self.inner.waiters).remove(trigger_id);
            return Err(Error::new(
                ErrorCode::TriggerNotFound,
                format!("trigger {trigger_id} does not exist"),
            ));
        }
        if fields.get("status").map(String::as_str) != Some("pending") {
            self.settle(trigger_id).await?;
        }
        Self::wait(rx).await
    }

    /// Fire a trigger: exactly one `fire` (or timeout, or cancel) wins.
    pub async fn fire(&self, trigger_id: &str, payload: &str) -> Result<()> {
        self.check_open()?;
        let max = self.inner.bus.max_event_bytes();
        if payload.len() > max {
            return Err(Error::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the payload is {} bytes; the limit is {max} (maxEventBytes)",
                    payload.len()
                ),
            ));
        }
        let payload: Value = serde_json::from_str(payload)
            .map_err(|e| Error::invalid(format!("the payload is not JSON: {e}")))?;
        let fields = self
            .resolve(trigger_id, "resolved", &[("result", payload.to_string())])
            .await?;
        let flow = fields.get("flow").cloned().unwrap_or_default();
        self.emit(
            json!({ "kind": "trigger.fired", "subject": trigger_id, "correlationId": flow,
                    "data": { "payload": payload, "source": "api" } }),
            None,
        )
        .await?;
        let _ = self
            .store()
            .timer_remove(&format!("timeout:{trigger_id}"))
            .await;
        self.route_resolution(trigger_id, &fields).await
    }

    /// Cancel a pending trigger; the waiting step's `wait()` rejects with `TRIGGER_CANCELLED`.
    pub async fn cancel(&self, trigger_id: &str, reason: &str) -> Result<()> {
        self.check_open()?;
        let fields = self
            .resolve(trigger_id, "cancelled", &[("reason", reason.to_owned())])
            .await?;
        self.emit(
            json!({ "kind": "trigger.cancelled", "subject": trigger_id,
                    "correlationId": fields.get("flow"), "data": { "reason": reason } }),
            None,
        )
        .await?;
        let _ = self
            .store()
            .timer_remove(&format!("timeout:{trigger_id}"))
            .await;
        self.route_resolution(trigger_id, &fields).await
    }

    /// Compare-and-set a trigger from pending to `status`; the typed errors of fire/cancel.
    async fn resolve(
        &self,
        trigger_id: &str,
        status: &str,
        extra: &[(&str, String)],
    ) -> Result<HashMap<String, String>> {
        if !is_trigger_id(trigger_id) {
            return Err(Error::new(
                ErrorCode::TriggerNotFound,
                "no such trigger: trigger ids are 32 hexadecimal characters",
            ));
        }
        let mut all = vec![("resolvedMs", now_ms().to_string())];
        all.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
        let r = self
            .store()
            .hash_cas(
                &self.await_key(trigger_id),
                "status",
                Expect::Value("pending"),
                status,
                RESOLVED_TTL_MS,
                &all,
            )
            .await?;
        if !r.exists {
            return Err(Error::new(
                ErrorCode::TriggerNotFound,
                format!("trigger {trigger_id} does not exist or has expired"),
            ));
        }
        if !r.set {
            return Err(Error::new(
                ErrorCode::TriggerResolved,
                format!(
                    "trigger {trigger_id} was already resolved ({})",
                    r.current.unwrap_or_default()
                ),
            ));
        }
        self.store().hash_get_all(&self.await_key(trigger_id)).await
    }

    /// An await this instance may be waiting on changed state: hand its outcome to waiters.
    async fn settle(&self, await_id: &str) -> Result<()> {
        let fields = self.store().hash_get_all(&self.await_key(await_id)).await?;
        let outcome: Option<AwaitOutcome> = match fields.get("status").map(String::as_str) {
            Some("resolved") => {
                if !self.write_resumed(await_id, &fields).await? {
                    return Ok(());
                }
                let result = fields
                    .get("result")
                    .cloned()
                    .unwrap_or_else(|| "null".into());
                Some(Ok(
                    if fields.get("type").map(String::as_str) == Some("event") {
                        record_from_live(&result).map(|r| r.json).unwrap_or(result)
                    } else {
                        result
                    },
                ))
            }
            Some("timeout") => Some(Err(Error::new(
                ErrorCode::AwaitTimeout,
                format!(
                    "the {} await timed out after {} ms",
                    fields.get("type").map(String::as_str).unwrap_or("await"),
                    fields.get("timeoutMs").map(String::as_str).unwrap_or("?")
                ),
            ))),
            Some("cancelled") => Some(Err(Error::new(
                ErrorCode::TriggerCancelled,
                format!(
                    "the trigger was cancelled: {}",
                    fields.get("reason").map(String::as_str).unwrap_or("")
                ),
            ))),
            _ => None,
        };
        if let Some(outcome) = outcome {
            let waiters = lock(&self.inner.waiters)
                .remove(await_id)
                .unwrap_or_default();
            for w in waiters {
                let _ = w.send(outcome.clone());
            }
        }
        Ok(())
    }

    /// A resolved await's `step.resumed` is written by the instance that hands the result to
    /// the step, just before it does, so the event always comes before what the step does next
    /// (when the resolver wrote it, a periodic re-check could hand the result over first). It
    /// is marked `resumed` before it is written, once; the append script marks the events it
    /// resumed itself (event awaits on one Redis and on the embedded store). Returns whether
    /// the result may be handed over now: not when another call is writing the event.
    async fn write_resumed(
        &self,
        await_id: &str,
        fields: &HashMap<String, String>,
    ) -> Result<bool> {
        if fields.contains_key("resumed") {
            return Ok(true);
        }
        let marked = self
            .store()
            .hash_cas(
                &self.await_key(await_id),
                "resumed",
                Expect::Absent,
                "1",
                0,
                &[],
            )
            .await?;
        if !marked.set {
            return Ok(false);
        }
        let ms = |k: &str| -> u64 { fields.get(k).and_then(|v| v.parse().ok()).unwrap_or(0) };
        let kind = fields.get("type").cloned().unwrap_or_default();
        let mut meta = json!({ "awaitType": kind, "jobId": fields.get("job") });
        if kind == "time" {
            meta["lateMs"] = ms("lateMs").into();
        }
        self.emit(
            json!({ "kind": "step.resumed", "subject": fields.get("flow"), "step": fields.get("step"),
                    "data": { "reason": kind, "awaitDuration": ms("resolvedMs").saturating_sub(ms("createdMs")) },
                    "meta": meta }),
            None,
        )
        .await?;
        Ok(true)
    }

    /// After a resolution: the owner continues in place, or the job is taken over.
    async fn route_resolution(
        &self,
        await_id: &str,
        fields: &HashMap<String, String>,
    ) -> Result<()> {
        let job = fields.get("job").cloned().unwrap_or_default();
        let job_fields = self.store().hash_get_all(&self.job_key(&job)).await?;
        let owner = job_fields.get("owner").cloned().unwrap_or_default();
        if owner == self.inner.id {
            return self.settle(await_id).await;
        }
        if self.store().exists(&self.lease_key(&owner)).await? {
            let data = json!({ "await": await_id }).to_string();
            return self
                .notify(
                    &self.inner.keys.inbox_channel(&owner),
                    &owner,
                    "sched.resolved",
                    &data,
                )
                .await;
        }
        self.adopt(&job, &owner).await
    }

    /// Take over a job whose owner is gone and carry it on: run it (if this instance defines
    /// its step), finish recording its retry, or write its unwritten last event.
    async fn adopt(&self, job: &str, old_owner: &str) -> Result<()> {
        let fields = self.store().hash_get_all(&self.job_key(job)).await?;
        let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
        let final_event = match get("status") {
            "completed" | "failed" if !get("finalEvent").is_empty() => Some(get("finalEvent")),
            _ => None,
        };
        if final_event.is_none() && !self.defines(get("step")) {
            return Ok(());
        }
        let ended: u64 = get("endedMs").parse().unwrap_or(0);
        if final_event.is_some() && now_ms().saturating_sub(ended) < self.final_event_grace_ms() {
            // an instance taken for dead (under load, say) may still be writing it
            return Ok(());
        }
        let (mine, theirs) = (self.owned_key(&self.inner.id), self.owned_key(old_owner));
        let taken = self
            .store()
            .hash_cas_with(
                &self.job_key(job),
                ("owner", Expect::Value(old_owner), &self.inner.id),
                &[],
                (&[], 0),
                None,
                &[
                    SetChange {
                        key: &mine,
                        member: job,
                        add: true,
                    },
                    SetChange {
                        key: &theirs,
                        member: job,
                        add: false,
                    },
                ],
            )
            .await?;
        if !taken.set {
            return Ok(());
        }
        if let Some(event) = final_event {
            self.announce_final(job, event).await?;
            return self.end_run(job, get("runner"), None).await;
        }
        match get("status") {
            // the old owner died between recording the retry and announcing it: its retry timer
            // exists; let it run (the step.failed / step.retry events of that attempt are lost)
            "failing" => self.retry_announced(job).await,
            "running" => {
                let attempt = get("attempt").parse().unwrap_or(1);
                self.start_attempt(job, &fields, attempt, Start::Moved, None)
                    .await
            }
            _ => Ok(()),
        }
    }

    /// A due retry of `job` at `attempt`: the job moves from `retrying` (or a `failing` left
    /// behind) at `attempt - 1` to `running` at `attempt` (one compare-and-set), and runs on
    /// its owner, or here if the owner is gone.
    async fn on_retry(&self, job: &str, attempt: u32, late: u64) -> Result<()> {
        let mut fields = self.store().hash_get_all(&self.job_key(job)).await?;
        for _ in 0..2 {
            let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
            let current: u32 = get("attempt").parse().unwrap_or(0);
            if current == attempt && get("status") == "running" {
                // moved by an earlier run of this timer that did not get to the end
                break;
            }
            if current.checked_add(1) != Some(attempt) {
                // a timer of an attempt that has run already: claimed again after its claimer
                // died before removing it
                return Ok(());
            }
            let status = get("status").to_owned();
            match status.as_str() {
                "retrying" => {}
                "failing" => {
                    // Due before the owner wrote step.failed / step.retry. While the owner lives
                    // and has been at it for less than a claim lease, keep the timer (it is
                    // claimed again after its lease); after that, retry without those events.
                    let owner = get("owner").to_owned();
                    let since: u64 = get("failingMs").parse().unwrap_or(0);
                    let owner_alive = owner == self.inner.id
                        || self.store().exists(&self.lease_key(&owner)).await?;
                    if owner_alive && now_ms().saturating_sub(since) < self.claim_lease_ms() {
                        return Err(Error::new(
                            ErrorCode::Internal,
                            "retry due before its events were written",
                        ));
                    }
                }
                _ => return Ok(()),
            }
            let (from, to) = (current.to_string(), attempt.to_string());
            let moved = self
                .store()
                .hash_cas_with(
                    &self.job_key(job),
                    ("attempt", Expect::Value(&from), &to),
                    &[("status", &status)],
                    (&[("status", "running".to_owned())], 0),
                    None,
                    &[],
                )
                .await?;
            if moved.set {
                // what the compare-and-set wrote: no need to read it back
                fields.insert("attempt".into(), to);
                fields.insert("status".into(), "running".into());
                break;
            }
            // the owner moved `failing` on to `retrying` meanwhile: look again, once
            fields = self.store().hash_get_all(&self.job_key(job)).await?;
        }
        let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
        let current: u32 = get("attempt").parse().unwrap_or(0);
        if current != attempt || get("status") != "running" {
            if current.checked_add(1) == Some(attempt)
                && matches!(get("status"), "retrying" | "failing")
            {
                // still due, but the job kept changing under this call: keep the timer
                return Err(Error::new(
                    ErrorCode::Internal,
                    "the job changed while its retry started",
                ));
            }
            return Ok(());
        }
        let owner = get("owner").to_owned();
        if owner == self.inner.id {
            return self
                .start_attempt(job, &fields, attempt, Start::Moved, Some(late))
                .await;
        }
        if self.store().exists(&self.lease_key(&owner)).await? {
            let data = json!({ "job": job, "lateMs": late }).to_string();
            return self
                .notify(
                    &self.inner.keys.inbox_channel(&owner),
                    &owner,
                    "sched.run",
                    &data,
                )
                .await;
        }
        self.adopt(job, &owner).await
    }

    /// A due timer: a retry, an `await.time`, or an await timeout.
    async fn on_timer(&self, payload: &str, due_ms: u64) -> Result<()> {
        let v: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
        let late = now_ms().saturating_sub(due_ms);
        match v.get("type").and_then(Value::as_str) {
            Some("retry") => {
                let job = v["job"].as_str().unwrap_or_default();
                let attempt = v["attempt"].as_u64().unwrap_or(1) as u32;
                self.on_retry(job, attempt, late).await
            }
            Some("time") => {
                let id = v["await"].as_str().unwrap_or_default().to_owned();
                let r = self
                    .store()
                    .hash_cas(
                        &self.await_key(&id),
                        "status",
                        Expect::Value("pending"),
                        "resolved",
                        RESOLVED_TTL_MS,
                        &[
                            ("result", "null".into()),
                            ("resolvedMs", now_ms().to_string()),
                            ("lateMs", late.to_string()),
                        ],
                    )
                    .await?;
                if !r.set {
                    return Ok(());
                }
                let fields = self.store().hash_get_all(&self.await_key(&id)).await?;
                self.route_resolution(&id, &fields).await
            }
            Some("timeout") => {
                let id = v["await"].as_str().unwrap_or_default().to_owned();
                let r = self
                    .store()
                    .hash_cas(
                        &self.await_key(&id),
                        "status",
                        Expect::Value("pending"),
                        "timeout",
                        RESOLVED_TTL_MS,
                        &[
                            ("resolvedMs", now_ms().to_string()),
                            ("lateMs", late.to_string()),
                        ],
                    )
                    .await?;
                if !r.set {
                    return Ok(());
                }
                let fields = self.store().hash_get_all(&self.await_key(&id)).await?;
                let await_type = fields.get("type").cloned().unwrap_or_default();
                let duration: u64 = fields
                    .get("timeoutMs")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                if await_type == "event" {
                    if let Some(kind) = fields.get("kind") {
                        self.store()
                            .hash_del(&self.inner.keys.event_awaits(kind), &[id.as_str()])
                            .await?;
                    }
                }
                self.emit(
                    json!({ "kind": "step.await.timeout", "subject": fields.get("flow"), "step": fields.get("step"),
                            "data": { "awaitType": await_type, "duration": duration },
                            "meta": { "lateMs": late, "jobId": fields.get("job") } }),
                    None,
                )
                .await?;
                if await_type == "trigger" {
                    self.emit(
                        json!({ "kind": "trigger.timeout", "subject": id, "correlationId": fields.get("flow"),
                                "data": { "duration": duration }, "meta": { "lateMs": late } }),
                        None,
                    )
                    .await?;
                }
                self.route_resolution(&id, &fields).await
            }
            _ => Ok(()),
        }
    }

    /// Take over the jobs of instances whose lease has run out.
    async fn reap(&self) -> Result<()> {
        let me = self.inner.id.clone();
        for inst in self
            .store()
            .set_members(&self.inner.keys.instances())
            .await?
        {
            if inst == me || self.store().exists(&self.lease_key(&inst)).await? {
                continue;
            }
            let jobs = self.store().set_members(&self.owned_key(&inst)).await?;
            let mut left = 0;
            for job in jobs {
                let fields = self.store().hash_get_all(&self.job_key(&job)).await?;
                let status = fields.get("status").map(String::as_str);
                let unannounced = fields.get("finalEvent").is_some_and(|e| !e.is_empty());
                match status {
                    Some("running") | Some("failing") | Some("retrying") => {
                        left += 1;
                        self.adopt(&job, &inst).await?;
                    }
                    Some("completed") | Some("failed") if unannounced => {
                        left += 1;
                        self.adopt(&job, &inst).await?;
                    }
                    _ => {
                        self.store()
                            .set_update(&self.owned_key(&inst), &job, false)
                            .await?
                    }
                }
            }
            if left == 0 {
                self.store()
                    .set_update(&self.inner.keys.instances(), &inst, false)
                    .await?;
            }
        }
        Ok(())
    }

    /// Carry on what this instance owns but is not doing: a `running` job of a defined step
    /// that no handler here executes (its start failed, a note about it was lost, or this
    /// instance id was restarted) is started again; an ended job's unwritten last event is
    /// written; jobs gone or ended are dropped from the owned set.
    async fn repair(&self) -> Result<()> {
        lock(&self.inner.ended).clear();
        let owned = self.owned_key(&self.inner.id);
        for job in self.store().set_members(&owned).await? {
            if lock(&self.inner.running).contains_key(&job) {
                continue;
            }
            let Ok(fields) = self.store().hash_get_all(&self.job_key(&job)).await else {
                continue;
            };
            let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
            let _ = match get("status") {
                // in the owned set but owned elsewhere: not this pass's to change (a take-over
                // moves both in one step)
                _ if get("owner") != self.inner.id => Ok(()),
                "running" if self.defines(get("step")) => {
                    let attempt = get("attempt").parse().unwrap_or(1);
                    self.start_attempt(&job, &fields, attempt, Start::Repair, None)
                        .await
                }
                "completed" | "failed" if !get("finalEvent").is_empty() => {
                    match self.announce_final(&job, get("finalEvent")).await {
                        Ok(()) => self.end_run(&job, get("runner"), None).await,
                        Err(e) => Err(e),
                    }
                }
                "completed" | "failed" => self.store().set_update(&owned, &job, false).await,
                _ => Ok(()),
            };
        }
        Ok(())
    }

    /// Re-check the awaits this instance waits on (covers a lost notification).
    async fn recheck(&self) {
        let ids: Vec<String> = lock(&self.inner.waiters).keys().cloned().collect();
        for id in ids {
            let _ = self.settle(&id).await;
        }
        let jobs: Vec<String> = lock(&self.inner.runs).keys().cloned().collect();
        for job in jobs {
            let _ = self.settle_run(&job).await;
        }
    }

    /// Stop background work; pending `run` calls and waits reject with `BUS_CLOSED`.
    pub async fn close(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.signals.stop.notify_waiters();
        for sub in lock(&self.inner.subs).drain(..) {
            sub.unsubscribe();
        }
        lock(&self.inner.runs).clear();
        lock(&self.inner.waiters).clear();
        lock(&self.inner.work_waker).take();
        let _ = self.store().delete(&self.lease_key(&self.inner.id)).await;
    }
}

async fn inbox_loop(inner: Weak<Inner>, sub: Arc<Subscription>) {
    loop {
        let batch = sub.next_batch(1000).await;
        let Some(inner) = inner.upgrade() else { return };
        let s = Scheduler { inner };
        if s.inner.closed.load(Ordering::Acquire) || batch.end.is_some() {
            return;
        }
        for item in batch.items {
            let Item::Event(rec) = item else { continue };
            let Ok(v) = serde_json::from_str::<Value>(&rec.json) else {
                continue;
            };
            match v["kind"].as_str() {
                Some("sched.resolved") => {
                    if let Some(id) = v["data"]["await"].as_str() {
                        let _ = s.settle(id).await;
                    }
                }
                Some("sched.ended") => {
                    if let Some(job) = v["data"]["job"].as_str() {
                        let _ = s.settle_run(job).await;
                    }
                }
                Some("sched.run") => {
                    let job = v["data"]["job"].as_str().unwrap_or_default().to_owned();
                    let late = v["data"]["lateMs"].as_u64();
                    if let Ok(fields) = s.store().hash_get_all(&s.job_key(&job)).await {
                        let attempt = fields
                            .get("attempt")
                            .and_then(|a| a.parse().ok())
                            .unwrap_or(1);
                        if fields.get("status").map(String::as_str) == Some("running") {
                            let _ = s
                                .start_attempt(&job, &fields, attempt, Start::Moved, late)
                                .await;
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

async fn wake_loop(inner: Weak<Inner>, sub: Arc<Subscription>) {
    loop {
        let batch = sub.next_batch(1000).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) || batch.end.is_some() {
            return;
        }
        inner.signals.timer_wake.notify_one();
    }
}

async fn timer_loop(inner: Weak<Inner>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let s = Scheduler { inner: strong };
        if s.inner.closed.load(Ordering::Acquire) {
            return;
        }
        let claimed = s
            .store()
            .timer_claim(now_ms(), CLAIM_BATCH, s.claim_lease_ms())
            .await;
        let sleep_for = match claimed {
            Err(e) if e.code == ErrorCode::BusClosed => return,
            Err(_) => {
                backoff = (backoff * 2).min(Duration::from_secs(2));
                backoff
            }
            Ok(timers) => {
                backoff = Duration::from_millis(50);
                let full = timers.len() == CLAIM_BATCH;
                for t in timers {
                    if s.on_timer(&t.payload, t.due_ms).await.is_ok() {
                        let _ = s.store().timer_remove(&t.id).await;
                    }
                }
                if full {
                    continue;
                }
                match s.store().timer_next().await {
                    Ok(Some(next)) => {
                        Duration::from_millis(next.saturating_sub(now_ms())).min(TIMER_RECHECK)
                    }
                    Ok(None) => TIMER_RECHECK,
                    Err(_) => backoff,
                }
            }
        };
        let signals = s.inner.signals.clone();
        drop(s);
        if sleep_for.is_zero() {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(sleep_for) => {}
            _ = signals.timer_wake.notified() => {}
            _ = signals.stop.notified() => return,
        }
    }
}

/// Lease ticks between two re-checks of every pending await (a belt to the notifications,
/// which can only be lost across a Pub/Sub reconnect — and a reconnect triggers one at once).
const RECHECK_EVERY_TICKS: u64 = 36;

/// Lease ticks between two repair passes when nothing failed (4 × `leaseMs`).
const REPAIR_EVERY_TICKS: u64 = 12;

async fn lease_loop(inner: Weak<Inner>) {
    let mut tick: u64 = 0;
    let mut reconnects_seen = 0;
    let mut next = tokio::time::Instant::now();
    loop {
        let (period, signals) = {
            let Some(i) = inner.upgrade() else { return };
            (
                Duration::from_millis((i.lease_ms / 3).max(30)),
                i.signals.clone(),
            )
        };
        if next <= tokio::time::Instant::now() {
            next = tokio::time::Instant::now() + period;
        }
        let repair_only = tokio::select! {
            _ = tokio::time::sleep_until(next) => false,
            _ = signals.repair.notified() => true,
            _ = signals.stop.notified() => return,
        };
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let s = Scheduler { inner: strong };
        if s.inner.closed.load(Ordering::Acquire) {
            return;
        }
        if repair_only {
            let _ = s.repair().await;
            continue;
        }
        let _ = s
            .store()
            .lease_renew(&s.lease_key(&s.inner.id), s.inner.lease_ms)
            .await;
        tick += 1;
        if tick.is_multiple_of(3) {
            // taken for dead once (and dropped from the list by a reaper), an instance that
            // lives on must be listed again, or its later jobs would not be found when it dies
            let _ = s
                .store()
                .set_update(&s.inner.keys.instances(), &s.inner.id, true)
                .await;
        }
        let reconnects = s.inner.bus.reconnects();
        let reconnected = reconnects != reconnects_seen;
        if tick.is_multiple_of(3) {
            // what it guards against needs no more than this period: keep it small
            lock(&s.inner.ended).clear();
            let _ = s.reap().await;
            // after a failed store call or a Pub/Sub reconnect (a note may be lost), and now and
            // then in any case
            if s.inner.dirty.swap(false, Ordering::AcqRel)
                || reconnected
                || tick.is_multiple_of(REPAIR_EVERY_TICKS)
            {
                let _ = s.repair().await;
            }
        }
        if reconnected || tick.is_multiple_of(RECHECK_EVERY_TICKS) {
            reconnects_seen = reconnects;
            s.recheck().await;
        }
    }
}

/// The stream reference of a flow (for tests and hosts).
pub fn flow_stream(flow: &str) -> Result<StreamRef> {
    StreamRef::new("flow", flow)
}
