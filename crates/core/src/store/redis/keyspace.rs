//! The keyspace calls on one Redis: single commands where one suffices, else one script of
//! `lua/` each (built once). A Redis Cluster refuses them (see `store::keyspace`).

use std::sync::LazyLock;

use redis::{Script, Value};

use super::commands::Commands;
use super::reply::{parse_id, text, unexpected};
use super::RedisStore;
use crate::error::Result;
use crate::id::StreamId;
use crate::store::keyspace::{
    check_increment, number_text, unsupported_on_cluster, DocFilter, Entry, EntryRange, IndexKeys,
    IndexedDoc, Keyspace, LiveTarget, PathOp, INDEX_SCAN_CHUNK,
};

/// The scripts of the keyspace calls, built once.
struct Scripts {
    entry_append: Script,
    entry_range: Script,
    index_put: Script,
    index_get: Script,
    index_read: Script,
    index_merge: Script,
    index_increment: Script,
    index_remove: Script,
    kv_increment: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    entry_append: Script::new(include_str!("lua/entry_append.lua")),
    entry_range: Script::new(include_str!("lua/entry_range.lua")),
    index_put: Script::new(include_str!("lua/index_put.lua")),
    index_get: Script::new(include_str!("lua/index_get.lua")),
    index_read: Script::new(include_str!("lua/index_read.lua")),
    index_merge: Script::new(concat!(
        include_str!("lua/doc_paths.lua"),
        include_str!("lua/index_merge.lua")
    )),
    index_increment: Script::new(concat!(
        include_str!("lua/doc_paths.lua"),
        include_str!("lua/index_increment.lua")
    )),
    index_remove: Script::new(include_str!("lua/index_remove.lua")),
    kv_increment: Script::new(concat!(
        include_str!("lua/doc_paths.lua"),
        include_str!("lua/kv_increment.lua")
    )),
});

impl RedisStore {
    /// The commands, on one Redis only.
    fn single_node(&self) -> Result<&Commands> {
        let cmds = self.commands();
        if cmds.keys.is_cluster() {
            return Err(unsupported_on_cluster());
        }
        Ok(cmds)
    }
}

/// An id bound as Redis takes it (`-` and `+` for the ends).
fn bound(id: StreamId) -> String {
    if id == StreamId::ZERO {
        "-".into()
    } else if id == StreamId::new(u64::MAX, u64::MAX) {
        "+".into()
    } else {
        id.to_string()
    }
}

/// A flat `[field, value, ...]` reply as pairs.
fn pairs(v: Value) -> Result<Vec<(String, String)>> {
    let items = match v {
        Value::Array(items) => items,
        Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        Value::Nil => return Ok(Vec::new()),
        other => return Err(unexpected("field list", &other)),
    };
    Ok(items
        .chunks_exact(2)
        .map(|kv| (text(&kv[0]), text(&kv[1])))
        .collect())
}

/// XRANGE-shaped entries.
fn entries(v: Value) -> Result<Vec<Entry>> {
    let list = match v {
        Value::Array(list) => list,
        Value::Nil => return Ok(Vec::new()),
        other => return Err(unexpected("XRANGE", &other)),
    };
    list.into_iter()
        .map(|entry| {
            let Value::Array(mut parts) = entry else {
                return Err(unexpected("XRANGE entry", &entry));
            };
            if parts.len() != 2 {
                return Err(unexpected("XRANGE entry", &Value::Array(parts)));
            }
            let fields = pairs(parts.pop().unwrap_or(Value::Nil))?;
            Ok(Entry {
                id: parse_id(&parts[0])?,
                fields,
            })
        })
        .collect()
}

fn score(v: &Value) -> Result<f64> {
    match v {
        Value::Double(d) => Ok(*d),
        other => text(other)
            .parse()
            .map_err(|_| unexpected("a score", other)),
    }
}

#[async_trait::async_trait]
impl Keyspace for RedisStore {
    async fn entry_append(
        &self,
        key: &str,
        fields: &[(String, String)],
        max_len: Option<u64>,
        live: Option<LiveTarget<'_>>,
    ) -> Result<StreamId> {
        let cmds = self.single_node()?;
        let mut inv = SCRIPTS.entry_append.prepare_invoke();
        inv.key(key).arg(max_len.unwrap_or(0));
        match live {
            Some(t) => inv
                .arg(t.channel)
                .arg(&t.stream.stream_type)
                .arg(&t.stream.id),
            None => inv.arg("").arg("").arg(""),
        };
        for (k, v) in fields {
            inv.arg(k).arg(v);
        }
        let id: Value = cmds.script(inv).await?;
        parse_id(&id)
    }

    async fn entry_range(&self, key: &str, range: &EntryRange) -> Result<Vec<Entry>> {
        let cmds = self.single_node()?;
        let Some((lo, hi)) = range.inclusive() else {
            return Ok(Vec::new());
        };
        if range.count == Some(0) {
            return Ok(Vec::new());
        }
        let reply: Value = match &range.only {
            None => {
                let mut c = redis::cmd(if range.reverse { "XREVRANGE" } else { "XRANGE" });
                c.arg(key);
                if range.reverse {
                    c.arg(bound(hi)).arg(bound(lo));
                } else {
                    c.arg(bound(lo)).arg(bound(hi));
                }
                if let Some(n) = range.count {
                    c.arg("COUNT").arg(n);
                }
                cmds.query(c).await?
            }
            Some(only) => {
                let mut inv = SCRIPTS.entry_range.prepare_invoke();
                inv.key(key)
                    .arg(bound(lo))
                    .arg(bound(hi))
                    .arg(range.count.unwrap_or(0))
                    .arg(if range.reverse { "1" } else { "0" })
                    .arg(&only.field);
                for v in &only.any_of {
                    inv.arg(v);
                }
                cmds.script(inv).await?
            }
        };
        entries(reply)
    }

    async fn kv_get(&self, key: &str) -> Result<Option<String>> {
        let cmds = self.single_node()?;
        let mut c = redis::cmd("GET");
        c.arg(key);
        cmds.query(c).await
    }

    async fn kv_set(&self, key: &str, value: &str, ttl_ms: Option<u64>) -> Result<()> {
        let cmds = self.single_node()?;
        let mut c = redis::cmd("SET");
        c.arg(key).arg(value);
        if let Some(ttl) = ttl_ms {
            c.arg("PX").arg(ttl.max(1));
        }
        cmds.query::<()>(c).await
    }

    async fn kv_increment(&self, key: &str, by: f64) -> Result<String> {
        check_increment(by)?;
        let cmds = self.single_node()?;
        let mut inv = SCRIPTS.kv_increment.prepare_invoke();
        inv.key(key).arg(number_text(by));
        cmds.script(inv).await
    }

    async fn keys_delete(&self, keys: &[String]) -> Result<u64> {
        let cmds = self.single_node()?;
        if keys.is_empty() {
            return Ok(0);
        }
        let mut c = redis::cmd("DEL");
        c.arg(keys);
        cmds.query(c).await
    }

    async fn keys_clear(&self, pattern: &str) -> Result<u64> {
        let cmds = self.single_node()?;
        let mut cursor = 0u64;
        let mut removed = 0;
        loop {
            let mut c = redis::cmd("SCAN");
            c.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(500);
            let (next, found): (u64, Vec<String>) = cmds.query(c).await?;
            removed += self.keys_delete(&found).await?;
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    async fn index_put(
        &self,
        keys: IndexKeys<'_>,
        member: &str,
        score: f64,
        doc: Option<&[(String, String)]>,
    ) -> Result<()> {
        let cmds = self.single_node()?;
        let mut inv = SCRIPTS.index_put.prepare_invoke();
        inv.key(keys.index)
            .key(keys.doc(member))
            .arg(score)
            .arg(member);
        for (k, v) in doc.unwrap_or_default() {
            inv.arg(k).arg(v);
        }
        cmds.script::<Value>(inv).await.map(|_| ())
    }

    async fn index_get(&self, keys: IndexKeys<'_>, member: &str) -> Result<Option<IndexedDoc>> {
        let cmds = self.single_node()?;
        let mut inv = SCRIPTS.index_get.prepare_invoke();
        inv.key(keys.index).key(keys.doc(member)).arg(member);
        let reply: Value = cmds.script(inv).await?;
        let parts = match reply {
            Value::Nil | Value::Boolean(false) => return Ok(None),
            Value::Array(parts) if parts.len() == 2 => parts,
            other => return Err(unexpected("index_get", &other)),
        };
        let mut it = parts.into_iter();
        let score = score(&it.next().unwrap_or(Value::Nil))?;
        Ok(Some(IndexedDoc {
            member: member.to_owned(),
            score,
            fields: pairs(it.next().unwrap_or(Value::Nil))?,
        }))
    }

    async fn index_read(
        &self,
        keys: IndexKeys<'_>,
        offset: usize,
        limit: usize,
        filters: &[DocFilter],
    ) -> Result<Vec<IndexedDoc>> {
        let cmds = self.single_node()?;
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        // Unfiltered, the page is ranks offset..offset+limit; filtered, matches are looked for
        // from the top, skipping `offset` of them. Either way a call looks at no more than
        // INDEX_SCAN_CHUNK entries (a script must not block Redis for long).
        let (mut rank, mut skip) = if filters.is_empty() {
            (offset, 0)
        } else {
            (0, offset)
        };
        loop {
            let wanted = skip + limit - out.len();
            let budget = if filters.is_empty() {
                wanted.min(INDEX_SCAN_CHUNK)
            } else {
                INDEX_SCAN_CHUNK
            };
            let mut inv = SCRIPTS.index_read.prepare_invoke();
            inv.key(keys.index)
                .arg(keys.doc_prefix)
                .arg(rank)
                .arg(budget)
                .arg(wanted)
                .arg(filters.len());
            for f in filters {
                inv.arg(&f.field)
                    .arg(if f.or_absent { "1" } else { "0" })
                    .arg(f.any_of.len());
                for v in &f.any_of {
                    inv.arg(v);
                }
            }
            let reply: Value = cmds.script(inv).await?;
            let Value::Array(items) = reply else {
                return Err(unexpected("index_read", &reply));
            };
            let mut it = items.into_iter();
            let next: i64 = text(&it.next().unwrap_or(Value::Nil)).parse().unwrap_or(-1);
            let items: Vec<Value> = it.collect();
            for chunk in items.chunks(3) {
                let [member, sc, doc] = chunk else {
                    return Err(unexpected(
                        "index_read entry",
                        &Value::Array(chunk.to_vec()),
                    ));
                };
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                out.push(IndexedDoc {
                    member: text(member),
                    score: score(sc)?,
                    fields: pairs(doc.clone())?,
                });
            }
            if next < 0 || out.len() >= limit {
                return Ok(out);
            }
            rank = next as usize;
        }
    }

    async fn index_merge(
        &self,
        keys: IndexKeys<'_>,
        member: &str,
        ops: &[PathOp],
        version_field: Option<&str>,
    ) -> Result<Option<i64>> {
        let cmds = self.single_node()?;
        let mut inv = SCRIPTS.index_merge.prepare_invoke();
        inv.key(keys.index)
            .key(keys.doc(member))
            .arg(member)
            .arg(version_field.unwrap_or(""));
        for op in ops {
            match op {
                PathOp::Set(path, value) => inv.arg("s").arg(path).arg(value),
                PathOp::Delete(path) => inv.arg("d").arg(path),
                PathOp::Object(path) => inv.arg("o").arg(path),
            };
        }
        let version: i64 = cmds.script(inv).await?;
        Ok((version >= 0).then_some(version))
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
        let cmds = self.single_node()?;
        let mut inv = SCRIPTS.index_increment.prepare_invoke();
        inv.key(keys.index)
            .key(keys.doc(member))
            .arg(member)
            .arg(path)
            .arg(number_text(by))
            .arg(version_field.unwrap_or(""));
        cmds.script(inv).await
    }

    async fn index_remove(&self, keys: IndexKeys<'_>, member: &str) -> Result<bool> {
        let cmds = self.single_node()?;
        let mut inv = SCRIPTS.index_remove.prepare_invoke();
        inv.key(keys.index).key(keys.doc(member)).arg(member);
        Ok(cmds.script::<i64>(inv).await? == 1)
    }
}
