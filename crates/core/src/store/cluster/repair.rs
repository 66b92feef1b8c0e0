//! The outbox repair pass: finds appends whose second step (index entries, event awaits)
//! did not happen — the process died, or the step failed — and does it. One process at a
//! time runs the periodic pass (a lease in the coordination slot); a process whose own second
//! step failed runs it soon, without the lease.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use redis::cluster_routing::Slot;
use redis::Value;

use super::slots::{outbox_of, slot_tags};
use super::{Second, Shared, SEP};
use crate::clock::now_ms;
use crate::error::Result;
use crate::event::StreamRef;
use crate::store::redis::reply::text;

/// Outbox entries one repair pass takes from one slot.
const REPAIR_BATCH: usize = 200;
/// Slots the repair pass asks about at once.
const REPAIR_CONCURRENCY: usize = 64;

/// Every `interval` (sooner after a failed second step), while the store lives and is open.
pub(super) async fn run(shared: Weak<Shared>, interval: Duration) {
    let tick = interval.min(Duration::from_secs(1));
    let mut since = Duration::ZERO;
    loop {
        tokio::time::sleep(tick).await;
        since += tick;
        let Some(s) = shared.upgrade() else { return };
        if s.closed.load(Ordering::Acquire) {
            return;
        }
        let due = s.repair_due.swap(false, Ordering::AcqRel);
        if !due && since < interval {
            continue;
        }
        since = Duration::ZERO;
        let lease = s.keys().outbox_repair_lease();
        let ttl = interval.as_millis() as u64;
        let mine = due
            || s.diagnostics
                .check(
                    "REPAIR_LEASE_FAILED",
                    "taking the outbox repair lease",
                    s.cmds.lease_take(&lease, ttl).await,
                )
                .unwrap_or(false);
        if mine {
            if let Err(e) = s.repair(interval).await {
                s.diagnostics.warn(
                    "OUTBOX_REPAIR_FAILED",
                    "the outbox repair pass failed; it runs again soon",
                    Some(e.to_string()),
                );
                s.repair_due.store(true, Ordering::Release);
            }
        }
    }
}

impl Shared {
    /// Find outbox entries older than `grace` in every slot and do their second step.
    async fn repair(&self, grace: Duration) -> Result<()> {
        let cutoff = now_ms().saturating_sub(grace.as_millis() as u64);
        let found: Vec<(Slot, Vec<String>)> = stream::iter(slot_tags().keys().copied())
            .map(|slot| async move {
                let mut cmd = redis::cmd("ZRANGE");
                cmd.arg(outbox_of(self.keys(), slot))
                    .arg("-inf")
                    .arg(cutoff)
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(REPAIR_BATCH);
                let cmd = &cmd;
                let r: Result<Vec<String>> = self
                    .conn()
                    .send(|mut c| async move { cmd.query_async(&mut c).await })
                    .await;
                (slot, r)
            })
            .buffer_unordered(REPAIR_CONCURRENCY)
            .filter_map(|(slot, r)| async move {
                match r {
                    Ok(m) if !m.is_empty() => Some(Ok((slot, m))),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                }
            })
            .collect::<Vec<Result<_>>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        for (slot, members) in found {
            self.repair_slot(slot, members).await?;
        }
        Ok(())
    }

    async fn repair_slot(&self, slot: Slot, members: Vec<String>) -> Result<()> {
        // read each noted event back from its stream
        let mut entries = Vec::new();
        let mut pipe = redis::pipe();
        for m in &members {
            let parts: Vec<&str> = m.splitn(4, SEP).collect();
            let [id, stype, subject, index] = parts[..] else {
                continue;
            };
            let stream = StreamRef {
                stream_type: stype.to_owned(),
                id: subject.to_owned(),
            };
            pipe.cmd("XRANGE")
                .arg(self.keys().stream(&stream))
                .arg(id)
                .arg(id);
            entries.push((id, stype, subject, index));
        }
        let fetched: Vec<Value> = if entries.is_empty() {
            Vec::new()
        } else {
            let pipe = &pipe;
            self.conn()
                .send(|mut c| async move { pipe.query_async(&mut c).await })
                .await?
        };
        let texts: Vec<Vec<String>> = fetched.iter().map(entry_fields).collect();
        let mut second = Vec::new();
        for ((id, stype, subject, index), fields) in entries.iter().zip(&texts) {
            if fields.is_empty() {
                continue; // trimmed or deleted since: nothing to index or match
            }
            second.push(Second {
                id: (*id).to_owned(),
                stream_type: stype,
                subject,
                index: (*index).to_owned(),
                fields: fields
                    .chunks_exact(2)
                    .map(|kv| (kv[0].as_str(), kv[1].as_str()))
                    .collect(),
            });
        }
        if !second.is_empty() {
            self.second_step(&second).await?;
        }
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(outbox_of(self.keys(), slot)).arg(&members);
        let cmd = &cmd;
        self.conn()
            .send(|mut c| async move { cmd.query_async::<()>(&mut c).await })
            .await
    }
}

/// The field/value strings of the one entry an `XRANGE id id` returned (empty if none).
fn entry_fields(v: &Value) -> Vec<String> {
    let Value::Array(entries) = v else {
        return Vec::new();
    };
    let Some(Value::Array(entry)) = entries.first() else {
        return Vec::new();
    };
    match entry.get(1) {
        Some(Value::Array(fields)) => fields.iter().map(text).collect(),
        _ => Vec::new(),
    }
}
