//! Triggers: an await a step registers under a fresh 128-bit id (a capability) that anyone
//! holding the id can fire or cancel, exactly once, from any process.

use super::events;
use super::json;
use super::model::{field, Await, AwaitSpec, AwaitStatus};
use super::timers::{due_after, TimerTask};
use super::{lock, random_id, Scheduler};
use crate::clock::now_ms;
use crate::error::{Error, ErrorCode, Result};
use crate::event;
use crate::store::Expect;

/// Whether `id` has the shape of a trigger id (32 lowercase hex characters).
fn is_trigger_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Scheduler {
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
        let payload = payload.map(|p| json::checked("payload", p)).transpose()?;
        let slot = field::trigger_slot(attempt, seq);
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
        let spec = AwaitSpec::Trigger {
            trigger_type: trigger_type.to_owned(),
            timeout_ms,
        };
        let o = self.open_await(&id, job, attempt, seq, &spec).await?;
        lock(&self.instance.waiters).remove(&id);
        // as in `await_time`
        if o.pending {
            let flow = &o.job.flow;
            if let Some(t) = timeout_ms {
                let task = TimerTask::Timeout {
                    await_id: id.clone(),
                };
                self.add_timer(&task, due_after(o.created_ms, t)).await?;
            }
            if o.announce {
                let registered = events::trigger_registered(&id, flow, trigger_type, timeout_ms);
                self.instance.bus.emit(&registered, None).await?;
                let waiting = events::await_trigger(
                    flow,
                    &o.job.step,
                    &id,
                    trigger_type,
                    payload.as_deref(),
                    timeout_ms,
                    job,
                );
                self.instance.bus.emit(&waiting, None).await?;
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
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&self.instance.waiters)
            .entry(trigger_id.to_owned())
            .or_default()
            .push(tx);
        let state = self.read_await(trigger_id).await?;
        let Some(status) = state.status else {
            lock(&self.instance.waiters).remove(trigger_id);
            return Err(Error::new(
                ErrorCode::TriggerNotFound,
                format!("trigger {trigger_id} does not exist"),
            ));
        };
        if status != AwaitStatus::Pending {
            self.settle(trigger_id).await?;
        }
        self.wait(&state.job, state.attempt, rx).await
    }

    /// Fire a trigger: exactly one `fire` (or timeout, or cancel) wins.
    pub async fn fire(&self, trigger_id: &str, payload: &str) -> Result<()> {
        self.check_open()?;
        let max = self.instance.bus.max_event_bytes();
        if payload.len() > max {
            return Err(Error::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the payload is {} bytes; the limit is {max} (maxEventBytes)",
                    payload.len()
                ),
            ));
        }
        let payload =
            json::checked("the payload", payload).map_err(|e| Error::invalid(e.message))?;
        let state = self.pending_trigger(trigger_id, Resolver::Fire).await?;
        let fired = vec![events::trigger_fired(trigger_id, &state.flow, &payload)];
        let extra = vec![
            (field::RESOLVED_MS, now_ms().to_string()),
            (field::RESULT, payload.get().to_owned()),
        ];
        self.resolve_trigger(trigger_id, state, AwaitStatus::Resolved, extra, fired)
            .await
    }

    /// Cancel a pending trigger; the waiting step's `wait()` rejects with `TRIGGER_CANCELLED`.
    pub async fn cancel(&self, trigger_id: &str, reason: &str) -> Result<()> {
        self.check_open()?;
        let state = self.pending_trigger(trigger_id, Resolver::Cancel).await?;
        // both in the same compare-and-set: the trigger's stream and the waiting flow's say so
        let cancelled = vec![
            events::trigger_cancelled(trigger_id, &state.flow, reason),
            events::step_await_cancelled(trigger_id, &state, reason),
        ];
        let extra = vec![
            (field::RESOLVED_MS, now_ms().to_string()),
            (field::REASON, reason.to_owned()),
        ];
        self.resolve_trigger(trigger_id, state, AwaitStatus::Cancelled, extra, cancelled)
            .await
    }

    /// The trigger `trigger_id`, pending (the typed errors of fire and cancel otherwise).
    async fn pending_trigger(&self, trigger_id: &str, by: Resolver) -> Result<Await> {
        if !is_trigger_id(trigger_id) {
            return Err(Error::new(
                ErrorCode::TriggerNotFound,
                "no such trigger: trigger ids are 32 hexadecimal characters",
            ));
        }
        let state = self.read_await(trigger_id).await?;
        match state.status {
            None => Err(not_found(trigger_id)),
            Some(AwaitStatus::Pending) => Ok(state),
            Some(other) => Err(resolved_already(trigger_id, Some(other), by)),
        }
    }

    /// Resolve a pending trigger to `status` with its `events`; then write them, stop its
    /// timeout and hand the outcome to its step.
    async fn resolve_trigger(
        &self,
        trigger_id: &str,
        state: Await,
        status: AwaitStatus,
        extra: Vec<(&str, String)>,
        events: Vec<String>,
    ) -> Result<()> {
        let r = self
            .resolve_await(trigger_id, status, extra, &events)
            .await?;
        if !r.exists {
            return Err(not_found(trigger_id));
        }
        if !r.set {
            let current = r.current.unwrap_or_default();
            let by = if status == AwaitStatus::Cancelled {
                Resolver::Cancel
            } else {
                Resolver::Fire
            };
            return Err(resolved_already(
                trigger_id,
                AwaitStatus::parse(&current),
                by,
            ));
        }
        self.remove_timeout(trigger_id).await;
        let state = Await {
            status: Some(status),
            pending_events: events,
            ..state
        };
        self.publish_resolution(trigger_id, &state).await
    }
}

fn not_found(trigger_id: &str) -> Error {
    Error::new(
        ErrorCode::TriggerNotFound,
        format!("trigger {trigger_id} does not exist or has expired"),
    )
}

/// Who tried to resolve a trigger that is not pending any more.
#[derive(Clone, Copy)]
enum Resolver {
    Fire,
    Cancel,
}

/// What a fire or a cancel meets on a trigger that ended already. A fire that comes after a
/// cancel rejects with `TRIGGER_CANCELLED` (the step it would resume is not waiting any
/// more); anything else with `TRIGGER_RESOLVED`, saying how the trigger ended.
fn resolved_already(trigger_id: &str, status: Option<AwaitStatus>, by: Resolver) -> Error {
    if matches!((by, status), (Resolver::Fire, Some(AwaitStatus::Cancelled))) {
        return Error::new(
            ErrorCode::TriggerCancelled,
            format!("trigger {trigger_id} was cancelled"),
        );
    }
    let what = match status {
        Some(AwaitStatus::Resolved) => "was fired already",
        Some(AwaitStatus::Timeout) => "timed out already",
        Some(AwaitStatus::Cancelled) => "was cancelled already",
        _ => "was resolved already",
    };
    Error::new(
        ErrorCode::TriggerResolved,
        format!("trigger {trigger_id} {what}"),
    )
}
