//! The scheduler's primitives in memory: hashes with compare-and-set, sets, leases and
//! timers, each call one step under the store lock (as each Redis command or script is).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{MemoryStore, State};
use crate::error::Result;
use crate::event::message_record;
use crate::store::{CasResult, CasWrite, ClaimedTimer, Coordination, Expect};

impl State {
    /// Add a member to a set, or remove it (an empty set is no set).
    fn change_set(&mut self, key: &str, member: &str, add: bool) {
        if add {
            self.sets
                .entry(key.to_owned())
                .or_default()
                .insert(member.to_owned());
        } else if let Some(set) = self.sets.get_mut(key) {
            set.remove(member);
            if set.is_empty() {
                self.sets.remove(key);
            }
        }
    }

    /// Add (or move) a timer.
    fn add_timer(&mut self, id: &str, due_ms: u64, payload: &str) {
        let t = &mut self.timers;
        if let Some(old) = t.due_at.insert(id.to_owned(), due_ms) {
            t.due.remove(&(old, id.to_owned()));
        }
        t.due.insert((due_ms, id.to_owned()));
        t.payloads.insert(id.to_owned(), payload.to_owned());
    }
}

#[async_trait]
impl Coordination for MemoryStore {
    async fn hash_get_all(&self, key: &str) -> Result<HashMap<String, String>> {
        Ok(self
            .lock()
            .hash(key)
            .map(|h| h.fields.clone())
            .unwrap_or_default())
    }

    async fn hash_set(&self, key: &str, pairs: &[(&str, String)]) -> Result<()> {
        let mut st = self.lock();
        st.hash(key);
        let h = st.hashes.entry(key.to_owned()).or_default();
        for (k, v) in pairs {
            h.fields.insert((*k).to_owned(), v.clone());
        }
        Ok(())
    }

    async fn compare_and_set(
        &self,
        key: &str,
        field: &str,
        expect: Expect<'_>,
        write: CasWrite<'_>,
    ) -> Result<CasResult> {
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
                Expect::Absent => current.is_none(),
                Expect::Value(v) => current.as_deref() == Some(v),
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
        Ok(CasResult {
            set: ok,
            exists,
            current,
        })
    }

    async fn hash_del(&self, key: &str, fields: &[&str]) -> Result<()> {
        let mut st = self.lock();
        if let Some(h) = st.hash(key) {
            for f in fields {
                h.fields.remove(*f);
            }
            if h.fields.is_empty() {
                st.hashes.remove(key);
            }
        }
        Ok(())
    }

    async fn set_update(&self, key: &str, member: &str, add: bool) -> Result<()> {
        self.lock().change_set(key, member, add);
        Ok(())
    }

    async fn set_members(&self, key: &str) -> Result<Vec<String>> {
        Ok(self
            .lock()
            .sets
            .get(key)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn lease_renew(&self, key: &str, ttl_ms: u64) -> Result<()> {
        self.lock().leases.insert(
            key.to_owned(),
            Instant::now() + Duration::from_millis(ttl_ms),
        );
        Ok(())
    }

    async fn lease_take(&self, key: &str, ttl_ms: u64) -> Result<bool> {
        let mut st = self.lock();
        let now = Instant::now();
        if st.leases.get(key).is_some_and(|until| *until > now) {
            return Ok(false);
        }
        st.leases
            .insert(key.to_owned(), now + Duration::from_millis(ttl_ms));
        Ok(true)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let mut st = self.lock();
        if let Some(until) = st.leases.get(key) {
            if *until > Instant::now() {
                return Ok(true);
            }
            st.leases.remove(key);
        }
        Ok(st.hash(key).is_some() || st.sets.contains_key(key) || st.streams.contains_key(key))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let mut st = self.lock();
        st.leases.remove(key);
        st.hashes.remove(key);
        st.sets.remove(key);
        Ok(())
    }

    async fn timer_add(&self, id: &str, due_ms: u64, payload: &str) -> Result<()> {
        self.lock().add_timer(id, due_ms, payload);
        Ok(())
    }

    async fn timer_claim(
        &self,
        now_ms: u64,
        limit: usize,
        lease_ms: u64,
    ) -> Result<Vec<ClaimedTimer>> {
        let mut st = self.lock();
        let t = &mut st.timers;
        // a claim whose lease ended is due again, as `timer_claim.lua` does
        let expired: Vec<(u64, String)> = t
            .inflight
            .iter()
            .take_while(|(until, _)| *until <= now_ms)
            .take(limit)
            .cloned()
            .collect();
        for (until, id) in expired {
            t.inflight.remove(&(until, id.clone()));
            t.inflight_until.remove(&id);
            t.due_at.insert(id.clone(), now_ms);
            t.due.insert((now_ms, id));
        }
        let due: Vec<(u64, String)> = t
            .due
            .iter()
            .take_while(|(d, _)| *d <= now_ms)
            .take(limit)
            .cloned()
            .collect();
        let until = now_ms.saturating_add(lease_ms);
        let mut out = Vec::with_capacity(due.len());
        for (d, id) in due {
            t.due.remove(&(d, id.clone()));
            t.due_at.remove(&id);
            t.inflight.insert((until, id.clone()));
            t.inflight_until.insert(id.clone(), until);
            out.push(ClaimedTimer {
                payload: t.payloads.get(&id).cloned().unwrap_or_default(),
                id,
                due_ms: d,
            });
        }
        Ok(out)
    }

    async fn timer_remove(&self, id: &str) -> Result<()> {
        let mut st = self.lock();
        let t = &mut st.timers;
        if let Some(d) = t.due_at.remove(id) {
            t.due.remove(&(d, id.to_owned()));
        }
        if let Some(u) = t.inflight_until.remove(id) {
            t.inflight.remove(&(u, id.to_owned()));
        }
        t.payloads.remove(id);
        Ok(())
    }

    async fn timer_next(&self) -> Result<Option<u64>> {
        let st = self.lock();
        let a = st.timers.due.first().map(|(d, _)| *d);
        let b = st.timers.inflight.first().map(|(u, _)| *u);
        Ok(a.into_iter().chain(b).min())
    }

    async fn timer_count(&self) -> Result<u64> {
        Ok(self.lock().timers.payloads.len() as u64)
    }

    async fn publish(&self, channel: &str, payload: &str) -> Result<()> {
        if let Some(rec) = message_record(payload) {
            self.fanout.deliver(channel, &Arc::new(rec));
        }
        Ok(())
    }
}
