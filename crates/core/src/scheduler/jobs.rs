//! A job's life: `run` creates it, an attempt is started (announced with `step.started`) and
//! handed to the host, and the outcome the host reports — a result or a thrown error — ends
//! the job or records its retry; the `run` call settles wherever it waits.

use std::time::Instant;

use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::events::{self, Next};
use super::json;
use super::model::{field, Job, JobStatus};
use super::notes::Note;
use super::policy::ThrownError;
use super::{lock, random_id, Scheduler};
use crate::clock::now_ms;
use crate::error::{Error, ErrorCode, Result};
use crate::event;
use crate::store::awaits::RESOLVED_TTL_MS;
use crate::store::{Expect, SetChange};

/// Longest error message carried by `step.failed` / `step.retry` (bytes; less when half of
/// `maxEventBytes` is less).
const MAX_ERROR_MESSAGE: usize = 8192;

/// An attempt handed to the host.
#[derive(Clone)]
pub(super) struct Attempt {
    pub attempt: u32,
    pub since: Instant,
    pub step: String,
    pub flow: String,
    /// The instance whose `run` call waits for the job.
    pub runner: String,
    /// The job of a flow run.
    pub is_flow: bool,
    /// When the job was created (Unix ms): a flow run's duration counts from there.
    pub created_ms: u64,
}

/// Why `start_attempt` is asked to start an attempt.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum StartReason {
    /// What made the job running (its creation, a due retry, a take-over, a note from there).
    Moved,
    /// A repair pass that found the job running here with nothing executing it: it yields to
    /// any attempt of the job this instance executes.
    Repair,
    /// `start_flow` created the run just now (nobody can have written its `flow.started`).
    Created,
}

/// What recording a thrown error came to.
pub(super) enum FailureRecorded {
    /// A retry is due at `due` (ms).
    Retry { due: u64 },
    /// The job failed: its last event is to be announced, and `run` (on `runner`) rejects
    /// with `err`.
    Failed {
        event: String,
        err: Error,
        runner: String,
    },
    /// The job was not running this attempt here (any more): nothing was recorded.
    NotOurs { runner: String },
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

impl Scheduler {
    pub(super) fn job_key(&self, job: &str) -> String {
        self.keys().job(job)
    }

    pub(super) fn owned_key(&self, instance: &str) -> String {
        self.keys().owned_jobs(instance)
    }

    /// Create job `id` with `fields`, running, entered in this instance's owned set in the same
    /// step (a job nobody can find when its owner dies would never run). False when a job
    /// with that id exists already.
    pub(super) async fn create_owned_job(
        &self,
        id: &str,
        fields: &[(&str, String)],
    ) -> Result<bool> {
        let owned = self.owned_key(&self.instance.id);
        let created = self
            .store()
            .hash_cas_with(
                &self.job_key(id),
                (field::STATUS, Expect::Absent, JobStatus::Running.as_str()),
                &[],
                (fields, 0),
                None,
                &[SetChange {
                    key: &owned,
                    member: id,
                    add: true,
                }],
            )
            .await?;
        Ok(created.set)
    }

    /// The job as the store holds it.
    pub(super) async fn read_job(&self, job: &str) -> Result<Job> {
        Ok(Job::from_fields(
            self.store().hash_get_all(&self.job_key(job)).await?,
        ))
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
        let input = json::checked("input", input)?;
        let job = match job_id {
            Some(j) => {
                event::validate_id("jobId", j).map_err(|e| Error::argument(e.message))?;
                j.to_owned()
            }
            None => random_id()?,
        };
        // every start writes this event: one the bus would refuse is refused here, before the
        // job exists
        self.fits(&events::step_started(flow, step, &input, 1, &job, None))?;
        let (tx, rx) = oneshot::channel();
        lock(&self.instance.runs).insert(job.clone(), tx);
        let fields = Job::new_fields(step, flow, input.get(), &self.instance.id, now_ms());
        match self.create_owned_job(&job, &fields).await {
            Ok(true) => {}
            Ok(false) => {
                lock(&self.instance.runs).remove(&job);
                return Err(Error::new(
                    ErrorCode::JobExists,
                    format!("a job with id '{job}' exists already"),
                ));
            }
            Err(e) => {
                lock(&self.instance.runs).remove(&job);
                return Err(e);
            }
        }
        // From here the job exists and runs: when starting it fails (the store is away), the
        // repair pass starts it later, and this call waits for its outcome all the same.
        let created = Job {
            status: Some(JobStatus::Running),
            step: step.to_owned(),
            flow: flow.to_owned(),
            input: input.get().to_owned(),
            attempt: 1,
            owner: self.instance.id.clone(),
            runner: self.instance.id.clone(),
            ..Job::default()
        };
        let started = self
            .start_attempt(&job, &created, 1, StartReason::Moved, None)
            .await;
        self.report("JOB_START_FAILED", &format!("starting job {job}"), started);
        rx.await.unwrap_or_else(|_| Err(Error::closed()))
    }

    /// Hand attempt `attempt` of `job` to the host, announcing it with `step.started` unless
    /// an earlier start of this attempt did (then the handler runs as a replay). Does nothing
    /// when this instance is executing the job already. On an error nothing is left behind
    /// here: the job stays `running` in the store for the repair pass.
    pub(super) async fn start_attempt(
        &self,
        job: &str,
        record: &Job,
        attempt: u32,
        by: StartReason,
        late_ms: Option<u64>,
    ) -> Result<()> {
        {
            let mut attempts = lock(&self.instance.attempts);
            let busy = match attempts.get(job) {
                Some(a) => by == StartReason::Repair || a.attempt == attempt,
                None => false,
            } || lock(&self.instance.ended).contains(&(job.to_owned(), attempt));
            if busy {
                return Ok(());
            }
            attempts.insert(
                job.to_owned(),
                Attempt {
                    attempt,
                    since: Instant::now(),
                    step: record.step.clone(),
                    flow: record.flow.clone(),
                    runner: record.runner.clone(),
                    is_flow: record.is_flow,
                    created_ms: record.created_ms,
                },
            );
        }
        let input = json::stored(&record.input);
        // a run's `flow.started` written by an instance that died before marking it is not
        // written again (its run begins once)
        let fresh = record.started_attempt < attempt
            && !(record.is_flow
                && by != StartReason::Created
                && self.flow_started_written(job).await.unwrap_or(false));
        if fresh {
            let started = if record.is_flow {
                events::flow_started(&record.step, job, &input, &record.correlation)
            } else {
                events::step_started(&record.flow, &record.step, &input, attempt, job, late_ms)
            };
            let announced = async {
                self.instance.bus.emit(&started, None).await?;
                self.store()
                    .hash_set(
                        &self.job_key(job),
                        &[(field::STARTED_ATTEMPT, attempt.to_string())],
                    )
                    .await
            }
            .await;
            if let Err(e) = announced {
                self.forget_attempt(job, attempt);
                return self.repair_on_error(Err(e));
            }
        }
        let work = events::work(job, &record.step, &record.flow, &input, attempt, !fresh);
        self.instance.work.push(job, attempt, work);
        Ok(())
    }

    /// A note says a retry of `job`, which this instance owns, is due: start it if the job is
    /// running.
    pub(super) async fn start_owned(&self, job: &str, late_ms: Option<u64>) -> Result<()> {
        let record = self.read_job(job).await?;
        if record.status != Some(JobStatus::Running) {
            return Ok(());
        }
        self.start_attempt(job, &record, record.attempt, StartReason::Moved, late_ms)
            .await
    }

    /// The attempt `attempt` of `job` is no longer executed here.
    pub(super) fn forget_attempt(&self, job: &str, attempt: u32) {
        self.instance.work.ended(job, attempt);
        lock(&self.instance.ended).insert((job.to_owned(), attempt));
        let mut attempts = lock(&self.instance.attempts);
        if attempts.get(job).is_some_and(|a| a.attempt == attempt) {
            attempts.remove(job);
        }
    }

    /// `job` as this instance runs `attempt` of it (read from the store if it does not).
    async fn attempt_info(&self, job: &str, attempt: u32) -> Result<Attempt> {
        let active = lock(&self.instance.attempts)
            .get(job)
            .filter(|a| a.attempt == attempt)
            .cloned();
        if let Some(a) = active {
            return Ok(a);
        }
        let record = self.read_job(job).await?;
        Ok(Attempt {
            attempt,
            since: Instant::now(),
            step: record.step,
            flow: record.flow,
            runner: record.runner,
            is_flow: record.is_flow,
            created_ms: record.created_ms,
        })
    }

    /// A job ended: settle its `run` call, here or (with a note) on the instance that made it.
    /// `outcome` is the run's result when this instance ended the job; `None` when it does not
    /// know it (then it is read from the store, where the job has ended or not).
    pub(super) async fn end_run(
        &self,
        job: &str,
        runner: &str,
        outcome: Option<Result<String>>,
    ) -> Result<()> {
        match outcome {
            Some(outcome) => {
                if let Some(tx) = lock(&self.instance.runs).remove(job) {
                    // the caller may have stopped waiting: nothing to tell then
                    let _ = tx.send(outcome);
                    return Ok(());
                }
            }
            None => self.settle_run(job).await?,
        }
        if runner.is_empty() || runner == self.instance.id {
            return Ok(());
        }
        self.tell(
            runner,
            Note::Ended {
                job: job.to_owned(),
            },
        )
        .await
    }

    /// Settle the `run` call waiting here for `job` if the job has ended (wherever it ended)
    /// and its last event is written.
    pub(super) async fn settle_run(&self, job: &str) -> Result<()> {
        if !lock(&self.instance.runs).contains_key(job) {
            return Ok(());
        }
        let record = self.read_job(job).await?;
        if record.final_event.is_some() {
            // ended, its last event not yet written: whoever writes it says so
            return Ok(());
        }
        let outcome = match record.status {
            Some(JobStatus::Completed) => Ok(record.result),
            Some(JobStatus::Failed) => Err(step_failed(
                &record.step,
                record.attempt,
                &record.error,
                &record.error_detail,
            )),
            _ => return Ok(()),
        };
        if let Some(tx) = lock(&self.instance.runs).remove(job) {
            // the caller may have stopped waiting: nothing to tell then
            let _ = tx.send(outcome);
        }
        Ok(())
    }

    /// The handler of `job`'s attempt returned `result` (JSON).
    pub async fn complete(&self, job: &str, attempt: u32, result: &str) -> Result<()> {
        // A closed instance records nothing: its jobs stay resumable elsewhere.
        self.check_open()?;
        let finished: Result<(Option<String>, String, Box<RawValue>)> = async {
            let result = json::checked("the result", result)?;
            let a = self.attempt_info(job, attempt).await?;
            let event = if a.is_flow {
                let duration = now_ms().saturating_sub(a.created_ms);
                events::flow_completed(job, &result, duration)
            } else {
                let duration = a.since.elapsed().as_millis() as u64;
                events::step_completed(&a.flow, &a.step, &result, attempt, duration, job)
            };
            self.fits(&event)?;
            let event = self
                .finish_job(
                    job,
                    attempt,
                    JobStatus::Completed,
                    &[(field::RESULT, result.get().to_owned())],
                    event,
                )
                .await?;
            Ok((event, a.runner, result))
        }
        .await;
        if let Err(e) = &finished {
            let unrecordable = matches!(
                e.code,
                ErrorCode::PayloadTooLarge | ErrorCode::EventInvalid | ErrorCode::InvalidArgument
            );
            if unrecordable {
                // a result its event cannot carry (or that is not JSON) fails the step, for
                // good: a job is never left running with nobody to end it
                let thrown = serde_json::json!({ "message": format!("the step's result cannot be recorded: {}", e.message),
                    "code": e.code.as_str(), "retriable": false });
                return self.fail(job, attempt, &thrown.to_string()).await;
            }
        }
        let announced = match finished {
            Ok((Some(event), runner, result)) => {
                // the run resolves after its last event is written, or could not be
                let announced = self.announce_final(job, &event).await;
                let ended = self
                    .end_run(job, &runner, Some(Ok(result.get().to_owned())))
                    .await;
                announced.and(ended)
            }
            // not this instance's to end: maybe another one ended it
            Ok((None, runner, _)) => self.end_run(job, &runner, None).await,
            Err(e) => Err(e),
        };
        // Only now is the attempt no longer handled here (the repair pass leaves it alone until
        // then). When its outcome could not be recorded the job is still `running`, and the
        // repair pass runs the attempt again; an unwritten last event it writes.
        self.forget_attempt(job, attempt);
        self.repair_on_error(announced)
    }

    /// The handler of `job`'s attempt threw `error` (JSON `{message, name?, code?,
    /// retriable?, retryAfter?}`): retry after a durable back-off, or fail the step.
    pub async fn fail(&self, job: &str, attempt: u32, error: &str) -> Result<()> {
        // An await interrupted by close() is not a failure of the step.
        self.check_open()?;
        let outcome = match self.record_failure(job, attempt, error).await {
            Ok(FailureRecorded::Failed { event, err, runner }) => {
                // as in `complete`
                let announced = self.announce_final(job, &event).await;
                let ended = self.end_run(job, &runner, Some(Err(err))).await;
                announced.and(ended)
            }
            Ok(FailureRecorded::NotOurs { runner }) => self.end_run(job, &runner, None).await,
            Ok(FailureRecorded::Retry { due }) => {
                self.forget_attempt(job, attempt);
                return self.wake_timers(due).await;
            }
            Err(e) => Err(e),
        };
        self.forget_attempt(job, attempt);
        self.repair_on_error(outcome)
    }

    /// The message of a thrown error as `step.failed` / `step.retry` carry it: the events
    /// must fit in `maxEventBytes` (the whole error stays in the job).
    pub(super) fn error_message(&self, thrown: &ThrownError) -> String {
        let mut message = thrown
            .message
            .clone()
            .unwrap_or_else(|| "step failed".into());
        let limit = (self.instance.bus.max_event_bytes().saturating_sub(1024) / 2)
            .clamp(64, MAX_ERROR_MESSAGE);
        if message.len() > limit {
            let mut end = limit;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        message
    }

    /// Record that an attempt threw: the retry (with its events), or the end of the job.
    async fn record_failure(
        &self,
        job: &str,
        attempt: u32,
        error: &str,
    ) -> Result<FailureRecorded> {
        let thrown = ThrownError::from_json(error);
        let message = self.error_message(&thrown);
        let a = self.attempt_info(job, attempt).await?;
        let policy = self.policy(&a.step);
        // a flow function is not retried: its steps are, each by its own policy
        if !a.is_flow {
            if let Some(delay) = policy.retry_delay(&thrown, attempt) {
                return self.record_retry(job, &a, &policy, &message, delay).await;
            }
        }
        let max = policy.max_attempts();
        let Attempt {
            step,
            flow,
            runner,
            is_flow,
            created_ms,
            ..
        } = a;
        let event = if is_flow {
            let duration = now_ms().saturating_sub(created_ms);
            events::flow_failed(job, &super::flows::flow_error(error, &message), duration)
        } else {
            events::step_failed(&flow, &step, &message, attempt, max, job, Next::Fail)
        };
        let finished = self
            .finish_job(
                job,
                attempt,
                JobStatus::Failed,
                &[
                    (field::ERROR, message.clone()),
                    (field::ERROR_DETAIL, error.to_owned()),
                ],
                event,
            )
            .await?;
        let Some(event) = finished else {
            return Ok(FailureRecorded::NotOurs { runner });
        };
        let err = step_failed(&step, attempt, &message, error);
        Ok(FailureRecorded::Failed { event, err, runner })
    }

    /// Move a job this instance runs at `attempt` to a final status (once: a compare-and-set
    /// that also checks owner and attempt, so an instance that lost the job cannot end it).
    /// The last event is kept in the job (`finalEvent`) until `announce_final` has written it.
    /// Returns that event when this call ended the job.
    async fn finish_job(
        &self,
        job: &str,
        attempt: u32,
        status: JobStatus,
        fields: &[(&str, String)],
        event: String,
    ) -> Result<Option<String>> {
        let attempt_s = attempt.to_string();
        let done = self
            .store()
            .hash_cas_with(
                &self.job_key(job),
                (
                    field::STATUS,
                    Expect::Value(JobStatus::Running.as_str()),
                    status.as_str(),
                ),
                &[
                    (field::OWNER, &self.instance.id),
                    (field::ATTEMPT, &attempt_s),
                ],
                (
                    &[
                        fields,
                        &[
                            (field::FINAL_EVENT, event.clone()),
                            (field::ENDED_MS, now_ms().to_string()),
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
    pub(super) async fn announce_final(&self, job: &str, event: &str) -> Result<()> {
        let emitted = self.instance.bus.emit(event, None).await.map(|_| ());
        if let Err(e) = &emitted {
            if !matches!(e.code, ErrorCode::PayloadTooLarge | ErrorCode::EventInvalid) {
                return self.repair_on_error(emitted);
            }
            // refused for good (checked before the job ended, so not expected): not retried
        }
        let owner = self.instance.id.clone();
        self.final_written(job, event, &owner).await?;
        emitted
    }

    /// The last event of an ended job is written: unmark it and drop the job from `owner`'s
    /// owned set, in one step.
    pub(super) async fn final_written(&self, job: &str, event: &str, owner: &str) -> Result<()> {
        let owned = self.owned_key(owner);
        self.store()
            .hash_cas_with(
                &self.job_key(job),
                (field::FINAL_EVENT, Expect::Value(event), ""),
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
        Ok(())
    }

    /// Refuse an event of this scheduler's that the bus would refuse: only its size can be
    /// wrong (its names are checked when given), with a margin for fields added later.
    pub(super) fn fits(&self, event: &str) -> Result<()> {
        let max = self.instance.bus.max_event_bytes().saturating_sub(64);
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
}
