//! The keyspace calls in memory: each one step under the store lock, as each script is one
//! step on Redis, with the same rules (`store::keyspace`'s helpers are what the scripts do).
//! Keys of every type share one namespace, as on Redis: a call on a key of another type fails
//! with `WRONG_TYPE`, `SET` replaces a key of any type, and deleting or clearing removes keys
//! of any type.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;

use super::{glob, MemEntry, MemHash, MemString, MemoryStore, ScoreKey, Scored, State};
use crate::error::{Error, ErrorCode, Result};
use crate::event::{record_from_fields, Record};
use crate::id::StreamId;
use crate::store::keyspace::{
    add_numbers, apply_path_op, check_increment, doc_passes, DocFilter, Entry, EntryRange,
    IndexKeys, IndexedDoc, Keyspace, LiveTarget, PathOp,
};

impl State {
    /// The Redis type of a key, if it exists (expired keys are removed on the way).
    fn type_of(&mut self, key: &str) -> Option<&'static str> {
        if self.string(key).is_some() || self.leases.contains_key(key) {
            Some("string")
        } else if self.streams.contains_key(key) {
            Some("stream")
        } else if self.indexes.contains_key(key) || self.scored.contains_key(key) {
            Some("zset")
        } else if self.hash(key).is_some() {
            Some("hash")
        } else if self.sets.contains_key(key) {
            Some("set")
        } else {
            None
        }
    }

    /// Fail with `WRONG_TYPE` when `key` holds another type than `want`.
    fn expect_type(&mut self, key: &str, want: &str) -> Result<()> {
        match self.type_of(key) {
            Some(t) if t != want => Err(Error::new(
                ErrorCode::WrongType,
                format!("the key {key} holds a {t}, not a {want}"),
            )),
            _ => Ok(()),
        }
    }

    /// A string key that has not expired.
    fn string(&mut self, key: &str) -> Option<&mut MemString> {
        if self
            .strings
            .get(key)
            .is_some_and(|s| s.expires.is_some_and(|e| e <= Instant::now()))
        {
            self.strings.remove(key);
        }
        self.strings.get_mut(key)
    }

    /// Remove a key of any type; true when it existed.
    fn remove_key(&mut self, key: &str) -> bool {
        let existed = self.type_of(key).is_some();
        self.strings.remove(key);
        self.leases.remove(key);
        self.streams.remove(key);
        self.indexes.remove(key);
        self.scored.remove(key);
        self.hashes.remove(key);
        self.sets.remove(key);
        existed
    }

    /// The names of every key that has not expired.
    fn key_names(&mut self) -> Vec<String> {
        let candidates: Vec<String> = self
            .strings
            .keys()
            .chain(self.leases.keys())
            .chain(self.streams.keys())
            .chain(self.indexes.keys())
            .chain(self.scored.keys())
            .chain(self.hashes.keys())
            .chain(self.sets.keys())
            .cloned()
            .collect();
        let mut names: Vec<String> = candidates
            .into_iter()
            .filter(|k| self.type_of(k).is_some())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The document of an index entry (fields by path), if it has one.
    fn doc(&mut self, keys: IndexKeys<'_>, member: &str) -> Option<&mut MemHash> {
        self.hash(&keys.doc(member))
    }

    /// The score of a member of an index.
    fn score_of(&mut self, index: &str, member: &str) -> Result<Option<f64>> {
        self.expect_type(index, "zset")?;
        Ok(self
            .scored
            .get(index)
            .and_then(|s| s.scores.get(member).copied()))
    }
}

impl Scored {
    fn insert(&mut self, member: &str, score: f64) {
        if let Some(old) = self.scores.insert(member.to_owned(), score) {
            self.order.remove(&(ScoreKey(old), member.to_owned()));
        }
        self.order.insert((ScoreKey(score), member.to_owned()));
    }

    fn remove(&mut self, member: &str) -> bool {
        match self.scores.remove(member) {
            Some(old) => self.order.remove(&(ScoreKey(old), member.to_owned())),
            None => false,
        }
    }
}

/// The fields of an entry lean-events appended itself, as its record names them (`data` and
/// `meta` as JSON text); the stored layout leaves out what the key and the id say.
fn native_fields(record: &Record) -> Vec<(String, String)> {
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(&record.json) else {
        return Vec::new();
    };
    obj.into_iter()
        .filter(|(k, _)| !matches!(k.as_str(), "id" | "ts" | "subject"))
        .map(|(k, v)| match v {
            Value::String(s) if k != "data" && k != "meta" => (k, s),
            other => (k, other.to_string()),
        })
        .collect()
}

fn field_pairs(fields: &HashMap<String, String>) -> Vec<(String, String)> {
    fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[async_trait]
impl Keyspace for MemoryStore {
    async fn entry_append(
        &self,
        key: &str,
        fields: &[(String, String)],
        max_len: Option<u64>,
        live: Option<LiveTarget<'_>>,
    ) -> Result<StreamId> {
        let mut st = self.lock();
        st.expect_type(key, "stream")?;
        let s = st.streams.entry(key.to_owned()).or_default();
        let id = s.next_id();
        let raw: Arc<[(String, String)]> = fields.to_vec().into();
        let (stream_type, subject) = match live {
            Some(t) => (t.stream.stream_type.as_str(), t.stream.id.as_str()),
            None => ("", key),
        };
        let record = Arc::new(record_from_fields(
            id,
            stream_type,
            subject,
            raw.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ));
        s.entries.push_back(MemEntry {
            record: record.clone(),
            raw: Some(raw),
        });
        s.trim(max_len);
        // delivered under the store lock, so channel order is stream order
        if let Some(t) = live {
            self.fanout.deliver(t.channel, &record);
        }
        Ok(id)
    }

    async fn entry_range(&self, key: &str, range: &EntryRange) -> Result<Vec<Entry>> {
        let mut st = self.lock();
        st.expect_type(key, "stream")?;
        let (Some(s), Some((lo, hi))) = (st.streams.get(key), range.inclusive()) else {
            return Ok(Vec::new());
        };
        let a = s.entries.partition_point(|e| e.record.id < lo);
        let b = s.entries.partition_point(|e| e.record.id <= hi);
        let slice = s.entries.range(a..b.max(a));
        let all: Box<dyn Iterator<Item = &MemEntry>> = if range.reverse {
            Box::new(slice.rev())
        } else {
            Box::new(slice)
        };
        let entries = all
            .map(|e| Entry {
                id: e.record.id,
                fields: match &e.raw {
                    Some(raw) => raw.to_vec(),
                    None => native_fields(&e.record),
                },
            })
            .filter(|e| match &range.only {
                None => true,
                Some(only) => e
                    .fields
                    .iter()
                    .find(|(k, _)| *k == only.field)
                    .is_some_and(|(_, v)| only.any_of.contains(v)),
            });
        Ok(match range.count {
            Some(n) => entries.take(n).collect(),
            None => entries.collect(),
        })
    }

    async fn kv_get(&self, key: &str) -> Result<Option<String>> {
        let mut st = self.lock();
        st.expect_type(key, "string")?;
        Ok(st.string(key).map(|s| s.value.clone()))
    }

    async fn kv_set(&self, key: &str, value: &str, ttl_ms: Option<u64>) -> Result<()> {
        let mut st = self.lock();
        st.remove_key(key);
        st.strings.insert(
            key.to_owned(),
            MemString {
                value: value.to_owned(),
                expires: ttl_ms.map(|t| Instant::now() + Duration::from_millis(t.max(1))),
            },
        );
        Ok(())
    }

    async fn kv_increment(&self, key: &str, by: f64) -> Result<String> {
        check_increment(by)?;
        let mut st = self.lock();
        st.expect_type(key, "string")?;
        let (value, expires) = match st.string(key) {
            Some(s) => (add_numbers(Some(&s.value), by), s.expires),
            None => (add_numbers(None, by), None),
        };
        st.strings.insert(
            key.to_owned(),
            MemString {
                value: value.clone(),
                expires,
            },
        );
        Ok(value)
    }

    async fn keys_delete(&self, keys: &[String]) -> Result<u64> {
        let mut st = self.lock();
        Ok(keys.iter().filter(|k| st.remove_key(k)).count() as u64)
    }

    async fn keys_clear(&self, pattern: &str) -> Result<u64> {
        let mut st = self.lock();
        let names: Vec<String> = st
            .key_names()
            .into_iter()
            .filter(|k| glob::matches(pattern, k))
            .collect();
        Ok(names.iter().filter(|k| st.remove_key(k)).count() as u64)
    }

    async fn index_put(
        &self,
        keys: IndexKeys<'_>,
        member: &str,
        score: f64,
        doc: Option<&[(String, String)]>,
    ) -> Result<()> {
        let mut st = self.lock();
        st.expect_type(keys.index, "zset")?;
        st.scored
            .entry(keys.index.to_owned())
            .or_default()
            .insert(member, score);
        let doc_key = keys.doc(member);
        st.remove_key(&doc_key);
        if let Some(fields) = doc.filter(|d| !d.is_empty()) {
            st.hashes.insert(
                doc_key,
                MemHash {
                    fields: fields.iter().cloned().collect(),
                    expires: None,
                },
            );
        }
        Ok(())
    }

    async fn index_get(&self, keys: IndexKeys<'_>, member: &str) -> Result<Option<IndexedDoc>> {
        let mut st = self.lock();
        let Some(score) = st.score_of(keys.index, member)? else {
            return Ok(None);
        };
        let fields = st
            .doc(keys, member)
            .map(|h| field_pairs(&h.fields))
            .unwrap_or_default();
        Ok(Some(IndexedDoc {
            member: member.to_owned(),
            score,
            fields,
        }))
    }

    async fn index_read(
        &self,
        keys: IndexKeys<'_>,
        offset: usize,
        limit: usize,
        filters: &[DocFilter],
    ) -> Result<Vec<IndexedDoc>> {
        let mut st = self.lock();
        st.expect_type(keys.index, "zset")?;
        let Some(index) = st.scored.get(keys.index) else {
            return Ok(Vec::new());
        };
        let ranked: Vec<(f64, String)> = index
            .order
            .iter()
            .rev()
            .map(|(s, m)| (s.0, m.clone()))
            .collect();
        let empty = HashMap::new();
        let mut out = Vec::new();
        let mut skip = offset;
        for (score, member) in ranked {
            if out.len() >= limit {
                break;
            }
            let doc_key = keys.doc(&member);
            let fields = st.hash(&doc_key).map(|h| &h.fields).unwrap_or(&empty);
            if !filters.iter().all(|f| doc_passes(fields, f)) {
                continue;
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            out.push(IndexedDoc {
                fields: field_pairs(fields),
                member,
                score,
            });
        }
        Ok(out)
    }

    async fn index_merge(
        &self,
        keys: IndexKeys<'_>,
        member: &str,
        ops: &[PathOp],
        version_field: Option<&str>,
    ) -> Result<Option<i64>> {
        let mut st = self.lock();
        if st.score_of(keys.index, member)?.is_none() {
            return Ok(None);
        }
        let Some(doc) = st.doc(keys, member) else {
            return Ok(None);
        };
        for op in ops {
            apply_path_op(&mut doc.fields, op);
        }
        Ok(Some(bump_version(&mut doc.fields, version_field)))
    }

    async fn index_increment(
        &self,
        keys: IndexKeys<'_>,
        member: &str,
        path: &str,
        by: f64,
        version_field: Option<&str>,
    ) -> Result<Option<String>> {
        check_increment(by)?;
        let mut st = self.lock();
        if st.score_of(keys.index, member)?.is_none() {
            return Ok(None);
        }
        let doc_key = keys.doc(member);
        if st.hash(&doc_key).is_none() {
            st.hashes.insert(doc_key.clone(), MemHash::default());
        }
        let Some(doc) = st.hash(&doc_key) else {
            return Ok(None);
        };
        let value = add_numbers(doc.fields.get(path).map(String::as_str), by);
        apply_path_op(&mut doc.fields, &PathOp::Set(path.into(), value.clone()));
        bump_version(&mut doc.fields, version_field);
        Ok(Some(value))
    }

    async fn index_remove(&self, keys: IndexKeys<'_>, member: &str) -> Result<bool> {
        let mut st = self.lock();
        st.expect_type(keys.index, "zset")?;
        let removed = st
            .scored
            .get_mut(keys.index)
            .is_some_and(|s| s.remove(member));
        if st
            .scored
            .get(keys.index)
            .is_some_and(|s| s.scores.is_empty())
        {
            st.scored.remove(keys.index);
        }
        st.remove_key(&keys.doc(member));
        Ok(removed)
    }
}

/// Increment the version field (when named); returns its new value (0 without one).
fn bump_version(fields: &mut HashMap<String, String>, version_field: Option<&str>) -> i64 {
    let Some(field) = version_field else {
        return 0;
    };
    let v = add_numbers(fields.get(field).map(String::as_str), 1.0);
    let n = v.parse::<f64>().unwrap_or(0.0) as i64;
    fields.insert(field.to_owned(), v);
    n
}
