//! A flow run's life beyond its function: cancelling it (with everything it waits on),
//! running it again, and writing its own events once (`flow.started` and its last event are
//! looked for in its stream before a take-over or repair writes them again).

use super::events;
use super::flows::ended;
use super::model::{field, Await, AwaitStatus, AwaitType, Job, JobStatus};
use super::timers::TimerTask;
use super::Scheduler;
use crate::clock::now_ms;
use crate::error::{Error, ErrorCode, Result};
use crate::store::awaits::RESOLVED_TTL_MS;
use crate::store::Expect;

/// How many of a run's first or last events are looked at for its own events: a run that
/// wrote one and died before marking it written must not begin or end twice.
const LOOKBACK: usize = 20;

impl Scheduler {
    /// Cancel a running flow run: its job ends `cancelled` (`flow.cancelled`), its pending
    /// awaits, triggers and step back-offs are cancelled (a trigger's `fire` then rejects with
    /// `TRIGGER_CANCELLED`), and the flow function, wherever it runs, is stopped at its next
    /// step or await.
    pub async fn cancel_flow(&self, run: &str, reason: &str) -> Result<()> {
        self.check_open()?;
        let record = self.running_flow(run).await.map_err(|e| match e.code {
            ErrorCode::FlowCancelled => Error::new(
                ErrorCode::FlowEnded,
                format!("flow run {run} was cancelled already"),
            ),
            _ => e,
        })?;
        let now = now_ms();
        let event = events::flow_cancelled(run, reason, now.saturating_sub(record.created_ms));
        self.fits(&event)?;
        let cancelled = self
            .store()
            .hash_cas_with(
                &self.job_key(run),
                (
                    field::STATUS,
                    Expect::Value(JobStatus::Running.as_str()),
                    JobStatus::Cancelled.as_str(),
                ),
                &[],
                (
                    &[
                        (field::ERROR, reason.to_owned()),
                        (field::FINAL_EVENT, event.clone()),
                        (field::ENDED_MS, now.to_string()),
                    ],
                    RESOLVED_TTL_MS,
                ),
                None,
                &[],
            )
            .await?;
        if !cancelled.set {
            let current = cancelled.current.as_deref().and_then(JobStatus::parse);
            return Err(ended(run, current));
        }
        // the run is cancelled from here: what follows is cleanup that a failure leaves to
        // the timers (a late resolution finds the run ended)
        let fields = self.store().hash_get_all(&self.job_key(run)).await?;
        let mut ids: Vec<String> = Vec::new();
        for (k, v) in &fields {
            if let Some(call) = k.strip_prefix("c:") {
                ids.push(format!("{run}:{call}"));
            } else if k.starts_with("t:") {
                ids.push(v.clone());
            }
        }
        for id in ids {
            let done = self.cancel_await(&id, reason).await;
            self.report("CANCEL_FAILED", &format!("cancelling await {id}"), done);
        }
        self.instance.bus.emit(&event, None).await?;
        self.final_written(run, &event, &record.owner).await
    }

    /// Cancel one pending await or step record of a cancelled run (a trigger as `cancel`
    /// does), with the back-off of a step's pending retry.
    async fn cancel_await(&self, id: &str, reason: &str) -> Result<()> {
        let state = self.read_await(id).await?;
        if state.status != Some(AwaitStatus::Pending) {
            return Ok(());
        }
        match state.await_type {
            Some(AwaitType::Trigger) => {
                return match self.cancel(id, reason).await {
                    Err(e) if e.code == ErrorCode::TriggerResolved => Ok(()),
                    other => other,
                };
            }
            Some(AwaitType::Step) => {
                for k in 2..=state.step_attempt {
                    Box::pin(self.cancel_await(&format!("{id}:r{k}"), reason)).await?;
                }
            }
            _ => {}
        }
        let extra = vec![
            (field::RESOLVED_MS, now_ms().to_string()),
            (field::REASON, reason.to_owned()),
        ];
        let r = self
            .resolve_await(id, AwaitStatus::Cancelled, extra, &[])
            .await?;
        if !r.set {
            return Ok(());
        }
        for task in [
            TimerTask::Time {
                await_id: id.to_owned(),
            },
            TimerTask::Timeout {
                await_id: id.to_owned(),
            },
        ] {
            self.store().timer_remove(&task.id()).await?;
        }
        if let Some(kind) = &state.event_kind {
            self.store()
                .hash_del(&self.keys().event_awaits(kind), &[id])
                .await?;
        }
        let state = Await {
            status: Some(AwaitStatus::Cancelled),
            ..state
        };
        self.publish_resolution(id, &state).await
    }

    /// Start a new run of the flow of run `run` with its input; its `flow.started` carries
    /// `run` as `correlationId`. Returns the new run's id.
    pub async fn rerun_flow(&self, run: &str) -> Result<String> {
        self.check_open()?;
        let record = self.read_job(run).await?;
        if !record.is_flow || record.status.is_none() {
            return Err(ended(run, None));
        }
        self.start_flow(&record.step, None, &record.input, Some(run))
            .await
    }

    /// Whether run `job`'s stream holds its last event already (`flow.completed`,
    /// `flow.failed` or `flow.cancelled` among its last events).
    pub(super) async fn flow_end_written(&self, job: &str) -> Result<bool> {
        let kinds = self.run_kinds(job, true).await?;
        Ok(kinds.iter().any(|k| {
            matches!(
                k.as_str(),
                "flow.completed" | "flow.failed" | "flow.cancelled"
            )
        }))
    }

    /// Whether run `job`'s stream begins with its `flow.started` already.
    pub(super) async fn flow_started_written(&self, job: &str) -> Result<bool> {
        let kinds = self.run_kinds(job, false).await?;
        Ok(kinds.iter().any(|k| k == "flow.started"))
    }

    /// The kinds of run `job`'s first (or, `last`, last) `LOOKBACK` events.
    async fn run_kinds(&self, job: &str, last: bool) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Kind {
            kind: String,
        }
        let stream = super::flow_stream(job)?;
        let opts = crate::store::ReadOptions {
            limit: Some(LOOKBACK),
            reverse: last,
            ..Default::default()
        };
        let records = self.instance.bus.read(&stream, opts).await?;
        Ok(records
            .iter()
            .filter_map(|r| serde_json::from_str::<Kind>(&r.json).ok())
            .map(|k| k.kind)
            .collect())
    }

    /// Write the unwritten last event of an ended job this instance now owns (a take-over or
    /// the repair pass): a flow run's only when its stream does not hold it yet.
    pub(super) async fn announce_final_again(
        &self,
        job: &str,
        record: &Job,
        event: &str,
    ) -> Result<()> {
        if record.is_flow && self.flow_end_written(job).await? {
            let owner = self.instance.id.clone();
            return self.final_written(job, event, &owner).await;
        }
        self.announce_final(job, event).await
    }
}
