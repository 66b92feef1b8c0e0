//! `Bus::metrics`: the counters and gauges after known operations, on Redis (or the cluster
//! REDIS_URL names) and on the embedded store.

mod common;

use std::time::{Duration, Instant};

use common::*;
use lean_events_core::metrics::Metrics;
use lean_events_core::scheduler::{Scheduler, SchedulerOptions};
use lean_events_core::{Bus, End, ErrorCode, Start, StreamRef, SubscribeOptions};
use serde_json::json;

fn event(kind: &str, subject: &str) -> String {
    json!({ "kind": kind, "subject": subject }).to_string()
}

/// Poll `bus.metrics()` until `done` holds; panics with the last snapshot after `secs`.
async fn metrics_until(bus: &Bus, secs: u64, done: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let m = bus.metrics().await;
        if done(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "timed out; last metrics {m:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emits_and_emit_errors_are_counted_by_code() {
    for backend in BACKENDS {
        let bus = connect(backend, "metrics-emits").await;
        let m = bus.metrics().await;
        assert_eq!((m.emits, m.emit_errors.len()), (0, 0), "{backend:?}");

        bus.emit(&event("a.b", "s1"), None).await.unwrap();
        let batch = format!("[{},{}]", event("a.b", "s1"), event("a.c", "s2"));
        bus.emit_many(&batch, None).await.unwrap();
        let bad = bus
            .emit(r#"{"kind":"Bad Kind!","subject":"s1"}"#, None)
            .await;
        assert_eq!(bad.unwrap_err().code, ErrorCode::EventInvalid);
        let too_many = format!("[{},{{\"kind\":\"x\"}}]", event("a.b", "s1"));
        assert!(bus.emit_many(&too_many, None).await.is_err());

        let m = bus.metrics().await;
        assert_eq!(m.emits, 3, "{backend:?}: an emitMany of 2 counts 2");
        assert_eq!(m.emit_errors.get("EVENT_INVALID"), Some(&2), "{backend:?}");
        assert_eq!(m.pending_emits, 0, "{backend:?}");
        assert_eq!(
            m.timers, None,
            "{backend:?}: no scheduler, no timer figures"
        );

        bus.close();
        let closed = bus.emit(&event("a.b", "s1"), None).await;
        assert_eq!(closed.unwrap_err().code, ErrorCode::BusClosed);
        let m = bus.metrics().await;
        assert_eq!(m.emit_errors.get("BUS_CLOSED"), Some(&1), "{backend:?}");
        assert_eq!(m.emits, 3, "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_subscriptions_and_overflows_are_counted() {
    for backend in BACKENDS {
        let bus = connect(backend, "metrics-live").await;
        let stream = StreamRef::new("flow", "run-1").unwrap();
        let roomy = bus
            .subscribe(&stream, SubscribeOptions::default(), None)
            .await
            .unwrap();
        let opts = SubscribeOptions {
            start: Start::Live,
            max_queue: 2,
            notify_gaps: false,
        };
        let tight = bus.subscribe(&stream, opts, None).await.unwrap();
        assert_eq!(bus.metrics().await.live_subscriptions, 2, "{backend:?}");
        // only a live subscriber is cut off (catching up, a subscription waits for its consumer)
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(tight.is_live() && roomy.is_live()) {
            assert!(Instant::now() < deadline, "{backend:?}: not live");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        // nobody takes: the tight subscriber gets 2 and is cut off at the 3rd
        for _ in 0..3 {
            bus.emit(&event("a.b", "run-1"), None).await.unwrap();
        }
        // (a subscription may still be switching to live, handing over what it held)
        metrics_until(&bus, 10, |m| {
            m.deliveries == 5 && m.subscriber_overflows == 1
        })
        .await;
        let taken = tight.take(10);
        assert_eq!(taken.items.len(), 2, "{backend:?}");
        assert!(
            matches!(&taken.end, Some(End::Failed(e)) if e.code == ErrorCode::SubscriberOverflow),
            "{backend:?}: {:?}",
            taken.end
        );
        assert_eq!(roomy.take(10).items.len(), 3, "{backend:?}");
        let m = metrics_until(&bus, 10, |m| m.live_subscriptions == 1).await;
        assert_eq!(m.deliveries, 5, "{backend:?}: taking does not count again");
        bus.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_brings_its_timers_and_their_lateness() {
    for backend in BACKENDS {
        let bus = connect(backend, "metrics-timers").await;
        // a timer 200 ms overdue before the scheduler starts: its loop claims it at once (a
        // payload this version does not know is carried out as done, and removed)
        let due = lean_events_core::clock::now_ms() - 200;
        bus.store()
            .timer_add("metrics-test", due, r#"{"type":"unknown"}"#)
            .await
            .unwrap();
        let scheduler = Scheduler::start(&bus, SchedulerOptions::default(), None)
            .await
            .unwrap();
        let m = metrics_until(&bus, 10, |m| {
            m.timers
                .as_ref()
                .is_some_and(|t| t.fired == 1 && t.pending == Some(0))
        })
        .await;
        let t = m.timers.unwrap();
        let (p50, p99) = (t.lateness_p50_ms.unwrap(), t.lateness_p99_ms.unwrap());
        assert!(p50 >= 200 && p99 == p50, "{backend:?}: {p50} {p99}");
        assert!(m.live_subscriptions >= 2, "{backend:?}: control channels");

        scheduler.close().await;
        assert_eq!(bus.metrics().await.timers, None, "{backend:?}");
        bus.close();
    }
}
