//! Control messages between instances — an await resolved, a job ended, a retry is due, a
//! timer was added — their encoding (a record-shaped live message; the append script
//! publishes `sched.resolved` in the same shape) and the loops that listen for them.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Semaphore;

use super::{lock, Instance, Scheduler};
use crate::error::{ErrorCode, Result};
use crate::event::LIVE_SEP;
use crate::live::{End, Item, Subscription};

/// Most inbox notes one instance acts on at once.
const NOTE_CONCURRENCY: usize = 1024;

/// A control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Note {
    /// An await the receiver owns changed state (`sched.resolved`).
    Resolved { await_id: String },
    /// A job whose `run` call waits on the receiver has ended (`sched.ended`).
    Ended { job: String },
    /// A retry of a job the receiver owns is due (`sched.run`), `late_ms` after its time.
    Run { job: String, late_ms: Option<u64> },
    /// A timer due at `due_ms` was added (`sched.wake`, to every instance).
    Wake { due_ms: u64 },
}

/// How a note reads as a record: `{kind, data}`.
#[derive(Deserialize)]
struct NoteRecord {
    kind: String,
    #[serde(default)]
    data: Value,
}

impl Note {
    fn kind(&self) -> &'static str {
        match self {
            Note::Resolved { .. } => "sched.resolved",
            Note::Ended { .. } => "sched.ended",
            Note::Run { .. } => "sched.run",
            Note::Wake { .. } => "sched.wake",
        }
    }

    fn data(&self) -> String {
        match self {
            Note::Resolved { await_id } => serde_json::json!({ "await": await_id }),
            Note::Ended { job } => serde_json::json!({ "job": job }),
            Note::Run { job, late_ms } => serde_json::json!({ "job": job, "lateMs": late_ms }),
            Note::Wake { due_ms } => return due_ms.to_string(),
        }
        .to_string()
    }

    /// The live message carrying this note, addressed to `subject`.
    pub fn encode(&self, subject: &str) -> String {
        format!(
            "0-0{LIVE_SEP}sched{LIVE_SEP}{subject}{LIVE_SEP}kind{LIVE_SEP}{}{LIVE_SEP}data{LIVE_SEP}{}",
            self.kind(),
            self.data()
        )
    }

    /// The note a received record (JSON) carries, if it is one.
    pub fn decode(record_json: &str) -> Option<Note> {
        let r: NoteRecord = serde_json::from_str(record_json).ok()?;
        let text = |k: &str| r.data[k].as_str().map(str::to_owned);
        Some(match r.kind.as_str() {
            "sched.resolved" => Note::Resolved {
                await_id: text("await")?,
            },
            "sched.ended" => Note::Ended { job: text("job")? },
            "sched.run" => Note::Run {
                job: text("job").unwrap_or_default(),
                late_ms: r.data["lateMs"].as_u64(),
            },
            "sched.wake" => Note::Wake {
                due_ms: r.data.as_u64().unwrap_or(0),
            },
            _ => return None,
        })
    }
}

impl Scheduler {
    /// Send `note` to instance `to`.
    pub(super) async fn tell(&self, to: &str, note: Note) -> Result<()> {
        let channel = self.instance.keys.inbox_channel(to);
        self.instance.bus.publish(&channel, &note.encode(to)).await
    }

    /// Tell every instance that a timer due at `due_ms` was added.
    pub(super) async fn tell_all_timer_added(&self, due_ms: u64) -> Result<()> {
        let channel = self.instance.keys.wake_channel();
        let note = Note::Wake { due_ms };
        self.instance
            .bus
            .publish(&channel, &note.encode("wake"))
            .await
    }

    /// Act on a note from this instance's inbox.
    async fn receive(&self, note: Note) {
        let (what, done) = match &note {
            Note::Resolved { await_id } => {
                ("settling a resolved await", self.settle(await_id).await)
            }
            Note::Ended { job } => ("settling an ended run", self.settle_run(job).await),
            Note::Run { job, late_ms } => (
                "starting a due retry",
                self.start_owned(job, *late_ms).await,
            ),
            Note::Wake { .. } => {
                self.instance.wakeups.timers.notify_one();
                return;
            }
        };
        if done.is_err() {
            // what the note asked for is also found by the next repair pass or re-check
            self.instance.needs_repair.store(true, Ordering::Release);
        }
        self.report("CONTROL_NOTE_FAILED", what, done);
    }
}

/// Which control channel a loop listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ControlChannel {
    /// Notes for this instance.
    Inbox,
    /// Timer wake-ups for every instance.
    Wake,
}

impl ControlChannel {
    fn name(self) -> &'static str {
        match self {
            ControlChannel::Inbox => "inbox",
            ControlChannel::Wake => "timer wake-up",
        }
    }
}

/// Receive notes on `channel` until the scheduler is closed or dropped; a channel cut off
/// (its queue overflowed) is subscribed again.
pub(super) async fn control_loop(
    instance: Weak<Instance>,
    channel: ControlChannel,
    mut sub: Arc<Subscription>,
) {
    let acting = Arc::new(Semaphore::new(NOTE_CONCURRENCY));
    loop {
        let batch = sub.next_batch(1000).await;
        {
            let Some(strong) = instance.upgrade() else {
                return;
            };
            if strong.closed.load(Ordering::Acquire) {
                return;
            }
            let s = Scheduler { instance: strong };
            if channel == ControlChannel::Wake {
                // one wake-up covers the whole batch
                if !batch.items.is_empty() {
                    s.instance.wakeups.timers.notify_one();
                }
            } else {
                // acted on together (each is independent and may be repeated), at most
                // NOTE_CONCURRENCY at once: timers due together send their notes together
                for item in batch.items {
                    let Item::Event(rec) = item else { continue };
                    let Some(note) = Note::decode(&rec.json) else {
                        continue;
                    };
                    let Ok(slot) = acting.clone().acquire_owned().await else {
                        return;
                    };
                    let s = s.clone();
                    tokio::spawn(async move {
                        s.receive(note).await;
                        drop(slot);
                    });
                }
            }
        }
        if let Some(end) = batch.end {
            match subscribe_again(&instance, channel, &sub, end).await {
                Some(again) => sub = again,
                None => return,
            }
        }
    }
}

/// `old` on `channel` ended without the scheduler closing: warn, subscribe again (trying
/// until it works, the scheduler closes or the bus is closed), then look up what the channel
/// may have carried meanwhile.
async fn subscribe_again(
    instance: &Weak<Instance>,
    channel: ControlChannel,
    old: &Arc<Subscription>,
    end: End,
) -> Option<Arc<Subscription>> {
    let wakeups = {
        let strong = instance.upgrade()?;
        lock(&strong.channels).retain(|c| !Arc::ptr_eq(c, old));
        let detail = match end {
            End::Failed(e) => e.to_string(),
            End::Closed => "closed".to_owned(),
        };
        strong.bus.warn(
            "CONTROL_CHANNEL_LOST",
            format!(
                "the scheduler's {} channel was cut off; subscribing again",
                channel.name()
            ),
            Some(detail),
        );
        strong.wakeups.clone()
    };
    let mut backoff = Duration::from_millis(50);
    loop {
        let s = Scheduler {
            instance: instance.upgrade()?,
        };
        if s.instance.closed.load(Ordering::Acquire) {
            return None;
        }
        match s.listen(channel).await {
            Ok(sub) => {
                if s.instance.closed.load(Ordering::Acquire) {
                    sub.unsubscribe();
                    return None;
                }
                match channel {
                    ControlChannel::Inbox => {
                        s.instance.needs_repair.store(true, Ordering::Release);
                        s.recheck().await;
                    }
                    ControlChannel::Wake => s.instance.wakeups.timers.notify_one(),
                }
                return Some(sub);
            }
            Err(e) if e.code == ErrorCode::BusClosed => return None,
            Err(e) => {
                let what = format!("subscribing the {} channel again", channel.name());
                s.report::<()>("CONTROL_CHANNEL_LOST", &what, Err(e));
            }
        }
        drop(s);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = wakeups.stop.notified() => return None,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::record_from_live;

    #[test]
    fn notes_round_trip_through_their_live_message() {
        for note in [
            Note::Resolved {
                await_id: "j:1:0".into(),
            },
            Note::Ended { job: "j".into() },
            Note::Run {
                job: "j".into(),
                late_ms: Some(3),
            },
            Note::Wake { due_ms: 42 },
        ] {
            let rec = record_from_live(&note.encode("inst")).expect("a record");
            assert_eq!(Note::decode(&rec.json), Some(note));
        }
    }
}
