//! Scheduler behaviour on Redis and on the embedded store, with a Rust host standing in for
//! the JavaScript one: it takes work and runs a handler closure per step.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use lean_events_core::scheduler::{RetryPolicy, Scheduler, SchedulerOptions};
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
                    match h(s2.clone(), w).await {
                        Ok(v) => s2.complete(&job, attempt, &v.to_string()).await.unwrap(),
                        Err(e) => s2.fail(&job, attempt, &e.to_string()).await.unwrap(),
                    }
                });
            }
            while tasks.try_join_next().is_some() {}
        }
    })
}

fn policy(json: Value) -> RetryPolicy {
    RetryPolicy::from_json(&json.to_string()).unwrap()
}

async fn events(bus: &Bus, flow: &str) -> Vec<Value> {
    bus.read(
        &StreamRef::new("flow", flow).unwrap(),
        ReadOptions {
            limit: Some(1000),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .iter()
    .map(|r| serde_json::from_str(&r.json).unwrap())
    .collect()
}

fn kinds(evs: &[Value]) -> Vec<String> {
    evs.iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
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
    assert!(RetryPolicy::from_json(r#"{"attempts":0}"#).is_err());
    assert!(RetryPolicy::from_json(r#"{"backoff":{"type":"linear"}}"#).is_err());
    assert!(RetryPolicy::from_json(r#"{"tries":3}"#).is_err());
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
                            s.await_time(&job, a, 0, due)
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
        host(
            &s,
            Arc::new(move |s, w| {
                let tx = tx.clone();
                Box::pin(async move {
                    let job = w["jobId"].as_str().unwrap().to_owned();
                    let a = w["attempt"].as_u64().unwrap() as u32;
                    let timeout = w["input"]["timeout"].as_u64();
                    let id = s
                        .register_trigger(&job, a, 0, "webhook", None, timeout)
                        .await
                        .unwrap();
                    tx.send(id.clone()).unwrap();
                    match s.wait_trigger(&id).await {
                        Ok(p) => Ok(serde_json::from_str(&p).unwrap()),
                        Err(e) => Ok(json!({"code": e.code.as_str()})),
                    }
                })
            }),
        );
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
        assert_eq!(
            s.fire(&id, "{}").await.unwrap_err().code,
            ErrorCode::TriggerResolved
        );
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
        assert_eq!(
            s.cancel(&id, "again").await.unwrap_err().code,
            ErrorCode::TriggerResolved
        );
        s.close().await;
        bus.close();
    }
}

/// Two instances, many timers due at the same moment: each fires exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_fire_each_timer_once() {
    for (backend, n) in [(Backend::Redis, 1000u64), (Backend::Memory, 1000)] {
        let a_bus = connect(backend, "sched-two").await;
        let b_bus = match backend {
            Backend::Redis => {
                connect_with(backend, "x", |c| c.prefix = a_bus.prefix().to_owned()).await
            }
            Backend::Memory => a_bus.clone(),
        };
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
                        s.await_time(&job, 1, 0, due)
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
        let b_bus = match backend {
            Backend::Redis => {
                connect_with(backend, "x", |c| c.prefix = a_bus.prefix().to_owned()).await
            }
            Backend::Memory => a_bus.clone(),
        };
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
                    s.await_time(&job, 1, 0, u64::MAX / 4)
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
async fn wait_for_status(con: &mut redis::aio::MultiplexedConnection, key: &str, want: &str) {
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
        let client = redis::Client::open(redis_url()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let job_key = format!("{}:sched:job:j-failing", b_bus.prefix());
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
