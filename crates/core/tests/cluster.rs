//! Redis Cluster faults. Runs its OWN 3-master, 3-replica cluster (`scripts/cluster.sh`) on free
//! ports, so it can kill a master: the repair pass finishes appends whose second step never
//! ran, and after a master dies mid-stream emits continue once its replica has taken over, a
//! live subscription resumes with no gap for every event the new master has, and a timer and an
//! event await kept on that shard each fire once.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use lean_events_core::scheduler::{Due, RetryPolicy, Scheduler, SchedulerOptions};
use lean_events_core::{
    Bus, Config, ErrorCode, Item, RawConnection, ReadOptions, Start, StreamId, StreamRef,
    SubscribeOptions,
};
use serde_json::{json, Value};

/// A cluster of our own, stopped (and its files removed) on drop.
struct Rig {
    script: PathBuf,
    base: u16,
    dir: PathBuf,
}

impl Rig {
    fn run(&self, what: &str) -> std::process::Output {
        std::process::Command::new("bash")
            .arg(&self.script)
            .arg(what)
            .env("CLUSTER_PORT", self.base.to_string())
            .env("CLUSTER_DIR", &self.dir)
            .output()
            .expect("bash scripts/cluster.sh")
    }

    fn start() -> (Rig, String) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cluster.sh");
        let base = free_ports(6);
        let dir = std::env::temp_dir().join(unique_prefix("cluster"));
        let rig = Rig { script, base, dir };
        let out = rig.run("start");
        assert!(
            out.status.success(),
            "cluster did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        (rig, url)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.run("stop");
    }
}

/// The first of `n` consecutive free ports (their cluster bus ports, +10000, too).
fn free_ports(n: u16) -> u16 {
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    let seed = std::process::id() as u16;
    (0..200u16)
        .map(|i| 20000 + (seed.wrapping_mul(7).wrapping_add(i * 13) % 2000) * 5)
        .find(|&b| (b..b + n).all(|p| free(p) && free(p + 10000)))
        .expect("six free ports")
}

async fn keyslot(con: &mut RawConnection, key: &str) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(con)
        .await
        .unwrap()
}

/// The master serving `slot`: (port, pid), as the first node that answers sees it.
async fn master_of(url: &str, slot: u16) -> (u16, u32) {
    let mut nodes = None;
    for node in url.trim_start_matches("redis+cluster://").split(',') {
        let Ok(client) = redis::Client::open(format!("redis://{node}")) else {
            continue;
        };
        let Ok(mut con) = client.get_multiplexed_async_connection().await else {
            continue;
        };
        if let Ok(n) = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async::<String>(&mut con)
            .await
        {
            nodes = Some(n);
            break;
        }
    }
    let nodes = nodes.expect("a node that answers");
    for line in nodes.lines().filter(|l| l.contains("master")) {
        let f: Vec<&str> = line.split(' ').collect();
        let serves = f[8..].iter().any(|r| {
            let (lo, hi) = r.split_once('-').unwrap_or((r, r));
            matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if (lo..=hi).contains(&slot))
        });
        if serves {
            let port: u16 = f[1]
                .split('@')
                .next()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let mut node = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut node)
                .await
                .unwrap();
            let pid = info
                .lines()
                .find_map(|l| l.strip_prefix("process_id:"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            return (port, pid);
        }
    }
    panic!("no master serves slot {slot}");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn kinds_of(bus: &Bus, flow: &str) -> Vec<String> {
    kinds(&events(bus, flow).await)
}

/// Wait (at most `secs`) until the async condition holds.
macro_rules! eventually {
    ($secs:expr, $what:expr, $cond:expr) => {{
        let deadline = Instant::now() + Duration::from_secs($secs);
        while !$cond {
            assert!(Instant::now() < deadline, "timed out waiting for {}", $what);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }};
}

/// A step host for the awaits of this test: `time` sleeps until `input.due`, `event` waits for
/// `order.paid` with the input's order id.
fn host(s: &Scheduler) {
    let s = s.clone();
    tokio::spawn(async move {
        loop {
            for w in s.next_work().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let w: Value = serde_json::from_str(&w).unwrap();
                    let job = w["jobId"].as_str().unwrap().to_owned();
                    let a = w["attempt"].as_u64().unwrap() as u32;
                    let input = &w["input"];
                    let r = match input["mode"].as_str().unwrap() {
                        "time" => s
                            .await_time(&job, a, 0, Due::At(input["due"].as_u64().unwrap()))
                            .await
                            .map(|_| "\"slept\"".to_owned()),
                        _ => {
                            let m = json!({ "data.orderId": input["order"] }).to_string();
                            s.await_event(&job, a, 0, "order.paid", &m, Some(60_000))
                                .await
                        }
                    };
                    let _ = match r {
                        Ok(v) => s.complete(&job, a, &v).await,
                        Err(e) => {
                            s.fail(&job, a, &json!({"message": e.message}).to_string())
                                .await
                        }
                    };
                });
            }
        }
    });
}

async fn connect(url: &str, prefix: &str, repair: Duration) -> Bus {
    Bus::connect(Config {
        url: Some(url.to_owned()),
        prefix: prefix.to_owned(),
        timeout: Duration::from_secs(2),
        repair_interval: repair,
        ..Config::default()
    })
    .await
    .expect("connect to the test cluster")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_repair_pass_and_failover() {
    let (rig, url) = Rig::start();
    let prefix = unique_prefix("cl");
    let bus = connect(&url, &prefix, Duration::from_millis(300)).await;
    let mut con = RawConnection::open(&url).await.unwrap();
    let s = Scheduler::start(
        &bus,
        SchedulerOptions {
            lease_ms: 1000,
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap();
    s.define("wait", RetryPolicy::default()).unwrap();
    host(&s);

    // 1. An append whose process died after step 1: the event is stored, its index entry and
    // the await it matches are not there yet. The repair pass does them.
    let paid_before = {
        let s = s.clone();
        tokio::spawn(async move {
            s.run("wait", "f-repair", r#"{"mode":"event","order":"r1"}"#, None)
                .await
        })
    };
    eventually!(
        10,
        "the event await",
        kinds_of(&bus, "f-repair")
            .await
            .contains(&"step.await.event".to_owned())
    );
    let step1 = |stype: &str, subject: &str, index: &str, fields: &[(&str, &str)]| {
        let key = bus.stream_key(&StreamRef::new(stype, subject).unwrap());
        let outbox = lean_events_core::store::cluster::outbox_key(&prefix, &key);
        let (stype, subject, index) = (stype.to_owned(), subject.to_owned(), index.to_owned());
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut con = con.clone();
        async move {
            let id: String = redis::cmd("XADD")
                .arg(&key)
                .arg("*")
                .arg(&fields)
                .query_async(&mut con)
                .await
                .unwrap();
            let ms: u64 = id.split('-').next().unwrap().parse().unwrap();
            let member = format!("{id}\u{1f}{stype}\u{1f}{subject}\u{1f}{index}");
            let _: i64 = redis::cmd("ZADD")
                .arg(&outbox)
                .arg(ms)
                .arg(member)
                .query_async(&mut con)
                .await
                .unwrap();
        }
    };
    step1(
        "flow",
        "r-1",
        "frepairs",
        &[("kind", "flow.started"), ("data", r#"{"name":"repairs"}"#)],
    )
    .await;
    step1(
        "flow",
        "o-1",
        "",
        &[("kind", "order.paid"), ("data", r#"{"orderId":"r1"}"#)],
    )
    .await;
    eventually!(
        10,
        "the repair pass to index the run",
        bus.list_runs("repairs", 10, 0).await.unwrap().len() == 1
    );
    // The same for a run's end under retention: step 1 gave the stream its TTL; the repair
    // pass reads the run's index entry from the stream (while it is there: the TTL is longer
    // than the repair takes here) and notes it, so it goes too.
    step1(
        "flow",
        "r-1",
        "e6000",
        &[("kind", "flow.completed"), ("data", "{}")],
    )
    .await;
    let key = bus.stream_key(&StreamRef::new("flow", "r-1").unwrap());
    let _: i64 = redis::cmd("PEXPIRE")
        .arg(&key)
        .arg(6000)
        .query_async(&mut con)
        .await
        .unwrap();
    eventually!(
        30,
        "the finished run to leave the index",
        bus.list_runs("repairs", 10, 0).await.unwrap().is_empty()
    );
    let result = tokio::time::timeout(Duration::from_secs(10), paid_before)
        .await
        .expect("the repaired await resolves the step")
        .unwrap()
        .unwrap();
    assert!(result.contains("r1"), "{result}");
    assert_eq!(
        kinds_of(&bus, "f-repair").await,
        [
            "step.started",
            "step.await.event",
            "step.resumed",
            "step.completed"
        ]
    );

    // 2. Kill the master of the coordination slot (awaits, timers, jobs) mid-stream; the
    // stream written lives on the same master.
    let coord_slot = keyslot(&mut con, &format!("{}:x", bus.coord_prefix())).await;
    let (port, pid) = master_of(&url, coord_slot).await;
    let mut id = String::new();
    for i in 0.. {
        id = format!("s{i}");
        let slot = keyslot(
            &mut con,
            &bus.stream_key(&StreamRef::new("flow", &id).unwrap()),
        )
        .await;
        if master_of(&url, slot).await.0 == port {
            break;
        }
    }
    let stream = StreamRef::new("flow", &id).unwrap();
    let reader = connect(&url, &prefix, Duration::from_secs(10)).await;
    let sub = reader
        .subscribe(
            &stream,
            SubscribeOptions {
                start: Start::After(StreamId::ZERO),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    let timer_due = now_ms() + 6000;
    let sleeper = {
        let s = s.clone();
        let input = json!({"mode": "time", "due": timer_due}).to_string();
        tokio::spawn(async move { s.run("wait", "f-time", &input, None).await })
    };
    let payer = {
        let s = s.clone();
        tokio::spawn(async move {
            s.run("wait", "f-event", r#"{"mode":"event","order":"o2"}"#, None)
                .await
        })
    };
    eventually!(
        10,
        "the time await",
        kinds_of(&bus, "f-time")
            .await
            .contains(&"step.await.time".to_owned())
    );
    eventually!(
        10,
        "the event await",
        kinds_of(&bus, "f-event")
            .await
            .contains(&"step.await.event".to_owned())
    );

    let acks: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let emitter = {
        let (bus, acks, stop, id) = (bus.clone(), acks.clone(), stop.clone(), id.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let r = bus.emit(&event("tick", &id, n), None).await;
                acks.lock().unwrap().push((Instant::now(), r.is_ok()));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    eventually!(
        10,
        "emits before the kill",
        acks.lock().unwrap().len() >= 50
    );
    let killed = Instant::now();
    std::process::Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let after = |acks: &[(Instant, bool)]| acks.iter().filter(|(t, ok)| *ok && *t > killed).count();
    eventually!(
        60,
        "emits after the failover",
        after(&acks.lock().unwrap()) >= 100
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    emitter.await.unwrap();
    let acks = acks.lock().unwrap().clone();
    let ok_times: Vec<Instant> = acks.iter().filter(|(_, ok)| *ok).map(|(t, _)| *t).collect();
    let pause = ok_times.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    let failed = acks.iter().filter(|(_, ok)| !ok).count();
    eprintln!(
        "failover: longest pause between acknowledged emits {} ms, {failed} emits failed during it",
        pause.as_millis()
    );

    // the subscription delivers every event the new master has, in order, once
    let stored: Vec<StreamId> = reader
        .read(
            &stream,
            ReadOptions {
                limit: Some(10_000),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    let mut delivered: Vec<StreamId> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let want: HashSet<StreamId> = stored.iter().copied().collect();
    while !want.iter().all(|i| delivered.contains(i)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let taken = tokio::time::timeout(left, sub.next_batch(1000))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "delivered {} of {} stored: {}",
                    delivered.len(),
                    stored.len(),
                    sub.debug_state()
                )
            });
        assert!(taken.end.is_none(), "subscription ended: {:?}", taken.end);
        for item in taken.items {
            match item {
                Item::Event(r) => delivered.push(r.id),
                Item::Gap { .. } => panic!("gap reported"),
            }
        }
    }
    assert!(delivered.windows(2).all(|w| w[0] < w[1]), "in order, once");
    eprintln!(
        "failover: {} events stored, {} delivered ({} delivered live before the kill were not replicated)",
        stored.len(),
        delivered.len(),
        delivered.len() - stored.len()
    );

    // the timer and the await on the dead master's shard fire once
    bus.emit(
        r#"{"kind":"order.paid","subject":"o-2","data":{"orderId":"o2"}}"#,
        None,
    )
    .await
    .unwrap();
    let paid = tokio::time::timeout(Duration::from_secs(20), payer)
        .await
        .expect("event await")
        .unwrap()
        .unwrap();
    assert!(paid.contains("o2"), "{paid}");
    let slept = tokio::time::timeout(Duration::from_secs(20), sleeper)
        .await
        .expect("timer")
        .unwrap()
        .unwrap();
    assert_eq!(slept, "\"slept\"");
    for flow in ["f-time", "f-event"] {
        let k = kinds_of(&bus, flow).await;
        assert_eq!(
            k.iter().filter(|k| *k == "step.resumed").count(),
            1,
            "{flow}: {k:?}"
        );
        assert_eq!(
            k.iter().filter(|k| *k == "step.completed").count(),
            1,
            "{flow}: {k:?}"
        );
    }

    // durability 'replicated' waits for a replica of each master written to: the shard that
    // failed over has none left (its old master is dead), the others have theirs
    let durable = Bus::connect(Config {
        url: Some(url.clone()),
        prefix: prefix.clone(),
        timeout: Duration::from_secs(2),
        replicated: Some(Duration::from_millis(300)),
        ..Config::default()
    })
    .await
    .unwrap();
    let err = durable
        .emit(&event("tick", &id, 0), None)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotReplicated, "{err}");
    let promoted = master_of(&url, coord_slot).await.0;
    assert_ne!(promoted, port);
    let mut con = RawConnection::open(&url).await.unwrap(); // the topology after the failover
    let mut other = String::new();
    for i in 0.. {
        other = format!("r{i}");
        let slot = keyslot(
            &mut con,
            &bus.stream_key(&StreamRef::new("flow", &other).unwrap()),
        )
        .await;
        if master_of(&url, slot).await.0 != promoted {
            break;
        }
    }
    durable.emit(&event("tick", &other, 0), None).await.unwrap();
    drop(rig);
}
