//! Generic access to keys named in full by the caller: raw stream entries, strings, and scored
//! indexes whose entries carry a document (a JSON object flattened into a hash of dot paths).
//!
//! This is what an adapter for another program's key layout is built on (the nvent adapters
//! in `nvent/`): the layout, the record shapes and the value encodings stay in that adapter,
//! each step that must be atomic is one call here (one Lua script on Redis, one step under the
//! store lock in memory), and no call takes more than one round trip except `keys_clear` and
//! an `index_read` that looks at more than `INDEX_SCAN_CHUNK` entries. One Redis and the embedded store implement it;
//! a Redis Cluster refuses every call with `UNSUPPORTED` (the keys a call touches are not
//! known in advance, so they cannot be kept in one hash slot).
//!
//! **Documents.** A document is stored as one hash per index entry, `<doc_prefix><member>`;
//! each leaf of the JSON object is a field named by its dot path (`stats.total`), holding the
//! caller's encoding of the value. An empty object at path `p` is the field `p.` with an empty
//! value (so that it survives: a flattened `{}` has no leaf). The field named by
//! `version_field` (when given) is incremented by every merge and increment.

use std::collections::HashMap;

use async_trait::async_trait;

use crate::error::{Error, ErrorCode, Result};
use crate::event::StreamRef;
use crate::id::StreamId;

/// Most index entries `index_read` looks at per script call (a longer read takes more calls).
pub const INDEX_SCAN_CHUNK: usize = 1000;

/// Where the live message of an appended entry goes: the live channel of `stream`, so that
/// lean-events subscriptions to `stream` receive it (gap-free: the entry is stored and
/// published in one step). The entry's key must be the stream's key.
#[derive(Debug, Clone, Copy)]
pub struct LiveTarget<'a> {
    /// The channel (`Keys::live_channel`).
    pub channel: &'a str,
    /// The stream, as subscribers name it.
    pub stream: &'a StreamRef,
}

/// Which entries of a stream `entry_range` returns. Bounds combine: an entry must be after
/// `after`, before `before`, and within `from_ms..=to_ms` by its id's milliseconds.
#[derive(Debug, Clone, Default)]
pub struct EntryRange {
    /// Only entries with a greater id (exclusive; the id need not exist).
    pub after: Option<StreamId>,
    /// Only entries with a smaller id (exclusive).
    pub before: Option<StreamId>,
    /// Only entries stored at or after this millisecond.
    pub from_ms: Option<u64>,
    /// Only entries stored at or before this millisecond.
    pub to_ms: Option<u64>,
    /// At most this many (after `only` is applied); `None`: all of them.
    pub count: Option<usize>,
    /// Newest first.
    pub reverse: bool,
    /// Only entries whose field holds one of these values.
    pub only: Option<FieldIn>,
}

impl EntryRange {
    /// The range as inclusive ids, `None` when it is empty.
    pub fn inclusive(&self) -> Option<(StreamId, StreamId)> {
        let mut lo = StreamId::ZERO;
        if let Some(a) = self.after {
            if a == StreamId::new(u64::MAX, u64::MAX) {
                return None;
            }
            lo = a.next();
        }
        if let Some(f) = self.from_ms {
            lo = lo.max(StreamId::new(f, 0));
        }
        let mut hi = StreamId::new(u64::MAX, u64::MAX);
        if let Some(b) = self.before {
            hi = match (b.ms, b.seq) {
                (0, 0) => return None,
                (ms, 0) => StreamId::new(ms - 1, u64::MAX),
                (ms, seq) => StreamId::new(ms, seq - 1),
            };
        }
        if let Some(t) = self.to_ms {
            hi = hi.min(StreamId::new(t, u64::MAX));
        }
        (lo <= hi).then_some((lo, hi))
    }
}

/// A field that must hold one of some values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldIn {
    /// The field.
    pub field: String,
    /// The values it may hold (exact text).
    pub any_of: Vec<String>,
}

/// A stream entry: its id and its fields in stored order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry id.
    pub id: StreamId,
    /// Field, value pairs.
    pub fields: Vec<(String, String)>,
}

/// The keys of a scored index: the sorted set, and the prefix its documents' hashes are
/// named by (`<doc_prefix><member>`).
#[derive(Debug, Clone, Copy)]
pub struct IndexKeys<'a> {
    /// The sorted set (member → score).
    pub index: &'a str,
    /// The document of member `m` is the hash `<doc_prefix>m`.
    pub doc_prefix: &'a str,
}

impl<'a> IndexKeys<'a> {
    /// The keys of the index `index` whose documents are named `<doc_prefix><member>`.
    pub fn new(index: &'a str, doc_prefix: &'a str) -> Self {
        IndexKeys { index, doc_prefix }
    }

    /// The document key of `member`.
    pub fn doc(&self, member: &str) -> String {
        format!("{}{member}", self.doc_prefix)
    }
}

/// An index entry with its document's fields (empty when it has no document).
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedDoc {
    /// The member.
    pub member: String,
    /// Its score.
    pub score: f64,
    /// The document's fields (dot path → encoded value), in stored order on Redis.
    pub fields: Vec<(String, String)>,
}

/// A condition of `index_read` on a top-level field of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocFilter {
    /// A top-level field name (no dot).
    pub field: String,
    /// Accepted values (exact encoded text).
    pub any_of: Vec<String>,
    /// Also accept a document with nothing at `field` (no leaf, no subtree).
    pub or_absent: bool,
}

/// One step of a deep merge into a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathOp {
    /// Set the leaf at a path to a value: what was below it and any leaf above it (a scalar
    /// in the way of the path) are removed.
    Set(String, String),
    /// Remove the leaf or the whole subtree at a path; the object it was in stays (empty, if
    /// nothing else was in it).
    Delete(String),
    /// Make the path an object: a leaf there is removed; when nothing is below it, it becomes
    /// the empty object (`<path>.`).
    Object(String),
}

/// Generic keys named in full: raw streams, strings, scored indexes with documents.
#[async_trait]
pub trait Keyspace: Send + Sync {
    /// `XADD key [MAXLEN ~ max_len] * fields…`, and with `live`, publish the entry on the live
    /// channel in the same step. Returns the entry id.
    async fn entry_append(
        &self,
        key: &str,
        fields: &[(String, String)],
        max_len: Option<u64>,
        live: Option<LiveTarget<'_>>,
    ) -> Result<StreamId>;

    /// Entries of a stream in `range` (one round trip; with `only`, full pages).
    async fn entry_range(&self, key: &str, range: &EntryRange) -> Result<Vec<Entry>>;

    /// The string at `key`.
    async fn kv_get(&self, key: &str) -> Result<Option<String>>;

    /// Set the string at `key`, expiring after `ttl_ms` when given (else without expiry).
    async fn kv_set(&self, key: &str, value: &str, ttl_ms: Option<u64>) -> Result<()>;

    /// Add `by` to the number at `key` (missing or not a number: 0), keeping its expiry;
    /// returns the new value as stored.
    async fn kv_increment(&self, key: &str, by: f64) -> Result<String>;

    /// Remove keys of any type; returns how many existed.
    async fn keys_delete(&self, keys: &[String]) -> Result<u64>;

    /// Remove every key matching a glob pattern (Redis `MATCH` syntax); returns how many.
    async fn keys_clear(&self, pattern: &str) -> Result<u64>;

    /// Add or move an index entry and replace its document with `doc` (none: no document).
    async fn index_put(
        &self,
        keys: IndexKeys<'_>,
        member: &str,
        score: f64,
        doc: Option<&[(String, String)]>,
    ) -> Result<()>;

    /// An entry and its document, `None` when the index has no such member.
    async fn index_get(&self, keys: IndexKeys<'_>, member: &str) -> Result<Option<IndexedDoc>>;

    /// Entries by score, highest first (ties: member, descending), skipping `offset` of those
    /// that pass every filter, at most `limit`.
    async fn index_read(
        &self,
        keys: IndexKeys<'_>,
        offset: usize,
        limit: usize,
        filters: &[DocFilter],
    ) -> Result<Vec<IndexedDoc>>;

    /// Apply `ops` to an entry's document and increment `version_field`, atomically. `None`
    /// (nothing written) when the member or its document does not exist; else the new
    /// version (0 without a version field).
    async fn index_merge(
        &self,
        keys: IndexKeys<'_>,
        member: &str,
        ops: &[PathOp],
        version_field: Option<&str>,
    ) -> Result<Option<i64>>;

    /// Add `by` to the number at `path` of an entry's document (missing or not a number: 0,
    /// placed like `PathOp::Set`) and increment `version_field`, atomically. `None` when the
    /// member does not exist; else the new value as stored.
    async fn index_increment(
        &self,
        keys: IndexKeys<'_>,
        member: &str,
        path: &str,
        by: f64,
        version_field: Option<&str>,
    ) -> Result<Option<String>>;

    /// Remove an entry and its document; true when the member existed.
    async fn index_remove(&self, keys: IndexKeys<'_>, member: &str) -> Result<bool>;
}

/// Apply one merge step to a document's fields (what `index_merge.lua` does per step).
pub fn apply_path_op(fields: &mut HashMap<String, String>, op: &PathOp) {
    match op {
        PathOp::Set(path, value) => {
            clear_around(fields, path);
            fields.insert(path.clone(), value.clone());
        }
        PathOp::Delete(path) => {
            // the object the path was in stays, empty, as a deep merge leaves it
            let parent = path.rfind('.').map(|i| &path[..=i]);
            let had_parent = parent.is_some_and(|q| fields.keys().any(|k| k.starts_with(q)));
            fields.remove(path);
            let below = format!("{path}.");
            fields.retain(|k, _| !k.starts_with(&below));
            if let Some(q) = parent.filter(|_| had_parent) {
                if !fields.keys().any(|k| k.starts_with(q)) {
                    fields.insert(q.to_owned(), String::new());
                }
            }
        }
        PathOp::Object(path) => {
            fields.remove(path);
            clear_ancestors(fields, path);
            let below = format!("{path}.");
            if !fields.keys().any(|k| k.starts_with(&below)) {
                fields.insert(below, String::new());
            }
        }
    }
}

/// Remove what a leaf at `path` replaces: leaves and empty-object marks above it, and
/// everything below it.
fn clear_around(fields: &mut HashMap<String, String>, path: &str) {
    clear_ancestors(fields, path);
    let below = format!("{path}.");
    fields.retain(|k, _| !k.starts_with(&below));
}

/// Remove leaves and empty-object marks at the ancestors of `path` (`a` and `a.` for `a.b`).
fn clear_ancestors(fields: &mut HashMap<String, String>, path: &str) {
    for (i, _) in path.match_indices('.') {
        fields.remove(&path[..i]);
        fields.remove(&path[..=i]);
    }
}

/// Whether a document passes a filter (what `index_read.lua` checks).
pub fn doc_passes(fields: &HashMap<String, String>, filter: &DocFilter) -> bool {
    match fields.get(&filter.field) {
        Some(v) => filter.any_of.iter().any(|a| a == v),
        None => {
            let below = format!("{}.", filter.field);
            filter.or_absent && !fields.keys().any(|k| k.starts_with(&below))
        }
    }
}

/// The number a stored text holds: decimal digits with an optional sign, point and
/// exponent, finite. Anything else counts as no number (an increment starts from 0).
pub fn number_of(text: &str) -> Option<f64> {
    let body = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let mantissa_ok = !mantissa.is_empty()
        && mantissa.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && mantissa.bytes().filter(|b| *b == b'.').count() <= 1
        && mantissa.bytes().any(|b| b.is_ascii_digit());
    let exponent_ok = exponent.is_none_or(|e| {
        let digits = e.strip_prefix(['-', '+']).unwrap_or(e);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    });
    if !(mantissa_ok && exponent_ok) {
        return None;
    }
    text.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// `current + by` as stored: an integer's text when both are integers below 2^53, else the
/// shortest text that reads back as the sum.
pub fn add_numbers(current: Option<&str>, by: f64) -> String {
    let sum = current.and_then(number_of).unwrap_or(0.0) + by;
    number_text(sum)
}

/// The text `by` is passed as: an integer when it is one (so Redis can use `INCRBY`).
pub fn number_text(by: f64) -> String {
    if by.fract() == 0.0 && by.abs() < 9_007_199_254_740_992.0 {
        format!("{}", by as i64)
    } else {
        format!("{by}")
    }
}

/// Check an increment: a finite number.
pub fn check_increment(by: f64) -> Result<()> {
    if by.is_finite() {
        Ok(())
    } else {
        Err(Error::argument(format!(
            "an increment must be a finite number (got {by})"
        )))
    }
}

/// The error a Redis Cluster answers every keyspace call with.
pub fn unsupported_on_cluster() -> Error {
    Error::new(
        ErrorCode::Unsupported,
        "keyspace calls (the nvent adapters' store) need one Redis or the embedded store; a Redis \
         Cluster cannot keep the keys of one call in one hash slot",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_combine_their_bounds() {
        let r = EntryRange {
            after: Some(StreamId::new(5, 1)),
            from_ms: Some(3),
            before: Some(StreamId::new(9, 0)),
            to_ms: Some(20),
            ..Default::default()
        };
        assert_eq!(
            r.inclusive(),
            Some((StreamId::new(5, 2), StreamId::new(8, u64::MAX)))
        );
        let r = EntryRange {
            after: Some(StreamId::new(5, 1)),
            from_ms: Some(7),
            to_ms: Some(7),
            ..Default::default()
        };
        assert_eq!(
            r.inclusive(),
            Some((StreamId::new(7, 0), StreamId::new(7, u64::MAX)))
        );
        let empty = EntryRange {
            before: Some(StreamId::ZERO),
            ..Default::default()
        };
        assert_eq!(empty.inclusive(), None);
    }

    #[test]
    fn numbers_are_plain_decimal_text() {
        assert_eq!(number_of("42"), Some(42.0));
        assert_eq!(number_of("-1.5e3"), Some(-1500.0));
        assert_eq!(number_of(".5"), Some(0.5));
        for not in [
            "", ".", "-", "1.2.3", "0x10", " 5", "inf", "NaN", "1e", "e5", "1e400",
        ] {
            assert_eq!(number_of(not), None, "{not:?}");
        }
        assert_eq!(add_numbers(Some("abc"), 2.0), "2");
        assert_eq!(add_numbers(Some("0.1"), 0.2), "0.30000000000000004");
    }

    #[test]
    fn path_ops_keep_one_shape_per_path() {
        let mut f: HashMap<String, String> = [("a.b", "1"), ("x", "s")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        apply_path_op(&mut f, &PathOp::Set("x.y".into(), "2".into()));
        assert!(!f.contains_key("x") && f.contains_key("x.y"));
        apply_path_op(&mut f, &PathOp::Set("a".into(), "3".into()));
        assert!(!f.contains_key("a.b"));
        apply_path_op(&mut f, &PathOp::Object("a".into()));
        assert_eq!(f.get("a.").map(String::as_str), Some(""));
        assert!(!f.contains_key("a"));
        apply_path_op(&mut f, &PathOp::Delete("x".into()));
        assert_eq!(f.len(), 1, "{f:?}");
        apply_path_op(&mut f, &PathOp::Set("p.q.r".into(), "1".into()));
        apply_path_op(&mut f, &PathOp::Delete("p.q.r".into()));
        assert_eq!(f.get("p.q.").map(String::as_str), Some(""), "{f:?}");
        apply_path_op(&mut f, &PathOp::Delete("p.nothing".into()));
        assert!(!f.contains_key("p."), "p still holds q: {f:?}");
        apply_path_op(&mut f, &PathOp::Delete("z.nothing".into()));
        assert!(!f.contains_key("z."), "nothing was there: {f:?}");
    }

    #[test]
    fn increments_are_integers_when_they_can_be() {
        assert_eq!(number_text(3.0), "3");
        assert_eq!(number_text(-1.0), "-1");
        assert_eq!(number_text(0.5), "0.5");
        assert!(check_increment(f64::NAN).is_err());
    }
}
