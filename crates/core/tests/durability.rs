//! `replicated` durability: an append is acknowledged once a replica has it, and refused with
//! `NOT_REPLICATED` when none confirms in time. Runs its OWN master and replica on free ports.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use lean_events_core::{Bus, Config, ErrorCode};
use tokio::process::{Child, Command};

fn redis_server(port: u16, dir: &std::path::Path, extra: &[String]) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server on PATH")
}

async fn connection(port: u16) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(c) = client.get_multiplexed_async_connection().await {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "redis-server on {port} did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn info(con: &mut redis::aio::MultiplexedConnection, section: &str) -> String {
    redis::cmd("INFO")
        .arg(section)
        .query_async(con)
        .await
        .unwrap()
}

/// Does the stream at `key` hold the entry `id` on this server?
async fn has_entry(con: &mut redis::aio::MultiplexedConnection, key: &str, id: &str) -> bool {
    let found: Vec<redis::Value> = redis::cmd("XRANGE")
        .arg(key)
        .arg(id)
        .arg(id)
        .query_async(con)
        .await
        .unwrap();
    found.len() == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_appends_are_on_the_replica_when_acknowledged() {
    let dir = std::env::temp_dir().join(unique_prefix("durability"));
    std::fs::create_dir_all(&dir).unwrap();
    let (mport, rport) = (free_port(), free_port());
    let _master = redis_server(mport, &dir, &[]);
    let mut master = connection(mport).await;
    let mut replica_proc = redis_server(
        rport,
        &dir,
        &["--replicaof".into(), "127.0.0.1".into(), mport.to_string()],
    );
    let mut replica = connection(rport).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !info(&mut replica, "replication")
        .await
        .contains("master_link_status:up")
    {
        assert!(Instant::now() < deadline, "the replica did not sync");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let bus = Bus::connect(Config {
        url: Some(format!("redis://127.0.0.1:{mport}")),
        prefix: unique_prefix("durable"),
        replicated: Some(Duration::from_millis(1500)),
        ..Config::default()
    })
    .await
    .unwrap();
    let key = format!("{}:flow:d1", bus.prefix());
    // each acknowledged append is on the replica at that moment, without waiting for it
    for n in 0..20 {
        let rec = bus
            .emit(&event("step.progress", "d1", n), None)
            .await
            .unwrap();
        assert!(
            has_entry(&mut replica, &key, &rec.id.to_string()).await,
            "event {n} ({}) not on the replica",
            rec.id
        );
    }
    let many: Vec<String> = (0..50).map(|n| event("step.progress", "d1", n)).collect();
    let batch = bus
        .emit_many(&format!("[{}]", many.join(",")), None)
        .await
        .unwrap();
    let last = batch.last().unwrap().id.to_string();
    assert!(
        has_entry(&mut replica, &key, &last).await,
        "the batch's last event is not on the replica"
    );

    // a replica that cannot answer holds the acknowledgement back until it has the event
    let pid = replica_proc.id().unwrap().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    let held = {
        let bus = bus.clone();
        tokio::spawn(async move { bus.emit(&event("step.progress", "d1", 70), None).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !held.is_finished(),
        "acknowledged while the replica was stopped"
    );
    signal("-CONT");
    let rec = held.await.unwrap().unwrap();
    assert!(
        has_entry(&mut replica, &key, &rec.id.to_string()).await,
        "the held event is not on the replica"
    );

    // no replica: refused within the bound, with the event still on the master
    replica_proc.kill().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while info(&mut master, "replication")
        .await
        .contains("connected_slaves:1")
    {
        assert!(
            Instant::now() < deadline,
            "the master still sees its replica"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let err = bus
        .emit(&event("step.progress", "d1", 99), None)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotReplicated, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "refused after {:?}",
        started.elapsed()
    );
    let len: u64 = redis::cmd("XLEN")
        .arg(&key)
        .query_async(&mut master)
        .await
        .unwrap();
    assert_eq!(len, 72, "the refused event is stored on the master");
    bus.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn replicated_durability_is_refused_where_it_cannot_hold() {
    let embedded = Bus::connect(Config {
        replicated: Some(Duration::from_millis(100)),
        ..Config::default()
    })
    .await;
    assert_eq!(
        embedded.err().map(|e| e.code),
        Some(ErrorCode::InvalidArgument)
    );
    let too_long = Bus::connect(Config {
        url: Some(redis_url()),
        prefix: unique_prefix("durable-bad"),
        timeout: Duration::from_millis(500),
        replicated: Some(Duration::from_millis(500)),
        ..Config::default()
    })
    .await;
    assert_eq!(
        too_long.err().map(|e| e.code),
        Some(ErrorCode::InvalidArgument)
    );
}
