//! The embedded store: the same ids, ordering, channels and index as Redis, in this process.
//!
//! Append and fan-out happen under one lock, which is what the Lua script's atomicity gives
//! on Redis: a subscriber sees every event either in its read or on its channel.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{CatchUpPage, ReadOptions, Run, DEFAULT_READ_LIMIT};
use crate::error::Result;
use crate::event::{kind_channel, IndexEntry, PreparedEvent, Record, SharedRecord, StreamRef};
use crate::id::StreamId;
use crate::live::Hub;

#[derive(Default)]
struct MemStream {
    entries: VecDeque<SharedRecord>,
    last_id: StreamId,
    max_deleted: StreamId,
}

#[derive(Default)]
struct SortedSet {
    scores: HashMap<String, u64>,
    order: BTreeSet<(u64, String)>,
}

#[derive(Default)]
struct State {
    streams: HashMap<String, MemStream>,
    sets: HashMap<String, SortedSet>,
}

/// Streams, sorted sets and fan-out in memory.
pub struct MemoryStore {
    state: Mutex<State>,
    prefix: String,
    max_len: Option<u64>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl MemoryStore {
    /// An empty store.
    pub fn new(prefix: &str, max_len: Option<u64>) -> Self {
        MemoryStore {
            state: Mutex::new(State::default()),
            prefix: prefix.to_owned(),
            max_len,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Store, publish and index every group; nothing here can refuse a group.
    pub fn append(&self, groups: &[&[PreparedEvent]], hub: &Hub) -> Vec<Result<Vec<StreamId>>> {
        let mut st = self.lock();
        let mut out = Vec::with_capacity(groups.len());
        for group in groups {
            let mut ids = Vec::with_capacity(group.len());
            for e in group.iter() {
                let key = e.stream.key(&self.prefix);
                let stream = st.streams.entry(key).or_default();
                let ms = now_ms().max(stream.last_id.ms);
                let id = if ms == stream.last_id.ms {
                    stream.last_id.next()
                } else {
                    StreamId::new(ms, 0)
                };
                stream.last_id = id;
                let record: SharedRecord = Arc::new(e.to_record(id));
                stream.entries.push_back(record.clone());
                if let Some(max) = self.max_len {
                    while stream.entries.len() as u64 > max {
                        if let Some(old) = stream.entries.pop_front() {
                            stream.max_deleted = old.id;
                        }
                    }
                }
                if let Some(index) = &e.index {
                    let set_key = match index {
                        IndexEntry::Flow(name) => format!("{}:flows:{name}", self.prefix),
                        IndexEntry::Trigger => format!("{}:triggers", self.prefix),
                    };
                    let set = st.sets.entry(set_key).or_default();
                    if !set.scores.contains_key(&e.stream.id) {
                        set.scores.insert(e.stream.id.clone(), id.ms);
                        set.order.insert((id.ms, e.stream.id.clone()));
                    }
                }
                // Fan-out under the store lock keeps channel order equal to stream order.
                hub.dispatch(&e.stream.channel(&self.prefix), &record);
                hub.dispatch(&kind_channel(&self.prefix, e.kind()), &record);
                ids.push(id);
            }
            out.push(Ok(ids));
        }
        out
    }

    /// A range of a stream.
    pub fn read(&self, stream: &StreamRef, opts: &ReadOptions) -> Vec<Record> {
        let st = self.lock();
        let Some(s) = st.streams.get(&stream.key(&self.prefix)) else {
            return Vec::new();
        };
        let limit = opts.limit.unwrap_or(DEFAULT_READ_LIMIT);
        let lo = match opts.after {
            Some(a) => s.entries.partition_point(|r| r.id <= a),
            None => 0,
        };
        let hi = match opts.before {
            Some(b) => s.entries.partition_point(|r| r.id < b),
            None => s.entries.len(),
        };
        if lo >= hi {
            return Vec::new();
        }
        let range = s.entries.range(lo..hi);
        if opts.reverse {
            range.rev().take(limit).map(|r| (**r).clone()).collect()
        } else {
            range.take(limit).map(|r| (**r).clone()).collect()
        }
    }

    /// The next page after `after`.
    pub fn catch_up(
        &self,
        stream: &StreamRef,
        after: StreamId,
        count: usize,
        check_gap: bool,
    ) -> CatchUpPage {
        let st = self.lock();
        let Some(s) = st.streams.get(&stream.key(&self.prefix)) else {
            return CatchUpPage::default();
        };
        let lo = s.entries.partition_point(|r| r.id <= after);
        CatchUpPage {
            records: s
                .entries
                .range(lo..)
                .take(count)
                .map(|r| (**r).clone())
                .collect(),
            gap: check_gap && s.max_deleted > after,
        }
    }

    /// Runs of a flow, newest first.
    pub fn list_runs(&self, name: &str, limit: usize, offset: usize) -> Vec<Run> {
        let st = self.lock();
        let Some(set) = st.sets.get(&format!("{}:flows:{name}", self.prefix)) else {
            return Vec::new();
        };
        set.order
            .iter()
            .rev()
            .skip(offset)
            .take(limit)
            .map(|(ms, id)| Run {
                id: id.clone(),
                started_ms: *ms,
            })
            .collect()
    }
}
