//! The group commit: every append queued while the previous store call was in flight goes to
//! the store in the next single call, one batch at a time, in arrival order. The queue is
//! bounded by `maxPendingEmits` appends handed over and not yet settled; past it an append
//! is refused at once with `BACKPRESSURE`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use tokio::sync::{mpsc, oneshot};

use super::Core;
use crate::error::{Error, ErrorCode, Result};
use crate::event::{PreparedEvent, Record};
use crate::id::StreamId;
use crate::metrics::EmitCounters;

/// Most events the group commit puts in one store call (one emitMany may exceed it alone).
const GROUP_COMMIT_EVENTS: usize = 512;

/// Called once with the outcome of an append handed over by `Bus::submit_one_then` or
/// `Bus::submit_many_then`: the stored records in order, or why nothing was stored.
pub type OnStored = Box<dyn FnOnce(Result<Vec<Record>>) + Send>;

/// Appends handed over and not yet settled, against their bound, and how they settled.
pub(crate) struct Pending {
    count: AtomicUsize,
    max: usize,
    pub(crate) outcomes: EmitCounters,
}

impl Pending {
    pub(crate) fn new(max: usize) -> Arc<Pending> {
        Arc::new(Pending {
            count: AtomicUsize::new(0),
            max,
            outcomes: EmitCounters::default(),
        })
    }

    /// Count one more append, or refuse it when `max` are pending.
    pub(crate) fn admit(self: &Arc<Self>) -> Result<Admitted> {
        let before = self.count.fetch_add(1, Ordering::AcqRel);
        if before >= self.max {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::new(
                ErrorCode::Backpressure,
                format!(
                    "{} emits are waiting for the store already (maxPendingEmits); wait for some \
                     to settle, or raise maxPendingEmits",
                    self.max
                ),
            ));
        }
        Ok(Admitted(self.clone()))
    }

    /// How many appends are pending now.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

/// One admitted append; dropping it (once settled) frees its place.
pub(crate) struct Admitted(Arc<Pending>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where the outcome of an append goes. Dropped unanswered (the commit task ended), it tells
/// its callback that the bus closed. Its place among the pending appends is freed (and the
/// outcome counted) before the callback runs, so whoever learns the outcome no longer sees the
/// append pending.
pub(crate) struct Reply {
    done: Option<OnStored>,
    place: Option<Admitted>,
    /// Run when the outcome is known, before `done`, with the error code of a failure.
    settled: Option<Box<dyn FnOnce(Option<ErrorCode>) + Send>>,
}

impl Reply {
    pub(crate) fn new(done: OnStored, place: Admitted) -> Self {
        Reply {
            done: Some(done),
            place: Some(place),
            settled: None,
        }
    }

    /// Run `hook` once the outcome is known, before the callback.
    pub(crate) fn on_settled(&mut self, hook: Box<dyn FnOnce(Option<ErrorCode>) + Send>) {
        self.settled = Some(hook);
    }

    /// Count the outcome and free the place.
    fn settle(&mut self, stored: std::result::Result<usize, ErrorCode>) {
        if let Some(hook) = self.settled.take() {
            hook(stored.err());
        }
        if let Some(place) = self.place.take() {
            match stored {
                Ok(n) => place.0.outcomes.stored(n),
                Err(code) => place.0.outcomes.failed(code),
            }
        }
    }

    /// Settle with the stored events and their ids, or the error.
    pub(crate) fn send(mut self, r: Result<(Vec<PreparedEvent>, Vec<StreamId>)>) {
        self.settle(match &r {
            Ok((events, _)) => Ok(events.len()),
            Err(e) => Err(e.code),
        });
        if let Some(done) = self.done.take() {
            done(r.map(|(events, ids)| to_records(&events, ids)));
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            self.settle(Err(ErrorCode::BusClosed));
            done(Err(Error::closed()));
        }
    }
}

fn to_records(events: &[PreparedEvent], ids: Vec<StreamId>) -> Vec<Record> {
    events
        .iter()
        .zip(ids)
        .map(|(e, id)| e.to_record(id))
        .collect()
}

/// An append waiting for the group commit.
pub(crate) struct AppendRequest {
    pub events: Vec<PreparedEvent>,
    pub reply: Reply,
}

/// Hand an append over with a callback and wait for the outcome.
pub(crate) async fn outcome(hand_off: impl FnOnce(OnStored) -> Result<()>) -> Result<Vec<Record>> {
    let (tx, rx) = oneshot::channel();
    hand_off(Box::new(move |r| {
        let _ = tx.send(r);
    }))?;
    rx.await.unwrap_or_else(|_| Err(Error::closed()))
}

/// The commit task: runs until the bus is dropped or every sender is gone.
pub(crate) async fn run(core: Weak<Core>, mut rx: mpsc::UnboundedReceiver<AppendRequest>) {
    let mut pending: Option<AppendRequest> = None;
    loop {
        let first = match pending.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        let mut batch = vec![first];
        let mut count = batch[0].events.len();
        while count < GROUP_COMMIT_EVENTS {
            match rx.try_recv() {
                Ok(r) if count + r.events.len() <= GROUP_COMMIT_EVENTS => {
                    count += r.events.len();
                    batch.push(r);
                }
                Ok(r) => {
                    pending = Some(r);
                    break;
                }
                Err(_) => break,
            }
        }
        let Some(c) = core.upgrade() else { return };
        let result = if c.is_closed() {
            Err(Error::closed())
        } else {
            let groups: Vec<&[PreparedEvent]> = batch.iter().map(|r| r.events.as_slice()).collect();
            c.store.append(&groups).await
        };
        drop(c);
        match result {
            Ok(per_group) => {
                for (req, r) in batch.into_iter().zip(per_group) {
                    req.reply.send(r.map(|ids| (req.events, ids)));
                }
            }
            Err(e) => {
                for req in batch {
                    req.reply.send(Err(e.clone()));
                }
            }
        }
    }
}
