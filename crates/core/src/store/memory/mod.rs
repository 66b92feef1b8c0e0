//! The embedded store: the same ids, ordering, channels and index as Redis, in this process.
//!
//! Append and fan-out happen under one lock, which is what the Lua script's atomicity gives
//! on Redis: a subscriber sees every event either in its read or on its channel. The
//! scheduler's primitives are in `coordination.rs`.

mod coordination;
mod glob;
mod keyspace;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;

use super::awaits::{self, RESOLVED_TTL_MS};
use super::{
    CatchUpPage, EventLog, Fanout, GroupResults, PubSubSource, ReadOptions, Run, Store,
    StoreOptions, DEFAULT_READ_LIMIT,
};
use crate::clock::now_ms;
use crate::error::Result;
use crate::event::{live_payload, record_from_live, IndexEntry, PreparedEvent, Record};
use crate::event::{SharedRecord, StreamRef};
use crate::id::StreamId;
use crate::keys::Keys;

#[derive(Default)]
struct MemStream {
    entries: VecDeque<MemEntry>,
    last_id: StreamId,
    max_deleted: StreamId,
    /// Retention: when the stream goes (as a key's TTL on Redis).
    expires: Option<Instant>,
    /// The index entry (index key, member) its run-starting event made, which goes with it.
    indexed: Option<(String, String)>,
}

impl MemStream {
    /// The id of the next entry: the clock's milliseconds, never below the last id.
    fn next_id(&mut self) -> StreamId {
        let ms = now_ms().max(self.last_id.ms);
        let id = if ms == self.last_id.ms {
            self.last_id.next()
        } else {
            StreamId::new(ms, 0)
        };
        self.last_id = id;
        id
    }

    /// Drop the oldest entries past `max`.
    fn trim(&mut self, max: Option<u64>) {
        if let Some(max) = max {
            while self.entries.len() as u64 > max {
                if let Some(old) = self.entries.pop_front() {
                    self.max_deleted = old.record.id;
                }
            }
        }
    }
}

/// A stream entry: its record, and for an entry appended through the keyspace (not by an
/// emit), its raw fields.
struct MemEntry {
    record: SharedRecord,
    raw: Option<Arc<[(String, String)]>>,
}

impl MemEntry {
    /// The record as a read of `stream` returns it (an entry with raw fields is named after
    /// the stream it is read from, as on Redis).
    fn record_for(&self, stream: &StreamRef) -> Record {
        match &self.raw {
            None => (*self.record).clone(),
            Some(raw) => crate::event::record_from_fields(
                self.record.id,
                &stream.stream_type,
                &stream.id,
                raw.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            ),
        }
    }
}

#[derive(Default)]
struct SortedSet {
    scores: HashMap<String, u64>,
    order: BTreeSet<(u64, String)>,
}

/// A sorted set with any scores (the keyspace's indexes).
#[derive(Default)]
struct Scored {
    scores: HashMap<String, f64>,
    order: BTreeSet<(ScoreKey, String)>,
}

/// A score that orders as Redis orders them (`total_cmp`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct ScoreKey(f64);

impl Eq for ScoreKey {}

impl PartialOrd for ScoreKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ScoreKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A string key (the keyspace's kv).
struct MemString {
    value: String,
    expires: Option<Instant>,
}

#[derive(Default)]
struct MemHash {
    fields: HashMap<String, String>,
    expires: Option<Instant>,
}

/// Timers: due, and claimed (in flight until their claim lease ends).
#[derive(Default)]
struct Timers {
    due: BTreeSet<(u64, String)>,
    due_at: HashMap<String, u64>,
    inflight: BTreeSet<(u64, String)>,
    inflight_until: HashMap<String, u64>,
    payloads: HashMap<String, String>,
}

#[derive(Default)]
struct State {
    streams: HashMap<String, MemStream>,
    indexes: HashMap<String, SortedSet>,
    hashes: HashMap<String, MemHash>,
    sets: HashMap<String, HashSet<String>>,
    leases: HashMap<String, Instant>,
    timers: Timers,
    scored: HashMap<String, Scored>,
    strings: HashMap<String, MemString>,
    /// Streams under retention, by when they go: (expiry, stream key).
    expiring: BTreeSet<(Instant, String)>,
}

impl State {
    /// Remove the streams whose retention ran out, with their index entries. Called by every
    /// event-log call before it looks (what Redis does with a key's TTL, done lazily here);
    /// nothing to do costs one check of an empty set.
    fn expire_due(&mut self) {
        if self.expiring.is_empty() {
            return;
        }
        let now = Instant::now();
        while let Some((at, key)) = self.expiring.first().cloned() {
            if at > now {
                break;
            }
            self.expiring.pop_first();
            // a stream deleted and made anew since has no expiry, or another one
            if self.streams.get(&key).and_then(|s| s.expires) != Some(at) {
                continue;
            }
            let Some(gone) = self.streams.remove(&key) else {
                continue;
            };
            if let Some((index, member)) = gone.indexed {
                if let Some(set) = self.indexes.get_mut(&index) {
                    if let Some(ms) = set.scores.remove(&member) {
                        set.order.remove(&(ms, member));
                    }
                    if set.scores.is_empty() {
                        self.indexes.remove(&index);
                    }
                }
            }
        }
    }

    /// A hash that has not expired.
    fn hash(&mut self, key: &str) -> Option<&mut MemHash> {
        if self
            .hashes
            .get(key)
            .is_some_and(|h| h.expires.is_some_and(|e| e <= Instant::now()))
        {
            self.hashes.remove(key);
        }
        self.hashes.get_mut(key)
    }
}

/// Streams, indexes, the scheduler's state and fan-out, in memory.
pub struct MemoryStore {
    state: Mutex<State>,
    keys: Keys,
    max_len: Option<u64>,
    fanout: Arc<dyn Fanout>,
}

impl MemoryStore {
    /// An empty store that delivers what it publishes to `fanout`.
    pub fn new(opts: &StoreOptions, fanout: Arc<dyn Fanout>) -> Self {
        MemoryStore {
            state: Mutex::new(State::default()),
            keys: Keys::single(&opts.prefix),
            max_len: opts.max_len,
            fanout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Store, publish and index every event of a group; nothing here can refuse one.
    fn append_group(&self, st: &mut State, group: &[PreparedEvent]) -> Vec<StreamId> {
        group
            .iter()
            .map(|e| self.append_one(st, &e.stream, &e.index, &e.fields, e.expire_ms))
            .collect()
    }

    fn append_one(
        &self,
        st: &mut State,
        stream: &StreamRef,
        index: &Option<IndexEntry>,
        fields: &[(&'static str, String)],
        expire_ms: Option<u64>,
    ) -> StreamId {
        let key = self.keys.stream(stream);
        // the key is kept (a copy) only for a stream that starts to expire
        let expiring = expire_ms.map(|ms| (ms, key.clone()));
        let s = st.streams.entry(key).or_default();
        let id = s.next_id();
        let pairs = || fields.iter().map(|(k, v)| (*k, v.as_str()));
        let record: SharedRecord = Arc::new(crate::event::record_from_fields(
            id,
            &stream.stream_type,
            &stream.id,
            pairs(),
        ));
        s.entries.push_back(MemEntry {
            record: record.clone(),
            raw: None,
        });
        s.trim(self.max_len);
        if let Some((ms, key)) = expiring {
            let at = Instant::now() + Duration::from_millis(ms);
            if let Some(old) = s.expires.replace(at) {
                st.expiring.remove(&(old, key.clone()));
            }
            st.expiring.insert((at, key));
        } else if let Some(index) = index {
            let index_key = match index {
                IndexEntry::Flow(name) => self.keys.runs(name),
                IndexEntry::Trigger => self.keys.triggers(),
            };
            s.indexed = Some((index_key.clone(), stream.id.clone()));
            let set = st.indexes.entry(index_key).or_default();
            if !set.scores.contains_key(&stream.id) {
                set.scores.insert(stream.id.clone(), id.ms);
                set.order.insert((id.ms, stream.id.clone()));
            }
        }
        // Fan-out under the store lock keeps channel order equal to stream order.
        self.fanout
            .deliver(&self.keys.live_channel(stream), &record);
        let kind = fields.first().map(|(_, v)| v.as_str()).unwrap_or_default();
        self.fanout.deliver(&self.keys.kind_channel(kind), &record);
        self.resolve_event_awaits(st, stream, kind, id, &record, pairs);
        id
    }

    /// The matching `append.lua` does, following `awaits`: resolve the pending event awaits
    /// of `kind` this event satisfies, append their `step.resumed` and tell their owners.
    fn resolve_event_awaits<'f, I: Iterator<Item = (&'f str, &'f str)>>(
        &self,
        st: &mut State,
        stream: &StreamRef,
        kind: &str,
        id: StreamId,
        record: &Record,
        fields: impl Fn() -> I,
    ) {
        let registry = self.keys.event_awaits(kind);
        let Some(reg) = st.hash(&registry) else {
            return;
        };
        let Ok(event) = serde_json::from_str::<Value>(&record.json) else {
            return;
        };
        let matched: Vec<String> = reg
            .fields
            .iter()
            .filter(|(_, cond)| {
                serde_json::from_str::<Value>(cond)
                    .is_ok_and(|c| crate::matching::matches(&event, &c))
            })
            .map(|(await_id, _)| await_id.clone())
            .collect();
        for await_id in matched {
            if let Some(reg) = st.hash(&registry) {
                reg.fields.remove(&await_id);
            }
            let Some(h) = st.hash(&self.keys.await_state(&await_id)) else {
                continue;
            };
            if h.fields.get("status").map(String::as_str) != Some(awaits::PENDING) {
                continue;
            }
            let now = now_ms();
            let get = |k: &str| h.fields.get(k).cloned();
            let (flow, step, created, owner, job) = (
                get("flow"),
                get("step"),
                get("createdMs"),
                get("owner"),
                get("job"),
            );
            let resumes = flow.is_some() && step.is_some();
            let payload = live_payload(id, stream, fields());
            for (k, v) in awaits::resolution_fields(&payload, now, resumes, None) {
                h.fields.insert(k.to_owned(), v);
            }
            h.expires = Some(Instant::now() + Duration::from_millis(RESOLVED_TTL_MS));
            if let (Some(flow), Some(step)) = (flow, step) {
                let waited =
                    now.saturating_sub(created.and_then(|c| c.parse().ok()).unwrap_or(now));
                let resumed = awaits::step_resumed_fields(&step, waited, job.as_deref());
                let flow_stream = StreamRef {
                    stream_type: "flow".into(),
                    id: flow,
                };
                self.append_one(st, &flow_stream, &None, &resumed, None);
            }
            if let Some(owner) = owner {
                let note = awaits::resolved_note(&owner, &await_id);
                if let Some(rec) = record_from_live(&note) {
                    self.fanout
                        .deliver(&self.keys.inbox_channel(&owner), &Arc::new(rec));
                }
            }
        }
    }
}

#[async_trait]
impl EventLog for MemoryStore {
    async fn append(&self, groups: &[&[PreparedEvent]]) -> Result<GroupResults> {
        let mut st = self.lock();
        st.expire_due();
        Ok(groups
            .iter()
            .map(|g| Ok(self.append_group(&mut st, g)))
            .collect())
    }

    fn append_now(&self, group: &[PreparedEvent]) -> Option<Result<Vec<StreamId>>> {
        let mut st = self.lock();
        st.expire_due();
        Some(Ok(self.append_group(&mut st, group)))
    }

    async fn read(&self, stream: &StreamRef, opts: &ReadOptions) -> Result<Vec<Record>> {
        let mut st = self.lock();
        st.expire_due();
        let Some(s) = st.streams.get(&self.keys.stream(stream)) else {
            return Ok(Vec::new());
        };
        let limit = opts.limit.unwrap_or(DEFAULT_READ_LIMIT);
        let lo = match opts.after {
            Some(a) => s.entries.partition_point(|e| e.record.id <= a),
            None => 0,
        };
        let hi = match opts.before {
            Some(b) => s.entries.partition_point(|e| e.record.id < b),
            None => s.entries.len(),
        };
        if lo >= hi {
            return Ok(Vec::new());
        }
        let range = s.entries.range(lo..hi);
        Ok(if opts.reverse {
            range
                .rev()
                .take(limit)
                .map(|e| e.record_for(stream))
                .collect()
        } else {
            range.take(limit).map(|e| e.record_for(stream)).collect()
        })
    }

    async fn catch_up(
        &self,
        stream: &StreamRef,
        after: StreamId,
        count: usize,
        check_gap: bool,
    ) -> Result<CatchUpPage> {
        let mut st = self.lock();
        st.expire_due();
        let Some(s) = st.streams.get(&self.keys.stream(stream)) else {
            return Ok(CatchUpPage::default());
        };
        let lo = s.entries.partition_point(|e| e.record.id <= after);
        Ok(CatchUpPage {
            records: s
                .entries
                .range(lo..)
                .take(count)
                .map(|e| e.record_for(stream))
                .collect(),
            gap: check_gap && s.max_deleted > after,
        })
    }

    async fn list_runs(&self, name: &str, limit: usize, offset: usize) -> Result<Vec<Run>> {
        let mut st = self.lock();
        st.expire_due();
        let Some(set) = st.indexes.get(&self.keys.runs(name)) else {
            return Ok(Vec::new());
        };
        Ok(set
            .order
            .iter()
            .rev()
            .skip(offset)
            .take(limit)
            .map(|(ms, id)| Run {
                id: id.clone(),
                started_ms: *ms,
            })
            .collect())
    }

    async fn index_run(&self, name: &str, id: &str, started_ms: u64) -> Result<()> {
        let mut st = self.lock();
        let set = st.indexes.entry(self.keys.runs(name)).or_default();
        if let Some(old) = set.scores.insert(id.to_owned(), started_ms) {
            set.order.remove(&(old, id.to_owned()));
        }
        set.order.insert((started_ms, id.to_owned()));
        Ok(())
    }
}

impl Store for MemoryStore {
    fn keys(&self) -> &Keys {
        &self.keys
    }

    fn pubsub(&self) -> Option<Arc<dyn PubSubSource>> {
        None
    }

    fn close(&self) {}
}
