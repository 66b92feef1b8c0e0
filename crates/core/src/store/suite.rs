//! The behaviour suite every store backend passes: the embedded store always, and the Redis
//! backend on `REDIS_URL` (one Redis, or a Redis Cluster when it is a `redis+cluster://` url).
//! A new backend is added to `backends()` and must pass all of it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::event::{prepare, record_from_live, Limits};
use crate::store::redis::connection::nodes_of_url;

/// Records what the embedded store delivers.
#[derive(Default)]
pub(super) struct Recorder(pub(super) Mutex<Vec<(String, String)>>);

impl Fanout for Recorder {
    fn deliver(&self, channel: &str, record: &SharedRecord) {
        self.0
            .lock()
            .unwrap()
            .push((channel.to_owned(), record.json.clone()));
    }
}

fn unique(name: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "test-store-{name}-{}-{}-{n}",
        std::process::id(),
        crate::clock::now_ms()
    )
}

/// Every backend, each with its own prefix, and what the embedded one delivered.
pub(super) async fn backends(name: &str) -> Vec<(Arc<dyn Store>, Arc<Recorder>)> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let opts = |prefix: String| StoreOptions {
        prefix,
        max_len: None,
        timeout: Duration::from_secs(5),
        replicated: None,
        repair_interval: Duration::from_secs(10),
    };
    let redis = match nodes_of_url(&url) {
        Some(nodes) => Location::Cluster(nodes.expect("a cluster url")),
        None => Location::Redis(url),
    };
    let mut out = Vec::new();
    for location in [Location::Embedded, redis] {
        let recorder = Arc::new(Recorder::default());
        let store = open(
            &location,
            &opts(unique(name)),
            recorder.clone(),
            Default::default(),
        )
        .await
        .expect("the store (Redis on REDIS_URL for the Redis backend)");
        out.push((store, recorder));
    }
    out
}

/// On Redis, what a plain Pub/Sub subscription to `channel` hears (as the live task would
/// hear it), kept while the returned connection lives; on the embedded store, nothing (its
/// `Recorder` has the deliveries).
pub(super) async fn listen(
    store: &Arc<dyn Store>,
    channel: &str,
) -> (Option<Box<dyn PubSubConnection>>, Arc<Mutex<Vec<String>>>) {
    let heard = Arc::new(Mutex::new(Vec::<String>::new()));
    let Some(source) = store.pubsub() else {
        return (None, heard);
    };
    let h = heard.clone();
    let on_push: PushHandler = Arc::new(move |p| {
        if let Push::Message { payload, .. } = p {
            h.lock().unwrap().push(payload.to_owned());
        }
    });
    let mut conn = source.connect(on_push).await.unwrap();
    let channel = Channel {
        name: channel.to_owned(),
        sharded: false,
    };
    conn.subscribe(&[channel]).await.unwrap();
    (Some(conn), heard)
}

fn event(json: &str) -> PreparedEvent {
    prepare(json, None, Limits::default()).unwrap()
}

/// Appends are stored in order, with increasing ids; reads honour exclusive cursors, limits
/// and direction; catch-up pages continue after their cursor; `flow.started` indexes the run.
#[tokio::test]
async fn appends_reads_and_the_run_index() {
    for (store, _) in backends("log").await {
        let events: Vec<PreparedEvent> = (0..5)
            .map(|i| {
                event(&format!(
                    r#"{{"kind":"tick","subject":"s1","data":{{"i":{i}}}}}"#
                ))
            })
            .collect();
        let started =
            event(r#"{"kind":"flow.started","subject":"s1","data":{"name":"suite-flow"}}"#);
        let started = [started];
        let groups: Vec<&[PreparedEvent]> = vec![&events[..2], &events[2..], &started[..]];
        let out = store.append(&groups).await.unwrap();
        let ids: Vec<StreamId> = out.into_iter().flat_map(|g| g.unwrap()).collect();
        assert_eq!(ids.len(), 6);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        let s1 = StreamRef::new("flow", "s1").unwrap();
        let all = store.read(&s1, &ReadOptions::default()).await.unwrap();
        assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), ids);
        let page = store
            .read(
                &s1,
                &ReadOptions {
                    after: Some(ids[0]),
                    before: Some(ids[4]),
                    limit: Some(2),
                    reverse: true,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            page.iter().map(|r| r.id).collect::<Vec<_>>(),
            [ids[3], ids[2]]
        );
        let next = store.catch_up(&s1, ids[3], 10, true).await.unwrap();
        assert_eq!(
            next.records.iter().map(|r| r.id).collect::<Vec<_>>(),
            [ids[4], ids[5]]
        );
        assert!(!next.gap);
        let runs = store.list_runs("suite-flow", 10, 0).await.unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!((runs[0].id.as_str(), runs[0].started_ms), ("s1", ids[5].ms));
        store.close();
    }
}

/// The seed-era `flow.start` indexes its run under `meta.flowName` in the append; a run
/// indexed by the caller is added, or moved when it is there already (ZADD), and listed
/// newest first.
#[tokio::test]
async fn runs_indexed_by_flow_start_and_by_the_caller() {
    for (store, _) in backends("runs").await {
        let start = [event(
            r#"{"kind":"flow.start","subject":"r1","meta":{"flowName":"seed"}}"#,
        )];
        let out = store.append(&[&start[..]]).await.unwrap();
        let r1 = out[0].as_ref().unwrap()[0];
        let listed = |runs: Vec<Run>| {
            runs.into_iter()
                .map(|r| (r.id, r.started_ms))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            listed(store.list_runs("seed", 10, 0).await.unwrap()),
            [("r1".to_owned(), r1.ms)]
        );
        store.index_run("seed", "r2", r1.ms + 10).await.unwrap();
        store.index_run("seed", "r3", 5).await.unwrap();
        assert_eq!(
            listed(store.list_runs("seed", 10, 0).await.unwrap()),
            [
                ("r2".to_owned(), r1.ms + 10),
                ("r1".to_owned(), r1.ms),
                ("r3".to_owned(), 5)
            ]
        );
        // the same run again moves it (one entry per run)
        store.index_run("seed", "r3", r1.ms + 20).await.unwrap();
        assert_eq!(
            listed(store.list_runs("seed", 2, 0).await.unwrap()),
            [("r3".to_owned(), r1.ms + 20), ("r2".to_owned(), r1.ms + 10)]
        );
        assert_eq!(store.list_runs("seed", 10, 0).await.unwrap().len(), 3);
        store.close();
    }
}

/// What depends on a compare-and-set happens with it or not at all.
#[tokio::test]
async fn a_compare_and_set_carries_its_timer_and_set_changes_or_nothing() {
    for (store, _) in backends("cas").await {
        let k = store.keys().clone();
        let job = k.job("j1");
        let (a, b) = (k.owned_jobs("a"), k.owned_jobs("b"));
        store.set_update(&a, "j1", true).await.unwrap();
        let timer = NewTimer {
            id: "t1",
            due_ms: 5,
            payload: "p1",
        };
        let moves = [
            SetChange {
                key: &b,
                member: "j1",
                add: true,
            },
            SetChange {
                key: &a,
                member: "j1",
                add: false,
            },
        ];
        let extra = [("f", "1".to_owned())];
        let lost = store
            .hash_cas_with(
                &job,
                ("status", Expect::Value("x"), "running"),
                &[],
                (&extra, 0),
                Some(timer),
                &moves,
            )
            .await
            .unwrap();
        assert!(!lost.set && !lost.exists);
        assert!(store.hash_get_all(&job).await.unwrap().is_empty());
        assert_eq!(store.set_members(&a).await.unwrap(), ["j1"]);
        assert!(store.set_members(&b).await.unwrap().is_empty());
        assert_eq!(store.timer_next().await.unwrap(), None);

        let won = store
            .hash_cas_with(
                &job,
                ("status", Expect::Absent, "running"),
                &[],
                (&extra, 0),
                Some(timer),
                &moves,
            )
            .await
            .unwrap();
        assert!(won.set);
        let fields = store.hash_get_all(&job).await.unwrap();
        assert_eq!(fields.get("status").map(String::as_str), Some("running"));
        assert_eq!(fields.get("f").map(String::as_str), Some("1"));
        assert!(store.set_members(&a).await.unwrap().is_empty());
        assert_eq!(store.set_members(&b).await.unwrap(), ["j1"]);
        let claimed = store.timer_claim(10, 10, 1000).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(
            (claimed[0].id.as_str(), claimed[0].payload.as_str()),
            ("t1", "p1")
        );
        store.timer_remove("t1").await.unwrap();

        // a guard that does not hold stops the whole write; one that holds lets it through
        let timer2 = NewTimer {
            id: "t2",
            due_ms: 5,
            payload: "p2",
        };
        let back = [SetChange {
            key: &a,
            member: "j1",
            add: true,
        }];
        for (guard, wins) in [("2", false), ("1", true)] {
            let r = store
                .hash_cas_with(
                    &job,
                    ("status", Expect::Value("running"), "done"),
                    &[("f", guard)],
                    (&[("g", guard.to_owned())], 0),
                    Some(timer2),
                    &back,
                )
                .await
                .unwrap();
            assert_eq!(r.set, wins, "guard f={guard}");
            assert_eq!(r.current.as_deref(), Some("running"));
            let fields = store.hash_get_all(&job).await.unwrap();
            let status = if wins { "done" } else { "running" };
            assert_eq!(fields.get("status").map(String::as_str), Some(status));
            assert_eq!(fields.contains_key("g"), wins);
            assert_eq!(store.set_members(&a).await.unwrap().len(), wins as usize);
            assert_eq!(store.timer_next().await.unwrap().is_some(), wins);
        }
        store.timer_remove("t2").await.unwrap();
        for key in [&job, &a, &b] {
            store.delete(key).await.unwrap();
        }
        store.close();
    }
}

/// A claimed timer is in flight until its lease ends, then due again; removing it ends it.
#[tokio::test]
async fn timers_are_claimed_once_per_lease() {
    for (store, _) in backends("timers").await {
        store.timer_add("a", 100, "pa").await.unwrap();
        store.timer_add("b", 300, "pb").await.unwrap();
        assert_eq!(store.timer_next().await.unwrap(), Some(100));
        assert!(store.timer_claim(50, 10, 1000).await.unwrap().is_empty());
        let first = store.timer_claim(200, 10, 1000).await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].id.as_str(), first[0].due_ms), ("a", 100));
        // in flight until 1200: not claimed again before
        assert!(store
            .timer_claim(250, 10, 1000)
            .await
            .unwrap()
            .iter()
            .all(|t| t.id != "a"));
        let again = store.timer_claim(1300, 10, 1000).await.unwrap();
        let mut ids: Vec<&str> = again.iter().map(|t| t.id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["a", "b"]);
        store.timer_remove("a").await.unwrap();
        store.timer_remove("b").await.unwrap();
        assert_eq!(store.timer_next().await.unwrap(), None);
        store.close();
    }
}

/// A lease is taken by one caller until it expires; `exists` sees it.
#[tokio::test]
async fn leases_expire() {
    for (store, _) in backends("lease").await {
        let key = store.keys().lease("i1");
        assert!(store.lease_take(&key, 200).await.unwrap());
        assert!(!store.lease_take(&key, 200).await.unwrap());
        assert!(store.exists(&key).await.unwrap());
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.exists(&key).await.unwrap() {
            assert!(Instant::now() < deadline, "the lease never expired");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(store.lease_take(&key, 200).await.unwrap());
        store.delete(&key).await.unwrap();
        store.close();
    }
}

/// The await-resolution contract (`awaits.rs`): a matching event resolves a pending event
/// await with the same fields on every backend, removes its registration, tells its owner
/// and (where the flow's stream can be written in the same step) appends `step.resumed`.
#[tokio::test]
async fn an_event_resolves_an_await_by_the_contract() {
    for (store, recorder) in backends("awaits").await {
        let k = store.keys().clone();
        let inbox = k.inbox_channel("owner-1");
        // on Redis the note goes over Pub/Sub: listen as the live task would
        let (_live, heard) = listen(&store, &inbox).await;
        let await_id = "job-1:1:0";
        let fields = [
            ("type", "event".to_owned()),
            ("flow", "f-await".to_owned()),
            ("step", "wait".to_owned()),
            ("job", "job-1".to_owned()),
            ("owner", "owner-1".to_owned()),
            ("createdMs", crate::clock::now_ms().to_string()),
        ];
        let opened = store
            .hash_cas(
                &k.await_state(await_id),
                "status",
                Expect::Absent,
                awaits::PENDING,
                0,
                &fields,
            )
            .await
            .unwrap();
        assert!(opened.set);
        store
            .hash_set(
                &k.event_awaits("order.paid"),
                &[(await_id, r#"{"data.order":"42"}"#.to_owned())],
            )
            .await
            .unwrap();
        let other = event(r#"{"kind":"order.paid","subject":"o1","data":{"order":"41"}}"#);
        let hit = event(r#"{"kind":"order.paid","subject":"o2","data":{"order":"42"}}"#);
        let out = store.append(&[&[other, hit][..]]).await.unwrap();
        let ids = out.into_iter().next().unwrap().unwrap();
        let state = store.hash_get_all(&k.await_state(await_id)).await.unwrap();
        assert_eq!(state.get("status").map(String::as_str), Some("resolved"));
        let result = record_from_live(state.get("result").expect("result")).unwrap();
        assert_eq!(result.id, ids[1], "the matching event is the result");
        assert!(state
            .get("resolvedMs")
            .is_some_and(|v| v.parse::<u64>().is_ok()));
        assert!(store
            .hash_get_all(&k.event_awaits("order.paid"))
            .await
            .unwrap()
            .is_empty());
        let flow = StreamRef::new("flow", "f-await").unwrap();
        let resumed = store.read(&flow, &ReadOptions::default()).await.unwrap();
        if k.is_cluster() {
            // the flow's stream is in another slot: the scheduler writes step.resumed
            assert!(!state.contains_key("resumed"));
            assert!(resumed.is_empty());
        } else {
            assert_eq!(state.get("resumed").map(String::as_str), Some("1"));
            assert_eq!(resumed.len(), 1);
            let v: serde_json::Value = serde_json::from_str(&resumed[0].json).unwrap();
            assert_eq!(v["kind"], "step.resumed");
            assert_eq!(v["step"], "wait");
            assert_eq!(v["data"]["reason"], "event");
            assert_eq!(v["meta"]["awaitType"], "event");
            assert_eq!(v["meta"]["jobId"], "job-1");
        }
        let note = awaits::resolved_note("owner-1", await_id);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let told = match store.pubsub() {
                Some(_) => heard.lock().unwrap().contains(&note),
                None => {
                    let want = record_from_live(&note).unwrap().json;
                    recorder.0.lock().unwrap().contains(&(inbox.clone(), want))
                }
            };
            if told {
                break;
            }
            assert!(Instant::now() < deadline, "the owner was not told");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        store.close();
    }
}

/// `event` with a retention of `ms` (what the bus sets on a terminal event).
fn retained(json: &str, ms: u64) -> PreparedEvent {
    let mut e = event(json);
    e.expire_ms = Some(ms);
    e
}

/// Poll `check` until it holds; panics after `secs`.
async fn eventually<F, Fut>(secs: u64, what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Retention: a terminal event under retention expires its stream and the run's (or
/// trigger's) index entry; streams and runs without one stay, and so does a run the caller
/// indexed itself.
#[tokio::test]
async fn retention_expires_finished_runs_and_their_index_entries() {
    for (store, _) in backends("retention").await {
        let flow = |id: &str| StreamRef::new("flow", id).unwrap();
        let started = |id: &str| {
            event(&format!(
                r#"{{"kind":"flow.started","subject":"{id}","data":{{"name":"kept"}}}}"#
            ))
        };
        // `done`: started (named in meta, the seed-era way), then completed under retention in
        // another call; `both`: started and failed in one call; `open`: never finishes
        let done_started =
            event(r#"{"kind":"flow.start","subject":"done","data":{},"meta":{"flowName":"kept"}}"#);
        let tick = event(r#"{"kind":"tick","subject":"done"}"#);
        store
            .append(&[&[done_started, tick][..], &[started("open")][..]])
            .await
            .unwrap();
        store.index_run("kept", "by-hand", 1).await.unwrap();
        let both = [
            started("both"),
            retained(r#"{"kind":"flow.failed","subject":"both"}"#, 300),
        ];
        let done = [retained(
            r#"{"kind":"flow.completed","subject":"done"}"#,
            300,
        )];
        let out = store.append(&[&both[..], &done[..]]).await.unwrap();
        assert!(out.iter().all(|g| g.is_ok()), "{out:?}");
        // a trigger, resolved under retention
        let registered = event(r#"{"kind":"trigger.registered","subject":"tr","data":{}}"#);
        let fired = retained(r#"{"kind":"trigger.fired","subject":"tr","data":{}}"#, 300);
        store.append(&[&[registered][..]]).await.unwrap();
        store.append(&[&[fired][..]]).await.unwrap();

        let run_ids = || async {
            let mut ids: Vec<String> = store
                .list_runs("kept", 100, 0)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(run_ids().await, ["both", "by-hand", "done", "open"]);
        let count = |stream: StreamRef| {
            let store = store.clone();
            async move {
                store
                    .read(&stream, &ReadOptions::default())
                    .await
                    .unwrap()
                    .len()
            }
        };
        assert_eq!(
            count(flow("done")).await,
            3,
            "kept until retention runs out"
        );

        eventually(10, "the finished runs are gone from the index", || async {
            run_ids().await == ["by-hand", "open"]
        })
        .await;
        eventually(10, "the finished streams expired", || async {
            count(flow("done")).await == 0 && count(flow("both")).await == 0
        })
        .await;
        let trigger = StreamRef::new("trigger", "tr").unwrap();
        eventually(10, "the resolved trigger's stream expired", || async {
            count(trigger.clone()).await == 0
        })
        .await;
        assert_eq!(count(flow("open")).await, 1, "a running run stays");
        let keys = store.keys().clone();
        if store.pubsub().is_some() {
            // on Redis: the trigger index entry and the retention notes go with the next
            // index read after they are due
            eventually(10, "the retention notes are gone", || async {
                run_ids().await.len() == 2 && !store.exists(&keys.retention()).await.unwrap()
            })
            .await;
            assert!(!store.exists(&keys.triggers()).await.unwrap());
        }
    }
}
