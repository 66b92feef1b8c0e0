//! Retention (`retention.finishedRunsMs`) through the bus: which events start it, the option's
//! checks, and the per-call override; on Redis (or the cluster REDIS_URL names) and on the
//! embedded store. The store-level behaviour is in the store suite.

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use common::*;
use lean_events_core::bus::config::retention;
use lean_events_core::bus::EmitOptions;
use lean_events_core::{Bus, Config, ErrorCode, ReadOptions, StreamRef};
use serde_json::json;

async fn eventually<F, Fut>(secs: u64, what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn events_in(bus: &Bus, stream_type: &str, id: &str) -> usize {
    let stream = StreamRef::new(stream_type, id).unwrap();
    bus.read(&stream, ReadOptions::default())
        .await
        .unwrap()
        .len()
}

async fn runs(bus: &Bus, name: &str) -> Vec<String> {
    let mut ids: Vec<String> = bus
        .list_runs(name, 100, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    ids.sort();
    ids
}

async fn start(bus: &Bus, id: &str) {
    let e = json!({"kind": "flow.started", "subject": id, "data": {"name": "f"}});
    bus.emit(&e.to_string(), None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_runs_and_resolved_triggers_expire_others_stay() {
    for backend in BACKENDS {
        let bus = connect_with(backend, "retention-bus", |c| {
            c.finished_runs_retention = Some(Duration::from_millis(300));
        })
        .await;
        for id in ["completed", "failed", "progressing", "running"] {
            start(&bus, id).await;
            let step = json!({"kind": "step.completed", "subject": id, "step": "s"});
            bus.emit(&step.to_string(), None).await.unwrap();
        }
        let end = |kind: &str, id: &str| json!({"kind": kind, "subject": id}).to_string();
        bus.emit(&end("flow.completed", "completed"), None)
            .await
            .unwrap();
        bus.emit(&end("flow.failed", "failed"), None).await.unwrap();
        // a flow.* kind the reducers do not end a run with: the run stays
        bus.emit(&end("flow.progress", "progressing"), None)
            .await
            .unwrap();
        // a flow.completed in a stream of another type is not a run's end either
        bus.emit(&end("flow.completed", "other"), Some("job"))
            .await
            .unwrap();
        let registered = json!({"kind": "trigger.registered", "subject": "tr", "data": {}});
        bus.emit(&registered.to_string(), None).await.unwrap();
        let fired = json!({"kind": "trigger.fired", "subject": "tr", "data": {}});
        bus.emit(&fired.to_string(), None).await.unwrap();

        eventually(10, "the finished runs left the index", || async {
            runs(&bus, "f").await == ["progressing", "running"]
        })
        .await;
        eventually(10, "their streams expired", || async {
            events_in(&bus, "flow", "completed").await == 0
                && events_in(&bus, "flow", "failed").await == 0
                && events_in(&bus, "trigger", "tr").await == 0
        })
        .await;
        assert_eq!(
            events_in(&bus, "flow", "progressing").await,
            3,
            "{backend:?}"
        );
        assert_eq!(events_in(&bus, "flow", "running").await, 2, "{backend:?}");
        assert_eq!(events_in(&bus, "job", "other").await, 1, "{backend:?}");
        bus.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_can_set_retention_of_its_own() {
    for backend in BACKENDS {
        // no retention on the bus: one emit names its own
        let bus = connect(backend, "retention-call").await;
        for id in ["short", "kept"] {
            start(&bus, id).await;
        }
        let short = EmitOptions {
            stream_type: None,
            retention: Some(Duration::from_millis(200)),
        };
        let done = |id: &str| json!({"kind": "flow.completed", "subject": id}).to_string();
        let batch = format!("[{}]", done("short"));
        bus.emit_many_with(&batch, short).await.unwrap();
        bus.emit(&done("kept"), None).await.unwrap();
        eventually(10, "the run with retention left", || async {
            runs(&bus, "f").await == ["kept"] && events_in(&bus, "flow", "short").await == 0
        })
        .await;
        assert_eq!(events_in(&bus, "flow", "kept").await, 2, "{backend:?}");

        let zero = EmitOptions {
            stream_type: None,
            retention: Some(Duration::ZERO),
        };
        let err = bus.emit_with(&done("kept"), zero).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{backend:?}");
        let m = bus.metrics().await;
        assert_eq!(
            m.emit_errors.get("INVALID_ARGUMENT"),
            Some(&1),
            "{backend:?}"
        );
        bus.close();
    }
}

#[tokio::test]
async fn the_option_is_checked() {
    for bad in [Some(0), Some(-5), Some(11 * 366 * 24 * 3600 * 1000)] {
        let err = retention(bad).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{bad:?}");
        assert!(
            err.message.contains("retention.finishedRunsMs"),
            "{}",
            err.message
        );
    }
    assert_eq!(retention(None).unwrap(), None);
    assert_eq!(
        retention(Some(1500)).unwrap(),
        Some(Duration::from_millis(1500))
    );
    let config = Config {
        finished_runs_retention: Some(Duration::ZERO),
        ..Config::default()
    };
    let err = Bus::connect(config).await.err().expect("refused");
    assert_eq!(err.code, ErrorCode::InvalidArgument);
}
