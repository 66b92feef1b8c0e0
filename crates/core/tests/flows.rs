//! Durable flows on Redis and on the embedded store, with a Rust host standing in for the
//! JavaScript one: a flow's finished steps replay after a take-over, and a replay that calls
//! something else than its run recorded fails with `REPLAY_MISMATCH`.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use lean_events_core::scheduler::{Due, Scheduler, SchedulerOptions};
use lean_events_core::{Bus, ErrorCode};
use serde_json::{json, Value};

/// `ctx.step(name)` as the JS host runs it: the recorded outcome, or run `fn` (counted in
/// `ran`; never returning when `hang`) and record it.
async fn step(
    s: &Scheduler,
    run: &str,
    seq: u32,
    name: &str,
    ran: &AtomicU32,
    hang: bool,
) -> Result<Value, String> {
    let mut state: Value = serde_json::from_str(
        &s.step_begin(run, 1, seq, name)
            .await
            .map_err(|e| e.code.as_str().to_owned())?,
    )
    .unwrap();
    loop {
        match state["status"].as_str() {
            Some("done") => return Ok(state["result"].clone()),
            Some("run") => {
                ran.fetch_add(1, Ordering::SeqCst);
                if hang {
                    std::future::pending::<()>().await;
                }
                let k = state["attempt"].as_u64().unwrap() as u32;
                let recorded = s
                    .step_complete(run, 1, seq, k, &json!(format!("{name} done")).to_string())
                    .await
                    .map_err(|e| e.code.as_str().to_owned())?;
                state = serde_json::from_str(&recorded).unwrap();
            }
            other => panic!("unexpected step state {other:?}"),
        }
    }
}

/// Host one instance: each flow run calls step `one` then step `two` (which hangs when
/// `hang_two`), and returns both results.
fn host(s: &Scheduler, counts: Arc<[AtomicU32; 2]>, hang_two: bool) -> tokio::task::JoinHandle<()> {
    let s = s.clone();
    tokio::spawn(async move {
        // aborting the host aborts the flows it runs (a crash)
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            while tasks.try_join_next().is_some() {}
            for w in s.next_work().await {
                let w: Value = serde_json::from_str(&w).unwrap();
                let (s, counts) = (s.clone(), counts.clone());
                tasks.spawn(async move {
                    let run = w["jobId"].as_str().unwrap().to_owned();
                    let outcome = async {
                        let one = step(&s, &run, 0, "one", &counts[0], false).await?;
                        let two = step(&s, &run, 1, "two", &counts[1], hang_two).await?;
                        Ok::<_, String>(json!({ "one": one, "two": two }))
                    }
                    .await;
                    let _ = match outcome {
                        Ok(v) => s.complete(&run, 1, &v.to_string()).await,
                        Err(code) => {
                            let e = json!({ "message": code, "code": code, "retriable": false });
                            s.fail(&run, 1, &e.to_string()).await
                        }
                    };
                });
            }
        }
    })
}

async fn bus_beside(backend: Backend, bus: &Bus) -> Bus {
    match backend {
        Backend::Redis => connect_with(backend, "x", |c| c.prefix = bus.prefix().to_owned()).await,
        Backend::Memory => bus.clone(),
    }
}

fn opts(id: &str) -> SchedulerOptions {
    SchedulerOptions {
        instance_id: Some(id.into()),
        lease_ms: 300,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_taken_over_flow_replays_its_finished_steps() {
    for backend in BACKENDS {
        let a_bus = connect(backend, "flow-takeover").await;
        let b_bus = bus_beside(backend, &a_bus).await;
        let counts: Arc<[AtomicU32; 2]> = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
        let a = Scheduler::start(&a_bus, opts("node-a"), None)
            .await
            .unwrap();
        a.define_flow("pair").unwrap();
        let a_host = host(&a, counts.clone(), true);
        let run = a
            .start_flow("pair", Some("run-1"), "{}", None)
            .await
            .unwrap();
        wait_until(10, || counts[1].load(Ordering::SeqCst) == 1).await;
        // the process dies inside step two
        a_host.abort();
        drop(a);
        if matches!(backend, Backend::Redis) {
            a_bus.close();
        }
        let b = Scheduler::start(&b_bus, opts("node-b"), None)
            .await
            .unwrap();
        b.define_flow("pair").unwrap();
        host(&b, counts.clone(), false);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !kinds(&events(&b_bus, &run).await).contains(&"flow.completed".to_owned()) {
            assert!(
                std::time::Instant::now() < deadline,
                "{backend:?}: flow.completed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let all = events(&b_bus, &run).await;
        let kinds = kinds(&all);
        assert_eq!(
            kinds.iter().filter(|k| *k == "flow.completed").count(),
            1,
            "{backend:?}"
        );
        assert_eq!(
            kinds.iter().filter(|k| *k == "flow.started").count(),
            1,
            "{backend:?}"
        );
        let done = all.iter().find(|e| e["kind"] == "flow.completed").unwrap();
        assert_eq!(
            done["data"]["result"],
            json!({ "one": "one done", "two": "two done" }),
            "{backend:?}"
        );
        assert_eq!(
            counts[0].load(Ordering::SeqCst),
            1,
            "{backend:?}: one replayed"
        );
        assert_eq!(
            counts[1].load(Ordering::SeqCst),
            2,
            "{backend:?}: two ran again"
        );
        b.close().await;
        b_bus.close();
    }
}

#[tokio::test]
async fn a_replay_that_calls_something_else_is_a_replay_mismatch() {
    for backend in BACKENDS {
        let bus = connect(backend, "flow-mismatch").await;
        let s = Scheduler::start(&bus, opts("node-m"), None).await.unwrap();
        s.define_flow("pair").unwrap();
        // nobody takes the work: the calls below stand in for the flow function
        let run = s.start_flow("pair", None, "{}", None).await.unwrap();
        let ran = AtomicU32::new(0);
        assert_eq!(
            step(&s, &run, 0, "one", &ran, false).await,
            Ok(json!("one done"))
        );
        assert_eq!(
            step(&s, &run, 0, "one", &ran, false).await,
            Ok(json!("one done"))
        );
        assert_eq!(ran.load(Ordering::SeqCst), 1, "{backend:?}: recorded once");
        let err = s.step_begin(&run, 1, 0, "two").await.unwrap_err();
        assert_eq!(err.code, ErrorCode::ReplayMismatch, "{backend:?}");
        assert!(err.message.contains("step 'one'") && err.message.contains("step 'two'"));
        let err = s.await_time(&run, 1, 0, Due::After(10)).await.unwrap_err();
        assert_eq!(
            err.code,
            ErrorCode::ReplayMismatch,
            "{backend:?}: an await in a step's place"
        );
        s.cancel_flow(&run, "done testing").await.unwrap();
        let err = s.step_begin(&run, 1, 1, "two").await.unwrap_err();
        assert_eq!(
            err.code,
            ErrorCode::FlowCancelled,
            "{backend:?}: a cancelled run stops"
        );
        s.close().await;
        bus.close();
    }
}

#[tokio::test]
async fn steps_and_flows_share_one_namespace() {
    // what an instance defines is held in memory: one backend says it all
    let bus = connect(Backend::Memory, "flow-names").await;
    let s = Scheduler::start(&bus, opts("node-n"), None).await.unwrap();
    s.define_flow("ship").unwrap();
    let err = s.define("ship", Default::default()).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert!(
        err.message.contains("'ship' is already defined as a flow"),
        "{}",
        err.message
    );
    s.define("charge", Default::default()).unwrap();
    let err = s.define_flow("charge").unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert!(
        err.message
            .contains("'charge' is already defined as a step"),
        "{}",
        err.message
    );
    // the same kind again is accepted, as it always was
    s.define_flow("ship").unwrap();
    s.define("charge", Default::default()).unwrap();
    // a refused flow name says so
    let err = s.define_flow("").unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert!(err.message.starts_with("flow name "), "{}", err.message);
    let err = s.define("", Default::default()).unwrap_err();
    assert!(err.message.starts_with("step "), "{}", err.message);
    s.close().await;
    bus.close();
}
