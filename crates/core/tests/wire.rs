//! The append path as bytes (`store::redis::wire`), as the binding's event-loop transport
//! drives it: script calls written by hand to a socket, replies decoded as they arrive, and
//! the appends settled from them store what the Tokio path stores.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use lean_events_core::bus::EmitOptions;
use lean_events_core::store::redis::wire::{ReplyReader, Wire, WireReply};
use lean_events_core::{ErrorCode, ReadOptions, Record, StreamRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn flow(id: &str) -> StreamRef {
    StreamRef::new("flow", id).unwrap()
}

fn event(kind: &str, subject: &str, n: usize) -> String {
    format!(r#"{{"kind":"{kind}","subject":"{subject}","data":{{"n":{n}}}}}"#)
}

type Outcomes = Arc<Mutex<Vec<(usize, lean_events_core::Result<Vec<Record>>)>>>;

/// Read replies from `stream` until `n` arrived.
async fn replies(stream: &mut tokio::net::TcpStream, n: usize) -> Vec<WireReply> {
    let mut reader = ReplyReader::default();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while out.len() < n {
        while let Some(r) = reader.next_reply().unwrap() {
            out.push(r);
        }
        if out.len() == n {
            break;
        }
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("replies within 5 s")
            .unwrap();
        assert!(read > 0, "Redis closed the connection");
        reader.feed(&buf[..read]);
    }
    out
}

#[tokio::test]
async fn appends_written_by_hand_store_and_settle_like_the_group_commit() {
    if cluster_nodes().is_some() {
        return; // one Redis only: a cluster appends in two steps, on Tokio
    }
    let bus = connect(Backend::Redis, "wire").await;
    let wire = bus.wire().expect("one Redis over TCP has a wire path");
    let mut stream = tokio::net::TcpStream::from_std(wire.connect().await.unwrap()).unwrap();

    // a wrong-type key refuses only its own append
    let mut con = raw_connection().await;
    let _: () = redis::cmd("SET")
        .arg(bus.stream_key(&flow("bad")))
        .arg("x")
        .query_async(&mut con)
        .await
        .unwrap();

    let outcomes: Outcomes = Default::default();
    let done = |i: usize| -> lean_events_core::OnStored {
        let outcomes = outcomes.clone();
        Box::new(move |r| outcomes.lock().unwrap().push((i, r)))
    };
    let opts = EmitOptions::default();
    let appends = vec![
        bus.prepare_one_with(&event("a", "w1", 0), opts, done(0))
            .unwrap(),
        bus.prepare_one_with(&event("a", "bad", 1), opts, done(1))
            .unwrap(),
        bus.prepare_many_with(
            &format!("[{},{}]", event("b", "w1", 2), event("c", "w2", 3)),
            opts,
            done(2),
        )
        .unwrap()
        .unwrap(),
    ];
    assert_eq!(bus.pending_emits(), 3);
    // two calls in one write: the first two appends, then the batch
    let mut bytes = Vec::new();
    let (first, second) = appends.split_at(2);
    let groups: Vec<_> = first.iter().map(|a| a.events()).collect();
    wire.encode_append(&groups, &mut bytes);
    let groups: Vec<_> = second.iter().map(|a| a.events()).collect();
    wire.encode_append(&groups, &mut bytes);
    stream.write_all(&bytes).await.unwrap();
    let mut got = replies(&mut stream, 2).await.into_iter();
    let mut appends = appends.into_iter();
    for (reply, n) in [(got.next().unwrap(), 2), (got.next().unwrap(), 1)] {
        let results = wire.append_results(reply, n).unwrap();
        for r in results {
            appends.next().unwrap().settle(r);
        }
    }
    assert_eq!(bus.pending_emits(), 0);

    let mut outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    outcomes.sort_by_key(|(i, _)| *i);
    let [(_, first), (_, bad), (_, batch)] = <[_; 3]>::try_from(outcomes).unwrap();
    let first = first.unwrap();
    assert_eq!(bad.unwrap_err().code, ErrorCode::WrongType);
    let batch = batch.unwrap();
    assert_eq!(batch.len(), 2);
    let w1 = bus.read(&flow("w1"), ReadOptions::default()).await.unwrap();
    let stored: Vec<&str> = w1.iter().map(|r| r.json.as_str()).collect();
    assert_eq!(stored, vec![first[0].json.as_str(), batch[0].json.as_str()]);
    assert!(first[0].id < batch[0].id);
    let metrics = bus.metrics().await;
    assert_eq!(metrics.emits, 3, "stored events are counted: {metrics:?}");
    assert_eq!(metrics.emit_errors.get("WRONG_TYPE"), Some(&1));
}

#[tokio::test]
async fn an_error_reply_fails_every_append_of_the_call() {
    if cluster_nodes().is_some() {
        return;
    }
    let bus = connect(Backend::Redis, "wire-noscript").await;
    let wire = bus.wire().unwrap();
    let outcome = wire.append_results(Err("NOSCRIPT No matching script".into()), 2);
    let err = outcome.unwrap_err();
    assert_eq!(err.code, ErrorCode::StoreUnavailable);
    assert!(err.message.contains("NOSCRIPT"), "{err}");
}

#[tokio::test]
async fn only_one_redis_over_plain_tcp_has_a_wire_path() {
    let embedded = connect(Backend::Memory, "wire-embedded").await;
    assert!(embedded.wire().is_none());
    let keys = lean_events_core::keys::Keys::single("nq");
    let timeout = std::time::Duration::from_secs(1);
    assert!(Wire::for_url("rediss://127.0.0.1:6380", keys.clone(), None, timeout).is_none());
    assert!(Wire::for_url("redis+unix:///tmp/redis.sock", keys.clone(), None, timeout).is_none());
    assert!(Wire::for_url("redis://:pw@127.0.0.1:6379/2", keys, None, timeout).is_some());
}

#[tokio::test]
async fn a_refused_setup_fails_the_connect() {
    if cluster_nodes().is_some() {
        return;
    }
    // a password this Redis does not take: AUTH is refused, the connect fails
    let url = redis_url().replacen("redis://", "redis://nobody:wrong@", 1);
    let keys = lean_events_core::keys::Keys::single("nq");
    let wire = Wire::for_url(&url, keys, None, std::time::Duration::from_secs(2)).unwrap();
    let err = wire.connect().await.unwrap_err();
    assert_eq!(err.code, ErrorCode::StoreUnavailable, "{err}");
}
