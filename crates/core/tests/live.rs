//! Live delivery and the append queue under faults, on a redis-server of the test's OWN (a
//! free port; it is stopped, paused and restarted here, never the shared one).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use lean_events_core::{Bus, Config, ErrorCode, SubscribeOptions};

async fn connect_to(url: &str, name: &str, f: impl FnOnce(&mut Config)) -> Bus {
    let mut config = Config {
        url: Some(url.to_owned()),
        prefix: unique_prefix(name),
        timeout: Duration::from_millis(1000),
        ..Config::default()
    };
    f(&mut config);
    Bus::connect(config).await.expect("connect")
}

/// The channels the server has subscriptions for.
async fn server_channels(redis: &OwnRedis) -> Vec<String> {
    let mut con = redis.connection().await;
    redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .query_async(&mut con)
        .await
        .unwrap()
}

/// A subscription that gave up while Redis was down (its channel then wanted by nobody)
/// leaves no subscription on the server once Redis is back: the live task subscribes what is
/// wanted, not what was once asked for.
#[tokio::test]
async fn a_subscribe_abandoned_during_an_outage_leaves_nothing_subscribed() {
    let mut redis = OwnRedis::start("abandoned").await;
    let bus = connect_to(&redis.url(), "abandoned", |_| {}).await;
    let keep = flow("keep");
    let _kept = bus
        .subscribe(&keep, SubscribeOptions::default(), None)
        .await
        .unwrap();
    redis.stop().await;
    let gone = flow("gone");
    let err = bus
        .subscribe(&gone, SubscribeOptions::default(), None)
        .await
        .err()
        .expect("no subscription while Redis is down");
    assert!(
        matches!(err.code, ErrorCode::Timeout | ErrorCode::StoreUnavailable),
        "{err}"
    );
    redis.restart().await;
    let reconnects = bus.reconnects();
    wait_until(20, || bus.reconnects() > reconnects).await;
    // a channel subscribed after the reconnect is confirmed after anything the live task
    // would have replayed from the outage
    let later = flow("later");
    let _later = bus
        .subscribe(&later, SubscribeOptions::default(), None)
        .await
        .unwrap();
    let channels = server_channels(&redis).await;
    let live = |s| format!("{}:live", bus.stream_key(s));
    assert!(channels.contains(&live(&keep)), "{channels:?}");
    assert!(channels.contains(&live(&later)), "{channels:?}");
    assert!(!channels.contains(&live(&gone)), "{channels:?}");
    bus.close();
}

/// A subscribe that times out because the live connection is down says so, with the cause.
#[tokio::test]
async fn a_subscribe_while_redis_is_down_says_why() {
    let mut redis = OwnRedis::start("why").await;
    let bus = connect_to(&redis.url(), "why", |_| {}).await;
    let _s = bus
        .subscribe(&flow("a"), SubscribeOptions::default(), None)
        .await
        .unwrap();
    redis.stop().await;
    // the live task notices the loss, then fails to reconnect
    wait_until(10, || {
        bus.diagnostics()
            .counts()
            .contains_key("LIVE_CONNECTION_LOST")
    })
    .await;
    let err = bus
        .subscribe(&flow("b"), SubscribeOptions::default(), None)
        .await
        .err()
        .expect("no subscription while Redis is down");
    assert_eq!(err.code, ErrorCode::Timeout, "{err}");
    assert!(
        err.message.contains("the live connection is down"),
        "the cause is named: {err}"
    );
    bus.close();
}

/// Losing the live connection is a warning, counted and handed to the sink.
#[tokio::test]
async fn a_lost_live_connection_is_a_warning() {
    let mut redis = OwnRedis::start("warn").await;
    let bus = connect_to(&redis.url(), "warn", |_| {}).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    bus.diagnostics().set_sink(Some(Arc::new(
        move |w: &lean_events_core::diagnostics::Warning| s.lock().unwrap().push(w.code),
    )));
    let _s = bus
        .subscribe(&flow("a"), SubscribeOptions::default(), None)
        .await
        .unwrap();
    redis.stop().await;
    wait_until(10, || {
        seen.lock().unwrap().contains(&"LIVE_CONNECTION_LOST")
    })
    .await;
    assert_eq!(
        bus.diagnostics().counts().get("LIVE_CONNECTION_LOST"),
        Some(&1)
    );
    redis.restart().await;
    bus.close();
}

/// While Redis does not answer, at most `max_pending_emits` emits wait; the next one fails at
/// once with BACKPRESSURE (nothing queued), and the waiting ones are stored once Redis answers.
#[tokio::test]
async fn emits_past_max_pending_fail_at_once_with_backpressure() {
    let redis = OwnRedis::start("pressure").await;
    let bus = connect_to(&redis.url(), "pressure", |c| {
        c.max_pending_emits = 5;
        c.timeout = Duration::from_secs(20);
    })
    .await;
    redis.pause();
    let settled = Arc::new(AtomicUsize::new(0));
    let mut outcomes = Vec::new();
    for i in 0..5 {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let settled = settled.clone();
        bus.submit_one_then(
            &event("tick", "p1", i),
            None,
            Box::new(move |r| {
                settled.fetch_add(1, Ordering::SeqCst);
                let _ = tx.send(r);
            }),
        )
        .expect("admitted");
        outcomes.push(rx);
    }
    assert_eq!(bus.pending_emits(), 5);
    let refused = bus
        .submit_one_then(&event("tick", "p1", 5), None, Box::new(|_| {}))
        .expect_err("the sixth is refused");
    assert_eq!(refused.code, ErrorCode::Backpressure);
    assert_eq!(
        settled.load(Ordering::SeqCst),
        0,
        "nothing settled while paused"
    );
    redis.resume();
    for rx in outcomes {
        rx.await.unwrap().expect("stored once Redis answers");
    }
    assert_eq!(bus.pending_emits(), 0);
    let read = events(&bus, "p1").await;
    assert_eq!(read.len(), 5);
    bus.close();
}

fn flow(id: &str) -> lean_events_core::StreamRef {
    lean_events_core::StreamRef::new("flow", id).unwrap()
}

/// A live-only subscription whose queue overflows before its channel is confirmed (messages
/// of the channel still subscribed for the subscription just dropped reach it at once) is
/// handed over ended, with SUBSCRIBER_OVERFLOW, instead of waiting out the timeout for a
/// channel nobody follows any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_cut_off_before_its_confirmation_is_handed_over_ended() {
    let redis = OwnRedis::start("cut-early").await;
    let bus = connect_to(&redis.url(), "cut-early", |_| {}).await;
    let publisher = connect_to(&redis.url(), "cut-early", |_| {}).await;
    let stop = Arc::new(AtomicUsize::new(0));
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (publisher, stop) = (publisher.clone(), stop.clone());
        flood.spawn(async move {
            while stop.load(Ordering::Acquire) == 0 {
                publisher.publish("cut-early", "{}").await.unwrap();
            }
        });
    }
    let first = bus.listen("cut-early".into(), 1000).await.unwrap();
    let taken = tokio::time::timeout(Duration::from_secs(10), first.next_batch(1))
        .await
        .expect("the flood reaches the subscription");
    assert!(!taken.items.is_empty());
    drop(first);
    // each one drops the previous subscription, racing the unsubscribe of the channel
    let mut ended_early = 0;
    for round in 0..50 {
        let started = std::time::Instant::now();
        let sub = match bus.listen("cut-early".into(), 1).await {
            Ok(sub) => sub,
            Err(e) => panic!(
                "round {round}: listen failed after {:?}: {e}",
                started.elapsed()
            ),
        };
        let taken = tokio::time::timeout(Duration::from_secs(10), sub.next_batch(10))
            .await
            .expect("the flood reaches the subscription");
        if let Some(lean_events_core::End::Failed(e)) = &taken.end {
            assert_eq!(e.code, ErrorCode::SubscriberOverflow, "round {round}: {e}");
            ended_early += 1;
        }
    }
    stop.store(1, Ordering::Release);
    while let Some(done) = flood.join_next().await {
        done.unwrap();
    }
    assert!(
        ended_early > 0,
        "no subscription overflowed: the flood was too slow to test this"
    );
    bus.close();
    publisher.close();
}
