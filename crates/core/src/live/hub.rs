//! The hub of one bus: which subscriptions follow which channel (the channels wanted),
//! which channels the server has confirmed, and the fan-out of each live message to the
//! subscriptions of its channel — outside the registry's lock, so a slow consumer's wake-up
//! never holds up the registry.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::subscription::{catch_up, Phase, SubShared};
use crate::error::{Error, ErrorCode, Result};
use crate::event::{message_record, SharedRecord};
use crate::metrics::LiveCounters;
use crate::store::{Channel, Fanout, Store};

/// The subscriptions of one channel (copied on change, so fan-out can iterate a snapshot).
struct ChannelSubs {
    subs: Arc<Vec<Arc<SubShared>>>,
    sharded: bool,
}

#[derive(Default)]
struct Registry {
    channels: HashMap<String, ChannelSubs>,
    /// Channels the live connection has confirmed (and not been told to drop since).
    confirmed: HashSet<String>,
    /// Why the live connection is down, while it is.
    down: Option<Error>,
    /// A failure the live task cannot recover from: every subscribe fails with it.
    failed: Option<Error>,
    closed: bool,
}

/// What wakes the live task.
#[derive(Default)]
pub(super) struct Signals {
    /// The wanted set changed, the hub closed or was dropped: reconcile (or stop).
    pub(super) changed: Notify,
    /// The live connection of the current generation is gone.
    pub(super) lost: Notify,
}

/// Channel registry and fan-out, shared by every subscription of one bus.
pub struct Hub {
    registry: Mutex<Registry>,
    /// Wake-ups of the live task, held apart so that waiting on them does not keep the hub
    /// alive.
    pub(super) signals: Arc<Signals>,
    /// Channels were confirmed, or the live connection failed: subscribers waiting look again.
    confirmations: Notify,
    pub(super) lost_generation: AtomicU64,
    store: OnceLock<Weak<dyn Store>>,
    /// Channels are subscribed on a server by a live task (Redis); else the store delivers.
    remote: bool,
    timeout: Duration,
    pub(super) next_id: AtomicU64,
    reconnects: AtomicU64,
    /// Events queued to subscribers and subscribers cut off (see `metrics`).
    pub(super) counters: Arc<LiveCounters>,
}

impl Hub {
    /// A hub whose channels a live task subscribes on a server (`remote`), or one the store
    /// delivers to itself. `timeout` bounds the wait for a channel's confirmation.
    pub fn new(remote: bool, timeout: Duration) -> Self {
        Hub {
            registry: Mutex::new(Registry::default()),
            signals: Arc::new(Signals::default()),
            confirmations: Notify::new(),
            lost_generation: AtomicU64::new(0),
            store: OnceLock::new(),
            remote,
            timeout,
            next_id: AtomicU64::new(1),
            reconnects: AtomicU64::new(0),
            counters: Default::default(),
        }
    }

    /// The store catch-up reads go to (set once, when the bus is built).
    pub fn set_store(&self, store: Weak<dyn Store>) {
        let _ = self.store.set(store);
    }

    /// The store, while it lives.
    pub(super) fn store(&self) -> Option<Arc<dyn Store>> {
        self.store.get().and_then(Weak::upgrade)
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many channels have at least one subscriber.
    pub fn channel_count(&self) -> usize {
        self.lock().channels.len()
    }

    /// How many subscriptions are registered.
    pub fn subscription_count(&self) -> usize {
        self.lock().channels.values().map(|c| c.subs.len()).sum()
    }

    /// Events queued to subscribers and subscribers cut off, since the hub was made.
    pub fn counters(&self) -> &LiveCounters {
        &self.counters
    }

    /// How many times the live connection was re-established (messages may have been missed).
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Acquire)
    }

    /// Deliver one record to every subscriber of `channel`, in the caller's order.
    pub fn dispatch(&self, channel: &str, rec: &SharedRecord) {
        let Some(subs) = self.lock().channels.get(channel).map(|c| c.subs.clone()) else {
            return;
        };
        let mut ended = Vec::new();
        for sub in subs.iter() {
            if !sub.on_live(rec) {
                ended.push(sub.clone());
            }
        }
        for sub in ended {
            self.remove(&sub);
        }
    }

    /// A message from the live connection (see `event::message_record`).
    pub(super) fn deliver_live(&self, channel: &str, payload: &str) {
        if let Some(rec) = message_record(payload) {
            self.dispatch(channel, &Arc::new(rec));
        }
    }

    /// Register `sub` on its channel; resolves once the channel is subscribed on the server.
    pub(super) async fn add(&self, sub: &Arc<SubShared>) -> Result<()> {
        {
            let mut reg = self.lock();
            // checked under the lock close() drains with, so no subscription outlives close()
            if reg.closed {
                return Err(Error::closed());
            }
            if let Some(e) = &reg.failed {
                return Err(e.clone());
            }
            let entry = reg
                .channels
                .entry(sub.channel.name.clone())
                .or_insert_with(|| ChannelSubs {
                    subs: Arc::new(Vec::new()),
                    sharded: sub.channel.sharded,
                });
            let mut subs = (*entry.subs).clone();
            subs.push(sub.clone());
            entry.subs = Arc::new(subs);
            if !self.remote || reg.confirmed.contains(&sub.channel.name) {
                return Ok(());
            }
        }
        self.signals.changed.notify_one();
        let res = self.confirmation(sub).await;
        if res.is_err() {
            self.remove(sub);
        }
        res
    }

    /// Wait until `sub`'s channel is confirmed, `sub` ends, the hub closes or the wait times
    /// out. A live-only subscription can end before its channel is confirmed: messages of a
    /// channel still subscribed for an earlier subscription (its unsubscribe not yet
    /// confirmed) reach it at once and may overflow its queue. Its channel is then nobody's
    /// and will not be confirmed; the subscription is handed over ended, with its reason.
    async fn confirmation(&self, sub: &SubShared) -> Result<()> {
        let channel = sub.channel.name.as_str();
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let notified = self.confirmations.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if sub.lock().phase == Phase::Ended {
                return Ok(());
            }
            {
                let reg = self.lock();
                if reg.closed {
                    return Err(Error::closed());
                }
                if let Some(e) = &reg.failed {
                    return Err(e.clone());
                }
                if reg.confirmed.contains(channel) {
                    return Ok(());
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let why = match &self.lock().down {
                    Some(e) => format!("; the live connection is down: {e}"),
                    None => String::new(),
                };
                return Err(Error::new(
                    ErrorCode::Timeout,
                    format!(
                        "Redis did not confirm the channel subscription within {} ms{why}",
                        self.timeout.as_millis()
                    ),
                ));
            }
        }
    }

    /// Unregister `sub`; the live task drops a channel nobody follows any more.
    pub(super) fn remove(&self, sub: &Arc<SubShared>) {
        let mut reg = self.lock();
        let Some(entry) = reg.channels.get_mut(&sub.channel.name) else {
            return;
        };
        if !entry.subs.iter().any(|s| s.id == sub.id) {
            return;
        }
        let subs: Vec<Arc<SubShared>> = entry
            .subs
            .iter()
            .filter(|s| s.id != sub.id)
            .cloned()
            .collect();
        if subs.is_empty() {
            reg.channels.remove(&sub.channel.name);
            drop(reg);
            self.signals.changed.notify_one();
        } else {
            entry.subs = Arc::new(subs);
            drop(reg);
        }
        // a subscription ended while waiting for its channel's confirmation stops waiting
        self.confirmations.notify_waiters();
    }

    /// For the live task: the channels to subscribe and to unsubscribe, given what its
    /// connection has. The ones to unsubscribe stop counting as confirmed now, under the
    /// registry's lock, so a subscription that arrives for one waits for it to be subscribed
    /// again instead of trusting a channel about to go.
    pub(super) fn diff(
        &self,
        subscribed: &HashMap<String, Channel>,
    ) -> (Vec<Channel>, Vec<Channel>) {
        let mut reg = self.lock();
        let wanted: Vec<Channel> = reg
            .channels
            .iter()
            .filter(|(name, _)| !subscribed.contains_key(*name))
            .map(|(name, c)| Channel {
                name: name.clone(),
                sharded: c.sharded,
            })
            .collect();
        let gone: Vec<Channel> = subscribed
            .iter()
            .filter(|(name, _)| !reg.channels.contains_key(*name))
            .map(|(_, c)| c.clone())
            .collect();
        for c in &gone {
            reg.confirmed.remove(&c.name);
        }
        (wanted, gone)
    }

    /// For the live task: `channels` are subscribed on the server.
    pub(super) fn confirm(&self, channels: &[Channel]) {
        let mut reg = self.lock();
        reg.down = None;
        for c in channels {
            reg.confirmed.insert(c.name.clone());
        }
        drop(reg);
        self.confirmations.notify_waiters();
    }

    /// For the live task: the live connection is down (why, for subscribers that time out).
    pub(super) fn set_down(&self, why: Error) {
        self.lock().down = Some(why);
    }

    /// For the live task: it cannot go on; every waiting and later subscribe fails with `why`.
    pub(super) fn fail(&self, why: Error) {
        self.lock().failed = Some(why);
        self.confirmations.notify_waiters();
    }

    /// Whether the hub was closed.
    pub(super) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The live connection dropped: nothing is confirmed any more, and every stream
    /// subscription must catch up again once its channel is back.
    pub(super) fn on_lost(&self) {
        let subs: Vec<Arc<SubShared>> = {
            let mut reg = self.lock();
            reg.confirmed.clear();
            reg.channels
                .values()
                .flat_map(|c| c.subs.iter().cloned())
                .collect()
        };
        for sub in subs {
            let mut st = sub.lock();
            if st.phase == Phase::Live && sub.stream.is_some() {
                st.phase = Phase::CatchingUp;
                st.check_gap = true;
            }
            st.epoch += 1;
            st.buffer.clear();
        }
    }

    /// Every channel is subscribed again after a loss: re-read each stream from its last
    /// delivered id.
    pub(super) fn on_restored(self: &Arc<Self>) {
        self.reconnects.fetch_add(1, Ordering::AcqRel);
        let subs: Vec<Arc<SubShared>> = self
            .lock()
            .channels
            .values()
            .flat_map(|c| c.subs.iter().cloned())
            .collect();
        for sub in subs {
            if sub.stream.is_none() {
                continue;
            }
            let mut st = sub.lock();
            if st.phase == Phase::Ended {
                continue;
            }
            st.epoch += 1;
            st.buffer.clear();
            if st.phase == Phase::Live {
                st.phase = Phase::CatchingUp;
                st.check_gap = true;
            }
            if !st.task_running {
                st.task_running = true;
                tokio::spawn(catch_up(sub.clone(), Arc::downgrade(self)));
            }
        }
    }

    /// End every subscription (the bus is closing) and stop the live task.
    pub(crate) fn close(&self) {
        let subs: Vec<Arc<SubShared>> = {
            let mut reg = self.lock();
            reg.closed = true;
            reg.confirmed.clear();
            reg.channels
                .drain()
                .flat_map(|(_, c)| c.subs.iter().cloned().collect::<Vec<_>>())
                .collect()
        };
        for sub in subs {
            let mut st = sub.lock();
            sub.finish(&mut st, super::End::Closed);
        }
        self.signals.changed.notify_one();
        self.confirmations.notify_waiters();
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        // the live task holds only a weak reference: let it find out
        self.signals.changed.notify_one();
    }
}

impl Fanout for Hub {
    fn deliver(&self, channel: &str, record: &SharedRecord) {
        self.dispatch(channel, record);
    }
}
