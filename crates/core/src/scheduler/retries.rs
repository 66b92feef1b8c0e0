//! Retries: recording that a failed attempt will be tried again (its timer, its events) and
//! starting the next attempt when the timer is due, on the job's owner or by a take-over.

use super::events::{self, Next};
use super::jobs::{Attempt, FailureRecorded, StartReason};
use super::model::{field, JobStatus};
use super::notes::Note;
use super::policy::RetryPolicy;
use super::timers::{due_after, TimerDone, TimerTask};
use super::Scheduler;
use crate::clock::now_ms;
use crate::error::Result;
use crate::store::{Expect, NewTimer};

impl Scheduler {
    /// Record that attempt `a` of `job` failed and runs again after `delay` ms: its timer and
    /// `failing` in one step, then its `step.failed` / `step.retry`, then `retrying`.
    pub(super) async fn record_retry(
        &self,
        job: &str,
        a: &Attempt,
        policy: &RetryPolicy,
        message: &str,
        delay: u64,
    ) -> Result<FailureRecorded> {
        let (attempt, flow, step) = (a.attempt, &a.flow, &a.step);
        let max = policy.max_attempts();
        let now = now_ms();
        let due = due_after(now, delay);
        // what is left of it once kept before the far future
        let delay = due - now;
        let timer = TimerTask::Retry {
            job: job.to_owned(),
            attempt: attempt + 1,
        };
        let (timer_id, payload) = (timer.id(), timer.payload());
        // Three steps, each safe to die after: `failing` + the retry timer (one step, so the
        // retry cannot be lost), the events, then `retrying`. A timer that finds the job
        // still `failing` waits for the events (see `on_retry`); a take-over finishes the
        // move for an instance that died between the steps.
        let attempt_s = attempt.to_string();
        let moved = self
            .store()
            .hash_cas_with(
                &self.job_key(job),
                (
                    field::STATUS,
                    Expect::Value(JobStatus::Running.as_str()),
                    JobStatus::Failing.as_str(),
                ),
                &[
                    (field::OWNER, &self.instance.id),
                    (field::ATTEMPT, &attempt_s),
                ],
                (&[(field::FAILING_MS, now_ms().to_string())], 0),
                Some(NewTimer {
                    id: &timer_id,
                    due_ms: due,
                    payload: &payload,
                }),
                &[],
            )
            .await?;
        if !moved.set {
            return Ok(FailureRecorded::NotOurs {
                runner: a.runner.clone(),
            });
        }
        let backoff = policy.backoff.kind.as_str();
        let next = Next::Retry {
            due_ms: due,
            backoff,
        };
        let failed = events::step_failed(flow, step, message, attempt, max, job, next);
        self.instance.bus.emit(&failed, None).await?;
        let retry = events::step_retry(flow, step, message, attempt + 1, delay, due, job);
        self.instance.bus.emit(&retry, None).await?;
        self.retry_announced(job).await?;
        Ok(FailureRecorded::Retry { due })
    }

    /// The last step of recording a retry: `failing` (timer set) → `retrying`.
    pub(super) async fn retry_announced(&self, job: &str) -> Result<()> {
        self.store()
            .hash_cas(
                &self.job_key(job),
                field::STATUS,
                Expect::Value(JobStatus::Failing.as_str()),
                JobStatus::Retrying.as_str(),
                0,
                &[],
            )
            .await
            .map(|_| ())
    }

    /// A due retry of `job` at `attempt`: the job moves from `retrying` (or a `failing` left
    /// behind) at `attempt - 1` to `running` at `attempt` (one compare-and-set), and runs on
    /// its owner, or here if the owner is gone.
    pub(super) async fn on_retry(&self, job: &str, attempt: u32, late: u64) -> Result<TimerDone> {
        let mut record = self.read_job(job).await?;
        for _ in 0..2 {
            if record.attempt == attempt && record.status == Some(JobStatus::Running) {
                // moved by an earlier run of this timer that did not get to the end
                break;
            }
            if record.attempt.checked_add(1) != Some(attempt) {
                // a timer of an attempt that has run already: claimed again after its claimer
                // died before removing it
                return Ok(TimerDone::Done);
            }
            let Some(status) = record.status else {
                return Ok(TimerDone::Done);
            };
            match status {
                JobStatus::Retrying => {}
                JobStatus::Failing => {
                    // Due before the owner wrote step.failed / step.retry. While the owner lives
                    // and has been at it for less than a claim lease, keep the timer (it is
                    // claimed again after its lease); after that, retry without those events.
                    let owner_alive = record.owner == self.instance.id
                        || self.store().exists(&self.lease_key(&record.owner)).await?;
                    let since = record.failing_ms;
                    if owner_alive && now_ms().saturating_sub(since) < self.claim_lease_ms() {
                        // due before its events were written
                        return Ok(TimerDone::Keep);
                    }
                }
                _ => return Ok(TimerDone::Done),
            }
            let (from, to) = (record.attempt.to_string(), attempt.to_string());
            let moved = self
                .store()
                .hash_cas_with(
                    &self.job_key(job),
                    (field::ATTEMPT, Expect::Value(&from), &to),
                    &[(field::STATUS, status.as_str())],
                    (
                        &[(field::STATUS, JobStatus::Running.as_str().to_owned())],
                        0,
                    ),
                    None,
                    &[],
                )
                .await?;
            if moved.set {
                // what the compare-and-set wrote: no need to read it back
                record.attempt = attempt;
                record.status = Some(JobStatus::Running);
                break;
            }
            // the owner moved `failing` on to `retrying` meanwhile: look again, once
            record = self.read_job(job).await?;
        }
        if record.attempt != attempt || record.status != Some(JobStatus::Running) {
            if record.attempt.checked_add(1) == Some(attempt)
                && matches!(
                    record.status,
                    Some(JobStatus::Retrying | JobStatus::Failing)
                )
            {
                // still due, but the job kept changing under this call: keep the timer
                return Ok(TimerDone::Keep);
            }
            return Ok(TimerDone::Done);
        }
        let owner = record.owner.clone();
        if owner == self.instance.id {
            return self
                .start_attempt(job, &record, attempt, StartReason::Moved, Some(late))
                .await
                .map(|()| TimerDone::Done);
        }
        if self.store().exists(&self.lease_key(&owner)).await? {
            let note = Note::Run {
                job: job.to_owned(),
                late_ms: Some(late),
            };
            return self.tell(&owner, note).await.map(|()| TimerDone::Done);
        }
        self.adopt(job, &owner).await.map(|()| TimerDone::Done)
    }
}
