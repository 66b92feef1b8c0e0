//! Durable awaits: a step's `await.time` and `await.event` (and the await behind a trigger)
//! are created once per call (found again on a replay), registered (timer, event match),
//! and, once resolved, settled: their outcome is handed to the waiting handler on the job's
//! owner — here, by a note, or by a take-over when the owner is gone.

use serde_json::Value;
use tokio::sync::oneshot;

use super::events;
use super::json;
use super::model::{field, Await, AwaitSpec, AwaitStatus, AwaitType, Job};
use super::notes::Note;
use super::timers::{due_after, TimerTask, FAR_FUTURE_MS};
use super::{lock, AwaitOutcome, Scheduler};
use crate::clock::now_ms;
use crate::error::{Error, ErrorCode, Result};
use crate::event::{self, record_from_live};
use crate::store::awaits::RESOLVED_TTL_MS;
use crate::store::{CasResult, Expect, NewTimer};

/// An await as a call found or made it.
pub(super) struct AwaitCall {
    /// Its events are still to be written (a new await, or a replay of one whose first run
    /// did not get that far).
    pub announce: bool,
    /// It is pending: its registration (timer, event match) is made, or made again.
    pub pending: bool,
    pub rx: oneshot::Receiver<AwaitOutcome>,
    /// The job it belongs to.
    pub job: Job,
    /// When the await was first created (ms): timeouts count from there, also on a replay.
    pub created_ms: u64,
    /// The await as an earlier call of this attempt made it (`None`: made by this call).
    pub earlier: Option<Await>,
}

/// When an `await.time` resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// At this Unix time (ms).
    At(u64),
    /// This many ms after the first call (a replay of the call keeps the first call's time).
    After(u64),
}

impl Scheduler {
    pub(super) fn await_key(&self, id: &str) -> String {
        self.keys().await_state(id)
    }

    /// The await as the store holds it.
    pub(super) async fn read_await(&self, id: &str) -> Result<Await> {
        Ok(Await::from_fields(
            self.store().hash_get_all(&self.await_key(id)).await?,
        ))
    }

    fn await_id(job: &str, attempt: u32, seq: u32) -> String {
        format!("{job}:{attempt}:{seq}")
    }

    /// Create the await hash (or find the one a previous run of this attempt made) and
    /// register a waiter.
    pub(super) async fn open_await(
        &self,
        await_id: &str,
        job: &str,
        attempt: u32,
        seq: u32,
        spec: &AwaitSpec,
    ) -> Result<AwaitCall> {
        let (tx, rx) = oneshot::channel();
        lock(&self.instance.waiters)
            .entry(await_id.to_owned())
            .or_default()
            .push(tx);
        let now = now_ms();
        let opened: Result<(bool, bool, Job, Option<Await>)> = async {
            let record = self.read_job(job).await?;
            if record.status.is_none() {
                return Err(Error::argument(format!("job '{job}' does not exist")));
            }
            if record.is_flow {
                self.record_call(job, attempt, seq, &spec.call_name())
                    .await?;
            }
            let mut all = vec![
                (field::JOB, job.to_owned()),
                (field::FLOW, record.flow.clone()),
                (field::STEP, record.step.clone()),
                (field::ATTEMPT, attempt.to_string()),
                (field::SEQ, seq.to_string()),
                (field::OWNER, self.instance.id.clone()),
                (field::CREATED_MS, now.to_string()),
            ];
            all.extend(spec.fields());
            let key = self.await_key(await_id);
            let created = self
                .store()
                .hash_cas(
                    &key,
                    field::STATUS,
                    Expect::Absent,
                    AwaitStatus::Pending.as_str(),
                    0,
                    &all,
                )
                .await?;
            if created.set {
                return Ok((true, true, record, None));
            }
            // A replay: this instance now owns the await; settle at once if already resolved.
            self.store()
                .hash_set(&key, &[(field::OWNER, self.instance.id.clone())])
                .await?;
            if created.current.as_deref() != Some(AwaitStatus::Pending.as_str()) {
                self.settle(await_id).await?;
                return Ok((false, false, record, None));
            }
            let state = self.read_await(await_id).await?;
            Ok((!state.announced, true, record, Some(state)))
        }
        .await;
        match opened {
            Ok((announce, pending, job, earlier)) => Ok(AwaitCall {
                announce,
                pending,
                rx,
                job,
                created_ms: earlier.as_ref().and_then(|e| e.created_ms).unwrap_or(now),
                earlier,
            }),
            Err(e) => {
                lock(&self.instance.waiters).remove(await_id);
                Err(e)
            }
        }
    }

    /// The events of an await are written: a replay does not write them again. `timer` is
    /// added in the same step; returns whether it was.
    pub(super) async fn await_announced(
        &self,
        await_id: &str,
        job: &str,
        timer: Option<NewTimer<'_>>,
    ) -> Result<bool> {
        self.store()
            .hash_cas_with(
                &self.await_key(await_id),
                (field::ANNOUNCED, Expect::Absent, "1"),
                &[(field::JOB, job)],
                (&[], 0),
                timer,
                &[],
            )
            .await
            .map(|r| r.set)
    }

    /// Wait for an await of attempt `attempt` of `job` to resolve; while it waits, the
    /// handler's slot is free (see `WorkQueue`).
    pub(super) async fn wait(
        &self,
        job: &str,
        attempt: u32,
        mut rx: oneshot::Receiver<AwaitOutcome>,
    ) -> Result<String> {
        match rx.try_recv() {
            // resolved already (a replay): the handler goes on without giving its slot up
            Ok(outcome) => return outcome,
            Err(oneshot::error::TryRecvError::Closed) => return Err(Error::closed()),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        self.instance.work.park(job, attempt);
        let outcome = rx.await.unwrap_or_else(|_| Err(Error::closed()));
        self.instance.work.unpark(job, attempt).await;
        outcome
    }

    /// `ctx.await.time`: resolves (to `null`) when `due`, durably. The first call of an
    /// attempt fixes the time: a replay resumes then, whatever it asks for.
    pub async fn await_time(&self, job: &str, attempt: u32, seq: u32, due: Due) -> Result<String> {
        self.check_open()?;
        let id = Self::await_id(job, attempt, seq);
        let asked = match due {
            Due::At(at) => at.min(FAR_FUTURE_MS),
            Due::After(ms) => due_after(now_ms(), ms),
        };
        let spec = AwaitSpec::Time { resume_at: asked };
        let o = self.open_await(&id, job, attempt, seq, &spec).await?;
        let resume_at_ms = o
            .earlier
            .as_ref()
            .and_then(|e| e.resume_at)
            .unwrap_or(asked);
        // Each step below is repeated by a replay while the await is pending, so an instance
        // dying between them leaves nothing undone (registering twice is harmless).
        if o.pending {
            let task = TimerTask::Time {
                await_id: id.clone(),
            };
            let (timer_id, payload) = (task.id(), task.payload());
            let timer = NewTimer {
                id: &timer_id,
                due_ms: resume_at_ms,
                payload: &payload,
            };
            let mut added = false;
            if o.announce {
                let event = events::await_time(&o.job.flow, &o.job.step, resume_at_ms, job);
                self.instance.bus.emit(&event, None).await?;
                added = self.await_announced(&id, job, Some(timer)).await?;
            }
            if !added {
                self.store()
                    .timer_add(timer.id, timer.due_ms, timer.payload)
                    .await?;
            }
            self.wake_timers(resume_at_ms).await?;
        }
        self.wait(job, attempt, o.rx).await
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
        let cond = json::checked(
            "match",
            if condition.is_empty() {
                "{}"
            } else {
                condition
            },
        )?;
        let readable: Value = json::read_lossy(cond.get())
            .map_err(|e| Error::argument(format!("match is not JSON: {e}")))?;
        crate::matching::validate(&readable)?;
        let id = Self::await_id(job, attempt, seq);
        let spec = AwaitSpec::Event {
            kind: kind.to_owned(),
            condition: cond.get().to_owned(),
            timeout_ms,
        };
        let o = self.open_await(&id, job, attempt, seq, &spec).await?;
        // as in `await_time`; the match is registered before the event announcing the await
        if o.pending {
            self.store()
                .hash_set(
                    &self.keys().event_awaits(kind),
                    &[(id.as_str(), cond.get().to_owned())],
                )
                .await?;
            if let Some(t) = timeout_ms {
                let task = TimerTask::Timeout {
                    await_id: id.clone(),
                };
                self.add_timer(&task, due_after(o.created_ms, t)).await?;
            }
            if o.announce {
                let event =
                    events::await_event(&o.job.flow, &o.job.step, kind, &cond, timeout_ms, job);
                self.instance.bus.emit(&event, None).await?;
                self.await_announced(&id, job, None).await?;
            }
        }
        self.wait(job, attempt, o.rx).await
    }

    /// Resolve the pending await `id` to `status` (a compare-and-set from `pending`, so one
    /// resolution wins), setting `extra`. The events the resolution writes go into the await
    /// in the same step, with a timer that writes them if the caller does not get to it
    /// (`publish_resolution` writes them, then routes the outcome).
    pub(super) async fn resolve_await(
        &self,
        id: &str,
        status: AwaitStatus,
        mut extra: Vec<(&str, String)>,
        events: &[String],
    ) -> Result<CasResult> {
        let task = TimerTask::Events {
            await_id: id.to_owned(),
        };
        let (timer_id, payload) = (task.id(), task.payload());
        let timer = (!events.is_empty()).then(|| NewTimer {
            id: &timer_id,
            due_ms: due_after(now_ms(), self.writer_grace_ms()),
            payload: &payload,
        });
        if !events.is_empty() {
            extra.push((field::PENDING_EVENTS, Await::encode_events(events)));
        }
        self.store()
            .hash_cas_with(
                &self.await_key(id),
                (
                    field::STATUS,
                    Expect::Value(AwaitStatus::Pending.as_str()),
                    status.as_str(),
                ),
                &[],
                (&extra, RESOLVED_TTL_MS),
                timer,
                &[],
            )
            .await
    }

    /// After `resolve_await` won: write the resolution's events, then hand the outcome on.
    /// When the events cannot be written now, the await keeps them and its timer, due at
    /// once, writes them (and hands the outcome on) when the store takes them: the
    /// resolution stands, and nothing of it is lost.
    pub(super) async fn publish_resolution(&self, id: &str, state: &Await) -> Result<()> {
        match self.write_pending_events(id, &state.pending_events).await {
            Ok(()) => self.route_resolution(id, state).await,
            Err(e) => {
                self.instance.bus.warn(
                    "EVENTS_DEFERRED",
                    format!("the events of await {id} are written later"),
                    Some(e.to_string()),
                );
                let task = TimerTask::Events {
                    await_id: id.to_owned(),
                };
                let retried = self.add_timer(&task, now_ms()).await;
                self.repair_on_error(retried)
            }
        }
    }

    /// The events timer of an await is due: write what its resolver did not, then hand the
    /// outcome on.
    pub(super) async fn write_resolution_events(&self, id: &str) -> Result<()> {
        let state = self.read_await(id).await?;
        if state.pending_events.is_empty() {
            return Ok(());
        }
        self.write_pending_events(id, &state.pending_events).await?;
        self.route_resolution(id, &state).await
    }

    /// Write `pending` (an await's unwritten events) in order, dropping each from the await
    /// once written: dying in between writes that one event twice, never zero times.
    async fn write_pending_events(&self, id: &str, pending: &[String]) -> Result<()> {
        for (i, event) in pending.iter().enumerate() {
            if let Err(e) = self.instance.bus.emit(event, None).await {
                // one refused for good is not tried again
                if !matches!(e.code, ErrorCode::PayloadTooLarge | ErrorCode::EventInvalid) {
                    return Err(e);
                }
            }
            let dropped = self
                .store()
                .hash_cas(
                    &self.await_key(id),
                    field::PENDING_EVENTS,
                    Expect::Value(&Await::encode_events(&pending[i..])),
                    &Await::encode_events(&pending[i + 1..]),
                    0,
                    &[],
                )
                .await?;
            if !dropped.set {
                // another instance is writing them (this one was taken for gone)
                return Ok(());
            }
        }
        if !pending.is_empty() {
            let task = TimerTask::Events {
                await_id: id.to_owned(),
            };
            let removed = self.store().timer_remove(&task.id()).await;
            if let Err(e) = removed {
                // harmless: due, it finds nothing to write
                self.instance.bus.warn(
                    "TIMER_FAILED",
                    format!("the events timer of await {id} was not removed"),
                    Some(e.to_string()),
                );
            }
        }
        Ok(())
    }

    /// An await this instance may be waiting on changed state: hand its outcome to waiters.
    pub(super) async fn settle(&self, await_id: &str) -> Result<()> {
        let state = self.read_await(await_id).await?;
        if !state.pending_events.is_empty() {
            // its events come first: whoever writes them hands the outcome on afterwards
            return Ok(());
        }
        let outcome: AwaitOutcome = match state.status {
            Some(AwaitStatus::Resolved) => {
                if !self.write_resumed(await_id, &state).await? {
                    return Ok(());
                }
                if state.await_type == Some(AwaitType::Event) && state.timeout_ms.is_some() {
                    // the store resolved it with its matching event: its timeout is moot
                    self.remove_timeout(await_id).await;
                }
                let result = state.result.unwrap_or_else(|| "null".into());
                Ok(if state.await_type == Some(AwaitType::Event) {
                    record_from_live(&result).map(|r| r.json).unwrap_or(result)
                } else {
                    result
                })
            }
            Some(AwaitStatus::Timeout) => Err(Error::new(
                ErrorCode::AwaitTimeout,
                format!(
                    "the {} await timed out after {} ms",
                    state.type_name(),
                    state
                        .timeout_ms
                        .map_or_else(|| "?".to_owned(), |t| t.to_string())
                ),
            )),
            Some(AwaitStatus::Cancelled) if state.await_type == Some(AwaitType::Trigger) => {
                Err(Error::new(
                    ErrorCode::TriggerCancelled,
                    format!("the trigger was cancelled: {}", state.reason),
                ))
            }
            // only a cancelled flow run cancels its other awaits
            Some(AwaitStatus::Cancelled) => Err(Error::new(
                ErrorCode::FlowCancelled,
                format!("the flow run was cancelled: {}", state.reason),
            )),
            Some(AwaitStatus::Pending) | None => return Ok(()),
        };
        let waiters = lock(&self.instance.waiters)
            .remove(await_id)
            .unwrap_or_default();
        for w in waiters {
            // a waiter that gave up (its handler was interrupted) needs nothing
            let _ = w.send(outcome.clone());
        }
        Ok(())
    }

    /// Drop the timeout timer of a resolved await. Failing is harmless (reported as
    /// `TIMER_FAILED`): due, the timer finds the await resolved and does nothing.
    pub(super) async fn remove_timeout(&self, await_id: &str) {
        let timeout = TimerTask::Timeout {
            await_id: await_id.to_owned(),
        };
        let removed = self.store().timer_remove(&timeout.id()).await;
        self.report(
            "TIMER_FAILED",
            &format!("removing the timeout of await {await_id}"),
            removed,
        );
    }

    /// A resolved await's `step.resumed` is written by the instance that hands the result to
    /// the step, just before it does, so the event always comes before what the step does next
    /// (when the resolver wrote it, a periodic re-check could hand the result over first). It
    /// is marked `resumed` before it is written, once; the append script marks the events it
    /// resumed itself (event awaits on one Redis and on the embedded store). Returns whether
    /// the result may be handed over now: not when another call is writing the event.
    async fn write_resumed(&self, await_id: &str, state: &Await) -> Result<bool> {
        if state.resumed {
            return Ok(true);
        }
        let marked = self
            .store()
            .hash_cas(
                &self.await_key(await_id),
                field::RESUMED,
                Expect::Absent,
                "1",
                0,
                &[],
            )
            .await?;
        if !marked.set {
            return Ok(false);
        }
        self.instance
            .bus
            .emit(&events::step_resumed(state), None)
            .await?;
        Ok(true)
    }

    /// After a resolution: the owner continues in place, or the job is taken over.
    pub(super) async fn route_resolution(&self, await_id: &str, state: &Await) -> Result<()> {
        let record = self.read_job(&state.job).await?;
        let owner = record.owner;
        if owner == self.instance.id {
            return self.settle(await_id).await;
        }
        if self.store().exists(&self.lease_key(&owner)).await? {
            let note = Note::Resolved {
                await_id: await_id.to_owned(),
            };
            return self.tell(&owner, note).await;
        }
        self.adopt(&state.job, &owner).await
    }
}
