//! A subscription is a small state machine:
//! - `CatchingUp`: live messages are held in a bounded buffer while pages are read from the
//!   stream after the last delivered id. When a read that was issued after the buffer was last
//!   cleared comes back short (the end of the stream at that moment), the buffer holds every
//!   later event, so the subscription switches to `Live` by draining the buffer past that id.
//! - `Live`: each message with an id above the last delivered one is queued; smaller ids are
//!   duplicates of what the read already delivered.
//!
//! Consumers are woken once when their queue goes from empty to non-empty and take everything
//! queued in one call; a queue that reaches its bound ends the subscription with
//! `SUBSCRIBER_OVERFLOW` and the last id delivered.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::hub::Hub;
use crate::error::{Error, ErrorCode, Result};
use crate::event::{SharedRecord, StreamRef};
use crate::id::StreamId;
use crate::metrics::LiveCounters;
use crate::store::{Channel, ReadOptions};

/// Entries read per catch-up page.
const PAGE: usize = 500;

/// What a consumer takes from a subscription.
#[derive(Debug, Clone)]
pub enum Item {
    /// An event.
    Event(SharedRecord),
    /// Entries after `after` were trimmed from the stream; delivery continues at `first`.
    Gap {
        /// The cursor that could not be honoured.
        after: StreamId,
        /// The next id that will be delivered, if the stream has one now.
        first: Option<StreamId>,
    },
}

/// Why a subscription ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Unsubscribed, or the bus was closed.
    Closed,
    /// Cut off: overflow, or a gap nobody asked to be told about.
    Failed(Error),
}

/// The result of `take`: queued items, then (once the queue is empty) the end, if any.
#[derive(Debug, Default)]
pub struct Taken {
    /// Items in delivery order.
    pub items: Vec<Item>,
    /// Set once the subscription has ended and every queued item was taken.
    pub end: Option<End>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    CatchingUp,
    Live,
    Ended,
}

pub(super) struct SubState {
    pub(super) phase: Phase,
    pub(super) epoch: u64,
    pub(super) buffer: Vec<SharedRecord>,
    queue: VecDeque<Item>,
    last_id: StreamId,
    pub(super) check_gap: bool,
    end: Option<End>,
    wake_pending: bool,
    pub(super) task_running: bool,
}

/// A consumer's wake-up call: invoked when its queue goes from empty to non-empty or it ends.
pub type Waker = Box<dyn Fn() + Send + Sync>;

pub(super) struct SubShared {
    pub(super) id: u64,
    pub(super) channel: Channel,
    /// `None` for `onKind` subscriptions, which have no stream to catch up from.
    pub(super) stream: Option<StreamRef>,
    max_queue: usize,
    notify_gaps: bool,
    state: Mutex<SubState>,
    /// Dropped when the subscription ends, so a JavaScript callback is not kept alive.
    waker: Mutex<Option<Waker>>,
    ready: Notify,
    space: Notify,
    /// The hub's delivery and overflow counters.
    counters: Arc<LiveCounters>,
}

impl SubShared {
    pub(super) fn lock(&self) -> MutexGuard<'_, SubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake(&self, st: &mut SubState) {
        if !st.wake_pending {
            st.wake_pending = true;
            self.ready.notify_one();
            if let Some(w) = self
                .waker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
            {
                w();
            }
        }
    }

    /// Queue an item; on overflow end the subscription. Returns false once ended.
    fn push(&self, st: &mut SubState, item: Item) -> bool {
        if st.queue.len() >= self.max_queue {
            let err = Error::new(
                ErrorCode::SubscriberOverflow,
                format!(
                    "the subscriber fell {} events behind (maxQueue); resubscribe with after = lastId",
                    self.max_queue
                ),
            )
            .with_last_id(Some(st.last_id.to_string()));
            self.finish(st, End::Failed(err));
            self.counters.overflowed();
            return false;
        }
        if let Item::Event(r) = &item {
            if self.stream.is_some() {
                st.last_id = r.id;
            }
            self.counters.delivered();
        }
        st.queue.push_back(item);
        self.wake(st);
        true
    }

    pub(super) fn finish(&self, st: &mut SubState, end: End) {
        if st.phase == Phase::Ended {
            return;
        }
        st.phase = Phase::Ended;
        st.buffer = Vec::new();
        if end == End::Closed {
            st.queue.clear();
        }
        st.end = Some(end);
        self.space.notify_one();
        // A consumer must learn of the end even if its queue is not empty.
        st.wake_pending = false;
        self.wake(st);
        self.waker.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// A message from the channel. Returns false once the subscription has ended.
    pub(super) fn on_live(&self, rec: &SharedRecord) -> bool {
        let mut st = self.lock();
        match st.phase {
            Phase::Ended => false,
            Phase::Live if self.stream.is_none() => self.push(&mut st, Item::Event(rec.clone())),
            Phase::Live => {
                if rec.id > st.last_id {
                    self.push(&mut st, Item::Event(rec.clone()))
                } else {
                    true
                }
            }
            Phase::CatchingUp => {
                if st.buffer.len() >= self.max_queue {
                    // The stream has everything the buffer held: drop it and read on.
                    st.buffer.clear();
                    st.epoch += 1;
                }
                st.buffer.push(rec.clone());
                true
            }
        }
    }
}

/// Where a new stream subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Events after this id (exclusive).
    After(StreamId),
    /// The last `n` events, then live.
    Backfill(usize),
    /// Only events stored after the subscription is set up.
    Live,
}

/// Options of a subscription.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    /// Where to start.
    pub start: Start,
    /// Most events queued for a consumer before it is cut off.
    pub max_queue: usize,
    /// Deliver `Item::Gap` when entries were trimmed, instead of ending with `STREAM_GAP`.
    pub notify_gaps: bool,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            start: Start::Live,
            max_queue: 10_000,
            notify_gaps: false,
        }
    }
}

/// A live subscription. Dropping it unsubscribes.
pub struct Subscription {
    shared: Arc<SubShared>,
    hub: Weak<Hub>,
}

impl Subscription {
    /// True once the subscription has caught up and receives events as they are stored.
    pub fn is_live(&self) -> bool {
        self.shared.lock().phase == Phase::Live
    }

    #[doc(hidden)]
    pub fn debug_state(&self) -> String {
        let st = self.shared.lock();
        format!(
            "phase={:?} queue={} buffer={} last={} wake_pending={} end={:?} task={}",
            st.phase,
            st.queue.len(),
            st.buffer.len(),
            st.last_id,
            st.wake_pending,
            st.end,
            st.task_running
        )
    }

    /// Take up to `max` queued items without waiting; `end` is set once the subscription has
    /// ended and its queue is empty.
    pub fn take(&self, max: usize) -> Taken {
        let mut st = self.shared.lock();
        let n = st.queue.len().min(max);
        let items: Vec<Item> = st.queue.drain(..n).collect();
        let end = if st.queue.is_empty() {
            st.wake_pending = false;
            st.end.clone()
        } else {
            None
        };
        drop(st);
        if !items.is_empty() {
            self.shared.space.notify_one();
        }
        Taken { items, end }
    }

    /// Wait until something can be taken, then take up to `max` items.
    pub async fn next_batch(&self, max: usize) -> Taken {
        loop {
            let taken = self.take(max);
            if !taken.items.is_empty() || taken.end.is_some() {
                return taken;
            }
            self.shared.ready.notified().await;
        }
    }

    /// Stop delivery and release the channel if this was its last subscriber.
    pub fn unsubscribe(&self) {
        {
            let mut st = self.shared.lock();
            self.shared.finish(&mut st, End::Closed);
        }
        if let Some(hub) = self.hub.upgrade() {
            hub.remove(&self.shared);
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.unsubscribe();
    }
}

/// Set up a subscription to `stream` (catching up as `opts.start` says) or, with `stream`
/// `None`, a live-only subscription to `channel`.
pub(crate) async fn subscribe(
    hub: &Arc<Hub>,
    channel: Channel,
    stream: Option<StreamRef>,
    opts: SubscribeOptions,
    waker: Option<Waker>,
) -> Result<Subscription> {
    let kind_only = stream.is_none();
    let shared = Arc::new(SubShared {
        id: hub.next_id.fetch_add(1, Ordering::Relaxed),
        channel,
        stream,
        max_queue: opts.max_queue,
        notify_gaps: opts.notify_gaps,
        state: Mutex::new(SubState {
            phase: if kind_only {
                Phase::Live
            } else {
                Phase::CatchingUp
            },
            epoch: 0,
            buffer: Vec::new(),
            queue: VecDeque::new(),
            last_id: StreamId::ZERO,
            check_gap: false,
            end: None,
            wake_pending: false,
            task_running: !kind_only,
        }),
        waker: Mutex::new(waker),
        ready: Notify::new(),
        space: Notify::new(),
        counters: hub.counters.clone(),
    });
    let sub = Subscription {
        shared: shared.clone(),
        hub: Arc::downgrade(hub),
    };
    hub.add(&shared).await?;
    let Some(stream) = shared.stream.clone() else {
        return Ok(sub);
    };
    // The channel is confirmed: anything stored from now on reaches the buffer, so the
    // position read below cannot miss an event.
    match opts.start {
        Start::After(after) => {
            let mut st = shared.lock();
            st.last_id = after;
            st.check_gap = true;
        }
        Start::Backfill(_) | Start::Live => {
            let n = match opts.start {
                Start::Backfill(n) => n,
                _ => 1,
            };
            let store = hub.store().ok_or_else(Error::closed)?;
            let mut recs = store
                .read(
                    &stream,
                    &ReadOptions {
                        limit: Some(n.max(1)),
                        reverse: true,
                        ..Default::default()
                    },
                )
                .await?;
            let mut st = shared.lock();
            if opts.start == Start::Live {
                st.last_id = recs.first().map(|r| r.id).unwrap_or(StreamId::ZERO);
            } else {
                recs.reverse();
                for r in recs.into_iter().take(n) {
                    if !shared.push(&mut st, Item::Event(Arc::new(r))) {
                        break;
                    }
                }
            }
        }
    }
    tokio::spawn(catch_up(shared, Arc::downgrade(hub)));
    Ok(sub)
}

/// Read the stream after the last delivered id until the live buffer can take over.
pub(super) async fn catch_up(sub: Arc<SubShared>, hub: Weak<Hub>) {
    let page = PAGE.min(sub.max_queue).max(1);
    let mut backoff = Duration::from_millis(20);
    let stream = match &sub.stream {
        Some(s) => s.clone(),
        None => return,
    };
    loop {
        // Wait until the consumer has room for a whole page.
        let (epoch, after, check_gap) = loop {
            let space = sub.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                let st = sub.lock();
                if st.phase == Phase::Ended {
                    return;
                }
                if st.queue.len() + page <= sub.max_queue {
                    break (st.epoch, st.last_id, st.check_gap);
                }
            }
            space.await;
        };
        let Some(store) = hub.upgrade().and_then(|h| h.store()) else {
            return;
        };
        let res = store.catch_up(&stream, after, page, check_gap).await;
        drop(store);
        let page_res = match res {
            Ok(p) => p,
            Err(e) if e.code == ErrorCode::BusClosed => return,
            Err(e) if matches!(e.code, ErrorCode::WrongType | ErrorCode::Internal) => {
                // not a passing fault: retrying cannot help, so the subscriber must hear of it
                let mut st = sub.lock();
                let last = st.last_id;
                sub.finish(&mut st, End::Failed(e.with_last_id(Some(last.to_string()))));
                drop(st);
                remove(&hub, &sub);
                return;
            }
            Err(_) => {
                // The store is unreachable: try again; a reconnect will also restart us.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(20);
        let mut st = sub.lock();
        if st.phase == Phase::Ended {
            return;
        }
        if st.last_id != after {
            continue;
        }
        let short = page_res.records.len() < page;
        if check_gap {
            st.check_gap = false;
            if page_res.gap {
                let first = page_res.records.first().map(|r| r.id);
                if sub.notify_gaps {
                    sub.push(&mut st, Item::Gap { after, first });
                } else {
                    let mut err = Error::new(
                        ErrorCode::StreamGap,
                        format!(
                            "events after {after} were trimmed from the stream (maxLen); resubscribe from firstId or with backfill, or pass onGap to continue past gaps"
                        ),
                    )
                    .with_last_id(Some(after.to_string()));
                    err.first_id = first.map(|f| f.to_string());
                    sub.finish(&mut st, End::Failed(err));
                    drop(st);
                    remove(&hub, &sub);
                    return;
                }
            }
        }
        for r in page_res.records {
            if r.id > st.last_id && !sub.push(&mut st, Item::Event(Arc::new(r))) {
                drop(st);
                remove(&hub, &sub);
                return;
            }
        }
        if short && st.epoch == epoch {
            let buffered = std::mem::take(&mut st.buffer);
            for r in buffered {
                if r.id > st.last_id && !sub.push(&mut st, Item::Event(r)) {
                    drop(st);
                    remove(&hub, &sub);
                    return;
                }
            }
            st.phase = Phase::Live;
            st.task_running = false;
            return;
        }
    }
}

fn remove(hub: &Weak<Hub>, sub: &Arc<SubShared>) {
    if let Some(h) = hub.upgrade() {
        h.remove(sub);
    }
}
