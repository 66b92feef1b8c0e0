//! The keyspace calls of `NativeBus` (keys and channels named in full; see the core's
//! `store::keyspace`). Lists of fields cross as JSON text (`["field","value",…]`), parsed once
//! here; replies go back as JSON text.

use lean_events_core::live::Waker;
use lean_events_core::store::keyspace::{
    DocFilter, EntryRange, FieldIn, IndexKeys, IndexedDoc, LiveTarget, PathOp,
};
use lean_events_core::{Error, StreamId, StreamRef};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use serde_json::Value;

use crate::bus::{waker_for, NativeBus};
use crate::error::spawn;
use crate::subscription::NativeSubscription;

/// Options of `entryRange`.
#[napi(object)]
pub struct NativeEntryRange {
    /// Only entries after this id (exclusive).
    pub after: Option<String>,
    /// Only entries before this id (exclusive).
    pub before: Option<String>,
    /// Only entries stored at or after this Unix ms.
    pub from_ms: Option<f64>,
    /// Only entries stored at or before this Unix ms.
    pub to_ms: Option<f64>,
    /// At most this many; absent: all.
    pub count: Option<i64>,
    /// Newest first.
    pub reverse: Option<bool>,
    /// Only entries whose field `field` holds one of `any_of`.
    pub field: Option<String>,
    /// The accepted values of `field`.
    pub any_of: Option<Vec<String>>,
}

/// The live stream an appended entry is published to.
#[napi(object)]
pub struct NativeLiveStream {
    /// Stream type, e.g. `flow`.
    pub r#type: String,
    /// Stream id.
    pub id: String,
}

/// Field, value pairs from JSON text `["f","v",…]`.
fn pairs(json: &str) -> std::result::Result<Vec<(String, String)>, Error> {
    let flat: Vec<String> = serde_json::from_str(json)
        .map_err(|e| Error::argument(format!("fields must be a JSON array of strings ({e})")))?;
    if !flat.len().is_multiple_of(2) {
        return Err(Error::argument(
            "fields must alternate names and values (an even number of strings)",
        ));
    }
    Ok(flat
        .chunks_exact(2)
        .map(|kv| (kv[0].clone(), kv[1].clone()))
        .collect())
}

fn pairs_json(fields: &[(String, String)]) -> Value {
    Value::Array(
        fields
            .iter()
            .flat_map(|(k, v)| [Value::String(k.clone()), Value::String(v.clone())])
            .collect(),
    )
}

fn doc_json(d: &IndexedDoc) -> Value {
    serde_json::json!({ "member": d.member, "score": d.score, "fields": pairs_json(&d.fields) })
}

fn non_negative(name: &str, v: Option<f64>) -> std::result::Result<Option<u64>, Error> {
    match v {
        Some(n) if !(n.is_finite() && n >= 0.0) => Err(Error::argument(format!(
            "{name} must be a number of 0 or more (got {n})"
        ))),
        other => Ok(other.map(|n| n as u64)),
    }
}

/// `["s", path, value]`, `["d", path]` or `["o", path]` steps from JSON text.
fn path_ops(json: &str) -> std::result::Result<Vec<PathOp>, Error> {
    let steps: Vec<Vec<String>> = serde_json::from_str(json)
        .map_err(|e| Error::argument(format!("ops must be a JSON array of steps ({e})")))?;
    steps
        .into_iter()
        .map(|mut s| match (s.first().map(String::as_str), s.len()) {
            (Some("s"), 3) => {
                let value = s.pop().unwrap_or_default();
                let path = s.pop().unwrap_or_default();
                Ok(PathOp::Set(path, value))
            }
            (Some("d"), 2) => Ok(PathOp::Delete(s.pop().unwrap_or_default())),
            (Some("o"), 2) => Ok(PathOp::Object(s.pop().unwrap_or_default())),
            _ => Err(Error::argument(format!(
                "a step is [\"s\", path, value], [\"d\", path] or [\"o\", path] (got {s:?})"
            ))),
        })
        .collect()
}

/// Filters from JSON text `[{"field","anyOf":[…],"orAbsent"}]`.
fn doc_filters(json: Option<&str>) -> std::result::Result<Vec<DocFilter>, Error> {
    let Some(json) = json else {
        return Ok(Vec::new());
    };
    let list: Vec<Value> = serde_json::from_str(json)
        .map_err(|e| Error::argument(format!("filters must be a JSON array ({e})")))?;
    list.into_iter()
        .map(|f| {
            let field = f["field"].as_str().unwrap_or_default().to_owned();
            if field.is_empty() || field.contains('.') {
                return Err(Error::argument(format!(
                    "a filter names a top-level field (got {:?})",
                    f["field"]
                )));
            }
            let any_of = f["anyOf"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            Ok(DocFilter {
                field,
                any_of,
                or_absent: f["orAbsent"].as_bool().unwrap_or(false),
            })
        })
        .collect()
}

#[napi]
impl NativeBus {
    /// Append an entry (fields as JSON `["f","v",…]`) to the stream `key`, trimmed to about
    /// `maxLen`; with `live`, publish it on that lean-events stream's live channel in the same
    /// step. Resolves to the entry id.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn entry_append(
        &self,
        env: Env,
        key: String,
        fields: String,
        max_len: Option<f64>,
        live: Option<NativeLiveStream>,
    ) -> Result<PromiseRaw<'static, String>> {
        let bus = self.bus();
        spawn(env, async move {
            let fields = pairs(&fields)?;
            let max_len = non_negative("maxLen", max_len)?.filter(|n| *n > 0);
            let stream = live.map(|l| StreamRef::new(&l.r#type, &l.id)).transpose()?;
            if let Some(s) = &stream {
                let named = bus.keys().stream(s);
                if named != key {
                    return Err(Error::argument(format!(
                        "live names the stream {}:{}, stored under {named}, not under {key}",
                        s.stream_type, s.id
                    )));
                }
            }
            let channel = stream.as_ref().map(|s| bus.keys().live_channel(s));
            let target = match (&stream, &channel) {
                (Some(stream), Some(channel)) => Some(LiveTarget { channel, stream }),
                _ => None,
            };
            let id = bus
                .keyspace()?
                .entry_append(&key, &fields, max_len, target)
                .await?;
            Ok(id.to_string())
        })
    }

    /// Entries of the stream `key`, as JSON `[[id, ["f","v",…]], …]`.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn entry_range(
        &self,
        env: Env,
        key: String,
        options: NativeEntryRange,
    ) -> Result<PromiseRaw<'static, String>> {
        let bus = self.bus();
        spawn(env, async move {
            let id = |v: Option<String>| v.as_deref().map(str::parse::<StreamId>).transpose();
            let range = EntryRange {
                after: id(options.after)?,
                before: id(options.before)?,
                from_ms: non_negative("from", options.from_ms)?,
                to_ms: non_negative("to", options.to_ms)?,
                count: match options.count {
                    None => None,
                    Some(n) if n >= 0 => Some(n as usize),
                    Some(n) => {
                        return Err(Error::argument(format!(
                            "limit must be 0 or more (got {n})"
                        )))
                    }
                },
                reverse: options.reverse.unwrap_or(false),
                only: options.field.map(|field| FieldIn {
                    field,
                    any_of: options.any_of.unwrap_or_default(),
                }),
            };
            let entries = bus.keyspace()?.entry_range(&key, &range).await?;
            let out: Vec<Value> = entries
                .iter()
                .map(|e| Value::Array(vec![e.id.to_string().into(), pairs_json(&e.fields)]))
                .collect();
            Ok(Value::Array(out).to_string())
        })
    }

    /// The string at `key`, or null.
    #[napi(ts_return_type = "Promise<string | null>")]
    pub fn kv_get(&self, env: Env, key: String) -> Result<PromiseRaw<'static, Option<String>>> {
        let bus = self.bus();
        spawn(env, async move { bus.keyspace()?.kv_get(&key).await })
    }

    /// Set the string at `key`, expiring after `ttlMs` when given.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn kv_set(
        &self,
        env: Env,
        key: String,
        value: String,
        ttl_ms: Option<f64>,
    ) -> Result<PromiseRaw<'static, ()>> {
        let bus = self.bus();
        spawn(env, async move {
            let ttl = non_negative("ttl", ttl_ms)?;
            bus.keyspace()?.kv_set(&key, &value, ttl).await
        })
    }

    /// Add `by` to the number at `key`; resolves to the new value as stored.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn kv_increment(
        &self,
        env: Env,
        key: String,
        by: f64,
    ) -> Result<PromiseRaw<'static, String>> {
        let bus = self.bus();
        spawn(
            env,
            async move { bus.keyspace()?.kv_increment(&key, by).await },
        )
    }

    /// Remove keys of any type; resolves to how many existed.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn keys_delete(&self, env: Env, keys: Vec<String>) -> Result<PromiseRaw<'static, f64>> {
        let bus = self.bus();
        spawn(env, async move {
            Ok(bus.keyspace()?.keys_delete(&keys).await? as f64)
        })
    }

    /// Remove every key matching a glob pattern; resolves to how many.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn keys_clear(&self, env: Env, pattern: String) -> Result<PromiseRaw<'static, f64>> {
        let bus = self.bus();
        spawn(env, async move {
            Ok(bus.keyspace()?.keys_clear(&pattern).await? as f64)
        })
    }

    /// Add or move an index entry and replace its document (fields as JSON, null: none).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn index_put(
        &self,
        env: Env,
        index: String,
        doc_prefix: String,
        member: String,
        score: f64,
        doc: Option<String>,
    ) -> Result<PromiseRaw<'static, ()>> {
        let bus = self.bus();
        spawn(env, async move {
            if !score.is_finite() {
                return Err(Error::argument(format!(
                    "score must be finite (got {score})"
                )));
            }
            let doc = doc.as_deref().map(pairs).transpose()?;
            let keys = IndexKeys::new(&index, &doc_prefix);
            bus.keyspace()?
                .index_put(keys, &member, score, doc.as_deref())
                .await
        })
    }

    /// An index entry as JSON `{member, score, fields: ["f","v",…]}`, or null.
    #[napi(ts_return_type = "Promise<string | null>")]
    pub fn index_get(
        &self,
        env: Env,
        index: String,
        doc_prefix: String,
        member: String,
    ) -> Result<PromiseRaw<'static, Option<String>>> {
        let bus = self.bus();
        spawn(env, async move {
            let keys = IndexKeys::new(&index, &doc_prefix);
            let doc = bus.keyspace()?.index_get(keys, &member).await?;
            Ok(doc.map(|d| doc_json(&d).to_string()))
        })
    }

    /// Index entries by score, highest first, as a JSON array of what `indexGet` gives;
    /// `filters` as JSON `[{field, anyOf, orAbsent}]`.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn index_read(
        &self,
        env: Env,
        index: String,
        doc_prefix: String,
        offset: f64,
        limit: f64,
        filters: Option<String>,
    ) -> Result<PromiseRaw<'static, String>> {
        let bus = self.bus();
        spawn(env, async move {
            let offset = non_negative("offset", Some(offset))?.unwrap_or(0) as usize;
            let limit = non_negative("limit", Some(limit))?.unwrap_or(0) as usize;
            let filters = doc_filters(filters.as_deref())?;
            let keys = IndexKeys::new(&index, &doc_prefix);
            let docs = bus
                .keyspace()?
                .index_read(keys, offset, limit, &filters)
                .await?;
            Ok(Value::Array(docs.iter().map(doc_json).collect()).to_string())
        })
    }

    /// Apply merge steps (JSON `[["s",path,value],["d",path],["o",path]]`) to an entry's
    /// document and increment `versionField`; resolves to the new version, or null when the
    /// entry or its document does not exist.
    #[napi(ts_return_type = "Promise<number | null>")]
    pub fn index_merge(
        &self,
        env: Env,
        index: String,
        doc_prefix: String,
        member: String,
        ops: String,
        version_field: Option<String>,
    ) -> Result<PromiseRaw<'static, Option<f64>>> {
        let bus = self.bus();
        spawn(env, async move {
            let ops = path_ops(&ops)?;
            let keys = IndexKeys::new(&index, &doc_prefix);
            let version = bus
                .keyspace()?
                .index_merge(keys, &member, &ops, version_field.as_deref())
                .await?;
            Ok(version.map(|v| v as f64))
        })
    }

    /// Add `by` at a dot path of an entry's document and increment `versionField`; resolves
    /// to the new value as stored, or null when the entry does not exist.
    #[napi(ts_return_type = "Promise<string | null>")]
    #[allow(clippy::too_many_arguments)]
    pub fn index_increment(
        &self,
        env: Env,
        index: String,
        doc_prefix: String,
        member: String,
        path: String,
        by: f64,
        version_field: Option<String>,
    ) -> Result<PromiseRaw<'static, Option<String>>> {
        let bus = self.bus();
        spawn(env, async move {
            let keys = IndexKeys::new(&index, &doc_prefix);
            bus.keyspace()?
                .index_increment(keys, &member, &path, by, version_field.as_deref())
                .await
        })
    }

    /// Remove an index entry and its document; true when the entry existed.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn index_remove(
        &self,
        env: Env,
        index: String,
        doc_prefix: String,
        member: String,
    ) -> Result<PromiseRaw<'static, bool>> {
        let bus = self.bus();
        spawn(env, async move {
            let keys = IndexKeys::new(&index, &doc_prefix);
            bus.keyspace()?.index_remove(keys, &member).await
        })
    }

    /// Every message on a plain channel while connected (`key` as in `subscribe`): records of
    /// live-format messages, other JSON messages as they are.
    #[napi(ts_return_type = "Promise<NativeSubscription>")]
    pub fn listen(
        &self,
        env: Env,
        channel: String,
        max_queue: Option<i64>,
        key: u32,
    ) -> Result<PromiseRaw<'static, NativeSubscription>> {
        let (bus, waker): (_, Waker) = (self.bus(), waker_for(&self.ready(), key));
        spawn(env, async move {
            let max_queue =
                lean_events_core::bus::config::positive("maxQueue", max_queue)?.map(|n| n as usize);
            let sub = bus.listen_channel(&channel, max_queue, Some(waker)).await?;
            Ok(NativeSubscription::new(sub))
        })
    }

    /// Publish a message (any text) on a plain channel.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn publish(
        &self,
        env: Env,
        channel: String,
        message: String,
    ) -> Result<PromiseRaw<'static, ()>> {
        let bus = self.bus();
        spawn(env, async move { bus.publish(&channel, &message).await })
    }
}
