//! The scheduler's durable records, typed: a job's and an await's status and type, and views
//! of their store hashes, read and written here only (the rest of the scheduler never reads a
//! field by its name).
//!
//! - job (`<coord>:sched:job:<jobId>`, hash): step, flow, input, attempt, startedAttempt,
//!   status (see `JobStatus`; `failing` since `failingMs`), owner, result / error, `finalEvent`
//!   (the last event, until it is written; then empty) and `endedMs`, `runner` (the instance
//!   whose `run` call waits), `errorDetail`, `t:<attempt>:<seq>` → the trigger id of an
//!   `await.trigger` call. A flow run's job also has `kind` = `flow`, `correlationId`, and
//!   `c:<attempt>:<seq>` → the call its flow function made at that position (see `flows`).
//!   Expires 7 days after the job ends.
//! - await (`<coord>:await:<awaitId>`, hash): type (see `AwaitType`), job, flow, step, attempt,
//!   seq, owner, status (see `AwaitStatus`), createdMs, result, `announced` (its
//!   `step.await.*` event is written), `resumed` (its `step.resumed` is written), and per type
//!   resumeAt / kind + match / triggerType, timeoutMs; `pendingEvents` (a JSON array of the
//!   events its resolution writes, set by the compare-and-set that resolves it, emptied as
//!   they are written). `awaitId` is `<jobId>:<attempt>:<seq>`,
//!   or for a trigger its id: 32 random hex characters (128 bits), a capability. Expires 7
//!   days after it resolves.

use std::collections::HashMap;

/// Field names of the job and await hashes.
pub(super) mod field {
    pub const STATUS: &str = "status";
    pub const OWNER: &str = "owner";
    pub const ATTEMPT: &str = "attempt";
    pub const STEP: &str = "step";
    pub const FLOW: &str = "flow";
    pub const CREATED_MS: &str = "createdMs";
    pub const RESULT: &str = "result";
    // job
    pub const INPUT: &str = "input";
    pub const RUNNER: &str = "runner";
    pub const STARTED_ATTEMPT: &str = "startedAttempt";
    pub const ERROR: &str = "error";
    pub const ERROR_DETAIL: &str = "errorDetail";
    pub const FINAL_EVENT: &str = "finalEvent";
    pub const ENDED_MS: &str = "endedMs";
    pub const FAILING_MS: &str = "failingMs";
    /// `flow` on the job of a flow run (absent on a step's job).
    pub const KIND: &str = "kind";
    /// The run a flow run reruns (its `flow.started` carries it as `correlationId`).
    pub const CORRELATION: &str = "correlationId";
    // await
    pub const TYPE: &str = "type";
    pub const JOB: &str = "job";
    pub const SEQ: &str = "seq";
    pub const ANNOUNCED: &str = "announced";
    pub const RESUMED: &str = "resumed";
    pub const RESOLVED_MS: &str = "resolvedMs";
    pub const LATE_MS: &str = "lateMs";
    pub const RESUME_AT: &str = "resumeAt";
    pub const EVENT_KIND: &str = "kind";
    pub const MATCH: &str = "match";
    pub const TRIGGER_TYPE: &str = "triggerType";
    pub const TIMEOUT_MS: &str = "timeoutMs";
    pub const REASON: &str = "reason";
    pub const PENDING_EVENTS: &str = "pendingEvents";
    // step record of a flow
    pub const STEP_ATTEMPT: &str = "stepAttempt";

    /// The job field that holds the trigger id of call `seq` of `attempt`.
    pub fn trigger_slot(attempt: u32, seq: u32) -> String {
        format!("t:{attempt}:{seq}")
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// An attempt runs (or is to be started) on the owner.
    Running,
    /// An attempt failed and its retry timer is set; its `step.failed` / `step.retry` are not
    /// written yet.
    Failing,
    /// Waiting for the retry timer.
    Retrying,
    /// Ended with a result.
    Completed,
    /// Ended with an error.
    Failed,
    /// A flow run cancelled by `cancel_flow`.
    Cancelled,
}

impl JobStatus {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Running => "running",
            JobStatus::Failing => "failing",
            JobStatus::Retrying => "retrying",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Read the stored form.
    pub fn parse(s: &str) -> Option<JobStatus> {
        Some(match s {
            "running" => JobStatus::Running,
            "failing" => JobStatus::Failing,
            "retrying" => JobStatus::Retrying,
            "completed" => JobStatus::Completed,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            _ => return None,
        })
    }

    /// Completed, failed or cancelled.
    pub fn has_ended(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// Where an await is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwaitStatus {
    /// Nothing resolved it yet.
    Pending,
    /// Its time came, its event was stored or its trigger fired.
    Resolved,
    /// Its timeout came first.
    Timeout,
    /// Its trigger was cancelled.
    Cancelled,
}

impl AwaitStatus {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            AwaitStatus::Pending => "pending",
            AwaitStatus::Resolved => "resolved",
            AwaitStatus::Timeout => "timeout",
            AwaitStatus::Cancelled => "cancelled",
        }
    }

    /// Read the stored form.
    pub fn parse(s: &str) -> Option<AwaitStatus> {
        Some(match s {
            "pending" => AwaitStatus::Pending,
            "resolved" => AwaitStatus::Resolved,
            "timeout" => AwaitStatus::Timeout,
            "cancelled" => AwaitStatus::Cancelled,
            _ => return None,
        })
    }
}

/// What an await waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwaitType {
    /// `ctx.await.time`.
    Time,
    /// `ctx.await.event`.
    Event,
    /// `ctx.await.trigger`.
    Trigger,
    /// A flow's `ctx.step` (its record: the step's attempt and, once done, its result).
    Step,
}

impl AwaitType {
    /// The stored form (also `reason` / `awaitType` in events).
    pub fn as_str(self) -> &'static str {
        match self {
            AwaitType::Time => "time",
            AwaitType::Event => "event",
            AwaitType::Trigger => "trigger",
            AwaitType::Step => "step",
        }
    }

    /// Read the stored form.
    pub fn parse(s: &str) -> Option<AwaitType> {
        Some(match s {
            "time" => AwaitType::Time,
            "event" => AwaitType::Event,
            "trigger" => AwaitType::Trigger,
            "step" => AwaitType::Step,
            _ => return None,
        })
    }
}

fn number<T: std::str::FromStr>(fields: &HashMap<String, String>, name: &str) -> Option<T> {
    fields.get(name).and_then(|v| v.parse().ok())
}

fn text(fields: &mut HashMap<String, String>, name: &str) -> String {
    fields.remove(name).unwrap_or_default()
}

/// A job as the store holds it.
#[derive(Debug, Clone, Default)]
pub struct Job {
    /// `None`: no such job (or a status this version does not know).
    pub status: Option<JobStatus>,
    pub step: String,
    pub flow: String,
    /// The run input (JSON).
    pub input: String,
    pub attempt: u32,
    /// The last attempt whose `step.started` is written (0: none).
    pub started_attempt: u32,
    pub owner: String,
    pub runner: String,
    /// The result (JSON) once completed.
    pub result: String,
    /// The error message once failed.
    pub error: String,
    /// The thrown error (JSON) once failed.
    pub error_detail: String,
    /// The last event while it is not written yet.
    pub final_event: Option<String>,
    pub ended_ms: u64,
    pub failing_ms: u64,
    /// When it was created (Unix ms; 0 when not recorded).
    pub created_ms: u64,
    /// The job of a flow run (the flow function is its handler).
    pub is_flow: bool,
    /// A flow run's `correlationId` (the run it reruns; empty: none).
    pub correlation: String,
}

impl Job {
    /// The view of a job hash (empty: no such job).
    pub fn from_fields(mut f: HashMap<String, String>) -> Job {
        Job {
            status: f.get(field::STATUS).and_then(|s| JobStatus::parse(s)),
            attempt: number(&f, field::ATTEMPT).unwrap_or(1),
            started_attempt: number(&f, field::STARTED_ATTEMPT).unwrap_or(0),
            ended_ms: number(&f, field::ENDED_MS).unwrap_or(0),
            failing_ms: number(&f, field::FAILING_MS).unwrap_or(0),
            created_ms: number(&f, field::CREATED_MS).unwrap_or(0),
            is_flow: f.get(field::KIND).is_some_and(|k| k == "flow"),
            correlation: text(&mut f, field::CORRELATION),
            final_event: f.remove(field::FINAL_EVENT).filter(|e| !e.is_empty()),
            step: text(&mut f, field::STEP),
            flow: text(&mut f, field::FLOW),
            input: f.remove(field::INPUT).unwrap_or_else(|| "null".into()),
            owner: text(&mut f, field::OWNER),
            runner: text(&mut f, field::RUNNER),
            result: text(&mut f, field::RESULT),
            error: text(&mut f, field::ERROR),
            error_detail: text(&mut f, field::ERROR_DETAIL),
        }
    }

    /// The fields of a new job, created running at attempt 1 on `owner` (status apart: the
    /// compare-and-set that creates the job writes it).
    pub fn new_fields(
        step: &str,
        flow: &str,
        input: &str,
        owner: &str,
        created_ms: u64,
    ) -> Vec<(&'static str, String)> {
        vec![
            (field::STEP, step.to_owned()),
            (field::FLOW, flow.to_owned()),
            (field::INPUT, input.to_owned()),
            (field::ATTEMPT, "1".into()),
            (field::OWNER, owner.to_owned()),
            (field::RUNNER, owner.to_owned()),
            (field::CREATED_MS, created_ms.to_string()),
        ]
    }

    /// Ended, with its last event still to write.
    pub fn unannounced_end(&self) -> Option<&str> {
        match self.status {
            Some(s) if s.has_ended() => self.final_event.as_deref(),
            _ => None,
        }
    }
}

/// What an await of each type records when it is created.
#[derive(Debug, Clone)]
pub enum AwaitSpec {
    /// Resolves at `resume_at` (Unix ms).
    Time { resume_at: u64 },
    /// Resolves with the first event of `kind` matching `condition` (JSON).
    Event {
        kind: String,
        condition: String,
        timeout_ms: Option<u64>,
    },
    /// Resolves when the trigger fires.
    Trigger {
        trigger_type: String,
        timeout_ms: Option<u64>,
    },
    /// A flow's step named `name`: resolves when an attempt of it returns.
    Step { name: String },
}

impl AwaitSpec {
    /// The await's type.
    pub fn await_type(&self) -> AwaitType {
        match self {
            AwaitSpec::Time { .. } => AwaitType::Time,
            AwaitSpec::Event { .. } => AwaitType::Event,
            AwaitSpec::Trigger { .. } => AwaitType::Trigger,
            AwaitSpec::Step { .. } => AwaitType::Step,
        }
    }

    /// How a flow run records the call that made it (what a replay must call again).
    pub fn call_name(&self) -> String {
        match self {
            AwaitSpec::Time { .. } => "await.time".into(),
            AwaitSpec::Event { kind, .. } => format!("await.event '{kind}'"),
            AwaitSpec::Trigger { trigger_type, .. } => format!("await.trigger '{trigger_type}'"),
            AwaitSpec::Step { name } => format!("step '{name}'"),
        }
    }

    /// Its fields in the await hash.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![(field::TYPE, self.await_type().as_str().to_owned())];
        let timeout = match self {
            AwaitSpec::Time { resume_at } => {
                out.push((field::RESUME_AT, resume_at.to_string()));
                None
            }
            AwaitSpec::Event {
                kind,
                condition,
                timeout_ms,
            } => {
                out.push((field::EVENT_KIND, kind.clone()));
                out.push((field::MATCH, condition.clone()));
                *timeout_ms
            }
            AwaitSpec::Trigger {
                trigger_type,
                timeout_ms,
            } => {
                out.push((field::TRIGGER_TYPE, trigger_type.clone()));
                *timeout_ms
            }
            AwaitSpec::Step { .. } => None,
        };
        if let Some(t) = timeout {
            out.push((field::TIMEOUT_MS, t.to_string()));
        }
        out
    }
}

/// An await as the store holds it.
#[derive(Debug, Clone, Default)]
pub struct Await {
    /// `None`: no such await (or a status this version does not know).
    pub status: Option<AwaitStatus>,
    pub await_type: Option<AwaitType>,
    pub job: String,
    pub flow: String,
    pub step: String,
    /// The attempt of the job that made it.
    pub attempt: u32,
    pub created_ms: Option<u64>,
    pub resolved_ms: u64,
    pub late_ms: u64,
    /// An `await.time`'s due time (Unix ms).
    pub resume_at: Option<u64>,
    /// What it resolved to (JSON; for an event await the event's live payload).
    pub result: Option<String>,
    pub announced: bool,
    pub resumed: bool,
    /// An event await's kind.
    pub event_kind: Option<String>,
    pub timeout_ms: Option<u64>,
    /// Why a trigger was cancelled.
    pub reason: String,
    /// The events its resolution writes that are not written yet, in order.
    pub pending_events: Vec<String>,
    /// A step record's current attempt (1 when not recorded).
    pub step_attempt: u32,
    /// A step record's last attempt whose `step.started` is written (0: none).
    pub started_attempt: u32,
    /// A step record that failed for good: the thrown error (JSON).
    pub error_detail: Option<String>,
}

impl Await {
    /// The view of an await hash (empty: no such await).
    pub fn from_fields(mut f: HashMap<String, String>) -> Await {
        Await {
            status: f.get(field::STATUS).and_then(|s| AwaitStatus::parse(s)),
            await_type: f.get(field::TYPE).and_then(|s| AwaitType::parse(s)),
            attempt: number(&f, field::ATTEMPT).unwrap_or(0),
            created_ms: number(&f, field::CREATED_MS),
            resolved_ms: number(&f, field::RESOLVED_MS).unwrap_or(0),
            late_ms: number(&f, field::LATE_MS).unwrap_or(0),
            resume_at: number(&f, field::RESUME_AT),
            timeout_ms: number(&f, field::TIMEOUT_MS),
            announced: f.contains_key(field::ANNOUNCED),
            step_attempt: number(&f, field::STEP_ATTEMPT).unwrap_or(1),
            started_attempt: number(&f, field::STARTED_ATTEMPT).unwrap_or(0),
            error_detail: f.remove(field::ERROR_DETAIL),
            resumed: f.contains_key(field::RESUMED),
            result: f.remove(field::RESULT),
            event_kind: f.remove(field::EVENT_KIND),
            job: text(&mut f, field::JOB),
            flow: text(&mut f, field::FLOW),
            step: text(&mut f, field::STEP),
            reason: text(&mut f, field::REASON),
            pending_events: f
                .get(field::PENDING_EVENTS)
                .and_then(|e| serde_json::from_str(e).ok())
                .unwrap_or_default(),
        }
    }

    /// The await's type as events name it (`await` when unknown).
    pub fn type_name(&self) -> &'static str {
        self.await_type.map_or("await", AwaitType::as_str)
    }

    /// The stored form of events still to write (empty: none).
    pub fn encode_events(events: &[String]) -> String {
        if events.is_empty() {
            String::new()
        } else {
            serde_json::to_string(events).unwrap_or_default()
        }
    }

    /// How long it waited, in ms.
    pub fn waited_ms(&self) -> u64 {
        self.resolved_ms
            .saturating_sub(self.created_ms.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_types_round_trip() {
        for s in [
            JobStatus::Running,
            JobStatus::Failing,
            JobStatus::Retrying,
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ] {
            assert_eq!(JobStatus::parse(s.as_str()), Some(s));
        }
        for s in [
            AwaitStatus::Pending,
            AwaitStatus::Resolved,
            AwaitStatus::Timeout,
            AwaitStatus::Cancelled,
        ] {
            assert_eq!(AwaitStatus::parse(s.as_str()), Some(s));
        }
        for t in [
            AwaitType::Time,
            AwaitType::Event,
            AwaitType::Trigger,
            AwaitType::Step,
        ] {
            assert_eq!(AwaitType::parse(t.as_str()), Some(t));
        }
        assert_eq!(JobStatus::parse("done"), None);
    }

    #[test]
    fn a_job_hash_reads_into_its_view() {
        let fields: HashMap<String, String> = [
            ("status", "completed"),
            ("step", "s"),
            ("attempt", "3"),
            ("finalEvent", ""),
            ("result", "7"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let job = Job::from_fields(fields);
        assert_eq!(job.status, Some(JobStatus::Completed));
        assert_eq!((job.attempt, job.step.as_str()), (3, "s"));
        assert_eq!(
            job.final_event, None,
            "an empty last event is a written one"
        );
        assert_eq!(job.input, "null");
        assert_eq!(Job::from_fields(HashMap::new()).status, None);
    }
}
