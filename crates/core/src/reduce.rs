//! Flow and trigger reducers: events in, state out. The browser-safe twin lives in
//! `client/index.js`; both are checked against the same JSON vectors (`vectors/reducers`).
//!
//! Both are incremental (`apply_*` folds one event into a state), ignore unknown kinds, and
//! never fail on events out of the expected order: a `step.completed` without `step.started`
//! creates the step as completed, and a late `flow.started` does not reopen a finished flow.
//!
//! A flow state starts as `unknown` (a stream with no events is no run) and is `running` from
//! its first event on. An await made by the flow function itself (`ctx.await.*` in
//! `defineFlow`) is written as `step.*` events whose step is the flow's name and whose
//! `meta.jobId` is the run id: those are not a step but the run's `waiting` list (the flow-level awaits still
//! pending), so no step named after the flow appears. Once the run ended (`completed`,
//! `failed`, `cancelled`), nothing in its state is pending: `waiting` is gone and a step that
//! had not finished (`pending`, `running`, `waiting`, `retrying`) is `cancelled`; a later
//! `step.completed` / `step.failed` still records how it finished.

use serde_json::{Map, Value};

/// True for the kinds that end a flow run (in a `flow` stream) or resolve a trigger (in a
/// `trigger` stream): those the reducers answer with a final status — today `flow.completed`,
/// `flow.failed`, `trigger.fired`, `trigger.timeout` and `trigger.cancelled`. The reducers are
/// asked, so a kind they learn to end a run with counts here too. Retention
/// (`retention.finishedRunsMs`) expires a stream after one of these.
pub fn is_terminal(stream_type: &str, kind: &str) -> bool {
    let event = || {
        let mut e = Map::new();
        e.insert("kind".into(), kind.into());
        Value::Object(e)
    };
    let status = |s: &Value| s.get("status").and_then(Value::as_str).map(str::to_owned);
    match stream_type {
        "flow" if kind.starts_with("flow.") => {
            let mut s = initial_flow_state();
            apply_flow_event(&mut s, &event());
            matches!(
                status(&s).as_deref(),
                Some("completed" | "failed" | "cancelled")
            )
        }
        "trigger" if kind.starts_with("trigger.") => {
            let mut s = initial_trigger_state();
            apply_trigger_event(&mut s, &event());
            matches!(
                status(&s).as_deref(),
                Some("fired" | "timeout" | "cancelled")
            )
        }
        _ => false,
    }
}

/// The initial flow state.
pub fn initial_flow_state() -> Value {
    let mut s = Map::new();
    s.insert("status".into(), "unknown".into());
    s.insert("steps".into(), Value::Object(Map::new()));
    s.insert("logs".into(), Value::Array(Vec::new()));
    Value::Object(s)
}

/// The initial trigger state.
pub fn initial_trigger_state() -> Value {
    let mut s = Map::new();
    s.insert("status".into(), "registered".into());
    Value::Object(s)
}

/// Reduce a flow's events, oldest first.
pub fn reduce_flow_state<'a>(events: impl IntoIterator<Item = &'a Value>) -> Value {
    let mut state = initial_flow_state();
    for e in events {
        apply_flow_event(&mut state, e);
    }
    state
}

/// Reduce a trigger's events, oldest first.
pub fn reduce_trigger_state<'a>(events: impl IntoIterator<Item = &'a Value>) -> Value {
    let mut state = initial_trigger_state();
    for e in events {
        apply_trigger_event(&mut state, e);
    }
    state
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur.as_object()?.get(*p)?;
    }
    Some(cur)
}

fn set_opt(obj: &mut Map<String, Value>, key: &str, v: Option<&Value>) {
    if let Some(v) = v {
        obj.insert(key.into(), v.clone());
    }
}

/// Fold one event into a flow state.
pub fn apply_flow_event(state: &mut Value, event: &Value) {
    let Some(s) = state.as_object_mut() else {
        return;
    };
    if !event.is_object() {
        return;
    }
    let kind = event.get("kind").and_then(Value::as_str).unwrap_or("");
    let ts = event.get("ts").cloned();
    let data = event.get("data");
    let terminal = matches!(
        s.get("status").and_then(Value::as_str),
        Some("completed" | "failed" | "cancelled")
    );
    if s.get("status").and_then(Value::as_str) == Some("unknown") {
        // the stream has an event: there is a run
        s.insert("status".into(), "running".into());
    }
    if is_flow_level(kind, event, s.get("name").and_then(Value::as_str)) {
        if !terminal {
            apply_flow_await(s, kind, event, ts.as_ref(), data);
        }
        return;
    }
    match kind {
        "flow.started" => {
            if !terminal {
                s.insert("status".into(), "running".into());
            }
            set_opt(s, "name", data.and_then(|d| d.get("name")));
            set_opt(s, "startedAt", ts.as_ref());
        }
        "flow.completed" | "flow.failed" => {
            let status = if kind == "flow.completed" {
                "completed"
            } else {
                "failed"
            };
            s.insert("status".into(), status.into());
            set_opt(s, "completedAt", ts.as_ref());
            set_opt(s, "duration", data.and_then(|d| d.get("duration")));
            if kind == "flow.failed" {
                set_opt(s, "error", data.and_then(|d| d.get("error")));
            }
            close_pending(s);
        }
        "flow.cancelled" => {
            close_pending(s);
            s.insert("status".into(), "cancelled".into());
            set_opt(s, "completedAt", ts.as_ref());
            set_opt(s, "duration", data.and_then(|d| d.get("duration")));
            set_opt(s, "reason", data.and_then(|d| d.get("reason")));
        }
        "log" => {
            let mut entry = Map::new();
            set_opt(&mut entry, "ts", ts.as_ref());
            set_opt(&mut entry, "step", event.get("step"));
            set_opt(&mut entry, "level", data.and_then(|d| d.get("level")));
            set_opt(&mut entry, "msg", data.and_then(|d| d.get("msg")));
            if let Value::Array(logs) = s.entry("logs").or_insert_with(|| Value::Array(Vec::new()))
            {
                logs.push(Value::Object(entry));
            }
        }
        k if k.starts_with("step.") => {
            let Some(name) = event.get("step").and_then(Value::as_str) else {
                return;
            };
            let steps = s
                .entry("steps")
                .or_insert_with(|| Value::Object(Map::new()));
            let Some(steps) = steps.as_object_mut() else {
                return;
            };
            let step = steps.entry(name).or_insert_with(|| {
                let mut m = Map::new();
                m.insert("status".into(), "pending".into());
                m.insert("attempt".into(), 0.into());
                Value::Object(m)
            });
            if let Some(step) = step.as_object_mut() {
                apply_step_event(step, kind, event, ts.as_ref(), data);
                if terminal {
                    close_step(step);
                }
            }
        }
        _ => {}
    }
}

/// The kinds a flow-level await writes.
const AWAIT_KINDS: [&str; 6] = [
    "step.await.time",
    "step.await.event",
    "step.await.trigger",
    "step.resumed",
    "step.await.timeout",
    "step.await.cancelled",
];

/// True for an await event of the flow function itself: its step is the flow's name and its
/// job is the run (`meta.jobId` is the run id, the event's `flow`, or its `subject` when it
/// has none).
fn is_flow_level(kind: &str, event: &Value, flow_name: Option<&str>) -> bool {
    if !AWAIT_KINDS.contains(&kind) {
        return false;
    }
    // a step run on its own with the run's id as its job id is still a step: the flow's own
    // awaits carry the flow's name as their step
    if flow_name.is_none() || event.get("step").and_then(Value::as_str) != flow_name {
        return false;
    }
    let Some(job) = get(event, &["meta", "jobId"]).and_then(Value::as_str) else {
        return false;
    };
    let run = event
        .get("flow")
        .and_then(Value::as_str)
        .or_else(|| event.get("subject").and_then(Value::as_str));
    run == Some(job)
}

/// Fold a flow-level await event into the run's `waiting` list: an await adds
/// `{ awaitType, awaitData, since }`, a resume or timeout removes the oldest entry of its type
/// and a cancelled trigger its own entry; an empty list is no field.
fn apply_flow_await(
    s: &mut Map<String, Value>,
    kind: &str,
    event: &Value,
    ts: Option<&Value>,
    data: Option<&Value>,
) {
    let mut waiting = match s.remove("waiting") {
        Some(Value::Array(w)) => w,
        _ => Vec::new(),
    };
    match kind {
        "step.await.time" | "step.await.event" | "step.await.trigger" => {
            let mut entry = Map::new();
            entry.insert("awaitType".into(), kind["step.await.".len()..].into());
            set_opt(&mut entry, "awaitData", data);
            set_opt(&mut entry, "since", ts);
            waiting.push(Value::Object(entry));
        }
        _ => {
            let await_type = if kind == "step.resumed" {
                get(event, &["meta", "awaitType"])
            } else {
                data.and_then(|d| d.get("awaitType"))
            };
            // a cancelled trigger names itself; otherwise the oldest await of the type
            let trigger = data.and_then(|d| d.get("triggerId"));
            let at = trigger
                .and_then(|t| {
                    waiting
                        .iter()
                        .position(|w| get(w, &["awaitData", "triggerId"]) == Some(t))
                })
                .or_else(|| {
                    waiting
                        .iter()
                        .position(|w| await_type.is_none() || w.get("awaitType") == await_type)
                });
            if let Some(i) = at {
                waiting.remove(i);
            }
        }
    }
    if !waiting.is_empty() {
        s.insert("waiting".into(), Value::Array(waiting));
    }
}

/// The run ended: no flow-level await is pending, no step unfinished.
fn close_pending(s: &mut Map<String, Value>) {
    s.remove("waiting");
    if let Some(Value::Object(steps)) = s.get_mut("steps") {
        for step in steps.values_mut() {
            if let Some(step) = step.as_object_mut() {
                close_step(step);
            }
        }
    }
}

/// A step of an ended run that had not finished is `cancelled`.
fn close_step(step: &mut Map<String, Value>) {
    if matches!(
        step.get("status").and_then(Value::as_str),
        Some("pending" | "running" | "waiting" | "retrying")
    ) {
        step.insert("status".into(), "cancelled".into());
    }
}

fn apply_step_event(
    step: &mut Map<String, Value>,
    kind: &str,
    event: &Value,
    ts: Option<&Value>,
    data: Option<&Value>,
) {
    let meta_attempt = get(event, &["meta", "attempt"])
        .filter(|a| a.is_number())
        .cloned();
    let current = step.get("attempt").and_then(Value::as_u64).unwrap_or(0);
    let clear_wait = |step: &mut Map<String, Value>| {
        step.remove("awaitType");
        step.remove("awaitData");
    };
    match kind {
        "step.started" => {
            step.insert("status".into(), "running".into());
            step.insert(
                "attempt".into(),
                meta_attempt.unwrap_or_else(|| (current + 1).into()),
            );
            set_opt(step, "startedAt", ts);
            step.remove("completedAt");
            step.remove("error");
            clear_wait(step);
        }
        "step.completed" => {
            step.insert("status".into(), "completed".into());
            step.insert(
                "attempt".into(),
                meta_attempt.unwrap_or_else(|| current.max(1).into()),
            );
            set_opt(step, "completedAt", ts);
            set_opt(step, "result", data.and_then(|d| d.get("result")));
            step.remove("error");
            clear_wait(step);
        }
        "step.failed" => {
            let retry = data
                .and_then(|d| d.get("willRetry"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            step.insert(
                "status".into(),
                if retry { "retrying" } else { "failed" }.into(),
            );
            step.insert(
                "attempt".into(),
                meta_attempt.unwrap_or_else(|| current.max(1).into()),
            );
            set_opt(step, "error", data.and_then(|d| d.get("error")));
            if !retry {
                set_opt(step, "completedAt", ts);
            }
            clear_wait(step);
        }
        "step.retry" => {
            step.insert("status".into(), "retrying".into());
        }
        "step.await.time" | "step.await.event" | "step.await.trigger" => {
            step.insert("status".into(), "waiting".into());
            let await_type = &kind["step.await.".len()..];
            step.insert("awaitType".into(), await_type.into());
            set_opt(step, "awaitData", data);
        }
        "step.resumed" | "step.await.cancelled" => {
            step.insert("status".into(), "running".into());
            clear_wait(step);
        }
        "step.await.timeout" => {
            step.insert("status".into(), "timeout".into());
            set_opt(step, "awaitType", data.and_then(|d| d.get("awaitType")));
            step.remove("awaitData");
        }
        _ => {}
    }
}

/// Fold one event into a trigger state.
pub fn apply_trigger_event(state: &mut Value, event: &Value) {
    let Some(s) = state.as_object_mut() else {
        return;
    };
    let kind = event.get("kind").and_then(Value::as_str).unwrap_or("");
    let ts = event.get("ts");
    let data = event.get("data");
    let resolved = matches!(
        s.get("status").and_then(Value::as_str),
        Some("fired" | "timeout" | "cancelled")
    );
    match kind {
        "trigger.registered" => {
            if !resolved {
                s.insert("status".into(), "registered".into());
            }
            set_opt(s, "registeredAt", ts);
            set_opt(s, "type", data.and_then(|d| d.get("type")));
        }
        "trigger.fired" => {
            s.insert("status".into(), "fired".into());
            set_opt(s, "firedAt", ts);
            set_opt(s, "payload", data.and_then(|d| d.get("payload")));
        }
        "trigger.timeout" => {
            s.insert("status".into(), "timeout".into());
        }
        "trigger.cancelled" => {
            s.insert("status".into(), "cancelled".into());
        }
        _ => return,
    }
    if !s.contains_key("correlationId") {
        set_opt(s, "correlationId", event.get("correlationId"));
    }
}

#[cfg(test)]
mod tests {
    use super::is_terminal;

    #[test]
    fn the_reducers_say_which_kinds_end_a_run_or_a_trigger() {
        for (t, k) in [
            ("flow", "flow.completed"),
            ("flow", "flow.failed"),
            ("trigger", "trigger.fired"),
            ("trigger", "trigger.timeout"),
            ("trigger", "trigger.cancelled"),
        ] {
            assert!(is_terminal(t, k), "{t} {k}");
        }
        for (t, k) in [
            ("flow", "flow.started"),
            ("flow", "step.completed"),
            ("flow", "flow.progress"),
            ("trigger", "trigger.registered"),
            ("job", "flow.completed"),
            ("flow", "trigger.fired"),
        ] {
            assert!(!is_terminal(t, k), "{t} {k}");
        }
    }
}
