//! The events the scheduler writes, with their exact shapes (`step.*` in the flow's stream,
//! `trigger.*` in the trigger's). User data (inputs, results, payloads, match values) is
//! carried as the JSON text it came as, never decoded and encoded again.

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::model::Await;
use crate::id::iso_from_ms;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a, D> {
    kind: &'static str,
    subject: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    data: D,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<Value>,
}

/// A step event of `flow`'s stream.
fn step_event<D: Serialize>(
    kind: &'static str,
    flow: &str,
    step: &str,
    data: D,
    meta: Value,
) -> String {
    to_json(&Envelope {
        kind,
        subject: flow,
        step: Some(step),
        correlation_id: None,
        data,
        meta: Some(meta),
    })
}

/// A trigger event of trigger `id`'s stream, correlated with its flow.
fn trigger_event<D: Serialize>(
    kind: &'static str,
    id: &str,
    flow: &str,
    data: D,
    meta: Option<Value>,
) -> String {
    to_json(&Envelope {
        kind,
        subject: id,
        step: None,
        correlation_id: (!flow.is_empty()).then_some(flow),
        data,
        meta,
    })
}

/// Serializing these types cannot fail (string keys, no maps of other keys); an empty
/// string would be refused by the bus as an invalid event.
fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// `step.started`: attempt `attempt` of `job` begins; `late_ms` after its retry was due.
pub(super) fn step_started(
    flow: &str,
    step: &str,
    input: &RawValue,
    attempt: u32,
    job: &str,
    late_ms: Option<u64>,
) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        input: &'a RawValue,
    }
    let mut meta = json!({ "attempt": attempt, "jobId": job });
    if let Some(l) = late_ms {
        meta["lateMs"] = l.into();
    }
    step_event("step.started", flow, step, Data { input }, meta)
}

/// `step.completed` with the handler's result.
pub(super) fn step_completed(
    flow: &str,
    step: &str,
    result: &RawValue,
    attempt: u32,
    duration_ms: u64,
    job: &str,
) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        result: &'a RawValue,
    }
    let meta = json!({ "attempt": attempt, "duration": duration_ms, "jobId": job });
    step_event("step.completed", flow, step, Data { result }, meta)
}

/// What a failed attempt leads to, for its `step.failed`.
pub(super) enum Next<'a> {
    /// Attempt `attempt + 1` at `due_ms`, with this back-off kind.
    Retry { due_ms: u64, backoff: &'a str },
    /// None: the step failed.
    Fail,
}

/// `step.failed` of attempt `attempt` (of `max` attempts).
pub(super) fn step_failed(
    flow: &str,
    step: &str,
    message: &str,
    attempt: u32,
    max: u32,
    job: &str,
    next: Next<'_>,
) -> String {
    let (data, meta) = match next {
        Next::Retry { due_ms, backoff } => (
            json!({ "error": message, "willRetry": true, "nextRetryAt": iso_from_ms(due_ms) }),
            json!({ "attempt": attempt, "maxAttempts": max, "backoff": backoff, "jobId": job }),
        ),
        Next::Fail => (
            json!({ "error": message, "willRetry": false }),
            json!({ "attempt": attempt, "maxAttempts": max, "jobId": job }),
        ),
    };
    step_event("step.failed", flow, step, data, meta)
}

/// `step.retry`: attempt `next_attempt` is due at `due_ms`, `delay_ms` from now.
pub(super) fn step_retry(
    flow: &str,
    step: &str,
    reason: &str,
    next_attempt: u32,
    delay_ms: u64,
    due_ms: u64,
    job: &str,
) -> String {
    step_event(
        "step.retry",
        flow,
        step,
        json!({ "reason": reason, "delayMs": delay_ms }),
        json!({ "attempt": next_attempt, "scheduledAt": iso_from_ms(due_ms), "jobId": job }),
    )
}

/// `step.await.time`: the step sleeps until `resume_at`.
pub(super) fn await_time(flow: &str, step: &str, resume_at: u64, job: &str) -> String {
    step_event(
        "step.await.time",
        flow,
        step,
        json!({ "resumeAt": iso_from_ms(resume_at) }),
        json!({ "jobId": job }),
    )
}

/// `step.await.event`: the step waits for an event of `kind` matching `condition`.
pub(super) fn await_event(
    flow: &str,
    step: &str,
    kind: &str,
    condition: &RawValue,
    timeout_ms: Option<u64>,
    job: &str,
) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Data<'a> {
        event_kind: &'a str,
        #[serde(rename = "match")]
        condition: &'a RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout: Option<u64>,
    }
    let data = Data {
        event_kind: kind,
        condition,
        timeout: timeout_ms,
    };
    step_event(
        "step.await.event",
        flow,
        step,
        data,
        json!({ "jobId": job }),
    )
}

/// `trigger.registered`, in the trigger's stream.
pub(super) fn trigger_registered(
    id: &str,
    flow: &str,
    trigger_type: &str,
    timeout_ms: Option<u64>,
) -> String {
    let mut data = json!({ "type": trigger_type });
    if let Some(t) = timeout_ms {
        data["timeout"] = t.into();
    }
    trigger_event("trigger.registered", id, flow, data, None)
}

/// `step.await.trigger`: the step waits for trigger `id`.
pub(super) fn await_trigger(
    flow: &str,
    step: &str,
    id: &str,
    trigger_type: &str,
    payload: Option<&RawValue>,
    timeout_ms: Option<u64>,
    job: &str,
) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Data<'a> {
        trigger_id: &'a str,
        trigger_type: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        payload: Option<&'a RawValue>,
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout: Option<u64>,
    }
    let data = Data {
        trigger_id: id,
        trigger_type,
        payload,
        timeout: timeout_ms,
    };
    step_event(
        "step.await.trigger",
        flow,
        step,
        data,
        json!({ "jobId": job }),
    )
}

/// `trigger.fired` with the payload `fire` was given.
pub(super) fn trigger_fired(id: &str, flow: &str, payload: &RawValue) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        payload: &'a RawValue,
        source: &'static str,
    }
    let data = Data {
        payload,
        source: "api",
    };
    trigger_event("trigger.fired", id, flow, data, None)
}

/// `trigger.cancelled` with its reason.
pub(super) fn trigger_cancelled(id: &str, flow: &str, reason: &str) -> String {
    trigger_event(
        "trigger.cancelled",
        id,
        flow,
        json!({ "reason": reason }),
        None,
    )
}

/// `step.await.cancelled`, in the flow's stream: the trigger `id` its step (or the flow
/// function) waited on was cancelled, so its `wait()` rejects with `TRIGGER_CANCELLED` and the
/// step goes on; without it the flow's stream would show the wait as pending for ever.
pub(super) fn step_await_cancelled(id: &str, a: &Await, reason: &str) -> String {
    step_event(
        "step.await.cancelled",
        &a.flow,
        &a.step,
        json!({ "awaitType": "trigger", "triggerId": id, "reason": reason }),
        json!({ "jobId": a.job }),
    )
}

/// `step.resumed`: a resolved await's result is handed to its step.
pub(super) fn step_resumed(a: &Await) -> String {
    let kind = a.type_name();
    let mut meta = json!({ "awaitType": kind, "jobId": a.job });
    if a.await_type == Some(super::model::AwaitType::Time) {
        meta["lateMs"] = a.late_ms.into();
    }
    step_event(
        "step.resumed",
        &a.flow,
        &a.step,
        json!({ "reason": kind, "awaitDuration": a.waited_ms() }),
        meta,
    )
}

/// `step.await.timeout`: the await's timeout came first, `late_ms` after it was due.
pub(super) fn await_timeout(a: &Await, late_ms: u64) -> String {
    step_event(
        "step.await.timeout",
        &a.flow,
        &a.step,
        json!({ "awaitType": a.type_name(), "duration": a.timeout_ms.unwrap_or(0) }),
        json!({ "lateMs": late_ms, "jobId": a.job }),
    )
}

/// `trigger.timeout`, in the trigger's stream.
pub(super) fn trigger_timeout(id: &str, a: &Await, late_ms: u64) -> String {
    trigger_event(
        "trigger.timeout",
        id,
        &a.flow,
        json!({ "duration": a.timeout_ms.unwrap_or(0) }),
        Some(json!({ "lateMs": late_ms })),
    )
}

/// A flow event of run `run`'s stream.
fn flow_event<D: Serialize>(
    kind: &'static str,
    run: &str,
    correlation: Option<&str>,
    data: D,
) -> String {
    to_json(&Envelope {
        kind,
        subject: run,
        step: None,
        correlation_id: correlation.filter(|c| !c.is_empty()),
        data,
        meta: Some(json!({ "jobId": run })),
    })
}

/// `flow.started`: run `run` of flow `name` begins with `input` (a rerun names the run it
/// reruns as `correlation`).
pub(super) fn flow_started(name: &str, run: &str, input: &RawValue, correlation: &str) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        name: &'a str,
        input: &'a RawValue,
    }
    flow_event("flow.started", run, Some(correlation), Data { name, input })
}

/// `flow.completed` with the flow function's result and the run's duration (ms).
pub(super) fn flow_completed(run: &str, result: &RawValue, duration_ms: u64) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        result: &'a RawValue,
        duration: u64,
    }
    let data = Data {
        result,
        duration: duration_ms,
    };
    flow_event("flow.completed", run, None, data)
}

/// `flow.failed` with what the flow function threw (`{message, name?, code?, step?}`).
pub(super) fn flow_failed(run: &str, error: &Value, duration_ms: u64) -> String {
    flow_event(
        "flow.failed",
        run,
        None,
        json!({ "error": error, "duration": duration_ms }),
    )
}

/// `flow.cancelled` with its reason.
pub(super) fn flow_cancelled(run: &str, reason: &str, duration_ms: u64) -> String {
    flow_event(
        "flow.cancelled",
        run,
        None,
        json!({ "reason": reason, "duration": duration_ms }),
    )
}

/// `step.started` of a flow's step: its attempt `attempt`, call `seq` of the run.
pub(super) fn flow_step_started(run: &str, step: &str, attempt: u32, seq: u32) -> String {
    step_event(
        "step.started",
        run,
        step,
        json!({}),
        json!({ "attempt": attempt, "jobId": run, "seq": seq }),
    )
}

/// `step.completed` of a flow's step.
pub(super) fn flow_step_completed(
    run: &str,
    step: &str,
    result: &RawValue,
    attempt: u32,
    duration_ms: u64,
    seq: u32,
) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        result: &'a RawValue,
    }
    let meta = json!({ "attempt": attempt, "duration": duration_ms, "jobId": run, "seq": seq });
    step_event("step.completed", run, step, Data { result }, meta)
}

/// Work for the host: run attempt `attempt` of `job` (as a replay when it was started
/// before).
pub(super) fn work(
    job: &str,
    step: &str,
    flow: &str,
    input: &RawValue,
    attempt: u32,
    replay: bool,
) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Work<'a> {
        job_id: &'a str,
        step: &'a str,
        flow: &'a str,
        input: &'a RawValue,
        attempt: u32,
        replay: bool,
    }
    to_json(&Work {
        job_id: job,
        step,
        flow,
        input,
        attempt,
        replay,
    })
}
