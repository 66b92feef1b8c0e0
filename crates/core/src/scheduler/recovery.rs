//! Recovery: an instance's lease (its heartbeat), taking over the jobs of instances whose
//! lease ran out, the repair pass that carries on what this instance owns but is not doing,
//! and the periodic re-check of what it waits on (a belt to the notes, which can be lost).

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use super::jobs::StartReason;
use super::model::{field, JobStatus};
use super::{lock, Instance, Scheduler};
use crate::clock::now_ms;
use crate::error::{ErrorCode, Result};
use crate::store::{Expect, SetChange};

/// Lease ticks between two re-checks of every pending await (a belt to the notifications,
/// which can only be lost across a Pub/Sub reconnect — and a reconnect triggers one at once).
const RECHECK_EVERY_TICKS: u64 = 36;

/// Lease ticks between two repair passes when nothing failed (4 × `leaseMs`).
const REPAIR_EVERY_TICKS: u64 = 12;

impl Scheduler {
    pub(super) fn lease_key(&self, instance: &str) -> String {
        self.keys().lease(instance)
    }

    /// Extend this instance's lease by `leaseMs`.
    pub(super) async fn renew_lease(&self) -> Result<()> {
        self.store()
            .lease_renew(&self.lease_key(&self.instance.id), self.instance.lease_ms)
            .await
    }

    /// How long the events of a job's end or of an await's resolution are left to the
    /// instance that made it before another instance writes them (it may be slow, not gone:
    /// longer than a store call may take, so both writing is rare).
    pub(super) fn writer_grace_ms(&self) -> u64 {
        self.claim_lease_ms().max(10_000)
    }

    /// Take over a job whose owner is gone and carry it on: run it (if this instance defines
    /// its step), finish recording its retry, or write its unwritten last event.
    pub(super) async fn adopt(&self, job: &str, old_owner: &str) -> Result<()> {
        let record = self.read_job(job).await?;
        let final_event = record.unannounced_end();
        if final_event.is_none() && !self.defines(&record.step) {
            return Ok(());
        }
        if final_event.is_some()
            && now_ms().saturating_sub(record.ended_ms) < self.writer_grace_ms()
        {
            // an instance taken for dead (under load, say) may still be writing it
            return Ok(());
        }
        let (mine, theirs) = (self.owned_key(&self.instance.id), self.owned_key(old_owner));
        let taken = self
            .store()
            .hash_cas_with(
                &self.job_key(job),
                (field::OWNER, Expect::Value(old_owner), &self.instance.id),
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
            self.announce_final_again(job, &record, event).await?;
            return self.end_run(job, &record.runner, None).await;
        }
        match record.status {
            // the old owner died between recording the retry and announcing it: its retry timer
            // exists; let it run (the step.failed / step.retry events of that attempt are lost)
            Some(JobStatus::Failing) => self.retry_announced(job).await,
            Some(JobStatus::Running) => {
                self.start_attempt(job, &record, record.attempt, StartReason::Moved, None)
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Take over the jobs of instances whose lease has run out.
    async fn reap(&self) -> Result<()> {
        let me = self.instance.id.clone();
        for inst in self.store().set_members(&self.keys().instances()).await? {
            if inst == me || self.store().exists(&self.lease_key(&inst)).await? {
                continue;
            }
            let jobs = self.store().set_members(&self.owned_key(&inst)).await?;
            let mut left = 0;
            for job in jobs {
                let record = self.read_job(&job).await?;
                let carried_on = match record.status {
                    Some(JobStatus::Running | JobStatus::Failing | JobStatus::Retrying) => true,
                    Some(JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled) => {
                        record.final_event.is_some()
                    }
                    None => false,
                };
                if carried_on {
                    left += 1;
                    self.adopt(&job, &inst).await?;
                } else {
                    self.store()
                        .set_update(&self.owned_key(&inst), &job, false)
                        .await?
                }
            }
            if left == 0 {
                self.store()
                    .set_update(&self.keys().instances(), &inst, false)
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
        lock(&self.instance.ended).clear();
        let owned = self.owned_key(&self.instance.id);
        for job in self.store().set_members(&owned).await? {
            if lock(&self.instance.attempts).contains_key(&job) {
                continue;
            }
            let Ok(record) = self.read_job(&job).await else {
                continue;
            };
            let done = match record.status {
                // in the owned set but owned elsewhere: not this pass's to change (a take-over
                // moves both in one step)
                _ if record.owner != self.instance.id => Ok(()),
                Some(JobStatus::Running) if self.defines(&record.step) => {
                    self.start_attempt(&job, &record, record.attempt, StartReason::Repair, None)
                        .await
                }
                Some(JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled) => {
                    match &record.final_event {
                        Some(event) => {
                            match self.announce_final_again(&job, &record, event).await {
                                Ok(()) => self.end_run(&job, &record.runner, None).await,
                                Err(e) => Err(e),
                            }
                        }
                        None => self.store().set_update(&owned, &job, false).await,
                    }
                }
                _ => Ok(()),
            };
            // the next pass tries again
            self.report("REPAIR_FAILED", &format!("repairing job {job}"), done);
        }
        Ok(())
    }

    /// Re-check the awaits this instance waits on (covers a lost notification).
    pub(super) async fn recheck(&self) {
        // what fails here is looked at again by the next re-check
        let ids: Vec<String> = lock(&self.instance.waiters).keys().cloned().collect();
        for id in ids {
            let settled = self.settle(&id).await;
            self.report(
                "RECHECK_FAILED",
                &format!("re-checking await {id}"),
                settled,
            );
        }
        let jobs: Vec<String> = lock(&self.instance.runs).keys().cloned().collect();
        for job in jobs {
            let settled = self.settle_run(&job).await;
            self.report("RECHECK_FAILED", &format!("re-checking job {job}"), settled);
        }
    }
}

/// The heartbeat: renew the lease every third of it; every third tick reap dead instances and
/// (when due) run the repair pass; now and then, and after a reconnect, re-check awaits.
pub(super) async fn lease_loop(instance: Weak<Instance>) {
    let mut tick: u64 = 0;
    let mut reconnects_seen = 0;
    let mut next = tokio::time::Instant::now();
    loop {
        let (period, wakeups) = {
            let Some(i) = instance.upgrade() else { return };
            (
                Duration::from_millis((i.lease_ms / 3).max(30)),
                i.wakeups.clone(),
            )
        };
        if next <= tokio::time::Instant::now() {
            next = tokio::time::Instant::now() + period;
        }
        let repair_only = tokio::select! {
            _ = tokio::time::sleep_until(next) => false,
            _ = wakeups.repair.notified() => true,
            _ = wakeups.stop.notified() => return,
        };
        let Some(strong) = instance.upgrade() else {
            return;
        };
        let s = Scheduler { instance: strong };
        if s.instance.closed.load(Ordering::Acquire) {
            return;
        }
        if repair_only {
            let repaired = s.repair().await;
            s.report("REPAIR_FAILED", "the repair pass", repaired);
            continue;
        }
        match s.renew_lease().await {
            Err(e) if e.code == ErrorCode::BusClosed => return,
            // other instances may take this one for dead and run its jobs too
            renewed => {
                s.report("LEASE_RENEWAL_FAILED", "renewing the lease", renewed);
            }
        }
        tick += 1;
        if tick.is_multiple_of(3) {
            // taken for dead once (and dropped from the list by a reaper), an instance that
            // lives on must be listed again, or its later jobs would not be found when it dies
            let listed = s
                .store()
                .set_update(&s.keys().instances(), &s.instance.id, true)
                .await;
            s.report("LEASE_RENEWAL_FAILED", "listing the instance", listed);
        }
        let reconnects = s.instance.bus.reconnects();
        let reconnected = reconnects != reconnects_seen;
        if tick.is_multiple_of(3) {
            // what it guards against needs no more than this period: keep it small
            lock(&s.instance.ended).clear();
            let reaped = s.reap().await;
            s.report(
                "REAP_FAILED",
                "taking over the jobs of dead instances",
                reaped,
            );
            // after a failed store call or a Pub/Sub reconnect (a note may be lost), and now and
            // then in any case
            if s.instance.needs_repair.swap(false, Ordering::AcqRel)
                || reconnected
                || tick.is_multiple_of(REPAIR_EVERY_TICKS)
            {
                let repaired = s.repair().await;
                s.report("REPAIR_FAILED", "the repair pass", repaired);
            }
        }
        if reconnected || tick.is_multiple_of(RECHECK_EVERY_TICKS) {
            reconnects_seen = reconnects;
            s.recheck().await;
        }
    }
}
