//! Durable flows: a flow run is a job whose handler is the flow function. Its steps
//! (`ctx.step`) and awaits are numbered by call order; each call is recorded in the run's job
//! (`c:<attempt>:<seq>` → what was called), and a step's attempt, result or final error in a
//! step record (an await hash of type `step`, id `<runId>:<attempt>:<seq>`). When the flow
//! function runs again after a crash, a deploy or a take-over, every call already finished
//! returns its record at once; a call that differs from the record fails with
//! `REPLAY_MISMATCH`.
//!
//! A step's retry waits on a durable timer: an `await.time` of its own
//! (`<runId>:<attempt>:<seq>:r<k>`, written without `step.await.time` / `step.resumed`).
//! The run's `flow.started` is written when its attempt starts, its `flow.completed` /
//! `flow.failed` by the compare-and-set that ends its job (see `jobs`), `flow.cancelled` by
//! the one that cancels it (see `runs`).

use serde_json::{json, Map, Value};

use super::events::{self, Next};
use super::jobs::StartReason;
use super::json;
use super::model::{field, Await, AwaitSpec, AwaitStatus, AwaitType, Job, JobStatus};
use super::policy::{RetryPolicy, ThrownError};
use super::timers::{due_after, TimerTask};
use super::{lock, random_id, Scheduler};
use crate::clock::now_ms;
use crate::error::{Error, ErrorCode, Result};
use crate::event;
use crate::store::awaits::RESOLVED_TTL_MS;
use crate::store::{Expect, NewTimer};

/// The `error` of a `flow.failed`: the thrown error's `message`, `name`, `code` and `step`.
pub(super) fn flow_error(thrown_json: &str, message: &str) -> Value {
    let thrown: Map<String, Value> = json::read_lossy(thrown_json).unwrap_or_default();
    let mut out = Map::new();
    out.insert("message".into(), message.into());
    for k in ["name", "code", "step"] {
        if let Some(v) = thrown.get(k).filter(|v| !v.is_null()) {
            out.insert(k.into(), v.clone());
        }
    }
    Value::Object(out)
}

fn mismatch(seq: u32, recorded: &str, called: &str) -> Error {
    Error::new(
        ErrorCode::ReplayMismatch,
        format!(
            "replay mismatch at call {seq} of the flow: the run recorded {recorded}, the code now calls {called} (the flow's code changed while the run was in progress)"
        ),
    )
}

pub(super) fn ended(run: &str, status: Option<JobStatus>) -> Error {
    match status {
        Some(JobStatus::Cancelled) => Error::new(
            ErrorCode::FlowCancelled,
            format!("flow run {run} was cancelled"),
        ),
        None => Error::new(ErrorCode::FlowNotFound, format!("no flow run {run}")),
        Some(s) => Error::new(
            ErrorCode::FlowEnded,
            format!("flow run {run} has ended ({})", s.as_str()),
        ),
    }
}

/// What a step call is to do, as JSON for the host: `{"status":"done","result":…}`,
/// `{"status":"failed","error":{…}}`, `{"status":"run","attempt":k}` or
/// `{"status":"retry"}` (call `step_begin` again: it waits for the back-off).
fn step_state(record: &Await) -> Option<String> {
    match record.status {
        Some(AwaitStatus::Resolved) => Some(match &record.error_detail {
            Some(e) => {
                let error: Value = json::read_lossy(e).unwrap_or(Value::Null);
                json!({ "status": "failed", "error": error }).to_string()
            }
            None => format!(
                r#"{{"status":"done","result":{}}}"#,
                record.result.as_deref().unwrap_or("null")
            ),
        }),
        _ => None,
    }
}

impl Scheduler {
    /// Declare that this instance runs flow `name` (its function lives in the host). Flows and
    /// steps share one namespace: a step of that name is refused (`INVALID_ARGUMENT`).
    /// Defining the flow again is accepted (nothing changes).
    pub fn define_flow(&self, name: &str) -> Result<()> {
        self.define_as(name, RetryPolicy::default(), true)
    }

    /// Start a run of flow `name` with `input` (JSON) under `run_id` (default: random), its
    /// `flow.started` naming `correlation` (a rerun's original run). Returns the run id once
    /// the run exists; its outcome is in its stream (`flow.completed` / `flow.failed`).
    pub async fn start_flow(
        &self,
        name: &str,
        run_id: Option<&str>,
        input: &str,
        correlation: Option<&str>,
    ) -> Result<String> {
        self.check_open()?;
        if !self.defines(name) {
            return Err(Error::argument(format!(
                "flow '{name}' is not defined on this scheduler; call defineFlow() first"
            )));
        }
        let input = json::checked("input", input)?;
        let run = match run_id {
            Some(r) => {
                event::validate_id("runId", r).map_err(|e| Error::argument(e.message))?;
                r.to_owned()
            }
            None => random_id()?,
        };
        let correlation = correlation.unwrap_or("");
        self.fits(&events::flow_started(name, &run, &input, correlation))?;
        let created_ms = now_ms();
        let mut fields = Job::new_fields(name, &run, input.get(), &self.instance.id, created_ms);
        fields.push((field::KIND, "flow".into()));
        if !correlation.is_empty() {
            fields.push((field::CORRELATION, correlation.to_owned()));
        }
        if !self.create_owned_job(&run, &fields).await? {
            return Err(Error::new(
                ErrorCode::JobExists,
                format!("a run with id '{run}' exists already"),
            ));
        }
        let record = Job {
            status: Some(JobStatus::Running),
            step: name.to_owned(),
            flow: run.clone(),
            input: input.get().to_owned(),
            attempt: 1,
            owner: self.instance.id.clone(),
            runner: self.instance.id.clone(),
            created_ms,
            is_flow: true,
            correlation: correlation.to_owned(),
            ..Job::default()
        };
        // From here the run exists: when its start fails (the store is away), the repair
        // pass starts it (and writes `flow.started`) later.
        let started = self
            .start_attempt(&run, &record, 1, StartReason::Created, None)
            .await;
        self.report("JOB_START_FAILED", &format!("starting run {run}"), started);
        Ok(run)
    }

    /// Record call `seq` of attempt `attempt` of flow run `job` as `what` (once); a replay
    /// that calls something else fails with `REPLAY_MISMATCH`.
    pub(super) async fn record_call(
        &self,
        job: &str,
        attempt: u32,
        seq: u32,
        what: &str,
    ) -> Result<()> {
        let slot = format!("c:{attempt}:{seq}");
        let r = self
            .store()
            .hash_cas(&self.job_key(job), &slot, Expect::Absent, what, 0, &[])
            .await?;
        match r.current.as_deref() {
            Some(recorded) if !r.set && recorded != what => Err(mismatch(seq, recorded, what)),
            _ => Ok(()),
        }
    }

    /// The running flow run `job` (the typed error of a run that is not running).
    pub(super) async fn running_flow(&self, job: &str) -> Result<Job> {
        let record = self.read_job(job).await?;
        if !record.is_flow || record.status != Some(JobStatus::Running) {
            return Err(ended(job, record.status.filter(|_| record.is_flow)));
        }
        Ok(record)
    }

    /// `ctx.step(name)`, call `seq` of attempt `attempt` of run `job`: what the host is to do
    /// (see `step_state`). A step that is not finished starts its current attempt (after its
    /// back-off, waited for here), announced once with `step.started`.
    pub async fn step_begin(
        &self,
        job: &str,
        attempt: u32,
        seq: u32,
        name: &str,
    ) -> Result<String> {
        self.check_open()?;
        event::validate_id("step", name).map_err(|e| Error::argument(e.message))?;
        let run = self.running_flow(job).await?;
        self.record_call(job, attempt, seq, &format!("step '{name}'"))
            .await?;
        let id = format!("{job}:{attempt}:{seq}");
        let key = self.await_key(&id);
        let mut fields = vec![
            (field::JOB, job.to_owned()),
            (field::FLOW, run.flow.clone()),
            (field::STEP, name.to_owned()),
            (field::ATTEMPT, attempt.to_string()),
            (field::SEQ, seq.to_string()),
            (field::OWNER, self.instance.id.clone()),
            (field::CREATED_MS, now_ms().to_string()),
            (field::STEP_ATTEMPT, "1".into()),
        ];
        fields.extend(
            AwaitSpec::Step {
                name: name.to_owned(),
            }
            .fields(),
        );
        let created = self
            .store()
            .hash_cas(
                &key,
                field::STATUS,
                Expect::Absent,
                AwaitStatus::Pending.as_str(),
                0,
                &fields,
            )
            .await?;
        // a new record is what was just written; only a replay reads what was recorded
        let mut record = if created.set {
            Await {
                status: Some(AwaitStatus::Pending),
                await_type: Some(AwaitType::Step),
                step: name.to_owned(),
                step_attempt: 1,
                ..Await::default()
            }
        } else {
            self.read_await(&id).await?
        };
        if record.await_type != Some(AwaitType::Step) || record.step != name {
            return Err(mismatch(
                seq,
                &format!("{} '{}'", record.type_name(), record.step),
                &format!("step '{name}'"),
            ));
        }
        if let Some(state) = step_state(&record) {
            return Ok(state);
        }
        if record.status == Some(AwaitStatus::Cancelled) {
            return Err(ended(job, Some(JobStatus::Cancelled)));
        }
        let k = record.step_attempt;
        if k > 1 {
            self.wait_step_retry(job, attempt, &format!("{id}:r{k}"))
                .await?;
            record = self.read_await(&id).await?;
            if let Some(state) = step_state(&record) {
                return Ok(state);
            }
        }
        if record.started_attempt < k {
            let started = events::flow_step_started(&run.flow, name, k, seq);
            self.instance.bus.emit(&started, None).await?;
            self.store()
                .hash_set(
                    &key,
                    &[
                        (field::STARTED_ATTEMPT, k.to_string()),
                        (field::RESOLVED_MS, now_ms().to_string()),
                    ],
                )
                .await?;
        }
        Ok(json!({ "status": "run", "attempt": k }).to_string())
    }

    /// Wait for the back-off timer of a step's retry (an `await.time` the failure made); one
    /// that does not exist (the failure was not recorded) is no wait.
    async fn wait_step_retry(&self, job: &str, attempt: u32, retry_id: &str) -> Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&self.instance.waiters)
            .entry(retry_id.to_owned())
            .or_default()
            .push(tx);
        let state = self.read_await(retry_id).await?;
        match state.status {
            None => {
                lock(&self.instance.waiters).remove(retry_id);
                return Ok(());
            }
            Some(AwaitStatus::Pending) => {
                // a replay: the timer may not have been added by the failure that died
                let due = state.resume_at.unwrap_or_else(now_ms);
                let task = TimerTask::Time {
                    await_id: retry_id.to_owned(),
                };
                self.add_timer(&task, due).await?;
            }
            Some(_) => self.settle(retry_id).await?,
        }
        self.wait(job, attempt, rx).await.map(|_| ())
    }

    /// Attempt `k` of step call `seq` returned `result` (JSON): record it once (a replay or a
    /// second instance gets the recorded one) and write `step.completed`.
    pub async fn step_complete(
        &self,
        job: &str,
        attempt: u32,
        seq: u32,
        k: u32,
        result: &str,
    ) -> Result<String> {
        self.check_open()?;
        let result = json::checked("the step result", result)?;
        let id = format!("{job}:{attempt}:{seq}");
        let record = self.read_await(&id).await?;
        let now = now_ms();
        let duration = now.saturating_sub(record.resolved_ms);
        let event =
            events::flow_step_completed(&record.flow, &record.step, &result, k, duration, seq);
        self.fits(&event)?;
        let k_s = k.to_string();
        let done = self
            .resolve_step_record(&id, &k_s, (field::RESULT, result.get().to_owned()), now)
            .await?;
        if done {
            self.instance.bus.emit(&event, None).await?;
            return Ok(format!(r#"{{"status":"done","result":{}}}"#, result.get()));
        }
        self.step_outcome(job, &id).await
    }

    /// Attempt `k` of step call `seq` threw `error` (JSON, as `fail` takes it): record its
    /// retry (by `policy`, JSON) with a durable back-off, or its failure for good.
    #[allow(clippy::too_many_arguments)]
    pub async fn step_fail(
        &self,
        job: &str,
        attempt: u32,
        seq: u32,
        k: u32,
        error: &str,
        policy: &str,
    ) -> Result<String> {
        self.check_open()?;
        let policy = RetryPolicy::from_json(policy)?;
        let thrown = ThrownError::from_json(error);
        let message = self.error_message(&thrown);
        let id = format!("{job}:{attempt}:{seq}");
        let record = self.read_await(&id).await?;
        let (run, name) = (record.flow.clone(), record.step.clone());
        let k_s = k.to_string();
        let max = policy.max_attempts();
        if let Some(delay) = policy.retry_delay(&thrown, k) {
            let due = due_after(now_ms(), delay);
            let retry_id = format!("{id}:r{}", k + 1);
            // the back-off is an await.time of its own, made before the attempt moves on
            let mut fields = vec![
                (field::JOB, job.to_owned()),
                (field::FLOW, run.clone()),
                (field::STEP, name.clone()),
                (field::ATTEMPT, attempt.to_string()),
                (field::SEQ, seq.to_string()),
                (field::OWNER, self.instance.id.clone()),
                (field::CREATED_MS, now_ms().to_string()),
                (field::ANNOUNCED, "1".into()),
                (field::RESUMED, "1".into()),
            ];
            fields.extend(AwaitSpec::Time { resume_at: due }.fields());
            self.store()
                .hash_cas(
                    &self.await_key(&retry_id),
                    field::STATUS,
                    Expect::Absent,
                    AwaitStatus::Pending.as_str(),
                    0,
                    &fields,
                )
                .await?;
            let task = TimerTask::Time {
                await_id: retry_id.clone(),
            };
            let (timer_id, payload) = (task.id(), task.payload());
            let moved = self
                .store()
                .hash_cas_with(
                    &self.await_key(&id),
                    (
                        field::STEP_ATTEMPT,
                        Expect::Value(&k_s),
                        &(k + 1).to_string(),
                    ),
                    &[(field::STATUS, AwaitStatus::Pending.as_str())],
                    (&[], 0),
                    Some(NewTimer {
                        id: &timer_id,
                        due_ms: due,
                        payload: &payload,
                    }),
                    &[],
                )
                .await?;
            if moved.set {
                let backoff = policy.backoff.kind.as_str();
                let failed = events::step_failed(
                    &run,
                    &name,
                    &message,
                    k,
                    max,
                    job,
                    Next::Retry {
                        due_ms: due,
                        backoff,
                    },
                );
                let retry = events::step_retry(&run, &name, &message, k + 1, delay, due, job);
                self.instance.bus.emit(&failed, None).await?;
                self.instance.bus.emit(&retry, None).await?;
                self.wake_timers(due).await?;
                return Ok(r#"{"status":"retry"}"#.into());
            }
            return self.step_outcome(job, &id).await;
        }
        let detail = flow_error(error, &message).to_string();
        let done = self
            .resolve_step_record(&id, &k_s, (field::ERROR_DETAIL, detail), now_ms())
            .await?;
        if done {
            let failed = events::step_failed(&run, &name, &message, k, max, job, Next::Fail);
            self.instance.bus.emit(&failed, None).await?;
        }
        self.step_outcome(job, &id).await
    }

    /// Resolve step record `id` with its outcome (`result` or `error detail`), if it is still
    /// pending at attempt `k`: the compare-and-set that lets one reporter win. True when it did.
    async fn resolve_step_record(
        &self,
        id: &str,
        k: &str,
        outcome: (&'static str, String),
        now: u64,
    ) -> Result<bool> {
        let fields = [outcome, (field::RESOLVED_MS, now.to_string())];
        let done = self
            .store()
            .hash_cas_with(
                &self.await_key(id),
                (
                    field::STATUS,
                    Expect::Value(AwaitStatus::Pending.as_str()),
                    AwaitStatus::Resolved.as_str(),
                ),
                &[(field::STEP_ATTEMPT, k)],
                (&fields, RESOLVED_TTL_MS),
                None,
                &[],
            )
            .await?;
        Ok(done.set)
    }

    /// A step record as the host is to take it after an outcome was reported: what was
    /// recorded (by this call or another one), or "run again" when it is still pending.
    async fn step_outcome(&self, job: &str, id: &str) -> Result<String> {
        let record = self.read_await(id).await?;
        if let Some(state) = step_state(&record) {
            return Ok(state);
        }
        match record.status {
            Some(AwaitStatus::Cancelled) => Err(ended(job, Some(JobStatus::Cancelled))),
            _ => Ok(r#"{"status":"retry"}"#.into()),
        }
    }
}
