//! Live delivery: one Pub/Sub connection per process, reference-counted channels, and
//! gap-free subscriptions that catch up from the stream whenever the live feed may have
//! missed something (at start, and after every reconnect).
//!
//! A stream subscription is a small state machine:
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

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::bus::Core;
use crate::error::{Error, ErrorCode, Result};
use crate::event::{record_from_live, SharedRecord, StreamRef};
use crate::id::StreamId;

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
enum Phase {
    CatchingUp,
    Live,
    Ended,
}

struct SubState {
    phase: Phase,
    epoch: u64,
    buffer: Vec<SharedRecord>,
    queue: VecDeque<Item>,
    last_id: StreamId,
    check_gap: bool,
    end: Option<End>,
    wake_pending: bool,
    task_running: bool,
}

/// A consumer's wake-up call: invoked when its queue goes from empty to non-empty or it ends.
pub type Waker = Box<dyn Fn() + Send + Sync>;

pub(crate) struct SubShared {
    id: u64,
    channel: String,
    /// `None` for `onKind` subscriptions, which have no stream to catch up from.
    stream: Option<StreamRef>,
    max_queue: usize,
    notify_gaps: bool,
    state: Mutex<SubState>,
    /// Dropped when the subscription ends, so a JavaScript callback is not kept alive.
    waker: Mutex<Option<Waker>>,
    ready: Notify,
    space: Notify,
}

impl SubShared {
    fn lock(&self) -> MutexGuard<'_, SubState> {
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
            return false;
        }
        if let Item::Event(r) = &item {
            if self.stream.is_some() {
                st.last_id = r.id;
            }
        }
        st.queue.push_back(item);
        self.wake(st);
        true
    }

    fn finish(&self, st: &mut SubState, end: End) {
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
    fn on_live(&self, rec: &SharedRecord) -> bool {
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

pub(crate) enum LiveCommand {
    Subscribe(String, oneshot::Sender<Result<()>>),
    Unsubscribe(String),
    Shutdown,
}

/// Channel registry and fan-out, shared by every subscription of one bus.
pub struct Hub {
    channels: Mutex<HashMap<String, Vec<Arc<SubShared>>>>,
    commands: Option<mpsc::UnboundedSender<LiveCommand>>,
    core: OnceLock<Weak<Core>>,
    next_id: AtomicU64,
    reconnects: AtomicU64,
    closed: std::sync::atomic::AtomicBool,
}

impl Hub {
    pub(crate) fn new(commands: Option<mpsc::UnboundedSender<LiveCommand>>) -> Self {
        Hub {
            channels: Mutex::new(HashMap::new()),
            commands,
            core: OnceLock::new(),
            next_id: AtomicU64::new(1),
            reconnects: AtomicU64::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(crate) fn set_core(&self, core: Weak<Core>) {
        let _ = self.core.set(core);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<Arc<SubShared>>>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many channels have at least one subscriber.
    pub fn channel_count(&self) -> usize {
        self.lock().len()
    }

    /// How many subscriptions are registered.
    pub fn subscription_count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    fn channel_names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn all_subs(&self) -> Vec<Arc<SubShared>> {
        self.lock().values().flatten().cloned().collect()
    }

    /// Deliver one record to every subscriber of `channel`.
    pub(crate) fn dispatch(&self, channel: &str, rec: &SharedRecord) {
        let mut channels = self.lock();
        let Some(subs) = channels.get_mut(channel) else {
            return;
        };
        let before = subs.len();
        subs.retain(|s| s.on_live(rec));
        if subs.len() != before && subs.is_empty() {
            channels.remove(channel);
            self.send(LiveCommand::Unsubscribe(channel.to_owned()));
        }
    }

    fn send(&self, cmd: LiveCommand) {
        if let Some(tx) = &self.commands {
            let _ = tx.send(cmd);
        }
    }

    /// Register `sub` on its channel; resolves once the channel is subscribed on the server.
    async fn add(&self, sub: &Arc<SubShared>, timeout: Duration) -> Result<()> {
        let ack = {
            let mut channels = self.lock();
            // checked under the lock close() drains with, so no subscription outlives close()
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::closed());
            }
            channels
                .entry(sub.channel.clone())
                .or_default()
                .push(sub.clone());
            match &self.commands {
                None => None,
                Some(tx) => {
                    let (ack_tx, ack_rx) = oneshot::channel();
                    let _ = tx.send(LiveCommand::Subscribe(sub.channel.clone(), ack_tx));
                    Some(ack_rx)
                }
            }
        };
        let Some(ack) = ack else { return Ok(()) };
        let res = match tokio::time::timeout(timeout, ack).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::closed()),
            Err(_) => Err(Error::new(
                ErrorCode::Timeout,
                format!(
                    "Redis did not confirm the channel subscription within {} ms",
                    timeout.as_millis()
                ),
            )),
        };
        if res.is_err() {
            self.remove(sub);
        }
        res
    }

    /// Unregister `sub`; the last subscriber of a channel unsubscribes it on the server.
    fn remove(&self, sub: &Arc<SubShared>) {
        let mut channels = self.lock();
        if let Some(subs) = channels.get_mut(&sub.channel) {
            subs.retain(|s| s.id != sub.id);
            if subs.is_empty() {
                channels.remove(&sub.channel);
                self.send(LiveCommand::Unsubscribe(sub.channel.clone()));
            }
        }
    }

    /// The live connection dropped: every stream subscription must catch up again.
    fn on_disconnect(&self) {
        for sub in self.all_subs() {
            let mut st = sub.lock();
            if st.phase == Phase::Live && sub.stream.is_some() {
                st.phase = Phase::CatchingUp;
                st.check_gap = true;
            }
            st.epoch += 1;
            st.buffer.clear();
        }
    }

    /// Every channel is subscribed again: re-read each stream from its last delivered id.
    /// How many times the live connection was re-established (messages may have been missed).
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Acquire)
    }

    fn on_reconnected(&self) {
        self.reconnects.fetch_add(1, Ordering::AcqRel);
        self.catch_up_all(self.all_subs());
    }

    /// Whether the subscriptions of `channel` follow a stream (its channel is a stream's).
    fn is_stream_channel(&self, channel: &str) -> bool {
        self.lock()
            .get(channel)
            .is_some_and(|subs| subs.iter().any(|s| s.stream.is_some()))
    }

    fn catch_up_all(&self, subs: Vec<Arc<SubShared>>) {
        let Some(core) = self.core.get().cloned() else {
            return;
        };
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
                tokio::spawn(catch_up(sub.clone(), core.clone()));
            }
        }
    }

    /// End every subscription (the bus is closing) and stop the live connection.
    pub(crate) fn close(&self) {
        let subs: Vec<Arc<SubShared>> = {
            let mut channels = self.lock();
            self.closed.store(true, Ordering::Release);
            channels.drain().flat_map(|(_, v)| v).collect()
        };
        for sub in subs {
            let mut st = sub.lock();
            sub.finish(&mut st, End::Closed);
        }
        self.send(LiveCommand::Shutdown);
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
    core: Weak<Core>,
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
        if let Some(core) = self.core.upgrade() {
            core.hub.remove(&self.shared);
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
    core: &Arc<Core>,
    channel: String,
    stream: Option<StreamRef>,
    opts: SubscribeOptions,
    waker: Option<Waker>,
) -> Result<Subscription> {
    let kind_only = stream.is_none();
    let shared = Arc::new(SubShared {
        id: core.hub.next_id.fetch_add(1, Ordering::Relaxed),
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
    });
    let sub = Subscription {
        shared: shared.clone(),
        core: Arc::downgrade(core),
    };
    core.hub.add(&shared, core.timeout).await?;
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
            let mut recs = core
                .read(
                    &stream,
                    &crate::store::ReadOptions {
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
    tokio::spawn(catch_up(shared, Arc::downgrade(core)));
    Ok(sub)
}

/// Read the stream after the last delivered id until the live buffer can take over.
async fn catch_up(sub: Arc<SubShared>, core: Weak<Core>) {
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
        let Some(c) = core.upgrade() else { return };
        let res = c.store.catch_up(&stream, after, page, check_gap).await;
        drop(c);
        let page_res = match res {
            Ok(p) => p,
            Err(e) if e.code == ErrorCode::BusClosed => return,
            Err(e) if matches!(e.code, ErrorCode::WrongType | ErrorCode::Internal) => {
                // not a passing fault: retrying cannot help, so the subscriber must hear of it
                let mut st = sub.lock();
                let last = st.last_id;
                sub.finish(&mut st, End::Failed(e.with_last_id(Some(last.to_string()))));
                drop(st);
                remove(&core, &sub);
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
                    remove(&core, &sub);
                    return;
                }
            }
        }
        for r in page_res.records {
            if r.id > st.last_id && !sub.push(&mut st, Item::Event(Arc::new(r))) {
                drop(st);
                remove(&core, &sub);
                return;
            }
        }
        if short && st.epoch == epoch {
            let buffered = std::mem::take(&mut st.buffer);
            for r in buffered {
                if r.id > st.last_id && !sub.push(&mut st, Item::Event(r)) {
                    drop(st);
                    remove(&core, &sub);
                    return;
                }
            }
            st.phase = Phase::Live;
            st.task_running = false;
            return;
        }
    }
}

fn remove(core: &Weak<Core>, sub: &Arc<SubShared>) {
    if let Some(c) = core.upgrade() {
        c.hub.remove(sub);
    }
}

/// The process's one Pub/Sub connection: follows the hub's channels, reconnects with
/// back-off, and after a reconnect makes every subscription catch up from the stream.
pub(crate) async fn run_redis_live(
    client: redis::Client,
    core: Weak<Core>,
    mut commands: mpsc::UnboundedReceiver<LiveCommand>,
    timeout: Duration,
) {
    let mut backoff = Duration::from_millis(50);
    let mut connected_before = false;
    let mut waiting: Waiting = Vec::new();
    loop {
        let pubsub = match tokio::time::timeout(timeout, client.get_async_pubsub()).await {
            Ok(Ok(p)) => Some(p),
            _ => None,
        };
        let Some(pubsub) = pubsub else {
            if !back_off(&mut backoff, &mut commands, &mut waiting).await {
                return;
            }
            continue;
        };
        let (mut sink, mut messages) = pubsub.split();
        let Some(c) = core.upgrade() else { return };
        let names = c.hub.channel_names();
        drop(c);
        let mut subscribed: HashSet<String> = HashSet::new();
        let mut ok = true;
        for chunk in names.chunks(500) {
            match tokio::time::timeout(timeout, sink.subscribe(chunk)).await {
                Ok(Ok(())) => subscribed.extend(chunk.iter().cloned()),
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            tokio::time::sleep(backoff).await;
            continue;
        }
        backoff = Duration::from_millis(50);
        subscribed_again(&core, &mut connected_before);
        for (ch, ack) in waiting.drain(..) {
            let r = if subscribed.contains(&ch) {
                Ok(())
            } else {
                subscribe_one(&mut sink, &ch, timeout).await
            };
            if r.is_ok() {
                subscribed.insert(ch);
            }
            let _ = ack.send(r);
        }
        loop {
            tokio::select! {
                msg = messages.next() => {
                    let Some(msg) = msg else { break };
                    let Some(c) = core.upgrade() else { return };
                    let payload = msg.get_payload_bytes();
                    if let Some(rec) = std::str::from_utf8(payload).ok().and_then(record_from_live) {
                        c.hub.dispatch(msg.get_channel_name(), &Arc::new(rec));
                    }
                }
                cmd = commands.recv() => match cmd {
                    None | Some(LiveCommand::Shutdown) => return,
                    Some(LiveCommand::Subscribe(ch, ack)) => {
                        if subscribed.contains(&ch) {
                            let _ = ack.send(Ok(()));
                            continue;
                        }
                        let r = subscribe_one(&mut sink, &ch, timeout).await;
                        let failed = r.is_err();
                        if !failed {
                            subscribed.insert(ch);
                        }
                        let _ = ack.send(r);
                        if failed {
                            break;
                        }
                    }
                    Some(LiveCommand::Unsubscribe(ch)) => {
                        if subscribed.remove(&ch) {
                            let _ = tokio::time::timeout(timeout, sink.unsubscribe(&ch)).await;
                        }
                    }
                },
            }
        }
        if let Some(c) = core.upgrade() {
            c.hub.on_disconnect();
        }
    }
}

type Waiting = Vec<(String, oneshot::Sender<Result<()>>)>;

/// Every channel is subscribed on a new connection: after the first one, each stream
/// subscription catches up on what the connection before may have missed.
fn subscribed_again(core: &Weak<Core>, connected_before: &mut bool) {
    if *connected_before {
        if let Some(c) = core.upgrade() {
            c.hub.on_reconnected();
        }
    }
    *connected_before = true;
}

/// Wait `backoff` before connecting again (then double it, up to 2 s), queueing the
/// subscriptions asked for meanwhile; false when the task is to end.
async fn back_off(
    backoff: &mut Duration,
    commands: &mut mpsc::UnboundedReceiver<LiveCommand>,
    waiting: &mut Waiting,
) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(*backoff) => {}
        cmd = commands.recv() => match cmd {
            None | Some(LiveCommand::Shutdown) => return false,
            Some(LiveCommand::Subscribe(ch, ack)) => waiting.push((ch, ack)),
            Some(LiveCommand::Unsubscribe(_)) => {}
        },
    }
    *backoff = (*backoff * 2).min(Duration::from_secs(2));
    true
}

/// A subscription's confirmation, or why there is none.
fn confirmed(
    r: std::result::Result<redis::RedisResult<()>, tokio::time::error::Elapsed>,
) -> Result<()> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(Error::new(
            ErrorCode::Timeout,
            "Redis did not confirm the subscription in time",
        )),
    }
}

async fn subscribe_one(
    sink: &mut redis::aio::PubSubSink,
    channel: &str,
    timeout: Duration,
) -> Result<()> {
    confirmed(tokio::time::timeout(timeout, sink.subscribe(channel)).await)
}

/// The live task on a Redis Cluster: a RESP3 cluster connection whose messages arrive as
/// pushes. Stream channels use sharded Pub/Sub (`SSUBSCRIBE`, on the shard that owns the
/// stream's slot); other channels plain Pub/Sub. When a node's connection drops (a master
/// failing over, say), the task opens a fresh connection (so the topology is read again), until
/// every channel is subscribed on it; then every stream subscription catches up from its last
/// delivered id, as after a reconnect on one node.
pub(crate) async fn run_cluster_live(
    nodes: Vec<String>,
    core: Weak<Core>,
    mut commands: mpsc::UnboundedReceiver<LiveCommand>,
    timeout: Duration,
) {
    let mut backoff = Duration::from_millis(50);
    let mut connected_before = false;
    let mut waiting: Waiting = Vec::new();
    loop {
        let (push_tx, mut pushes) = mpsc::unbounded_channel::<redis::PushInfo>();
        let Ok(client) = crate::store::cluster::client(&nodes, timeout, Some(push_tx)) else {
            return;
        };
        let conn = match tokio::time::timeout(timeout, client.get_async_connection()).await {
            Ok(Ok(c)) => Some(c),
            _ => None,
        };
        let mut subscribed = Subscribed::default();
        let ready = match conn {
            Some(c) => {
                let Some(hub_core) = core.upgrade() else {
                    return;
                };
                let names: Vec<(String, bool)> = hub_core
                    .hub
                    .channel_names()
                    .into_iter()
                    .map(|n| {
                        let stream = hub_core.hub.is_stream_channel(&n);
                        (n, stream)
                    })
                    .collect();
                drop(hub_core);
                let confirmed = futures_util::stream::iter(names)
                    .map(|(ch, stream)| {
                        let mut c = c.clone();
                        async move {
                            cluster_subscribe_one(&mut c, &ch, stream, timeout)
                                .await
                                .map(|()| (ch, stream))
                        }
                    })
                    .buffer_unordered(64)
                    .collect::<Vec<_>>()
                    .await;
                let all = confirmed.iter().all(Result::is_ok);
                for (ch, stream) in confirmed.into_iter().flatten() {
                    subscribed.insert(ch, stream);
                }
                all.then_some(c)
            }
            None => None,
        };
        let Some(mut conn) = ready else {
            if !back_off(&mut backoff, &mut commands, &mut waiting).await {
                return;
            }
            continue;
        };
        backoff = Duration::from_millis(50);
        subscribed_again(&core, &mut connected_before);
        for (ch, ack) in waiting.drain(..) {
            let _ = ack.send(subscribed.add(&core, &mut conn, &ch, timeout).await);
        }
        loop {
            tokio::select! {
                push = pushes.recv() => {
                    let Some(push) = push else { break };
                    let Some(c) = core.upgrade() else { return };
                    match push.kind {
                        redis::PushKind::Message | redis::PushKind::SMessage => {
                            let (Some(ch), Some(payload)) = (push.data.first(), push.data.get(1)) else {
                                continue;
                            };
                            let (Ok(ch), Ok(payload)) = (std::str::from_utf8(bytes(ch)), std::str::from_utf8(bytes(payload))) else {
                                continue;
                            };
                            if let Some(rec) = record_from_live(payload) {
                                c.hub.dispatch(ch, &Arc::new(rec));
                            }
                        }
                        redis::PushKind::Disconnection => break,
                        _ => {}
                    }
                }
                cmd = commands.recv() => match cmd {
                    None | Some(LiveCommand::Shutdown) => return,
                    Some(LiveCommand::Subscribe(ch, ack)) => {
                        let r = subscribed.add(&core, &mut conn, &ch, timeout).await;
                        let failed = r.is_err();
                        let _ = ack.send(r);
                        if failed {
                            break;
                        }
                    }
                    Some(LiveCommand::Unsubscribe(ch)) => {
                        if subscribed.sharded.remove(&ch) {
                            let _ = tokio::time::timeout(timeout, conn.sunsubscribe(&ch)).await;
                        } else if subscribed.plain.remove(&ch) {
                            let _ = tokio::time::timeout(timeout, conn.unsubscribe(&ch)).await;
                        }
                    }
                },
            }
        }
        if let Some(c) = core.upgrade() {
            c.hub.on_disconnect();
        }
    }
}

/// The channels one cluster connection is subscribed to.
#[derive(Default)]
struct Subscribed {
    sharded: HashSet<String>,
    plain: HashSet<String>,
}

impl Subscribed {
    fn insert(&mut self, channel: String, stream: bool) {
        if stream {
            self.sharded.insert(channel);
        } else {
            self.plain.insert(channel);
        }
    }

    /// Subscribe `channel` unless it already is.
    async fn add(
        &mut self,
        core: &Weak<Core>,
        conn: &mut redis::cluster_async::ClusterConnection,
        channel: &str,
        timeout: Duration,
    ) -> Result<()> {
        if self.sharded.contains(channel) || self.plain.contains(channel) {
            return Ok(());
        }
        let Some(c) = core.upgrade() else {
            return Err(Error::closed());
        };
        let stream = c.hub.is_stream_channel(channel);
        drop(c);
        cluster_subscribe_one(conn, channel, stream, timeout).await?;
        self.insert(channel.to_owned(), stream);
        Ok(())
    }
}

fn bytes(v: &redis::Value) -> &[u8] {
    match v {
        redis::Value::BulkString(b) => b,
        redis::Value::SimpleString(s) => s.as_bytes(),
        _ => &[],
    }
}

/// `SSUBSCRIBE` a stream's channel, `SUBSCRIBE` any other.
async fn cluster_subscribe_one(
    conn: &mut redis::cluster_async::ClusterConnection,
    channel: &str,
    stream: bool,
    timeout: Duration,
) -> Result<()> {
    confirmed(if stream {
        tokio::time::timeout(timeout, conn.ssubscribe(channel)).await
    } else {
        tokio::time::timeout(timeout, conn.subscribe(channel)).await
    })
}
