//! EventBus behaviour on Redis and on the embedded store.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use lean_events_core::{
    End, ErrorCode, Item, ReadOptions, Start, StreamId, StreamRef, SubscribeOptions,
};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn flow(id: &str) -> StreamRef {
    StreamRef::new("flow", id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_of_every_field() {
    for backend in BACKENDS {
        let bus = connect(backend, "roundtrip").await;
        let input = json!({
            "kind": "step.completed", "subject": "run:1", "flow": "run:1", "step": "fetch",
            "trigger": "t1", "correlationId": "c-1",
            "data": {"text": "héllo ✓ 🚀", "nested": {"a": [1, 2.5, null, true]}, "s": "q\"\\"},
            "meta": {"attempt": 2}
        });
        let rec = bus.emit(&input.to_string(), None).await.unwrap();
        let got: Value = serde_json::from_str(&rec.json).unwrap();
        for k in [
            "kind",
            "subject",
            "flow",
            "step",
            "trigger",
            "correlationId",
            "data",
            "meta",
        ] {
            assert_eq!(got[k], input[k], "{backend:?} {k}");
        }
        assert_eq!(got["id"], rec.id.to_string());
        assert_eq!(got["ts"], rec.id.iso());
        let read = bus
            .read(&flow("run:1"), ReadOptions::default())
            .await
            .unwrap();
        assert_eq!(read, vec![rec.clone()], "{backend:?}");

        // ids increase, emitMany keeps order, trigger kinds go to the trigger stream
        let many = bus
            .emit_many(
                &format!(
                    "[{},{}]",
                    event("a.b", "run:1", 1),
                    event("a.b", "run:1", 2)
                ),
                None,
            )
            .await
            .unwrap();
        assert!(rec.id < many[0].id && many[0].id < many[1].id);
        let t = bus
            .emit(
                r#"{"kind":"trigger.fired","subject":"tr1","data":{}}"#,
                None,
            )
            .await
            .unwrap();
        let tr = bus
            .read(
                &StreamRef::new("trigger", "tr1").unwrap(),
                ReadOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(tr, vec![t]);
        bus.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_cursors_limits_and_direction() {
    for backend in BACKENDS {
        let bus = connect(backend, "read").await;
        let events: Vec<String> = (0..150).map(|i| event("e", "f", i)).collect();
        let recs = bus
            .emit_many(&format!("[{}]", events.join(",")), None)
            .await
            .unwrap();
        let ids: Vec<StreamId> = recs.iter().map(|r| r.id).collect();
        let all = bus.read(&flow("f"), ReadOptions::default()).await.unwrap();
        assert_eq!(all.len(), 100, "default limit");
        let after = bus
            .read(
                &flow("f"),
                ReadOptions {
                    after: Some(ids[10]),
                    before: Some(ids[20]),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(after.iter().map(|r| r.id).collect::<Vec<_>>(), ids[11..20]);
        let rev = bus
            .read(
                &flow("f"),
                ReadOptions {
                    reverse: true,
                    limit: Some(3),
                    before: Some(ids[149]),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            rev.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![ids[148], ids[147], ids[146]]
        );
        let e = bus
            .read(
                &flow("f"),
                ReadOptions {
                    limit: Some(10_001),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        bus.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_index_lists_newest_first() {
    for backend in BACKENDS {
        let bus = connect(backend, "runs").await;
        for id in ["r1", "r2", "r3"] {
            bus.emit(
                &format!(r#"{{"kind":"flow.started","subject":"{id}","data":{{"name":"demo"}}}}"#),
                None,
            )
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await; // distinct start milliseconds
        }
        let runs = bus.list_runs("demo", 10, 0).await.unwrap();
        assert_eq!(
            runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["r3", "r2", "r1"]
        );
        let page = bus.list_runs("demo", 1, 1).await.unwrap();
        assert_eq!(page[0].id, "r2");
        assert!(bus.list_runs("other", 10, 0).await.unwrap().is_empty());
        bus.close();
    }
}

/// Every emit is one EVALSHA/EVAL whose script does XADD, PUBLISH (stream and kind) and,
/// for flow.started, ZADD — nothing is written outside the script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_emit_is_one_script_call() {
    let bus = connect(Backend::Redis, "atomic").await;
    // warm the script cache so the count is not disturbed by a SCRIPT LOAD
    bus.emit(&event("warm.up", "w", 0), None).await.unwrap();
    if bus.is_cluster() {
        return each_emit_on_a_cluster_is_three_script_calls(bus).await;
    }
    let prefix = bus.prefix().to_owned();
    let url = redis_url();
    let addr = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let (mut lines, _keep) = monitor(&addr).await;

    bus.emit(
        r#"{"kind":"flow.started","subject":"m1","data":{"name":"mon"}}"#,
        None,
    )
    .await
    .unwrap();
    for i in 0..4 {
        bus.emit(&event("step.started", "m1", i), None)
            .await
            .unwrap();
    }
    let mut calls = Vec::new();
    let mut inner = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let seen = |inner: &[String], cmd: &str| inner.iter().filter(|l| l.contains(cmd)).count();
    while seen(&inner, "\"XADD\"") < 5
        || seen(&inner, "\"PUBLISH\"") < 10
        || seen(&inner, "\"ZADD\"") < 1
    {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("monitor lines")
            .unwrap()
            .unwrap();
        if !line.contains(&prefix) {
            continue;
        }
        if line.contains("lua]") {
            inner.push(line);
        } else {
            calls.push(line);
        }
    }
    assert_eq!(calls.len(), 5, "one top-level call per emit: {calls:#?}");
    assert!(
        calls.iter().all(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("\"evalsha\"") || l.contains("\"eval\"")
        }),
        "{calls:#?}"
    );
    let count = |cmd: &str| inner.iter().filter(|l| l.contains(cmd)).count();
    assert_eq!(count("\"XADD\""), 5);
    assert_eq!(count("\"PUBLISH\""), 10);
    assert_eq!(count("\"ZADD\""), 1);
    bus.close();
}

type MonitorLines = tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>;

/// MONITOR on `addr`: its lines, and the half of the connection that keeps it open.
async fn monitor(addr: &str) -> (MonitorLines, tokio::net::tcp::OwnedWriteHalf) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (rd, mut wr) = stream.into_split();
    wr.write_all(b"MONITOR\r\n").await.unwrap();
    let mut lines = BufReader::new(rd).lines();
    assert_eq!(lines.next_line().await.unwrap().unwrap(), "+OK");
    (lines, wr)
}

/// On a cluster: per emit, one script on the stream's shard (XADD, SPUBLISH, PUBLISH of the
/// kind, the outbox entry), one in the coordination slot (the index entry, awaits), and one
/// removing the outbox entry; nothing is written outside them.
async fn each_emit_on_a_cluster_is_three_script_calls(bus: lean_events_core::Bus) {
    let prefix = bus.prefix().to_owned();
    let first = cluster_nodes().unwrap()[0].clone();
    let mut con = redis::Client::open(first)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut con)
        .await
        .unwrap();
    // warm the script caches of the masters this test writes to (each master loads a script on
    // its first call), then wait for the warm-up emits' outbox entries to be removed (in the
    // background) so that no call of theirs is counted
    bus.emit(&event("warm.up", "m1", 0), None).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for id in ["w", "m1"] {
        let outbox = lean_events_core::store::cluster::outbox_key(
            &prefix,
            &bus.stream_key(&StreamRef::new("flow", id).unwrap()),
        );
        loop {
            let mut raw = raw_connection().await;
            let left: i64 = redis::cmd("ZCARD")
                .arg(&outbox)
                .query_async(&mut raw)
                .await
                .unwrap();
            if left == 0 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "outbox not cleared");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut keep = Vec::new();
    for line in nodes.lines().filter(|l| l.contains("master")) {
        let addr = line.split(' ').nth(1).unwrap().split('@').next().unwrap();
        let (mut lines, wr) = monitor(addr).await;
        keep.push(wr);
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
    }
    bus.emit(
        r#"{"kind":"flow.started","subject":"m1","data":{"name":"mon"}}"#,
        None,
    )
    .await
    .unwrap();
    for i in 0..4 {
        bus.emit(&event("step.started", "m1", i), None)
            .await
            .unwrap();
    }
    let (mut calls, mut inner) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let seen = |l: &[String], cmd: &str| l.iter().filter(|l| l.contains(cmd)).count();
    while seen(&inner, "\"XADD\"") < 5
        || seen(&inner, "\"PUBLISH\"") < 5
        || seen(&inner, "\"SPUBLISH\"") < 5
        || seen(&inner, "\"ZADD\"") < 6
        || seen(&inner, "\"ZREM\"") < 5
    {
        let line = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("monitor lines; so far {calls:#?} {inner:#?}"))
            .unwrap();
        if !line.contains(&prefix) {
            continue;
        }
        if line.contains("lua]") {
            inner.push(line);
        } else {
            calls.push(line);
        }
    }
    let scripts = calls
        .iter()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("\"evalsha\"") || l.contains("\"eval\"")
        })
        .count();
    assert_eq!(scripts, 15, "three script calls per emit: {calls:#?}");
    assert_eq!(calls.len(), 15, "and nothing else: {calls:#?}");
    assert_eq!(seen(&inner, "\"XADD\""), 5);
    assert_eq!(seen(&inner, "\"SPUBLISH\""), 5);
    assert_eq!(seen(&inner, "\"PUBLISH\""), 5);
    assert_eq!(seen(&inner, "\"ZADD\""), 6);
    bus.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_type_key_refuses_only_that_emit() {
    let bus = connect(Backend::Redis, "wrongtype").await;
    let mut con = raw_connection().await;
    let key = bus.stream_key(&flow("bad"));
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("x")
        .query_async(&mut con)
        .await
        .unwrap();
    let batch = format!("[{},{}]", event("a", "ok2", 0), event("a", "bad", 1));
    let single = event("a", "ok", 0);
    let (bad, good) = tokio::join!(bus.emit_many(&batch, None), bus.emit(&single, None));
    let bad = bad.unwrap_err();
    assert_eq!(bad.code, ErrorCode::WrongType);
    good.unwrap();
    let ok2 = bus
        .read(&flow("ok2"), ReadOptions::default())
        .await
        .unwrap();
    if bus.is_cluster() {
        // on a cluster a batch is atomic per node: nothing of it was stored (both streams are
        // on one node), or the error says what was
        assert_eq!(
            ok2.len() == 1,
            bad.message.contains("1 of 2 events"),
            "{bad}"
        );
    } else {
        assert!(ok2.is_empty());
    }

    // a single emit, queued together with emits that are stored, is refused by its own XADD;
    // nothing of it is published
    let live = bus
        .on_kind("a", Some(100), None)
        .await
        .expect("kind subscription");
    let (e0, e1, e2) = (
        event("a", "ok3", 0),
        event("a", "bad", 1),
        event("a", "ok3", 2),
    );
    let (before, bad, after) = tokio::join!(
        bus.emit(&e0, None),
        bus.emit(&e1, None),
        bus.emit(&e2, None)
    );
    let err = bad.unwrap_err();
    assert_eq!(err.code, ErrorCode::WrongType);
    assert!(
        err.message.contains(&key) && err.message.contains("string"),
        "{err}"
    );
    let (before, after) = (before.unwrap(), after.unwrap());
    let stored = bus
        .read(&flow("ok3"), ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(stored, vec![before.clone(), after.clone()]);
    // (on a cluster a kind message of an earlier emit, published on another node, can still be
    // on its way when the subscription starts: only this part's subjects count)
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let taken = tokio::time::timeout(Duration::from_secs(5), live.next_batch(10))
            .await
            .expect("live delivery");
        for i in taken.items {
            let Item::Event(r) = i else { panic!("gap") };
            let v: Value = serde_json::from_str(&r.json).unwrap();
            if matches!(v["subject"].as_str(), Some("ok3" | "bad")) {
                seen.push(r.id);
            }
        }
    }
    assert_eq!(
        seen,
        vec![before.id, after.id],
        "only stored events are published"
    );

    // an index key of the wrong type refuses the flow.started that would write it; on a
    // cluster the index is written after the event is stored (another slot), so the event is
    // stored and only the index entry is skipped
    let index = format!("{}:flows:badindex", bus.coord_prefix());
    let _: () = redis::cmd("SET")
        .arg(&index)
        .arg("x")
        .query_async(&mut con)
        .await
        .unwrap();
    let started = r#"{"kind":"flow.started","subject":"run-bi","data":{"name":"badindex"}}"#;
    let stored = bus
        .read(&flow("run-bi"), ReadOptions::default())
        .await
        .unwrap();
    if bus.is_cluster() {
        bus.emit(started, None).await.unwrap();
        let stored = bus
            .read(&flow("run-bi"), ReadOptions::default())
            .await
            .unwrap();
        assert_eq!(stored.len(), 1);
        let t: String = redis::cmd("TYPE")
            .arg(&index)
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(t, "string");
    } else {
        let err = bus.emit(started, None).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::WrongType);
        assert!(stored.is_empty());
        assert!(bus
            .read(&flow("run-bi"), ReadOptions::default())
            .await
            .unwrap()
            .is_empty());
    }
    let _: () = redis::cmd("DEL")
        .arg(&index)
        .query_async(&mut con)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut con)
        .await
        .unwrap();
    bus.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_emits_share_script_calls_and_keep_order() {
    for backend in BACKENDS {
        let bus = Arc::new(connect(backend, "groupcommit").await);
        let tasks: Vec<_> = (0..400)
            .map(|i| {
                let bus = bus.clone();
                tokio::spawn(
                    async move { bus.emit(&event("x", &format!("s{}", i % 7), i), None).await },
                )
            })
            .collect();
        let mut ids = HashSet::new();
        for t in tasks {
            let r = t.await.unwrap().unwrap();
            let v: Value = serde_json::from_str(&r.json).unwrap();
            ids.insert((v["subject"].as_str().unwrap().to_owned(), r.id));
        }
        assert_eq!(ids.len(), 400);
        for s in 0..7 {
            let recs = bus
                .read(
                    &flow(&format!("s{s}")),
                    ReadOptions {
                        limit: Some(1000),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            assert!(recs.windows(2).all(|w| w[0].id < w[1].id));
        }
        bus.close();
    }
}

/// `submit_*_then` calls its callback exactly once per append, in submission order for one
/// stream, and when the bus closes with appends still queued, each is told (stored or closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_hand_off_settles_every_append_once() {
    for backend in BACKENDS {
        let bus = connect(backend, "then").await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..300 {
            let tx = tx.clone();
            let done: lean_events_core::OnStored = Box::new(move |r| {
                let _ = tx.send((i, r));
            });
            if i % 3 == 0 {
                let batch = format!("[{},{}]", event("t", "then-s", i), event("t", "then-s", i));
                bus.submit_many_then(&batch, None, done).unwrap();
            } else {
                bus.submit_one_then(&event("t", "then-s", i), None, done)
                    .unwrap();
            }
        }
        let mut last: Option<StreamId> = None;
        for _ in 0..300 {
            let (i, r) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("every callback is called")
                .unwrap();
            let records = r.unwrap();
            assert_eq!(records.len(), if i % 3 == 0 { 2 } else { 1 }, "{backend:?}");
            for rec in records {
                assert!(last.is_none_or(|l| l < rec.id), "{backend:?}: ids in order");
                last = Some(rec.id);
            }
        }
        // a bad event is refused at once and its callback is never called
        let err = bus
            .submit_one_then("{\"kind\":1}", None, Box::new(|_| panic!("called")))
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::EventInvalid);

        // close with appends queued: each callback still runs once
        for i in 0..200 {
            let tx = tx.clone();
            bus.submit_one_then(
                &event("t", "then-c", i),
                None,
                Box::new(move |r| {
                    let _ = tx.send((i, r));
                }),
            )
            .unwrap();
        }
        bus.close();
        drop(tx);
        let mut settled = 0;
        while let Ok(Some((_, r))) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await
        {
            if let Err(e) = r {
                assert_eq!(e.code, ErrorCode::BusClosed, "{backend:?}: {e}");
            }
            settled += 1;
        }
        assert_eq!(settled, 200, "{backend:?}");
    }
}

/// A writer emits 5 000 events while 20 subscriptions start at random moments with different
/// cursors; each must get exactly its expected ids, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_free_under_concurrent_writes() {
    for backend in BACKENDS {
        let bus = Arc::new(connect(backend, "gapfree").await);
        let stream = flow("hot");
        const TOTAL: usize = 5000;
        let writer = {
            let bus = bus.clone();
            tokio::spawn(async move {
                let mut emitted = Vec::with_capacity(TOTAL);
                let mut n = 0;
                while n < TOTAL {
                    // a mix of single emits in flight together and small batches
                    let futs: Vec<_> = (0..8)
                        .map(|k| {
                            let bus = bus.clone();
                            let i = n + k;
                            async move { bus.emit(&event("tick", "hot", i), None).await.unwrap().id }
                        })
                        .collect();
                    for id in futures_join(futs).await {
                        emitted.push(id);
                    }
                    n += 8;
                    let batch: Vec<String> = (0..5).map(|k| event("tick", "hot", n + k)).collect();
                    for r in bus
                        .emit_many(&format!("[{}]", batch.join(",")), None)
                        .await
                        .unwrap()
                    {
                        emitted.push(r.id);
                    }
                    n += 5;
                    if n % 65 == 0 {
                        // spread the writes over the window in which subscriptions start
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                emitted
            })
        };
        let mut subs = Vec::new();
        for i in 0..20u64 {
            tokio::time::sleep(Duration::from_millis(3 + (i * 7919) % 17)).await;
            let known = bus
                .read(
                    &stream,
                    ReadOptions {
                        reverse: true,
                        limit: Some(50),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            let start = match i % 3 {
                0 if !known.is_empty() => Start::After(known[(i as usize) % known.len()].id),
                1 => Start::Backfill(1 + (i as usize % 40)),
                _ => Start::Live,
            };
            let before_subscribe = known.first().map(|r| r.id);
            let sub = bus
                .subscribe(
                    &stream,
                    SubscribeOptions {
                        start,
                        ..Default::default()
                    },
                    None,
                )
                .await
                .unwrap();
            subs.push((start, before_subscribe, sub));
        }
        let mut emitted = writer.await.unwrap();
        // a last event every subscription, even a live-only one started late, must receive
        emitted.push(
            bus.emit(&event("tick", "hot", TOTAL), None)
                .await
                .unwrap()
                .id,
        );
        emitted.sort();
        let last = *emitted.last().unwrap();
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = bus
                .read(
                    &stream,
                    ReadOptions {
                        after,
                        limit: Some(10_000),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            after = page.last().map(|r| r.id);
            all.extend(page.into_iter().map(|r| r.id));
        }
        assert!(all.len() > TOTAL, "{backend:?}: every emit stored");
        for (start, before, sub) in &subs {
            let got = collect_until(sub, 30, |ids| ids.last() == Some(&last)).await;
            let first = got[0];
            let expected: Vec<StreamId> = match start {
                Start::After(a) => all.iter().copied().filter(|id| id > a).collect(),
                Start::Backfill(n) => {
                    let pos = all.iter().position(|id| *id == first).unwrap();
                    assert!(pos + n >= all.len() || got.len() >= *n, "backfill size");
                    all[pos..].to_vec()
                }
                Start::Live => {
                    if let Some(b) = before {
                        assert!(first > *b, "live-only starts after what was stored before");
                    }
                    let pos = all.iter().position(|id| *id == first).unwrap();
                    all[pos..].to_vec()
                }
            };
            assert_eq!(got, expected, "{backend:?} {start:?}");
        }
        drop(subs);
        assert_eq!(bus.channel_count(), 0);
        bus.close();
    }
}

async fn futures_join<T>(futs: Vec<impl std::future::Future<Output = T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(futs.len());
    let handles: Vec<_> = futs.into_iter().map(Box::pin).collect();
    for h in handles {
        out.push(h.await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_one_keeps_the_other() {
    for backend in BACKENDS {
        let bus = connect(backend, "refcount").await;
        let s = flow("rc");
        let a = bus
            .subscribe(&s, SubscribeOptions::default(), None)
            .await
            .unwrap();
        let b = bus
            .subscribe(&s, SubscribeOptions::default(), None)
            .await
            .unwrap();
        assert_eq!(bus.channel_count(), 1);
        assert_eq!(bus.subscription_count(), 2);
        a.unsubscribe();
        let r = bus.emit(&event("x", "rc", 1), None).await.unwrap();
        assert_eq!(
            collect_until(&b, 5, |ids| !ids.is_empty()).await,
            vec![r.id]
        );
        assert!(matches!(a.take(10).end, Some(End::Closed)));
        drop(b);
        assert_eq!(bus.channel_count(), 0);
        bus.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_cut_off_with_its_last_id() {
    for backend in BACKENDS {
        let bus = connect(backend, "overflow").await;
        let s = flow("slow");
        let sub = bus
            .subscribe(
                &s,
                SubscribeOptions {
                    max_queue: 50,
                    ..Default::default()
                },
                None,
            )
            .await
            .unwrap();
        wait_until(5, || sub.is_live()).await;
        for i in 0..200 {
            bus.emit(&event("x", "slow", i), None).await.unwrap();
        }
        let mut ids = Vec::new();
        let end = loop {
            let t = tokio::time::timeout(Duration::from_secs(5), sub.next_batch(7))
                .await
                .unwrap();
            ids.extend(t.items.into_iter().filter_map(|i| match i {
                Item::Event(r) => Some(r.id),
                _ => None,
            }));
            if let Some(end) = t.end {
                break end;
            }
        };
        assert_eq!(ids.len(), 50, "{backend:?}");
        let End::Failed(e) = end else {
            panic!("{end:?}")
        };
        assert_eq!(e.code, ErrorCode::SubscriberOverflow);
        assert_eq!(e.last_id, Some(ids.last().unwrap().to_string()));
        assert_eq!(
            bus.channel_count(),
            0,
            "cut-off subscriber released its channel"
        );
        bus.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_cursor_is_reported_never_skipped() {
    for backend in BACKENDS {
        let bus = connect_with(backend, "gap", |c| c.max_len = Some(10)).await;
        let s = flow("g");
        let mut ids = Vec::new();
        // Redis trims approximately (whole nodes of 100 entries): write enough to trim for sure.
        for chunk in 0..10 {
            let batch: Vec<String> = (0..100).map(|i| event("x", "g", chunk * 100 + i)).collect();
            ids.extend(
                bus.emit_many(&format!("[{}]", batch.join(",")), None)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| r.id),
            );
        }
        let oldest = bus
            .read(
                &s,
                ReadOptions {
                    limit: Some(1),
                    ..Default::default()
                },
            )
            .await
            .unwrap()[0]
            .id;
        assert!(oldest > ids[1], "{backend:?}: the stream was trimmed");

        let sub = bus
            .subscribe(
                &s,
                SubscribeOptions {
                    start: Start::After(ids[0]),
                    ..Default::default()
                },
                None,
            )
            .await
            .unwrap();
        let t = tokio::time::timeout(Duration::from_secs(5), sub.next_batch(10))
            .await
            .unwrap();
        assert!(t.items.is_empty());
        let Some(End::Failed(e)) = t.end else {
            panic!("{:?}", t.end)
        };
        assert_eq!(e.code, ErrorCode::StreamGap);
        assert_eq!(e.last_id, Some(ids[0].to_string()));
        assert_eq!(e.first_id, Some(oldest.to_string()));

        let sub = bus
            .subscribe(
                &s,
                SubscribeOptions {
                    start: Start::After(ids[0]),
                    notify_gaps: true,
                    ..Default::default()
                },
                None,
            )
            .await
            .unwrap();
        let t = tokio::time::timeout(Duration::from_secs(5), sub.next_batch(1))
            .await
            .unwrap();
        assert!(
            matches!(t.items[0], Item::Gap { after, first: Some(f) } if after == ids[0] && f == oldest)
        );
        let got = collect_until(&sub, 5, |g| g.last() == ids.last()).await;
        assert_eq!(got[0], oldest);

        // a cursor inside what is still there is no gap
        let sub = bus
            .subscribe(
                &s,
                SubscribeOptions {
                    start: Start::After(oldest),
                    ..Default::default()
                },
                None,
            )
            .await
            .unwrap();
        collect_until(&sub, 5, |g| g.last() == ids.last()).await;
        bus.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_kind_sees_every_subject() {
    for backend in BACKENDS {
        let bus = connect(backend, "onkind").await;
        let sub = bus.on_kind("order.created", None, None).await.unwrap();
        bus.emit(&event("order.created", "o1", 1), None)
            .await
            .unwrap();
        bus.emit(&event("order.paid", "o1", 2), None).await.unwrap();
        let r2 = bus
            .emit(&event("order.created", "o2", 3), Some("order"))
            .await
            .unwrap();
        let got = collect_until(&sub, 5, |ids| ids.len() == 2).await;
        assert_eq!(got[1], r2.id);
        bus.close();
        assert!(matches!(sub.take(10).end, Some(End::Closed)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_stores_nothing() {
    for backend in BACKENDS {
        let bus = connect_with(backend, "bad", |c| c.max_event_bytes = 1000).await;
        let cases = [
            (
                r#"{"kind":"Bad Kind","subject":"b"}"#,
                ErrorCode::EventInvalid,
            ),
            (r#"{"kind":"a..b","subject":"b"}"#, ErrorCode::EventInvalid),
            (r#"{"kind":"a","subject":""}"#, ErrorCode::EventInvalid),
            (r#"{"kind":"a","subject":"b c"}"#, ErrorCode::EventInvalid),
            (
                r#"{"kind":"a","subject":"b","id":"1-1"}"#,
                ErrorCode::EventInvalid,
            ),
            (
                r#"{"kind":"a","subject":"b","meta":"x"}"#,
                ErrorCode::EventInvalid,
            ),
            (r#"[1]"#, ErrorCode::EventInvalid),
        ];
        for (json, code) in cases {
            assert_eq!(bus.emit(json, None).await.unwrap_err().code, code, "{json}");
        }
        let big = format!(
            r#"{{"kind":"a","subject":"b","data":"{}"}}"#,
            "x".repeat(2000)
        );
        assert_eq!(
            bus.emit(&big, None).await.unwrap_err().code,
            ErrorCode::PayloadTooLarge
        );
        let batch = format!(
            "[{},{}]",
            event("a", "b", 1),
            r#"{"kind":"a:b","subject":"b"}"#
        );
        let e = bus.emit_many(&batch, None).await.unwrap_err();
        assert!(e.message.starts_with("event 1:"), "{}", e.message);
        assert!(bus
            .read(&flow("b"), ReadOptions::default())
            .await
            .unwrap()
            .is_empty());
        bus.close();
        assert_eq!(
            bus.emit(&event("a", "b", 1), None).await.unwrap_err().code,
            ErrorCode::BusClosed
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_fails_fast() {
    let err = lean_events_core::Bus::connect(lean_events_core::Config {
        url: Some("redis://127.0.0.1:1".into()),
        timeout: Duration::from_millis(500),
        ..Default::default()
    })
    .await
    .err()
    .unwrap();
    assert!(
        matches!(err.code, ErrorCode::StoreUnavailable | ErrorCode::Timeout),
        "{err}"
    );
    let err = lean_events_core::Bus::connect(lean_events_core::Config {
        url: Some("http://x".into()),
        ..Default::default()
    })
    .await
    .err()
    .unwrap();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_subscribe_cycles_leave_no_channel() {
    for (backend, n) in [(Backend::Memory, 20_000), (Backend::Redis, 2_000)] {
        let bus = connect(backend, "cycles").await;
        for i in 0..n {
            let sub = bus
                .subscribe(
                    &flow(&format!("c{}", i % 50)),
                    SubscribeOptions::default(),
                    None,
                )
                .await
                .unwrap();
            sub.unsubscribe();
        }
        assert_eq!(bus.channel_count(), 0, "{backend:?}");
        assert_eq!(bus.subscription_count(), 0);
        bus.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_reduced_and_cached_incrementally() {
    for backend in BACKENDS {
        let bus = connect_with(backend, "state", |c| c.state_cache_size = 2).await;
        let log = |i: usize| {
            format!(r#"{{"kind":"log","subject":"f","data":{{"level":"info","msg":"m{i}"}}}}"#)
        };
        bus.emit(
            r#"{"kind":"flow.started","subject":"f","data":{"name":"n"}}"#,
            None,
        )
        .await
        .unwrap();
        bus.emit(&log(0), None).await.unwrap();
        let s = bus.state(&flow("f")).await.unwrap();
        assert_eq!(s["status"], "running");
        assert_eq!(s["name"], "n");
        assert_eq!(s["logs"].as_array().unwrap().len(), 1);
        assert_eq!(bus.cached_states(), 1);
        bus.emit(&log(1), None).await.unwrap();
        bus.emit(
            r#"{"kind":"flow.completed","subject":"f","data":{"duration":5}}"#,
            None,
        )
        .await
        .unwrap();
        let s = bus.state(&flow("f")).await.unwrap();
        assert_eq!(s["status"], "completed");
        assert_eq!(s["logs"][1]["msg"], "m1");
        let all: Vec<Value> = bus
            .read(&flow("f"), ReadOptions::default())
            .await
            .unwrap()
            .iter()
            .map(|r| serde_json::from_str(&r.json).unwrap())
            .collect();
        assert_eq!(s, lean_events_core::reduce::reduce_flow_state(&all));

        let t = StreamRef::new("trigger", "t").unwrap();
        bus.emit(r#"{"kind":"trigger.registered","subject":"t","correlationId":"f","data":{"type":"webhook"}}"#, None)
            .await
            .unwrap();
        assert_eq!(bus.state(&t).await.unwrap()["type"], "webhook");
        bus.state(&flow("other")).await.unwrap(); // empty: not cached
        assert_eq!(bus.cached_states(), 2);
        bus.emit(&log(9), Some("flow")).await.unwrap();
        bus.emit(&event("x", "g", 1), None).await.unwrap();
        bus.state(&flow("g")).await.unwrap();
        assert_eq!(bus.cached_states(), 2, "least recently used evicted");
        bus.close();
    }
}

/// On a cache hit only events after the cached id are read: a state cached before the
/// stream was trimmed still counts the trimmed events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_state_applies_only_new_events() {
    let bus = connect_with(Backend::Memory, "statecache", |c| c.max_len = Some(3)).await;
    let log = |i: usize| {
        format!(r#"{{"kind":"log","subject":"f","data":{{"level":"info","msg":"m{i}"}}}}"#)
    };
    for i in 0..3 {
        bus.emit(&log(i), None).await.unwrap();
    }
    assert_eq!(
        bus.state(&flow("f")).await.unwrap()["logs"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    for i in 3..6 {
        bus.emit(&log(i), None).await.unwrap();
    }
    assert_eq!(
        bus.state(&flow("f")).await.unwrap()["logs"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    bus.close();
}

/// Reducing a long stream does not hold the task that asked: other tasks of the same (one)
/// worker thread run meanwhile. On the embedded store a read never waits, so a reduction done
/// inline would let nothing else run until it is done.
#[tokio::test(flavor = "current_thread")]
async fn reducing_a_long_stream_leaves_the_worker_free() {
    let bus = connect(Backend::Memory, "reduce-off-worker").await;
    for chunk in 0..10 {
        let batch: Vec<String> = (0..500)
            .map(|i| event("log", "long", chunk * 500 + i))
            .collect();
        bus.emit_many(&format!("[{}]", batch.join(",")), None)
            .await
            .unwrap();
    }
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (t, s) = (ticks.clone(), stop.clone());
    let counter = tokio::spawn(async move {
        while !s.load(std::sync::atomic::Ordering::Acquire) {
            t.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            tokio::task::yield_now().await;
        }
    });
    let state = bus.state(&flow("long")).await.unwrap();
    let during = ticks.load(std::sync::atomic::Ordering::Acquire);
    stop.store(true, std::sync::atomic::Ordering::Release);
    counter.await.unwrap();
    assert!(state.is_object());
    assert!(
        during > 0,
        "nothing else ran while 5000 events were reduced"
    );
    bus.close();
}

/// A subscription's wake-up may call back into the bus (as a host's wake-up does when it
/// looks at the bus): fan-out holds no registry lock while it wakes consumers.
#[test]
fn a_wake_up_may_call_into_the_bus() {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let bus = connect(Backend::Memory, "wake-reenter").await;
            let inner = bus.clone();
            let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let s = seen.clone();
            let waker: lean_events_core::live::Waker = Box::new(move || {
                s.store(
                    inner.subscription_count(),
                    std::sync::atomic::Ordering::Release,
                );
            });
            let sub = bus
                .subscribe(&flow("w"), SubscribeOptions::default(), Some(waker))
                .await
                .unwrap();
            // live: the next event is queued, and its consumer woken, by the fan-out itself
            wait_until(5, || sub.is_live()).await;
            bus.emit(&event("tick", "w", 1), None).await.unwrap();
            let woken = || seen.load(std::sync::atomic::Ordering::Acquire) > 0;
            wait_until(5, woken).await;
            let count = seen.load(std::sync::atomic::Ordering::Acquire);
            bus.close();
            let _ = done_tx.send(count);
        });
    });
    let count = done_rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the emit's fan-out deadlocked on its own registry");
    assert_eq!(count, 1);
}
