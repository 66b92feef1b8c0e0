//! The embedded store: the same ids, ordering, channels and index as Redis, in this process.
//!
//! Append and fan-out happen under one lock, which is what the Lua script's atomicity gives
//! on Redis: a subscriber sees every event either in its read or on its channel.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::now_ms;

use super::{CatchUpPage, ReadOptions, Run, DEFAULT_READ_LIMIT};
use crate::error::Result;
use crate::event::{
    kind_channel, IndexEntry, PreparedEvent, Record, SharedRecord, StreamRef, LIVE_SEP,
};
use crate::id::StreamId;
use crate::live::Hub;
use serde_json::Value;

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
struct MemHash {
    fields: HashMap<String, String>,
    expires: Option<Instant>,
}

#[derive(Default)]
struct State {
    streams: HashMap<String, MemStream>,
    sets: HashMap<String, SortedSet>,
    hashes: HashMap<String, MemHash>,
    plain_sets: HashMap<String, HashSet<String>>,
    leases: HashMap<String, Instant>,
    timers: BTreeSet<(u64, String)>,
    timer_due: HashMap<String, u64>,
    inflight: BTreeSet<(u64, String)>,
    inflight_until: HashMap<String, u64>,
    timer_data: HashMap<String, String>,
}

impl State {
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

    /// Add a member to a set, or remove it (an empty set is no set).
    fn change_set(&mut self, key: &str, member: &str, add: bool) {
        if add {
            self.plain_sets
                .entry(key.to_owned())
                .or_default()
                .insert(member.to_owned());
        } else if let Some(set) = self.plain_sets.get_mut(key) {
            set.remove(member);
            if set.is_empty() {
                self.plain_sets.remove(key);
            }
        }
    }

    /// Add (or move) a timer.
    fn add_timer(&mut self, id: &str, due_ms: u64, payload: &str) {
        if let Some(old) = self.timer_due.insert(id.to_owned(), due_ms) {
            self.timers.remove(&(old, id.to_owned()));
        }
        self.timers.insert((due_ms, id.to_owned()));
        self.timer_data.insert(id.to_owned(), payload.to_owned());
    }
}

/// Streams, sorted sets and fan-out in memory.
pub struct MemoryStore {
    state: Mutex<State>,
    prefix: String,
    max_len: Option<u64>,
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
        groups
            .iter()
            .map(|group| {
                Ok(group
                    .iter()
                    .map(|e| self.append_one(&mut st, e, hub))
                    .collect())
            })
            .collect()
    }

    fn append_one(&self, st: &mut State, e: &PreparedEvent, hub: &Hub) -> StreamId {
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
        self.resolve_awaits(st, e, id, &record, hub);
        id
    }

    /// The same matching `append.lua` does: resolve the event awaits this event satisfies.
    fn resolve_awaits(
        &self,
        st: &mut State,
        e: &PreparedEvent,
        id: StreamId,
        record: &Record,
        hub: &Hub,
    ) {
        let reg_key = format!("{}:await:kind:{}", self.prefix, e.kind());
        let Some(reg) = st.hash(&reg_key) else { return };
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
            if let Some(reg) = st.hash(&reg_key) {
                reg.fields.remove(&await_id);
            }
            let await_key = format!("{}:await:{await_id}", self.prefix);
            let Some(h) = st.hash(&await_key) else {
                continue;
            };
            if h.fields.get("status").map(String::as_str) != Some("pending") {
                continue;
            }
            let now = now_ms();
            let mut payload = format!(
                "{id}{LIVE_SEP}{}{LIVE_SEP}{}",
                e.stream.stream_type, e.stream.id
            );
            for (k, v) in &e.fields {
                payload.push(LIVE_SEP);
                payload.push_str(k);
                payload.push(LIVE_SEP);
                payload.push_str(v);
            }
            h.fields.insert("status".into(), "resolved".into());
            h.fields.insert("result".into(), payload);
            h.fields.insert("resolvedMs".into(), now.to_string());
            h.fields.insert("resumed".into(), "1".into());
            h.expires =
                Some(Instant::now() + Duration::from_millis(super::awaits::RESOLVED_TTL_MS));
            let get = |k: &str| h.fields.get(k).cloned();
            let (flow, step, created, owner, job) = (
                get("flow"),
                get("step"),
                get("createdMs"),
                get("owner"),
                get("job"),
            );
            if let (Some(flow), Some(step)) = (flow, step) {
                let waited =
                    now.saturating_sub(created.and_then(|c| c.parse().ok()).unwrap_or(now));
                let resumed = PreparedEvent {
                    stream: StreamRef {
                        stream_type: "flow".into(),
                        id: flow,
                    },
                    index: None,
                    fields: vec![
                        ("kind", "step.resumed".into()),
                        ("step", step),
                        (
                            "data",
                            serde_json::json!({"reason": "event", "awaitDuration": waited})
                                .to_string(),
                        ),
                        (
                            "meta",
                            serde_json::json!({"awaitType": "event", "jobId": job}).to_string(),
                        ),
                    ],
                };
                self.append_one(st, &resumed, hub);
            }
            if let Some(owner) = owner {
                let note = format!(
                    "0-0{LIVE_SEP}sched{LIVE_SEP}{owner}{LIVE_SEP}kind{LIVE_SEP}sched.resolved{LIVE_SEP}data{LIVE_SEP}{}",
                    serde_json::json!({ "await": await_id })
                );
                if let Some(rec) = crate::event::record_from_live(&note) {
                    hub.dispatch(
                        &format!("{}:sched:inst:{owner}", self.prefix),
                        &Arc::new(rec),
                    );
                }
            }
        }
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

/// Scheduler primitives in memory (see `Store`).
impl MemoryStore {
    pub(crate) fn hash_get_all(&self, key: &str) -> HashMap<String, String> {
        self.lock()
            .hash(key)
            .map(|h| h.fields.clone())
            .unwrap_or_default()
    }

    pub(crate) fn hash_set(&self, key: &str, pairs: &[(&str, String)]) {
        let mut st = self.lock();
        st.hash(key);
        let h = st.hashes.entry(key.to_owned()).or_default();
        for (k, v) in pairs {
            h.fields.insert((*k).to_owned(), v.clone());
        }
    }

    pub(crate) fn hash_cas(
        &self,
        key: &str,
        field: &str,
        expect: super::Expect<'_>,
        write: super::CasWrite<'_>,
    ) -> super::CasResult {
        let mut st = self.lock();
        let existing = st.hash(key);
        let exists = existing.is_some();
        let guarded = write.guards.iter().all(|(f, v)| {
            existing
                .as_ref()
                .and_then(|h| h.fields.get(*f))
                .is_some_and(|x| x == v)
        });
        let current = existing.and_then(|h| h.fields.get(field).cloned());
        let ok = guarded
            && match expect {
                super::Expect::Absent => current.is_none(),
                super::Expect::Value(v) => current.as_deref() == Some(v),
            };
        if ok {
            let h = st.hashes.entry(key.to_owned()).or_default();
            h.fields.insert(field.to_owned(), write.new.to_owned());
            for (k, v) in write.extra {
                h.fields.insert((*k).to_owned(), v.clone());
            }
            if write.ttl_ms > 0 {
                h.expires = Some(Instant::now() + Duration::from_millis(write.ttl_ms));
            }
            if let Some(t) = write.timer {
                st.add_timer(t.id, t.due_ms, t.payload);
            }
            for c in write.sets {
                st.change_set(c.key, c.member, c.add);
            }
        }
        super::CasResult {
            set: ok,
            exists,
            current,
        }
    }

    pub(crate) fn hash_del(&self, key: &str, fields: &[&str]) {
        let mut st = self.lock();
        if let Some(h) = st.hash(key) {
            for f in fields {
                h.fields.remove(*f);
            }
            if h.fields.is_empty() {
                st.hashes.remove(key);
            }
        }
    }

    pub(crate) fn set_update(&self, key: &str, member: &str, add: bool) {
        self.lock().change_set(key, member, add);
    }

    pub(crate) fn set_members(&self, key: &str) -> Vec<String> {
        self.lock()
            .plain_sets
            .get(key)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn lease_renew(&self, key: &str, ttl_ms: u64) {
        self.lock().leases.insert(
            key.to_owned(),
            Instant::now() + Duration::from_millis(ttl_ms),
        );
    }

    pub(crate) fn exists(&self, key: &str) -> bool {
        let mut st = self.lock();
        if let Some(until) = st.leases.get(key) {
            if *until > Instant::now() {
                return true;
            }
            st.leases.remove(key);
        }
        st.hash(key).is_some() || st.plain_sets.contains_key(key) || st.streams.contains_key(key)
    }

    pub(crate) fn delete(&self, key: &str) {
        let mut st = self.lock();
        st.leases.remove(key);
        st.hashes.remove(key);
        st.plain_sets.remove(key);
    }

    pub(crate) fn timer_add(&self, id: &str, due_ms: u64, payload: &str) {
        self.lock().add_timer(id, due_ms, payload);
    }

    pub(crate) fn timer_claim(
        &self,
        now_ms: u64,
        limit: usize,
        lease_ms: u64,
    ) -> Vec<super::ClaimedTimer> {
        let mut st = self.lock();
        let expired: Vec<(u64, String)> = st
            .inflight
            .iter()
            .take_while(|(until, _)| *until <= now_ms)
            .take(limit)
            .cloned()
            .collect();
        for (until, id) in expired {
            st.inflight.remove(&(until, id.clone()));
            st.inflight_until.remove(&id);
            st.timer_due.insert(id.clone(), now_ms);
            st.timers.insert((now_ms, id));
        }
        let due: Vec<(u64, String)> = st
            .timers
            .iter()
            .take_while(|(d, _)| *d <= now_ms)
            .take(limit)
            .cloned()
            .collect();
        let mut out = Vec::with_capacity(due.len());
        for (d, id) in due {
            st.timers.remove(&(d, id.clone()));
            st.timer_due.remove(&id);
            st.inflight.insert((now_ms + lease_ms, id.clone()));
            st.inflight_until.insert(id.clone(), now_ms + lease_ms);
            out.push(super::ClaimedTimer {
                payload: st.timer_data.get(&id).cloned().unwrap_or_default(),
                id,
                due_ms: d,
            });
        }
        out
    }

    pub(crate) fn timer_remove(&self, id: &str) {
        let mut st = self.lock();
        if let Some(d) = st.timer_due.remove(id) {
            st.timers.remove(&(d, id.to_owned()));
        }
        if let Some(u) = st.inflight_until.remove(id) {
            st.inflight.remove(&(u, id.to_owned()));
        }
        st.timer_data.remove(id);
    }

    pub(crate) fn timer_next(&self) -> Option<u64> {
        let st = self.lock();
        let a = st.timers.first().map(|(d, _)| *d);
        let b = st.inflight.first().map(|(u, _)| *u);
        a.into_iter().chain(b).min()
    }
}
