//! Scheduler behaviour on Redis and on the embedded store, with a Rust host standing in for
//! the JavaScript one: it takes work and runs a handler closure per step.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use lean_events_core::scheduler::{Due, RetryPolicy, Scheduler, SchedulerOptions};
use lean_events_core::{Bus, ErrorCode, ReadOptions, StreamRef};
use serde_json::{json, Value};

type Outcome = Result<Value, Value>;
type Handler =
    Arc<dyn Fn(Scheduler, Value) -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync>;

/// Run every work item through `handler`, reporting the outcome like the JS host does.
/// Aborting the returned task stops the host and every handler it runs (a crash).
fn host(s: &Scheduler, handler: Handler) -> tokio::task::JoinHandle<()> {
    let s = s.clone();
    tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            for w in s.next_work().await {
                let w: Value = serde_json::from_str(&w).unwrap();
                let (s2, h) = (s.clone(), handler.clone());
                tasks.spawn(async move {
                    let job = w["jobId"].as_str().unwrap().to_owned();
                    let attempt = w["attempt"].as_u64().unwrap() as u32;
                    // an outcome that cannot be recorded is the scheduler's to recover from
                    let _ = match h(s2.clone(), w).await {
                        Ok(v) => s2.complete(&job, attempt, &v.to_string()).await,
                        Err(e) => s2.fail(&job, attempt, &e.to_string()).await,
                    };
                });
            }
            while tasks.try_join_next().is_some() {}
        }
    })
}

/// Wait (at most 10 s) until the async condition `$cond` holds.
macro_rules! eventually {
    ($what:expr, $cond:expr) => {{
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !$cond {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {}",
                $what
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }};
}

async fn has_kind(bus: &Bus, flow: &str, kind: &str) -> bool {
    kinds(&events(bus, flow).await).iter().any(|k| k == kind)
}

/// A second bus on `bus`'s store, as another instance has one: another connection to Redis,
/// the same store when embedded.
async fn bus_beside(backend: Backend, bus: &Bus) -> Bus {
    match backend {
        Backend::Redis => connect_with(backend, "x", |c| c.prefix = bus.prefix().to_owned()).await,
        Backend::Memory => bus.clone(),
    }
}

/// A step that registers a trigger (timing out after `input.timeout` ms, if given), sends its
/// id on `ids`, and returns what waiting for it gives: the payload, or `{code}`.
fn approver(ids: tokio::sync::mpsc::UnboundedSender<String>) -> Handler {
    Arc::new(move |s, w| {
        let ids = ids.clone();
        Box::pin(async move {
            let job = w["jobId"].as_str().unwrap().to_owned();
            let a = w["attempt"].as_u64().unwrap() as u32;
            let timeout = w["input"]["timeout"].as_u64();
            let id = s
                .register_trigger(&job, a, 0, "webhook", None, timeout)
                .await
                .unwrap();
            ids.send(id.clone()).unwrap();
            match s.wait_trigger(&id).await {
                Ok(p) => Ok(serde_json::from_str(&p).unwrap()),
                Err(e) => Ok(json!({"code": e.code.as_str()})),
            }
        })
    })
}

fn policy(json: Value) -> RetryPolicy {
    RetryPolicy::from_json(&json.to_string()).unwrap()
}

async fn scheduler(bus: &Bus) -> Scheduler {
    Scheduler::start(
        bus,
        SchedulerOptions {
            lease_ms: 600,
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_then_succeeds_with_the_exact_event_sequence() {
    for backend in BACKENDS {
        let bus = connect(backend, "sched-retry").await;
        let s = scheduler(&bus).await;
        s.define(
            "flaky",
            policy(json!({"attempts": 3, "backoff": {"type": "fixed", "delayMs": 40}})),
        )
        .unwrap();
        host(
            &s,
            Arc::new(|_, w| {
                Box::pin(async move {
                    if w["attempt"].as_u64() < Some(3) {
                        Err(json!({"message": "boom"}))
                    } else {
                        Ok(json!({"n": w["input"]["n"]}))
                    }
                })
            }),
        );
        let out = s.run("flaky", "f1", r#"{"n":7}"#, None).await.unwrap();
        assert_eq!(out, r#"{"n":7}"#);
        let evs = events(&bus, "f1").await;
        assert_eq!(
            kinds(&evs),
            [
                "step.started",
                "step.failed",
                "step.retry",
                "step.started",
                "step.failed",
                "step.retry",
                "step.started",
                "step.completed"
            ],
            "{backend:?}"
        );
        assert_eq!(evs[0]["meta"]["attempt"], 1);
        assert_eq!(evs[1]["data"]["willRetry"], true);
        assert_eq!(evs[2]["meta"]["attempt"], 2);
        assert_eq!(evs[2]["data"]["delayMs"], 40);
        assert!(
            evs[3]["meta"]["lateMs"].is_u64(),
            "a started-after-back-off carries lateMs"
        );
        assert_eq!(evs[7]["meta"]["attempt"], 3);
        // the back-off was waited for: attempt 2 started at least delayMs after attempt 1 did
        let ms = |e: &Value| {
            e["id"]
                .as_str()
                .unwrap()
                .split('-')
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        };
        assert!(ms(&evs[3]) >= ms(&evs[0]) + 40);
        s.close().await;
        bus.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_retriable_errors_fail_at_once() {
    for backend in BACKENDS {
        let bus = connect(backend, "sched-fail").await;
        let s = scheduler(&bus).await;
        let p = json!({"attempts": 5, "backoff": {"type": "fixed", "delayMs": 10}, "retriableErrors": ["ETIMEDOUT"]});
        s.define("a", policy(p.clone())).unwrap();
        s.define("b", policy(p.clone())).unwrap();
        s.define("c", policy(p)).unwrap();
        host(
            &s,
            Arc::new(|_, w| {
                Box::pin(async move {
                    match w["step"].as_str().unwrap() {
                        "a" => Err(
                            json!({"message": "bad input", "code": "ETIMEDOUT", "retriable": false}),
                        ),
                        "b" => Err(json!({"message": "nope", "name": "TypeError"})),
                        _ if w["attempt"] == 1 => {
                            Err(json!({"message": "slow", "code": "ETIMEDOUT", "retryAfter": 30}))
                        }
                        _ => Ok(json!(true)),
                    }
                })
            }),
        );
        for step in ["a", "b"] {
            let e = s
                .run(step, &format!("f-{step}"), "null", None)
                .await
                .unwrap_err();
            assert_eq!(e.code, ErrorCode::StepFailed, "{backend:?} {step}");
            let evs = events(&bus, &format!("f-{step}")).await;
            assert_eq!(kinds(&evs), ["step.started", "step.failed"]);
            assert_eq!(evs[1]["data"]["willRetry"], false);
        }
        s.run("c", "f-c", "null", None).await.unwrap();
        let evs = events(&bus, "f-c").await;
        assert_eq!(
            evs[2]["data"]["delayMs"], 30,
            "retryAfter overrides the back-off"
        );
        s.close().await;
        bus.close();
    }
}

#[test]
fn backoff_policies() {
    let p = policy(
        json!({"attempts": 10, "backoff": {"type": "exponential", "delayMs": 100, "maxDelayMs": 1000}}),
    );
    assert_eq!(
        (1..=6).map(|a| p.delay_ms(a)).collect::<Vec<_>>(),
        [100, 200, 400, 800, 1000, 1000]
    );
    let f = policy(json!({"backoff": {"type": "fixed", "delayMs": 250}}));
    assert_eq!(f.delay_ms(4), 250);
    let j = policy(json!({"backoff": {"type": "fixed", "delayMs": 1000, "jitter": 0.2}}));
    for _ in 0..200 {
        let d = j.delay_ms(1);
        assert!((800..=1200).contains(&d), "{d}");
    }
    let huge = policy(json!({"backoff": {"type": "exponential", "delayMs": u64::MAX}}));
    assert_eq!(
        huge.delay_ms(64),
        lean_events_core::scheduler::FAR_FUTURE_MS
    );
    assert!(RetryPolicy::from_json(r#"{"backoff":{"delayMs":-1}}"#).is_err());
    assert!(RetryPolicy::from_json(r#"{"backoff":{"delayMs":1e20}}"#).is_err());
    assert!(RetryPolicy::from_json(r#"{"attempts":0}"#).is_err());
    assert!(RetryPolicy::from_json(r#"{"backoff":{"type":"linear"}}"#).is_err());
    assert!(RetryPolicy::from_json(r#"{"tries":3}"#).is_err());
}

/// A refused policy names the option and what it may be, never serde's wording (Rust
/// types, parser positions).
#[test]
fn policy_errors_name_the_option() {
    for (json, says) in [
        (
            r#"{"attempts":-1}"#,
            "retry.attempts must be a whole number from 1",
        ),
        (
            r#"{"attempts":0}"#,
            "retry.attempts must be a whole number from 1",
        ),
        (
            r#"{"attempts":1.5}"#,
            "retry.attempts must be a whole number from 1",
        ),
        (
            r#"{"attempts":"3"}"#,
            "retry.attempts must be a whole number from 1",
        ),
        (
            r#"{"backoff":{"delayMs":-5}}"#,
            "retry.backoff.delayMs must be a whole number of ms, 0 or more",
        ),
        (
            r#"{"backoff":{"delayMs":1e20}}"#,
            "retry.backoff.delayMs must be a whole number of ms",
        ),
        (
            r#"{"backoff":{"maxDelayMs":-1}}"#,
            "retry.backoff.maxDelayMs must be a whole number of ms",
        ),
        (
            r#"{"backoff":{"type":"linear"}}"#,
            "retry.backoff.type must be 'fixed' or 'exponential'",
        ),
        (
            r#"{"backoff":{"jitter":2}}"#,
            "retry.backoff.jitter must be a number between 0 and 1",
        ),
        (
            r#"{"backoff":{"delay":5}}"#,
            "retry.backoff.delay is not an option (known: type, delayMs, maxDelayMs, jitter)",
        ),
        (r#"{"backoff":5}"#, "retry.backoff must be an object"),
        (
            r#"{"tries":3}"#,
            "retry.tries is not an option (known: attempts, backoff, retriableErrors)",
        ),
        (
            r#"{"retriableErrors":"E"}"#,
            "retry.retriableErrors must be an array of error names or codes",
        ),
        (r#"[1]"#, "retry must be an object like"),
        (r#"{"attempts":"#, "retry must be an object like"),
    ] {
        let err = RetryPolicy::from_json(json).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{json}");
        assert!(err.message.starts_with(says), "{json}: {}", err.message);
        for serde_word in ["line ", "column", "u32", "u64", "invalid type", "variant"] {
            assert!(!err.message.contains(serde_word), "{json}: {}", err.message);
        }
    }
    // what was accepted still is
    let p = policy(
        json!({"attempts": 3, "backoff": {"type": "fixed", "delayMs": 0, "maxDelayMs": null, "jitter": null}, "retriableErrors": null}),
    );
    assert_eq!(p.max_attempts(), 3);
    assert_eq!(p.delay_ms(1), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awaits_time_event_and_timeouts() {
    for backend in BACKENDS {
        let bus = connect(backend, "sched-await").await;
        let s = scheduler(&bus).await;
        s.define("wait", RetryPolicy::default()).unwrap();
        host(
            &s,
            Arc::new(|s, w| {
                Box::pin(async move {
                    let job = w["jobId"].as_str().unwrap().to_owned();
                    let a = w["attempt"].as_u64().unwrap() as u32;
                    match w["input"]["mode"].as_str().unwrap() {
                        "time" => {
                            let due = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .unwrap()
                                .as_millis() as u64
                                + 80;
                            s.await_time(&job, a, 0, Due::At(due))
                                .await
                                .map_err(|e| json!({"message": e.message}))?;
                            Ok(json!("slept"))
                        }
                        "event" => {
                            let e = s
                                .await_event(
                                    &job,
                                    a,
                                    0,
                                    "payment.confirmed",
                                    r#"{"data.orderId":"42"}"#,
                                    Some(5000),
                                )
                                .await
                                .map_err(|e| json!({"message": e.message}))?;
                            Ok(serde_json::from_str(&e).unwrap())
                        }
                        _ => match s
                            .await_event(&job, a, 0, "never.happens", "{}", Some(60))
                            .await
                        {
                            Err(e) if e.code == ErrorCode::AwaitTimeout => Ok(json!("timed out")),
                            other => Err(json!({"message": format!("{other:?}")})),
                        },
                    }
                })
            }),
        );
        assert_eq!(
            s.run("wait", "ft", r#"{"mode":"time"}"#, None)
                .await
                .unwrap(),
            r#""slept""#
        );
        let evs = events(&bus, "ft").await;
        assert_eq!(
            kinds(&evs),
            [
                "step.started",
                "step.await.time",
                "step.resumed",
                "step.completed"
            ],
            "{backend:?}"
        );
        assert_eq!(evs[2]["meta"]["awaitType"], "time");
        assert!(evs[2]["meta"]["lateMs"].is_u64());

        // the event comes from another bus: another connection, as another instance would
        let emitter = if matches!(backend, Backend::Redis) {
            connect_with(backend, "x", |c| c.prefix = bus.prefix().to_owned()).await
        } else {
            bus.clone()
        };
        let run = {
            let s = s.clone();
            tokio::spawn(async move { s.run("wait", "fe", r#"{"mode":"event"}"#, None).await })
        };
        loop {
            let evs = events(&bus, "fe").await;
            if kinds(&evs).contains(&"step.await.event".to_owned()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        emitter
            .emit(
                r#"{"kind":"payment.confirmed","subject":"o1","data":{"orderId":"41"}}"#,
                None,
            )
            .await
            .unwrap();
        let hit = emitter
            .emit(
                r#"{"kind":"payment.confirmed","subject":"o2","data":{"orderId":"42"}}"#,
                None,
            )
            .await
            .unwrap();
        let got: Value = serde_json::from_str(&run.await.unwrap().unwrap()).unwrap();
        assert_eq!(
            got["id"],
            hit.id.to_string(),
            "{backend:?}: the matching event, not the first one"
        );
        let evs = events(&bus, "fe").await;
        assert_eq!(
            kinds(&evs),
            [
                "step.started",
                "step.await.event",
                "step.resumed",
                "step.completed"
            ]
        );
        assert_eq!(evs[2]["meta"]["awaitType"], "event");
        // resolved by its event, the await's timeout timer is gone (not left until it is due)
        assert_eq!(bus.store().timer_count().await.unwrap(), 0, "{backend:?}");
        let timers = bus.metrics().await.timers.unwrap();
        assert_eq!(timers.pending, Some(0), "{backend:?}");

        assert_eq!(
            s.run("wait", "fo", r#"{"mode":"timeout"}"#, None)
                .await
                .unwrap(),
            r#""timed out""#
        );
        let evs = events(&bus, "fo").await;
        assert_eq!(
            kinds(&evs),
            [
                "step.started",
                "step.await.event",
                "step.await.timeout",
                "step.completed"
            ]
        );
        s.close().await;
        bus.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_fire_once() {
    for backend in BACKENDS {
        let bus = connect(backend, "sched-trigger").await;
        let s = scheduler(&bus).await;
        s.define("approve", RetryPolicy::default()).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        host(&s, approver(tx));
        let run = {
            let s = s.clone();
            tokio::spawn(async move { s.run("approve", "fa", "{}", None).await })
        };
        let id = rx.recv().await.unwrap();
        assert_eq!(id.len(), 32);
        let fires: Vec<_> = (0..10)
            .map(|i| {
                let s = s.clone();
                let id = id.clone();
                tokio::spawn(async move { s.fire(&id, &format!(r#"{{"by":{i}}}"#)).await })
            })
            .collect();
        let mut ok = 0;
        for f in fires {
            match f.await.unwrap() {
                Ok(()) => ok += 1,
                Err(e) => assert_eq!(e.code, ErrorCode::TriggerResolved),
            }
        }
        assert_eq!(ok, 1, "{backend:?}: exactly one fire wins");
        let result: Value = serde_json::from_str(&run.await.unwrap().unwrap()).unwrap();
        assert!(result["by"].is_u64());
        let evs = events(&bus, "fa").await;
        assert_eq!(
            kinds(&evs),
            [
                "step.started",
                "step.await.trigger",
                "step.resumed",
                "step.completed"
            ]
        );
        let tr = bus
            .read(
                &StreamRef::new("trigger", &id).unwrap(),
                ReadOptions::default(),
            )
            .await
            .unwrap();
        let tk: Vec<Value> = tr
            .iter()
            .map(|r| serde_json::from_str(&r.json).unwrap())
            .collect();
        assert_eq!(kinds(&tk), ["trigger.registered", "trigger.fired"]);
        assert_eq!(tk[0]["correlationId"], "fa");
        assert_eq!(
            bus.state(&StreamRef::new("trigger", &id).unwrap())
                .await
                .unwrap()["status"],
            "fired"
        );
        let err = s.fire(&id, "{}").await.unwrap_err();
        assert_eq!(err.code, ErrorCode::TriggerResolved);
        assert_eq!(err.message, format!("trigger {id} was fired already"));

        assert_eq!(
            s.fire(&"0".repeat(32), "{}").await.unwrap_err().code,
            ErrorCode::TriggerNotFound
        );
        assert_eq!(
            s.fire("not-an-id", "{}").await.unwrap_err().code,
            ErrorCode::TriggerNotFound
        );

        // timeout, then a late fire is refused
        let run = {
            let s = s.clone();
            tokio::spawn(async move { s.run("approve", "fb", r#"{"timeout":50}"#, None).await })
        };
        let id = rx.recv().await.unwrap();
        assert_eq!(run.await.unwrap().unwrap(), r#"{"code":"AWAIT_TIMEOUT"}"#);
        let err = s.fire(&id, "{}").await.unwrap_err();
        assert_eq!(err.code, ErrorCode::TriggerResolved);
        assert_eq!(err.message, format!("trigger {id} timed out already"));
        let tr = bus
            .read(
                &StreamRef::new("trigger", &id).unwrap(),
                ReadOptions::default(),
            )
            .await
            .unwrap();
        assert!(tr.last().unwrap().json.contains("trigger.timeout"));

        // cancel
        let run = {
            let s = s.clone();
            tokio::spawn(async move { s.run("approve", "fc", "{}", None).await })
        };
        let id = rx.recv().await.unwrap();
        s.cancel(&id, "no longer needed").await.unwrap();
        assert_eq!(
            run.await.unwrap().unwrap(),
            r#"{"code":"TRIGGER_CANCELLED"}"#
        );
        let err = s.cancel(&id, "again").await.unwrap_err();
        assert_eq!(err.code, ErrorCode::TriggerResolved);
        assert_eq!(err.message, format!("trigger {id} was cancelled already"));
        s.close().await;
        bus.close();
    }
}

/// Two instances, many timers due at the same moment: each fires exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_fire_each_timer_once() {
    for (backend, n) in [(Backend::Redis, 1000u64), (Backend::Memory, 1000)] {
        let a_bus = connect(backend, "sched-two").await;
        let b_bus = bus_beside(backend, &a_bus).await;
        let a = scheduler(&a_bus).await;
        let b = scheduler(&b_bus).await;
        let due = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            + 1500;
        for s in [&a, &b] {
            s.define("nap", RetryPolicy::default()).unwrap();
            host(
                s,
                Arc::new(move |s, w| {
                    Box::pin(async move {
                        let job = w["jobId"].as_str().unwrap().to_owned();
                        s.await_time(&job, 1, 0, Due::At(due))
                            .await
                            .map_err(|e| json!({"message": e.message}))?;
                        Ok(json!(1))
                    })
                }),
            );
        }
        let runs: Vec<_> = (0..n)
            .map(|i| {
                let s = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(
                    async move { s.run("nap", "many", "null", Some(&format!("job{i}"))).await },
                )
            })
            .collect();
        for r in runs {
            assert_eq!(r.await.unwrap().unwrap(), "1");
        }
        let all = a_bus
            .read(
                &StreamRef::new("flow", "many").unwrap(),
                ReadOptions {
                    limit: Some(10_000),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let count = |k: &str| {
            all.iter()
                .filter(|r| r.json.contains(&format!("\"kind\":\"{k}\"")))
                .count() as u64
        };
        assert_eq!(count("step.resumed"), n, "{backend:?}");
        assert_eq!(count("step.completed"), n);
        a.close().await;
        b.close().await;
        a_bus.close();
        b_bus.close();
    }
}

/// An instance dies (its host and handlers stop, its lease runs out) while one job waits for a
/// trigger and another is in a retry back-off; a second instance resumes both, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instances_jobs_are_resumed_once_elsewhere() {
    for backend in BACKENDS {
        let a_bus = connect(backend, "sched-crash").await;
        let b_bus = bus_beside(backend, &a_bus).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let handler: Handler = Arc::new(move |s, w| {
            let tx = tx.clone();
            Box::pin(async move {
                let job = w["jobId"].as_str().unwrap().to_owned();
                let a = w["attempt"].as_u64().unwrap() as u32;
                if w["step"] == "approve" {
                    let id = s
                        .register_trigger(&job, a, 0, "webhook", None, None)
                        .await
                        .unwrap();
                    tx.send(id.clone()).unwrap();
                    let p = s
                        .wait_trigger(&id)
                        .await
                        .map_err(|e| json!({"message": e.message}))?;
                    Ok(serde_json::from_str(&p).unwrap())
                } else if a == 1 {
                    Err(json!({"message": "try later"}))
                } else {
                    Ok(json!("second attempt"))
                }
            })
        });
        let a = Scheduler::start(
            &a_bus,
            SchedulerOptions {
                lease_ms: 300,
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
        a.define("approve", RetryPolicy::default()).unwrap();
        a.define(
            "later",
            policy(json!({"attempts": 2, "backoff": {"type": "fixed", "delayMs": 200}})),
        )
        .unwrap();
        let a_host = host(&a, handler.clone());
        let r1 = {
            let a = a.clone();
            tokio::spawn(async move { a.run("approve", "c1", "{}", Some("j-approve")).await })
        };
        let r2 = {
            let a = a.clone();
            tokio::spawn(async move { a.run("later", "c2", "{}", Some("j-later")).await })
        };
        let trigger = rx.recv().await.unwrap();
        loop {
            if kinds(&events(&a_bus, "c2").await).contains(&"step.retry".to_owned()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // crash: the host, its handlers and the run() callers vanish; nothing is cleaned up
        a_host.abort();
        r1.abort();
        r2.abort();
        drop(a);
        if matches!(backend, Backend::Redis) {
            a_bus.close();
        }

        let b = Scheduler::start(
            &b_bus,
            SchedulerOptions {
                lease_ms: 300,
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
        b.define("approve", RetryPolicy::default()).unwrap();
        b.define(
            "later",
            policy(json!({"attempts": 2, "backoff": {"type": "fixed", "delayMs": 200}})),
        )
        .unwrap();
        let _b_host = host(&b, handler);
        b.fire(&trigger, r#"{"ok":true}"#).await.unwrap();
        let done = |evs: &[Value]| evs.iter().any(|e| e["kind"] == "step.completed");
        for flow in ["c1", "c2"] {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !done(&events(&b_bus, flow).await) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{backend:?}: {flow} was not resumed"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // let any duplicate show up before counting
        tokio::time::sleep(Duration::from_millis(700)).await;
        let c1 = kinds(&events(&b_bus, "c1").await);
        assert_eq!(
            c1.iter().filter(|k| *k == "step.resumed").count(),
            1,
            "{backend:?} {c1:?}"
        );
        assert_eq!(
            c1.iter().filter(|k| *k == "step.completed").count(),
            1,
            "{c1:?}"
        );
        let c2 = kinds(&events(&b_bus, "c2").await);
        assert_eq!(
            c2,
            [
                "step.started",
                "step.failed",
                "step.retry",
                "step.started",
                "step.completed"
            ],
            "{backend:?}"
        );
        b.close().await;
        b_bus.close();
    }
}

/// Closing an instance interrupts its handlers without failing their steps: the jobs stay as
/// they were, for another instance to resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_an_instance_does_not_fail_its_jobs() {
    for backend in BACKENDS {
        let bus = connect(backend, "sched-close").await;
        let s = scheduler(&bus).await;
        s.define("nap", policy(json!({"attempts": 3}))).unwrap();
        host(
            &s,
            Arc::new(|s, w| {
                Box::pin(async move {
                    let job = w["jobId"].as_str().unwrap().to_owned();
                    s.await_time(&job, 1, 0, Due::At(u64::MAX / 4))
                        .await
                        .map_err(|e| json!({"message": e.message}))?;
                    Ok(json!(1))
                })
            }),
        );
        let run = {
            let s = s.clone();
            tokio::spawn(async move { s.run("nap", "fz", "null", None).await })
        };
        loop {
            if kinds(&events(&bus, "fz").await).contains(&"step.await.time".to_owned()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        s.close().await;
        assert_eq!(run.await.unwrap().unwrap_err().code, ErrorCode::BusClosed);
        tokio::time::sleep(Duration::from_millis(100)).await; // a wrongly recorded failure would land now
        assert_eq!(
            kinds(&events(&bus, "fz").await),
            ["step.started", "step.await.time"],
            "{backend:?}"
        );
        bus.close();
    }
}

/// Wait (at most 10 s) until the job hash at `key` has status `want`.
async fn wait_for_status(con: &mut lean_events_core::RawConnection, key: &str, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status: Option<String> = redis::cmd("HGET")
            .arg(key)
            .arg("status")
            .query_async(con)
            .await
            .unwrap();
        if status.as_deref() == Some(want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{key}: status {status:?}, waited for {want}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A job left `failing` (its retry timer set in the same step, its step.failed / step.retry
/// not yet announced, its status not yet `retrying`) still retries, once: when its instance
/// died (another instance takes over) and when its instance lives on but never finished the
/// move (its store calls failed): the timer then waits one claim lease for the events, and
/// retries without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_left_failing_still_runs_once() {
    for owner_dies in [true, false] {
        let a_bus = connect(Backend::Redis, "sched-failing").await;
        let b_bus = connect_with(Backend::Redis, "x", |c| {
            c.prefix = a_bus.prefix().to_owned()
        })
        .await;
        let fails_once: Handler = Arc::new(|_, w| {
            Box::pin(async move {
                if w["attempt"].as_u64() == Some(1) {
                    Err(json!({"message": "first"}))
                } else {
                    Ok(json!("second"))
                }
            })
        });
        let opts = || SchedulerOptions {
            lease_ms: 300,
            ..Default::default()
        };
        let retry = policy(json!({"attempts": 2, "backoff": {"type": "fixed", "delayMs": 300}}));
        let a = Scheduler::start(&a_bus, opts(), None).await.unwrap();
        a.define("later", retry.clone()).unwrap();
        let a_host = host(&a, fails_once.clone());
        let run = {
            let a = a.clone();
            tokio::spawn(async move { a.run("later", "fl-failing", "{}", Some("j-failing")).await })
        };
        let mut con = redis_con().await;
        let job_key = format!("{}:sched:job:j-failing", b_bus.coord_prefix());
        wait_for_status(&mut con, &job_key, "retrying").await;
        let mut b = None;
        if owner_dies {
            a_host.abort();
            run.abort();
            a_bus.close();
        }
        // the state the instance leaves: the status not moved on from `failing`
        let _: () = redis::cmd("HSET")
            .arg(&job_key)
            .arg("status")
            .arg("failing")
            .query_async(&mut con)
            .await
            .unwrap();
        if owner_dies {
            let s = Scheduler::start(&b_bus, opts(), None).await.unwrap();
            s.define("later", retry).unwrap();
            host(&s, fails_once);
            b = Some(s);
        }
        wait_for_status(&mut con, &job_key, "completed").await;
        // the status moves first, then the last event is written
        eventually!(
            "step.completed",
            has_kind(&b_bus, "fl-failing", "step.completed").await
        );
        assert_eq!(
            kinds(&events(&b_bus, "fl-failing").await),
            [
                "step.started",
                "step.failed",
                "step.retry",
                "step.started",
                "step.completed"
            ],
            "owner dies {owner_dies}"
        );
        if let Some(b) = b {
            b.close().await;
        } else {
            assert_eq!(run.await.unwrap().unwrap(), r#""second""#);
        }
        a.close().await;
        a_bus.close();
        b_bus.close();
    }
}

async fn redis_con() -> lean_events_core::RawConnection {
    raw_connection().await
}

async fn hget(con: &mut lean_events_core::RawConnection, key: &str, field: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query_async(con)
        .await
        .unwrap()
}

/// An instance that restarts under the same id (its lease never ran out, so nobody else takes
/// its jobs over) carries on the jobs it was running, as replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_instance_carries_on_its_running_jobs() {
    for backend in BACKENDS {
        let a_bus = connect(backend, "sched-restart").await;
        let b_bus = bus_beside(backend, &a_bus).await;
        let opts = || SchedulerOptions {
            instance_id: Some("node-1".into()),
            lease_ms: 300,
            ..Default::default()
        };
        let a = Scheduler::start(&a_bus, opts(), None).await.unwrap();
        a.define("slow", RetryPolicy::default()).unwrap();
        // the process dies while the handler runs (its step.started written and recorded)
        let (running_tx, mut running_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let a_host = host(
            &a,
            Arc::new(move |_, _| {
                let _ = running_tx.send(());
                Box::pin(std::future::pending::<Outcome>())
            }),
        );
        let run = {
            let a = a.clone();
            tokio::spawn(async move { a.run("slow", "fr", "{}", Some("j-restart")).await })
        };
        tokio::time::timeout(Duration::from_secs(10), running_rx.recv())
            .await
            .expect("the handler runs");
        a_host.abort();
        run.abort();
        drop(a);
        if matches!(backend, Backend::Redis) {
            a_bus.close();
        }

        let b = Scheduler::start(&b_bus, opts(), None).await.unwrap();
        b.define("slow", RetryPolicy::default()).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
        host(
            &b,
            Arc::new(move |_, w| {
                let tx = tx.clone();
                Box::pin(async move {
                    tx.send(w["replay"].clone()).unwrap();
                    Ok(json!("done"))
                })
            }),
        );
        eventually!(
            "step.completed",
            has_kind(&b_bus, "fr", "step.completed").await
        );
        assert_eq!(rx.recv().await, Some(json!(true)), "{backend:?}: a replay");
        assert_eq!(
            kinds(&events(&b_bus, "fr").await),
            ["step.started", "step.completed"],
            "{backend:?}"
        );
        assert!(rx.try_recv().is_err(), "{backend:?}: run once");
        b.close().await;
        b_bus.close();
    }
}

/// A job its live owner holds as `running` while no handler runs it (its start failed halfway,
/// or the note that it was due got lost) is started by the owner's repair pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_nothing_executes_is_started_by_its_owner() {
    let bus = connect(Backend::Redis, "sched-repair").await;
    let s = scheduler(&bus).await;
    s.define("step", RetryPolicy::default()).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    host(
        &s,
        Arc::new(move |_, w| {
            let tx = tx.clone();
            Box::pin(async move {
                tx.send(w["replay"].clone()).unwrap();
                Ok(json!("ok"))
            })
        }),
    );
    let mut con = redis_con().await;
    let job_key = format!("{}:sched:job:j-orphan", bus.coord_prefix());
    // what a run() whose first store calls after creating the job failed leaves behind
    let _: () = redis::cmd("HSET")
        .arg(&job_key)
        .arg(&[
            ("status", "running"),
            ("step", "step"),
            ("flow", "fo"),
            ("input", "{}"),
            ("attempt", "1"),
            ("owner", s.instance_id()),
            ("createdMs", "1"),
        ])
        .query_async(&mut con)
        .await
        .unwrap();
    let _: () = redis::cmd("SADD")
        .arg(format!(
            "{}:sched:owned:{}",
            bus.coord_prefix(),
            s.instance_id()
        ))
        .arg("j-orphan")
        .query_async(&mut con)
        .await
        .unwrap();
    eventually!(
        "step.completed",
        has_kind(&bus, "fo", "step.completed").await
    );
    assert_eq!(
        hget(&mut con, &job_key, "status").await.as_deref(),
        Some("completed")
    );
    assert_eq!(
        rx.recv().await,
        Some(json!(false)),
        "never started: not a replay"
    );
    assert_eq!(
        kinds(&events(&bus, "fo").await),
        ["step.started", "step.completed"]
    );
    assert!(rx.try_recv().is_err(), "run once");
    s.close().await;
    bus.close();
}

/// A retry timer of an attempt that has run already (claimed again after its claimer died
/// before removing it) does not run that attempt again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_retry_timer_runs_nothing() {
    let bus = connect(Backend::Redis, "sched-stale").await;
    let s = scheduler(&bus).await;
    s.define("flaky", policy(json!({"attempts": 3}))).unwrap();
    host(
        &s,
        Arc::new(|_, w| {
            Box::pin(async move {
                match w["attempt"].as_u64() {
                    Some(1) => Err(json!({"message": "one", "retryAfter": 0})),
                    Some(2) => Err(json!({"message": "two", "retryAfter": 1500})),
                    _ => Ok(json!("three")),
                }
            })
        }),
    );
    let run = {
        let s = s.clone();
        tokio::spawn(async move { s.run("flaky", "fs", "{}", Some("j-stale")).await })
    };
    let mut con = redis_con().await;
    let job_key = format!("{}:sched:job:j-stale", bus.coord_prefix());
    eventually!(
        "attempt 2 to fail",
        hget(&mut con, &job_key, "attempt").await.as_deref() == Some("2")
            && hget(&mut con, &job_key, "status").await.as_deref() == Some("retrying")
    );
    // the retry timer of attempt 2, back in the set: due now, found with the one of attempt 3
    let (timers, data) = (
        format!("{}:sched:timers", bus.coord_prefix()),
        format!("{}:sched:timer-data", bus.coord_prefix()),
    );
    let _: () = redis::cmd("ZADD")
        .arg(&timers)
        .arg(1)
        .arg("retry:j-stale:2")
        .query_async(&mut con)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&data)
        .arg("retry:j-stale:2")
        .arg(json!({"type": "retry", "job": "j-stale", "attempt": 2}).to_string())
        .query_async(&mut con)
        .await
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the run ends")
        .unwrap()
        .unwrap();
    assert_eq!(result, r#""three""#);
    let started: Vec<u64> = events(&bus, "fs")
        .await
        .iter()
        .filter(|e| e["kind"] == "step.started")
        .map(|e| e["meta"]["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(started, [1, 2, 3]);
    s.close().await;
    bus.close();
}

/// An event await whose instance died after creating it but before registering its match and
/// timeout is registered again when another instance replays the step: the event still
/// resolves it, and its timeout still counts from its creation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_await_left_unregistered_is_registered_by_the_replay() {
    let a_bus = connect(Backend::Redis, "sched-unreg").await;
    let b_bus = connect_with(Backend::Redis, "x", |c| {
        c.prefix = a_bus.prefix().to_owned()
    })
    .await;
    let prefix = a_bus.coord_prefix();
    let waits: Handler = Arc::new(|s, w| {
        Box::pin(async move {
            let job = w["jobId"].as_str().unwrap().to_owned();
            let a = w["attempt"].as_u64().unwrap() as u32;
            let ev = s
                .await_event(&job, a, 0, "order.paid", r#"{"data.id":"7"}"#, Some(60_000))
                .await
                .map_err(|e| json!({"message": e.message}))?;
            Ok(serde_json::from_str(&ev).unwrap())
        })
    });
    let opts = || SchedulerOptions {
        lease_ms: 300,
        ..Default::default()
    };
    let a = Scheduler::start(&a_bus, opts(), None).await.unwrap();
    a.define("wait", RetryPolicy::default()).unwrap();
    let a_host = host(&a, waits.clone());
    let run = {
        let a = a.clone();
        tokio::spawn(async move { a.run("wait", "fu", "{}", Some("j-unreg")).await })
    };
    // the await fully made (its event written and marked so)
    let mut con = redis_con().await;
    let (await_id, timer) = ("j-unreg:1:0", "timeout:j-unreg:1:0");
    eventually!(
        "the await",
        hget(&mut con, &format!("{prefix}:await:{await_id}"), "announced")
            .await
            .is_some()
    );
    a_host.abort();
    run.abort();
    drop(a);
    a_bus.close();
    // undo what the dead instance did after creating the await
    let _: () = redis::cmd("HDEL")
        .arg(format!("{prefix}:await:kind:order.paid"))
        .arg(await_id)
        .query_async(&mut con)
        .await
        .unwrap();
    let _: () = redis::cmd("ZREM")
        .arg(format!("{prefix}:sched:timers"))
        .arg(timer)
        .query_async(&mut con)
        .await
        .unwrap();

    let b = Scheduler::start(&b_bus, opts(), None).await.unwrap();
    b.define("wait", RetryPolicy::default()).unwrap();
    host(&b, waits);
    let registered = |con: &mut lean_events_core::RawConnection| {
        let mut con = con.clone();
        let key = format!("{prefix}:await:kind:order.paid");
        async move {
            redis::cmd("HEXISTS")
                .arg(key)
                .arg(await_id)
                .query_async::<bool>(&mut con)
                .await
                .unwrap()
        }
    };
    eventually!("the match registered again", registered(&mut con).await);
    let created: u64 = hget(&mut con, &format!("{prefix}:await:{await_id}"), "createdMs")
        .await
        .unwrap()
        .parse()
        .unwrap();
    let due: Option<u64> = redis::cmd("ZSCORE")
        .arg(format!("{prefix}:sched:timers"))
        .arg(timer)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(
        due,
        Some(created + 60_000),
        "the timeout counts from creation"
    );
    b_bus
        .emit(
            &json!({"kind": "order.paid", "subject": "o7", "data": {"id": "7"}}).to_string(),
            None,
        )
        .await
        .unwrap();
    eventually!(
        "the step to complete",
        has_kind(&b_bus, "fu", "step.completed").await
    );
    assert_eq!(
        kinds(&events(&b_bus, "fu").await),
        [
            "step.started",
            "step.await.event",
            "step.resumed",
            "step.completed"
        ]
    );
    b.close().await;
    b_bus.close();
}

/// When the last event of a step cannot be written after the step's outcome is recorded, the
/// run still resolves, and the event is written by the owner's repair pass once the store
/// takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_event_not_written_is_written_later() {
    let bus = connect(Backend::Redis, "sched-final").await;
    let s = scheduler(&bus).await;
    s.define("step", RetryPolicy::default()).unwrap();
    let stream = bus.stream_key(&StreamRef::new("flow", "ff").unwrap());
    let sabotage = stream.clone();
    host(
        &s,
        Arc::new(move |_, _| {
            let stream = sabotage.clone();
            Box::pin(async move {
                // the flow's key stops taking appends
                let mut con = redis_con().await;
                let _: () = redis::cmd("SET")
                    .arg(&stream)
                    .arg("not a stream")
                    .query_async(&mut con)
                    .await
                    .unwrap();
                Ok(json!("r"))
            })
        }),
    );
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        s.run("step", "ff", "{}", Some("j-final")),
    )
    .await
    .expect("run() resolves");
    assert_eq!(result.unwrap(), r#""r""#);
    let mut con = redis_con().await;
    let job_key = format!("{}:sched:job:j-final", bus.coord_prefix());
    assert_eq!(
        hget(&mut con, &job_key, "status").await.as_deref(),
        Some("completed")
    );
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut con)
        .await
        .unwrap();
    eventually!(
        "step.completed",
        has_kind(&bus, "ff", "step.completed").await
    );
    let owned = format!("{}:sched:owned:{}", bus.coord_prefix(), s.instance_id());
    eventually!(
        "the job to leave the owned set",
        !redis::cmd("SISMEMBER")
            .arg(&owned)
            .arg("j-final")
            .query_async::<bool>(&mut con)
            .await
            .unwrap()
    );
    assert_eq!(kinds(&events(&bus, "ff").await), ["step.completed"]);
    s.close().await;
    bus.close();
}

/// An instance that lost a job (another took it over while this one was cut off) cannot end it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_lost_a_job_cannot_end_it() {
    let bus = connect(Backend::Redis, "sched-zombie").await;
    let s = scheduler(&bus).await;
    s.define("step", RetryPolicy::default()).unwrap();
    let run = {
        let s = s.clone();
        tokio::spawn(async move { s.run("step", "fz2", "{}", Some("j-zombie")).await })
    };
    let work: Value = serde_json::from_str(&s.next_work().await[0]).unwrap();
    assert_eq!(work["jobId"], "j-zombie");
    let mut con = redis_con().await;
    let job_key = format!("{}:sched:job:j-zombie", bus.coord_prefix());
    let _: () = redis::cmd("HSET")
        .arg(&job_key)
        .arg("owner")
        .arg("elsewhere")
        .query_async(&mut con)
        .await
        .unwrap();
    s.complete("j-zombie", 1, r#""late""#).await.unwrap();
    s.fail("j-zombie", 1, r#"{"message":"late"}"#)
        .await
        .unwrap();
    assert_eq!(
        hget(&mut con, &job_key, "status").await.as_deref(),
        Some("running")
    );
    assert_eq!(kinds(&events(&bus, "fz2").await), ["step.started"]);
    run.abort();
    s.close().await;
    bus.close();
}

/// A `run` call settles wherever its job ends: here an instance takes the job over while the
/// one that made it is still alive (say its lease lapsed under load), and ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_settles_when_another_instance_ends_its_job() {
    let a_bus = connect(Backend::Redis, "sched-elsewhere").await;
    let b_bus = connect_with(Backend::Redis, "x", |c| {
        c.prefix = a_bus.prefix().to_owned()
    })
    .await;
    let prefix = a_bus.coord_prefix();
    let a = scheduler(&a_bus).await;
    let b = scheduler(&b_bus).await;
    let gate = Arc::new(tokio::sync::Notify::new());
    for (s, who) in [(&a, "a"), (&b, "b")] {
        s.define("step", RetryPolicy::default()).unwrap();
        let gate = gate.clone();
        host(
            s,
            Arc::new(move |_, _| {
                let gate = gate.clone();
                Box::pin(async move {
                    if who == "a" {
                        gate.notified().await;
                    }
                    Ok(json!(who))
                })
            }),
        );
    }
    let run = {
        let a = a.clone();
        tokio::spawn(async move { a.run("step", "fe", "{}", Some("j-else")).await })
    };
    eventually!("step.started", has_kind(&a_bus, "fe", "step.started").await);
    // b takes the job over (what its reaper does when a's lease has lapsed)
    let mut con = redis_con().await;
    let job_key = format!("{prefix}:sched:job:j-else");
    let _: () = redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg(&job_key)
        .arg("owner")
        .arg(b.instance_id())
        .cmd("SREM")
        .arg(format!("{prefix}:sched:owned:{}", a.instance_id()))
        .arg("j-else")
        .cmd("SADD")
        .arg(format!("{prefix}:sched:owned:{}", b.instance_id()))
        .arg("j-else")
        .query_async(&mut con)
        .await
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the run settles")
        .unwrap()
        .unwrap();
    assert_eq!(result, r#""b""#);
    gate.notify_one(); // a's handler ends late: its outcome is refused
    assert_eq!(
        kinds(&events(&a_bus, "fe").await),
        ["step.started", "step.completed"]
    );
    a.close().await;
    b.close().await;
    a_bus.close();
    b_bus.close();
}

/// What the bus would refuse to write never leaves a job halfway: an input too large for
/// `step.started` is refused before the job exists; a result too large for `step.completed`
/// fails the step; an error message too long for `step.failed` is shortened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_the_bus_refuses_do_not_strand_a_job() {
    for backend in BACKENDS {
        let bus = connect_with(backend, "sched-size", |c| c.max_event_bytes = 4096).await;
        let s = scheduler(&bus).await;
        s.define("echo", RetryPolicy::default()).unwrap();
        host(
            &s,
            Arc::new(|_, w| {
                Box::pin(async move {
                    match w["input"]["make"].as_str() {
                        Some("big-result") => Ok(json!("r".repeat(5000))),
                        _ => Err(json!({ "message": "e".repeat(20_000) })),
                    }
                })
            }),
        );
        let big_input = json!({ "pad": "i".repeat(5000) }).to_string();
        let refused = s.run("echo", "fsz1", &big_input, Some("j-in")).await;
        assert_eq!(
            refused.unwrap_err().code,
            ErrorCode::PayloadTooLarge,
            "{backend:?}"
        );
        assert!(events(&bus, "fsz1").await.is_empty());

        let run = s.run("echo", "fsz2", r#"{"make":"big-result"}"#, Some("j-out"));
        let err = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("run() settles")
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::StepFailed, "{backend:?}");
        assert!(
            err.message.contains("cannot be recorded"),
            "{}",
            err.message
        );
        assert_eq!(
            kinds(&events(&bus, "fsz2").await),
            ["step.started", "step.failed"]
        );

        let run = s.run("echo", "fsz3", r#"{"make":"long-error"}"#, Some("j-err"));
        let err = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("run() settles")
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::StepFailed, "{backend:?}");
        let evs = events(&bus, "fsz3").await;
        assert_eq!(kinds(&evs), ["step.started", "step.failed"]);
        assert!(evs[1]["data"]["error"].as_str().unwrap().ends_with('…'));
        s.close().await;
        bus.close();
    }
}

/// Move a stream aside and put a string in its place: appends to it fail until
/// `restore_stream` puts it back.
async fn break_stream(con: &mut lean_events_core::RawConnection, key: &str) {
    let saved = format!("{key}:saved");
    let _: () = redis::pipe()
        .cmd("RENAME")
        .arg(key)
        .arg(&saved)
        .cmd("SET")
        .arg(key)
        .arg("not a stream")
        .query_async(con)
        .await
        .unwrap();
}

async fn restore_stream(con: &mut lean_events_core::RawConnection, key: &str) {
    let _: () = redis::pipe()
        .cmd("DEL")
        .arg(key)
        .cmd("RENAME")
        .arg(format!("{key}:saved"))
        .arg(key)
        .query_async(con)
        .await
        .unwrap();
}

async fn trigger_kinds(bus: &Bus, id: &str) -> Vec<String> {
    let records = bus
        .read(
            &StreamRef::new("trigger", id).unwrap(),
            ReadOptions::default(),
        )
        .await
        .unwrap();
    let evs: Vec<Value> = records
        .iter()
        .map(|r| serde_json::from_str(&r.json).unwrap())
        .collect();
    kinds(&evs)
}

/// A trigger fired, cancelled or timed out while its stream refuses appends: the state change
/// carries its events, so they are written once the stream takes them again, before the
/// waiting step carries on; a second fire is refused, as the first one won.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolutions_events_are_written_after_a_failed_write() {
    let bus = connect(Backend::Redis, "sched-pending").await;
    let s = scheduler(&bus).await;
    s.define("approve", RetryPolicy::default()).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    host(&s, approver(tx));
    let mut con = redis_con().await;
    for (case, flow) in [("fire", "pe-f"), ("cancel", "pe-c"), ("timeout", "pe-t")] {
        let input = if case == "timeout" {
            json!({"timeout": 200})
        } else {
            json!({})
        };
        let run = {
            let s = s.clone();
            tokio::spawn(async move { s.run("approve", flow, &input.to_string(), None).await })
        };
        let id = rx.recv().await.unwrap();
        let stream = bus.stream_key(&StreamRef::new("trigger", &id).unwrap());
        break_stream(&mut con, &stream).await;
        let (outcome, event) = match case {
            "fire" => {
                s.fire(&id, r#"{"ok":1}"#)
                    .await
                    .expect("the fire took effect");
                (json!({"ok": 1}), "trigger.fired")
            }
            "cancel" => {
                s.cancel(&id, "not needed")
                    .await
                    .expect("the cancel took effect");
                (json!({"code": "TRIGGER_CANCELLED"}), "trigger.cancelled")
            }
            _ => {
                let key = format!("{}:await:{id}", bus.coord_prefix());
                eventually!(
                    "the timeout",
                    hget(&mut con, &key, "status").await.as_deref() == Some("timeout")
                );
                (json!({"code": "AWAIT_TIMEOUT"}), "trigger.timeout")
            }
        };
        // a fire that comes after a cancel says so; after a fire or a timeout it lost
        let lost = if case == "cancel" {
            ErrorCode::TriggerCancelled
        } else {
            ErrorCode::TriggerResolved
        };
        assert_eq!(s.fire(&id, "{}").await.unwrap_err().code, lost, "{case}");
        // the step waits for the events
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!run.is_finished(), "{case}: the step carried on first");
        restore_stream(&mut con, &stream).await;
        let result = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .unwrap_or_else(|_| panic!("{case}: the run settles"))
            .unwrap()
            .unwrap();
        assert_eq!(serde_json::from_str::<Value>(&result).unwrap(), outcome);
        assert_eq!(
            trigger_kinds(&bus, &id).await,
            ["trigger.registered", event],
            "{case}"
        );
        let steps = kinds(&events(&bus, flow).await);
        let expected: &[&str] = match case {
            "fire" => &[
                "step.started",
                "step.await.trigger",
                "step.resumed",
                "step.completed",
            ],
            "cancel" => &[
                "step.started",
                "step.await.trigger",
                "step.await.cancelled",
                "step.completed",
            ],
            _ => &[
                "step.started",
                "step.await.trigger",
                "step.await.timeout",
                "step.completed",
            ],
        };
        assert_eq!(steps, expected, "{case}");
    }
    let deferred = bus.diagnostics().counts().get("EVENTS_DEFERRED").copied();
    assert_eq!(deferred, Some(3), "each deferral leaves a trace");
    s.close().await;
    bus.close();
}

/// An event await that times out while its flow's stream refuses appends: `step.await.timeout`
/// is written once the stream takes it, and before what the step does next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_await_timeout_is_announced_after_a_failed_write() {
    let bus = connect(Backend::Redis, "sched-pending-timeout").await;
    let s = scheduler(&bus).await;
    s.define("wait", RetryPolicy::default()).unwrap();
    host(
        &s,
        Arc::new(|s, w| {
            Box::pin(async move {
                let job = w["jobId"].as_str().unwrap().to_owned();
                let a = w["attempt"].as_u64().unwrap() as u32;
                match s
                    .await_event(&job, a, 0, "never.comes", "{}", Some(200))
                    .await
                {
                    Err(e) => Ok(json!(e.code.as_str())),
                    Ok(_) => Ok(json!("resolved")),
                }
            })
        }),
    );
    let run = {
        let s = s.clone();
        tokio::spawn(async move { s.run("wait", "pe-e", "{}", Some("j-pe-e")).await })
    };
    eventually!(
        "step.await.event",
        has_kind(&bus, "pe-e", "step.await.event").await
    );
    let mut con = redis_con().await;
    let stream = bus.stream_key(&StreamRef::new("flow", "pe-e").unwrap());
    break_stream(&mut con, &stream).await;
    let key = format!("{}:await:j-pe-e:1:0", bus.coord_prefix());
    eventually!(
        "the timeout",
        hget(&mut con, &key, "status").await.as_deref() == Some("timeout")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!run.is_finished(), "the step carried on first");
    restore_stream(&mut con, &stream).await;
    let result = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the run settles")
        .unwrap()
        .unwrap();
    assert_eq!(result, r#""AWAIT_TIMEOUT""#);
    assert_eq!(
        kinds(&events(&bus, "pe-e").await),
        [
            "step.started",
            "step.await.event",
            "step.await.timeout",
            "step.completed"
        ]
    );
    s.close().await;
    bus.close();
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The ms part of an event's id: when it was stored.
fn stored_ms(e: &Value) -> u64 {
    e["id"]
        .as_str()
        .unwrap()
        .split('-')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A step sleeping `await.time(1500)` is taken over after its instance died: the replay asks
/// for 1500 ms again, yet the step resumes when the first call said, not 1500 ms after the
/// replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_relative_await_time_keeps_its_first_due_time() {
    for (backend, relative) in [
        (Backend::Redis, true),
        (Backend::Redis, false),
        (Backend::Memory, true),
        (Backend::Memory, false),
    ] {
        let a_bus = connect(backend, "sched-replay-time").await;
        let b_bus = bus_beside(backend, &a_bus).await;
        let naps: Handler = Arc::new(move |s, w| {
            Box::pin(async move {
                let job = w["jobId"].as_str().unwrap().to_owned();
                let a = w["attempt"].as_u64().unwrap() as u32;
                let due = if relative {
                    Due::After(1500)
                } else {
                    // as the JavaScript host passed it before: a time computed by each call
                    Due::At(now_ms() + 1500)
                };
                s.await_time(&job, a, 0, due)
                    .await
                    .map_err(|e| json!({"message": e.message}))?;
                Ok(json!("rested"))
            })
        });
        let opts = || SchedulerOptions {
            lease_ms: 300,
            ..Default::default()
        };
        let a = Scheduler::start(&a_bus, opts(), None).await.unwrap();
        a.define("nap", RetryPolicy::default()).unwrap();
        let a_host = host(&a, naps.clone());
        let run = {
            let a = a.clone();
            tokio::spawn(async move { a.run("nap", "rt", "{}", Some("j-rt")).await })
        };
        eventually!(
            "step.await.time",
            has_kind(&a_bus, "rt", "step.await.time").await
        );
        a_host.abort();
        run.abort();
        drop(a);
        if matches!(backend, Backend::Redis) {
            a_bus.close();
        }
        // the take-over comes two seconds later than it would
        tokio::time::sleep(Duration::from_millis(2000)).await;
        let b = Scheduler::start(&b_bus, opts(), None).await.unwrap();
        b.define("nap", RetryPolicy::default()).unwrap();
        host(&b, naps);
        eventually!(
            "step.completed",
            has_kind(&b_bus, "rt", "step.completed").await
        );
        let evs = events(&b_bus, "rt").await;
        let asleep = evs.iter().find(|e| e["kind"] == "step.await.time").unwrap();
        let resumed = evs.iter().find(|e| e["kind"] == "step.resumed").unwrap();
        let slept = stored_ms(resumed) - stored_ms(asleep);
        assert!(
            (1500..3000).contains(&slept),
            "{backend:?} (relative: {relative}): resumed {slept} ms after the first call, which asked for 1500"
        );
        b.close().await;
        b_bus.close();
    }
}

/// A control channel cut off (here: more notes than its queue holds) is subscribed again,
/// with a warning: notes sent afterwards still arrive, so a trigger fired on another instance
/// resumes the step at once, not at the next periodic re-check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_channel_cut_off_is_subscribed_again() {
    for backend in BACKENDS {
        let a_bus = connect(backend, "sched-control").await;
        let b_bus = bus_beside(backend, &a_bus).await;
        let a = Scheduler::start(
            &a_bus,
            SchedulerOptions {
                lease_ms: 600,
                control_queue: 2,
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
        let b = scheduler(&b_bus).await;
        a.define("approve", RetryPolicy::default()).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        host(
            &a,
            Arc::new(move |s, w| {
                let tx = tx.clone();
                Box::pin(async move {
                    let job = w["jobId"].as_str().unwrap().to_owned();
                    let id = s
                        .register_trigger(&job, 1, 0, "webhook", None, None)
                        .await
                        .unwrap();
                    tx.send(id.clone()).unwrap();
                    let p = s.wait_trigger(&id).await.map_err(|e| json!(e.message))?;
                    Ok(serde_json::from_str(&p).unwrap())
                })
            }),
        );
        let run = {
            let a = a.clone();
            tokio::spawn(async move { a.run("approve", "cc", "{}", None).await })
        };
        let id = rx.recv().await.unwrap();
        // notes about nothing, faster than they are taken
        let sep = lean_events_core::event::LIVE_SEP;
        let note = format!(
            "0-0{sep}sched{sep}x{sep}kind{sep}sched.ended{sep}data{sep}{{\"job\":\"none\"}}"
        );
        let inbox = format!("{}:sched:inst:{}", a_bus.coord_prefix(), a.instance_id());
        let wake = format!("{}:sched:wake", a_bus.coord_prefix());
        let lost = || {
            a_bus
                .diagnostics()
                .counts()
                .get("CONTROL_CHANNEL_LOST")
                .copied()
                .unwrap_or(0)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while lost() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "{backend:?}: no channel was cut off ({} warnings)",
                lost()
            );
            // from several tasks at once, so notes arrive in bursts: one publisher awaiting
            // each call is no faster than the control loop takes them on a Redis Cluster
            let mut publishers = tokio::task::JoinSet::new();
            for _ in 0..8 {
                let (b_bus, inbox, wake, note) =
                    (b_bus.clone(), inbox.clone(), wake.clone(), note.clone());
                publishers.spawn(async move {
                    for _ in 0..50 {
                        b_bus.publish(&inbox, &note).await.unwrap();
                        b_bus.publish(&wake, &note).await.unwrap();
                    }
                });
            }
            while let Some(done) = publishers.join_next().await {
                done.unwrap();
            }
        }
        b.fire(&id, r#"{"ok":true}"#).await.unwrap();
        let result = tokio::time::timeout(Duration::from_secs(3), run)
            .await
            .unwrap_or_else(|_| panic!("{backend:?}: the step was not resumed within 3 s"))
            .unwrap()
            .unwrap();
        assert_eq!(result, r#"{"ok":true}"#);
        a.close().await;
        b.close().await;
        a_bus.close();
        b_bus.close();
    }
}

/// A failure in background work leaves a counted warning: here a timer whose await cannot be
/// read (its key holds a string).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_timer_is_reported() {
    let bus = connect(Backend::Redis, "sched-warn").await;
    let s = scheduler(&bus).await;
    let prefix = bus.coord_prefix();
    let mut con = redis_con().await;
    let _: () = redis::pipe()
        .cmd("SET")
        .arg(format!("{prefix}:await:broken"))
        .arg("not a hash")
        .cmd("HSET")
        .arg(format!("{prefix}:sched:timer-data"))
        .arg("time:broken")
        .arg(json!({"type": "time", "await": "broken"}).to_string())
        .cmd("ZADD")
        .arg(format!("{prefix}:sched:timers"))
        .arg(1)
        .arg("time:broken")
        .query_async(&mut con)
        .await
        .unwrap();
    // the timer loop looks again when told a timer was added
    bus.publish(
        &format!("{prefix}:sched:wake"),
        "0-0\u{1f}sched\u{1f}wake\u{1f}kind\u{1f}sched.wake\u{1f}data\u{1f}1",
    )
    .await
    .unwrap();
    let failed = || {
        bus.diagnostics()
            .counts()
            .get("TIMER_FAILED")
            .copied()
            .unwrap_or(0)
    };
    eventually!("a TIMER_FAILED warning", failed() >= 1);
    s.close().await;
    bus.close();
}

/// The latest time the scheduler keeps: 9999-12-31T23:59:59.999Z.
const FAR_FUTURE: &str = "9999-12-31T23:59:59.999Z";

/// Delays and times past any sensible horizon are kept at the far future instead of wrapping
/// around (or panicking): a `retryAfter` of 1e20 ms does not retry at once, `await.time` and
/// timeouts of u64::MAX ms wait; a `retryAt` (a date) retries then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_delays_are_kept_at_the_far_future() {
    for backend in BACKENDS {
        let bus = connect(backend, "sched-far").await;
        let s = scheduler(&bus).await;
        s.define(
            "later",
            policy(json!({"attempts": 2, "backoff": {"type": "exponential", "delayMs": u64::MAX}})),
        )
        .unwrap();
        s.define("nap", RetryPolicy::default()).unwrap();
        host(
            &s,
            Arc::new(|s, w| {
                Box::pin(async move {
                    let job = w["jobId"].as_str().unwrap().to_owned();
                    let a = w["attempt"].as_u64().unwrap() as u32;
                    let at = w["input"]["retryAt"].as_u64();
                    match (w["step"].as_str().unwrap(), w["input"]["mode"].as_str()) {
                        ("later", _) if a == 2 => Ok(json!("second")),
                        ("later", Some("retryAfter")) => {
                            Err(json!({"message": "much later", "retryAfter": 1e20}))
                        }
                        ("later", Some("backoff")) => Err(json!({"message": "by the policy"})),
                        ("later", _) => Err(json!({"message": "then", "retryAt": at})),
                        (_, Some("after")) => {
                            s.await_time(&job, a, 0, Due::After(u64::MAX)).await.ok();
                            Ok(json!(null))
                        }
                        (_, Some("at")) => {
                            s.await_time(&job, a, 0, Due::At(u64::MAX)).await.ok();
                            Ok(json!(null))
                        }
                        _ => {
                            s.await_event(&job, a, 0, "never.comes", "{}", Some(u64::MAX))
                                .await
                                .ok();
                            Ok(json!(null))
                        }
                    }
                })
            }),
        );
        for mode in ["retryAfter", "backoff"] {
            let flow = format!("far-{mode}");
            let run = {
                let (s, flow) = (s.clone(), flow.clone());
                let input = json!({ "mode": mode }).to_string();
                tokio::spawn(async move { s.run("later", &flow, &input, None).await })
            };
            eventually!("step.retry", has_kind(&bus, &flow, "step.retry").await);
            let evs = events(&bus, &flow).await;
            assert_eq!(
                evs[1]["data"]["nextRetryAt"], FAR_FUTURE,
                "{backend:?} {mode}"
            );
            assert_eq!(evs[2]["meta"]["scheduledAt"], FAR_FUTURE);
            let delay = evs[2]["data"]["delayMs"].as_u64().unwrap();
            assert!(
                delay > 200_000_000_000_000 && delay < 253_402_300_799_999,
                "{backend:?} {mode}: delayMs {delay}"
            );
            // a retry due now would start within this time
            tokio::time::sleep(Duration::from_millis(500)).await;
            let started = kinds(&events(&bus, &flow).await)
                .iter()
                .filter(|k| *k == "step.started")
                .count();
            assert_eq!(started, 1, "{backend:?} {mode}: retried at once");
            run.abort();
        }
        // a date: retried then
        let at = now_ms() + 300;
        let input = json!({ "mode": "date", "retryAt": at }).to_string();
        assert_eq!(
            s.run("later", "far-date", &input, None).await.unwrap(),
            r#""second""#
        );
        let evs = events(&bus, "far-date").await;
        let delay = evs[2]["data"]["delayMs"].as_u64().unwrap();
        assert!(delay <= 300 && delay > 100, "{backend:?}: delayMs {delay}");
        assert!(
            stored_ms(&evs[3]) >= at,
            "{backend:?}: retried before its date"
        );
        for (mode, kind) in [
            ("after", "step.await.time"),
            ("at", "step.await.time"),
            ("timeout", "step.await.event"),
        ] {
            let flow = format!("far-{mode}");
            let input = json!({ "mode": mode }).to_string();
            let run = {
                let (s, flow) = (s.clone(), flow.clone());
                tokio::spawn(async move { s.run("nap", &flow, &input, None).await })
            };
            eventually!(kind, has_kind(&bus, &flow, kind).await);
            let evs = events(&bus, &flow).await;
            if kind == "step.await.time" {
                assert_eq!(evs[1]["data"]["resumeAt"], FAR_FUTURE, "{backend:?} {mode}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(
                events(&bus, &flow).await.len(),
                2,
                "{backend:?} {mode}: woke early"
            );
            run.abort();
        }
        s.close().await;
        bus.close();
    }
}

/// JSON text the way JavaScript writes a string with a lone surrogate (`JSON.stringify('\uD800')`).
const LONE: &str = r#""\ud800""#;

/// Every path that takes user JSON accepts what `emit` accepts — text with lone-surrogate
/// escapes — and keeps it as it came: run input, results, trigger payloads, fire payloads,
/// match values; a thrown error's message is kept (the surrogate replaced by U+FFFD) with
/// its policy (`retriable: false` is one call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_json_with_lone_surrogates_is_taken_like_emit_takes_it() {
    for backend in BACKENDS {
        let bus = connect(backend, "sched-unicode").await;
        // emit takes it (the yardstick)
        bus.emit(
            &format!(r#"{{"kind":"x.y","subject":"u0","data":{LONE}}}"#),
            None,
        )
        .await
        .unwrap();
        let s = scheduler(&bus).await;
        s.define("echo", policy(json!({"attempts": 3}))).unwrap();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // a host whose handlers answer with JSON text (a lone surrogate is no serde_json Value)
        let host = {
            let (s, calls) = (s.clone(), calls.clone());
            tokio::spawn(async move {
                loop {
                    for w in s.next_work().await {
                        let (s, calls) = (s.clone(), calls.clone());
                        tokio::spawn(async move {
                            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let readable: Value =
                                serde_json::from_str(&w.replace(r"\ud800", r"\ufffd")).unwrap();
                            let job = readable["jobId"].as_str().unwrap().to_owned();
                            let a = readable["attempt"].as_u64().unwrap() as u32;
                            let raw_input = w.contains(r#""input":"\ud800""#);
                            let mode = readable["input"]["mode"].as_str().unwrap_or("echo");
                            let outcome = match mode {
                                "echo" => Ok(if raw_input {
                                    LONE.to_owned()
                                } else {
                                    "1".into()
                                }),
                                "throw" => Err(r#"{"message":"\ud800","retriable":false}"#),
                                "later" if a == 1 => {
                                    Err(r#"{"message":"x\ud800","retryAfter":30}"#)
                                }
                                "later" => Ok(r#""done""#.to_owned()),
                                "trigger" => {
                                    let id = s
                                        .register_trigger(&job, a, 0, "t", Some(LONE), None)
                                        .await
                                        .unwrap();
                                    Ok(s.wait_trigger(&id).await.unwrap())
                                }
                                _ => Ok(
                                    match s
                                        .await_event(
                                            &job,
                                            a,
                                            0,
                                            "x.y",
                                            r#"{"data.v":"\ud800"}"#,
                                            Some(50),
                                        )
                                        .await
                                    {
                                        Err(e) => format!("{:?}", e.code.as_str()),
                                        Ok(_) => r#""matched""#.to_owned(),
                                    },
                                ),
                            };
                            match outcome {
                                Ok(result) => s.complete(&job, a, &result).await.ok(),
                                Err(error) => s.fail(&job, a, error).await.ok(),
                            };
                        });
                    }
                }
            })
        };
        let run = |flow: &'static str, input: String| {
            let s = s.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(10), s.run("echo", flow, &input, None))
                    .await
                    .unwrap_or_else(|_| panic!("{flow}: run() settles"))
            }
        };
        let raw_events = |flow: &'static str| {
            let bus = bus.clone();
            async move {
                let records = bus
                    .read(
                        &StreamRef::new("flow", flow).unwrap(),
                        ReadOptions::default(),
                    )
                    .await
                    .unwrap();
                records.into_iter().map(|r| r.json).collect::<Vec<_>>()
            }
        };

        // run input and result, kept as they came
        assert_eq!(
            run("u1", LONE.to_owned()).await.unwrap(),
            LONE,
            "{backend:?}"
        );
        let evs = raw_events("u1").await;
        assert!(evs[0].contains(r#""input":"\ud800""#), "{}", evs[0]);
        assert!(evs[1].contains(r#""result":"\ud800""#), "{}", evs[1]);

        // a thrown error: its message kept, its policy honoured
        calls.store(0, std::sync::atomic::Ordering::SeqCst);
        let err = run("u2", json!({"mode": "throw"}).to_string())
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::StepFailed);
        assert!(err.message.ends_with('\u{fffd}'), "{}", err.message);
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "retriable: false"
        );
        let evs = events(&bus, "u2").await;
        assert_eq!(evs[1]["data"]["error"], "\u{fffd}");
        assert!(
            err.detail.unwrap().contains(r"\ud800"),
            "the whole error kept"
        );
        let done = run("u3", json!({"mode": "later"}).to_string())
            .await
            .unwrap();
        assert_eq!(done, r#""done""#);
        let evs = events(&bus, "u3").await;
        assert_eq!(evs[2]["data"]["delayMs"], 30, "retryAfter kept");
        assert_eq!(evs[2]["data"]["reason"], "x\u{fffd}");

        // a trigger payload and a fire payload
        let fired = {
            let run = tokio::spawn(run("u4", json!({"mode": "trigger"}).to_string()));
            let id = loop {
                let evs = raw_events("u4").await;
                if let Some(e) = evs.iter().find(|e| e.contains("step.await.trigger")) {
                    assert!(e.contains(r#""payload":"\ud800""#), "{e}");
                    let v: Value = serde_json::from_str(&e.replace(r"\ud800", "")).unwrap();
                    break v["data"]["triggerId"].as_str().unwrap().to_owned();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            s.fire(&id, &format!(r#"{{"v":{LONE}}}"#)).await.unwrap();
            run.await.unwrap().unwrap()
        };
        assert_eq!(fired, format!(r#"{{"v":{LONE}}}"#));

        // a match value: taken (the await times out: no event has that value)
        let code = run("u5", json!({"mode": "match"}).to_string())
            .await
            .unwrap();
        assert_eq!(code, r#""AWAIT_TIMEOUT""#, "{backend:?}");
        host.abort();
        s.close().await;
        bus.close();
    }
}

/// The p-th percentile of `v` (sorted in place).
fn percentile(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

/// Two instances, 200 timers due at the same moment: each fires once and none before its due
/// time. How late they fire is a speed goal, measured by the bench's timer burst (`npm run
/// bench`), not asserted here: this debug build shares the machine with other tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_due_together_fire_once_and_not_early() {
    for backend in BACKENDS {
        let a_bus = connect(backend, "sched-burst").await;
        let b_bus = bus_beside(backend, &a_bus).await;
        let a = scheduler(&a_bus).await;
        let b = scheduler(&b_bus).await;
        let n = 200u64;
        let due = now_ms() + 3000;
        let resumed_late = Arc::new(std::sync::Mutex::new(Vec::new()));
        for s in [&a, &b] {
            s.define("nap", RetryPolicy::default()).unwrap();
            let resumed_late = resumed_late.clone();
            host(
                s,
                Arc::new(move |s, w| {
                    let resumed_late = resumed_late.clone();
                    Box::pin(async move {
                        let job = w["jobId"].as_str().unwrap().to_owned();
                        s.await_time(&job, 1, 0, Due::At(due))
                            .await
                            .map_err(|e| json!({"message": e.message}))?;
                        resumed_late
                            .lock()
                            .unwrap()
                            .push(now_ms().saturating_sub(due));
                        Ok(json!(1))
                    })
                }),
            );
        }
        let runs: Vec<_> = (0..n)
            .map(|i| {
                let s = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move {
                    s.run(
                        "nap",
                        &format!("burst{}", i % 10),
                        "null",
                        Some(&format!("j{i}")),
                    )
                    .await
                })
            })
            .collect();
        for r in runs {
            assert_eq!(r.await.unwrap().unwrap(), "1");
        }
        let mut late = Vec::new();
        for f in 0..10 {
            for e in events(&a_bus, &format!("burst{f}")).await {
                match e["kind"].as_str().unwrap() {
                    "step.await.time" => assert!(stored_ms(&e) < due, "registered too late"),
                    "step.resumed" => {
                        assert!(stored_ms(&e) >= due, "resumed before its due time");
                        late.push(e["meta"]["lateMs"].as_u64().unwrap())
                    }
                    _ => {}
                }
            }
        }
        assert_eq!(late.len() as u64, n, "{backend:?}: each fires once");
        let mut resumed = resumed_late.lock().unwrap().clone();
        let (fired_p99, resumed_p99) =
            (percentile(&mut late, 0.99), percentile(&mut resumed, 0.99));
        eprintln!(
            "{backend:?}: lateMs p99 {fired_p99}, handlers resumed p99 {resumed_p99} ms late"
        );
        a.close().await;
        b.close().await;
        a_bus.close();
        b_bus.close();
    }
}

/// At most `concurrency` handlers run at once; a handler parked in an await does not count,
/// so steps sleeping on a timer do not hold back the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_concurrency_handlers_run_at_once() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    for backend in BACKENDS {
        let bus = connect(backend, "sched-concurrency").await;
        let s = Scheduler::start(
            &bus,
            SchedulerOptions {
                lease_ms: 600,
                concurrency: 2,
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
        s.define("work", RetryPolicy::default()).unwrap();
        s.define("nap", RetryPolicy::default()).unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let (most_running, parked, most_parked) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let busy = {
            let (running, most_running) = (running.clone(), most_running.clone());
            move || {
                let (running, most_running) = (running.clone(), most_running.clone());
                async move {
                    let now = running.fetch_add(1, SeqCst) + 1;
                    most_running.fetch_max(now, SeqCst);
                    // work that takes a while
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    running.fetch_sub(1, SeqCst);
                }
            }
        };
        let counters = (parked.clone(), most_parked.clone());
        host(
            &s,
            Arc::new(move |s, w| {
                let busy = busy.clone();
                let (parked, most_parked) = (counters.0.clone(), counters.1.clone());
                Box::pin(async move {
                    busy().await;
                    if w["step"] == "nap" {
                        let job = w["jobId"].as_str().unwrap().to_owned();
                        let now = parked.fetch_add(1, SeqCst) + 1;
                        most_parked.fetch_max(now, SeqCst);
                        s.await_time(&job, 1, 0, Due::After(300)).await.unwrap();
                        parked.fetch_sub(1, SeqCst);
                        busy().await;
                    }
                    Ok(json!(1))
                })
            }),
        );
        let runs: Vec<_> = (0..12)
            .map(|i| {
                let s = s.clone();
                let step = if i % 2 == 0 { "work" } else { "nap" };
                tokio::spawn(async move { s.run(step, "conc", "null", None).await })
            })
            .collect();
        for r in runs {
            assert_eq!(r.await.unwrap().unwrap(), "1");
        }
        assert_eq!(
            most_running.load(SeqCst),
            2,
            "{backend:?}: handlers at once"
        );
        assert!(
            most_parked.load(SeqCst) > 2,
            "{backend:?}: parked handlers held their slots ({} parked at most)",
            most_parked.load(SeqCst)
        );
        s.close().await;
        bus.close();
    }
}

/// Closing the bus under a live scheduler closes the scheduler: a `run` waiting on a trigger
/// settles with `BUS_CLOSED`, and later calls fail at once instead of waiting on a bus that
/// will never answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_bus_closes_its_scheduler() {
    for backend in BACKENDS {
        let bus = connect(backend, "sched-bus-close").await;
        let s = scheduler(&bus).await;
        s.define("approve", RetryPolicy::default()).unwrap();
        let (tx, mut ids) = tokio::sync::mpsc::unbounded_channel();
        host(&s, approver(tx));
        let run = {
            let s = s.clone();
            tokio::spawn(async move { s.run("approve", "f-bus-close", "{}", None).await })
        };
        let trigger = tokio::time::timeout(Duration::from_secs(10), ids.recv())
            .await
            .expect("the step registered its trigger")
            .unwrap();
        bus.close();
        let settled = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("the run settles once the bus is closed")
            .unwrap();
        assert_eq!(
            settled.unwrap_err().code,
            ErrorCode::BusClosed,
            "{backend:?}"
        );
        let later = s.run("approve", "f-bus-close-2", "{}", None).await;
        assert_eq!(later.unwrap_err().code, ErrorCode::BusClosed, "{backend:?}");
        let fired = s.fire(&trigger, "{}").await;
        assert_eq!(fired.unwrap_err().code, ErrorCode::BusClosed, "{backend:?}");
    }
}
