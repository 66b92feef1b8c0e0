//! The live task: the one Pub/Sub connection of a bus, for one Redis and a Redis Cluster
//! alike. It does not take subscribe and unsubscribe commands; it reconciles: the hub holds
//! the channels wanted, the task the channels its connection has, and whenever either side
//! changes it subscribes what is missing and unsubscribes what nobody follows. A connection
//! lost (a Redis restart, a failover) empties the second set, so after reconnecting every
//! wanted channel is subscribed again and every stream subscription catches up from its last
//! delivered id; nothing queued can be dropped or replayed out of order, because nothing is
//! queued.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::hub::Hub;
use crate::diagnostics::Diagnostics;
use crate::error::{Error, ErrorCode};
use crate::store::{Channel, PubSubConnection, PubSubSource, Push, PushHandler};

/// Back-off between connection attempts: from 50 ms, doubling, at most 2 s.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Run the live task of `hub` until the hub closes or is dropped.
pub(crate) async fn run(
    hub: Weak<Hub>,
    source: Arc<dyn PubSubSource>,
    timeout: Duration,
    diagnostics: Arc<Diagnostics>,
) {
    let mut backoff = FIRST_BACKOFF;
    let mut generation: u64 = 0;
    let mut lost_before = false;
    loop {
        generation += 1;
        let Some(conn) = connect(&hub, &source, generation, timeout).await else {
            return;
        };
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                let Some(h) = hub.upgrade() else { return };
                if e.code == ErrorCode::InvalidArgument {
                    // a configuration the live connection can never be made with
                    h.fail(e);
                    return;
                }
                h.set_down(e);
                let signals = h.signals.clone();
                drop(h);
                let changed = signals.changed.notified();
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = changed => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = FIRST_BACKOFF;
        let mut subscribed: HashMap<String, Channel> = HashMap::new();
        let mut catch_up_due = lost_before;
        loop {
            let Some(h) = hub.upgrade() else { return };
            if h.is_closed() {
                return;
            }
            if h.lost_generation.load(Ordering::Acquire) == generation {
                break;
            }
            let signals = h.signals.clone();
            let changed = signals.changed.notified();
            let lost = signals.lost.notified();
            tokio::pin!(changed, lost);
            changed.as_mut().enable();
            lost.as_mut().enable();
            let (wanted, gone) = h.diff(&subscribed);
            if wanted.is_empty() && gone.is_empty() {
                if catch_up_due {
                    catch_up_due = false;
                    h.on_restored();
                }
                drop(h);
                tokio::select! {
                    _ = changed => {}
                    _ = lost => {}
                }
                continue;
            }
            drop(h);
            if !gone.is_empty() {
                match bounded(timeout, conn.unsubscribe(&gone)).await {
                    Ok(()) => {
                        for c in &gone {
                            subscribed.remove(&c.name);
                        }
                    }
                    Err(e) => {
                        diagnostics.warn(
                            "LIVE_UNSUBSCRIBE_FAILED",
                            "the live connection did not confirm an unsubscribe; reconnecting",
                            Some(e.to_string()),
                        );
                        break;
                    }
                }
            }
            if !wanted.is_empty() {
                match bounded(timeout, conn.subscribe(&wanted)).await {
                    Ok(()) => {
                        let Some(h) = hub.upgrade() else { return };
                        h.confirm(&wanted);
                        for c in wanted {
                            subscribed.insert(c.name.clone(), c);
                        }
                    }
                    Err(e) => {
                        if let Some(h) = hub.upgrade() {
                            h.set_down(e);
                        }
                        break;
                    }
                }
            }
        }
        drop(conn);
        let Some(h) = hub.upgrade() else { return };
        if h.is_closed() {
            return;
        }
        diagnostics.warn(
            "LIVE_CONNECTION_LOST",
            "the live (Pub/Sub) connection to Redis was lost; reconnecting, then every stream \
             subscription catches up from its last delivered id",
            None,
        );
        h.on_lost();
        lost_before = true;
    }
}

/// Open a connection whose messages go to the hub and whose loss is noted under
/// `generation`; `None` when the hub is gone.
async fn connect(
    hub: &Weak<Hub>,
    source: &Arc<dyn PubSubSource>,
    generation: u64,
    timeout: Duration,
) -> Option<Result<Box<dyn PubSubConnection>, Error>> {
    let weak = hub.clone();
    let on_push: PushHandler = Arc::new(move |push| {
        let Some(h) = weak.upgrade() else { return };
        match push {
            Push::Message { channel, payload } => h.deliver_live(channel, payload),
            Push::Lost => {
                // a connection of an earlier generation ending says nothing about this one
                if h.lost_generation.fetch_max(generation, Ordering::AcqRel) < generation {
                    h.signals.lost.notify_one();
                }
            }
        }
    });
    hub.upgrade()?;
    Some(bounded(timeout, source.connect(on_push)).await)
}

/// `fut`, or `TIMEOUT` after `timeout`.
async fn bounded<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(Error::new(
            ErrorCode::Timeout,
            format!(
                "Redis did not answer the live connection within {} ms",
                timeout.as_millis()
            ),
        )),
    }
}
