//! Durable timers: what each one does (a retry, an `await.time`, an await's timeout), the
//! loop that claims them when due, and their effects.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::events;
use super::model::{field, Await, AwaitStatus, AwaitType};
use super::{Instance, Scheduler};
use crate::clock::now_ms;
use crate::error::{ErrorCode, Result};
use crate::store::awaits::RESOLVED_TTL_MS;
use crate::store::{ClaimedTimer, Expect};

/// The latest due time a timer has: 9999-12-31T23:59:59.999Z, in Unix ms. Later times, and
/// delays that would pass it, are kept at it — the far future — instead of wrapping around;
/// events show it as a four-digit year.
pub const FAR_FUTURE_MS: u64 = 253_402_300_799_999;

/// `delay_ms` after `now_ms`, kept at `FAR_FUTURE_MS` at most.
pub(super) fn due_after(now_ms: u64, delay_ms: u64) -> u64 {
    now_ms.saturating_add(delay_ms).min(FAR_FUTURE_MS)
}

/// Timers claimed per store call.
const CLAIM_BATCH: usize = 512;
/// Most timers one instance carries out at once: two claims' worth, so that a burst due at
/// one moment is claimed at once, not as earlier timers finish.
const TIMER_CONCURRENCY: usize = 2 * CLAIM_BATCH;
/// Longest sleep of the timer loop without a wake-up (a safety re-check).
const TIMER_RECHECK: Duration = Duration::from_secs(30);

/// What a timer does when it is due (its payload, as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(super) enum TimerTask {
    /// Start attempt `attempt` of `job`.
    Retry { job: String, attempt: u32 },
    /// Resolve an `await.time`.
    Time {
        #[serde(rename = "await")]
        await_id: String,
    },
    /// Time an await out.
    Timeout {
        #[serde(rename = "await")]
        await_id: String,
    },
    /// Write the events a resolution carries, if the resolver did not (it failed or died).
    Events {
        #[serde(rename = "await")]
        await_id: String,
    },
}

/// What became of a due timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimerDone {
    /// Its effect happened (or can no longer happen): remove it.
    Done,
    /// Not yet: it is claimed again after its claim lease.
    Keep,
}

impl TimerTask {
    /// The timer's id: one timer per task.
    pub fn id(&self) -> String {
        match self {
            TimerTask::Retry { job, attempt } => format!("retry:{job}:{attempt}"),
            TimerTask::Time { await_id } => format!("time:{await_id}"),
            TimerTask::Timeout { await_id } => format!("timeout:{await_id}"),
            TimerTask::Events { await_id } => format!("events:{await_id}"),
        }
    }

    /// Its payload.
    pub fn payload(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl Scheduler {
    /// How long a claimed timer stays with its claimer before any instance may claim it again.
    pub(super) fn claim_lease_ms(&self) -> u64 {
        self.instance.lease_ms.max(1000)
    }

    /// Add the timer of `task`, due at `due`, and wake every timer loop.
    pub(super) async fn add_timer(&self, task: &TimerTask, due: u64) -> Result<()> {
        self.store()
            .timer_add(&task.id(), due, &task.payload())
            .await?;
        self.wake_timers(due).await
    }

    /// A timer due at `due` was added: wake the timer loops of every instance.
    pub(super) async fn wake_timers(&self, due: u64) -> Result<()> {
        self.instance.wakeups.timers.notify_one();
        self.tell_all_timer_added(due).await
    }

    /// Carry out a claimed timer (claimed at `claimed_ms`) and remove it once done.
    async fn carry_out(&self, t: ClaimedTimer, claimed_ms: u64) {
        // how late it fired: when it was claimed, not when its turn came in the batch
        let late = claimed_ms.saturating_sub(t.due_ms);
        self.instance.bus.timer_counters().fired(late);
        let what = format!("timer {}", t.id);
        let done = self.on_timer(&t.payload, late).await;
        if self.report("TIMER_FAILED", &what, done) == Some(TimerDone::Done) {
            // not removed, it is claimed again after its lease: harmless
            let removed = self.store().timer_remove(&t.id).await;
            self.report("TIMER_FAILED", &format!("removing {what}"), removed);
        }
    }

    /// A due timer, `late` ms after its time: a retry, an `await.time`, an await timeout or
    /// a resolution's events.
    async fn on_timer(&self, payload: &str, late: u64) -> Result<TimerDone> {
        let done = match serde_json::from_str::<TimerTask>(payload) {
            Ok(TimerTask::Retry { job, attempt }) => {
                return self.on_retry(&job, attempt, late).await
            }
            Ok(TimerTask::Time { await_id }) => self.resolve_time(&await_id, late).await,
            Ok(TimerTask::Timeout { await_id }) => self.time_out(&await_id, late).await,
            Ok(TimerTask::Events { await_id }) => self.write_resolution_events(&await_id).await,
            // a timer this version does not know: nothing to do
            Err(_) => Ok(()),
        };
        done.map(|()| TimerDone::Done)
    }

    /// An `await.time` is due: resolve it (once) and route the resume.
    async fn resolve_time(&self, id: &str, late: u64) -> Result<()> {
        let r = self
            .store()
            .hash_cas(
                &self.await_key(id),
                field::STATUS,
                Expect::Value(AwaitStatus::Pending.as_str()),
                AwaitStatus::Resolved.as_str(),
                RESOLVED_TTL_MS,
                &[
                    (field::RESULT, "null".into()),
                    (field::RESOLVED_MS, now_ms().to_string()),
                    (field::LATE_MS, late.to_string()),
                ],
            )
            .await?;
        if !r.set {
            return Ok(());
        }
        let state = self.read_await(id).await?;
        self.route_resolution(id, &state).await
    }

    /// An await's timeout is due: time it out (once), announce it and route the outcome.
    async fn time_out(&self, id: &str, late: u64) -> Result<()> {
        let state = self.read_await(id).await?;
        if state.status != Some(AwaitStatus::Pending) {
            return Ok(());
        }
        if state.await_type == Some(AwaitType::Event) {
            if let Some(kind) = &state.event_kind {
                // an event stored from now on no longer resolves it (harmless if the timeout
                // loses the race below: the await is resolved then)
                self.store()
                    .hash_del(&self.keys().event_awaits(kind), &[id])
                    .await?;
            }
        }
        let mut announced = vec![events::await_timeout(&state, late)];
        if state.await_type == Some(AwaitType::Trigger) {
            announced.push(events::trigger_timeout(id, &state, late));
        }
        let extra = vec![
            (field::RESOLVED_MS, now_ms().to_string()),
            (field::LATE_MS, late.to_string()),
        ];
        let resolved = self
            .resolve_await(id, AwaitStatus::Timeout, extra, &announced)
            .await?;
        if !resolved.set {
            return Ok(());
        }
        let state = Await {
            status: Some(AwaitStatus::Timeout),
            pending_events: announced,
            ..state
        };
        self.publish_resolution(id, &state).await
    }
}

/// Claim due timers and carry them out, until the scheduler is closed or dropped.
pub(super) async fn timer_loop(instance: Weak<Instance>) {
    let running = Arc::new(Semaphore::new(TIMER_CONCURRENCY));
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(strong) = instance.upgrade() else {
            return;
        };
        let s = Scheduler { instance: strong };
        if s.instance.closed.load(Ordering::Acquire) {
            return;
        }
        let claimed = s
            .store()
            .timer_claim(now_ms(), CLAIM_BATCH, s.claim_lease_ms())
            .await;
        let sleep_for = match claimed {
            Err(e) if e.code == ErrorCode::BusClosed => return,
            Err(e) => {
                s.report::<()>("TIMER_FAILED", "claiming due timers", Err(e));
                backoff = (backoff * 2).min(Duration::from_secs(2));
                backoff
            }
            Ok(timers) => {
                backoff = Duration::from_millis(50);
                let claimed_ms = now_ms();
                let full = timers.len() == CLAIM_BATCH;
                // carried out together (timers due at one moment are not served one by one),
                // at most TIMER_CONCURRENCY at once; the next batch is claimed meanwhile
                for t in timers {
                    let Ok(slot) = running.clone().acquire_owned().await else {
                        return;
                    };
                    let s = s.clone();
                    tokio::spawn(async move {
                        s.carry_out(t, claimed_ms).await;
                        drop(slot);
                    });
                }
                if full {
                    continue;
                }
                match s.store().timer_next().await {
                    Ok(Some(next)) => {
                        Duration::from_millis(next.saturating_sub(now_ms())).min(TIMER_RECHECK)
                    }
                    Ok(None) => TIMER_RECHECK,
                    Err(e) => {
                        s.report::<()>("TIMER_FAILED", "looking up the next timer", Err(e));
                        backoff
                    }
                }
            }
        };
        let wakeups = s.instance.wakeups.clone();
        drop(s);
        if sleep_for.is_zero() {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(sleep_for) => {}
            _ = wakeups.timers.notified() => {}
            _ = wakeups.stop.notified() => return,
        }
    }
}
