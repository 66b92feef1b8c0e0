//! Redis Cluster: what changes when the events of different contexts live on different shards.
//!
//! Key layout: every stream is `<prefix>:<type>:{<id>}`, so a stream and its live channel
//! (`…:live`, sharded Pub/Sub) share one hash slot; everything else the bus and the scheduler
//! keep (run and trigger indexes, awaits, jobs, timers, leases) lives under `{<prefix>}:…`, one
//! slot: the coordination slot. Per-kind channels stay plain Pub/Sub, which the cluster carries
//! to every node.
//!
//! An append happens in two steps, because the index entry and the event awaits an event
//! resolves are in the coordination slot, not in the stream's:
//! 1. `append_cluster.lua`, per slot, stores and publishes the events of that slot and notes
//!    each in the slot's outbox (`<prefix>:outbox:{<tag>}`, a sorted set in the same slot);
//! 2. `index_awaits.lua`, in the coordination slot, adds index entries and resolves awaits; it
//!    is safe to repeat. Then the outbox entries are removed.
//!
//! A process that dies (or loses its connection) between the two leaves outbox entries; the
//! repair pass (`repair_outbox`) finds entries older than a grace period in every slot's outbox
//! and does step 2 for them.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{PushInfo, Script, Value};

use super::redis::{
    index_arg, not_replicated, parse_append_reply, text, unexpected, Conn, RedisStore,
};
use crate::error::{Error, ErrorCode, Result};
use crate::event::PreparedEvent;
use crate::id::StreamId;

static APPEND_CLUSTER_LUA: &str = include_str!("append_cluster.lua");
static INDEX_AWAITS_LUA: &str =
    concat!(include_str!("match.lua"), include_str!("index_awaits.lua"));

/// Hash slots of a Redis Cluster.
const SLOTS: u16 = 16384;
/// Outbox entries one repair pass takes from one slot.
const REPAIR_BATCH: usize = 200;
/// Slots the repair pass asks about at once.
const REPAIR_CONCURRENCY: usize = 64;

const SEP: char = '\u{1f}';

/// The scripts of cluster mode.
pub(crate) struct Scripts {
    append: Script,
    second: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            append: Script::new(APPEND_CLUSTER_LUA),
            second: Script::new(INDEX_AWAITS_LUA),
        }
    }
}

/// A cluster client for `nodes` (each `redis://host:port`); with `push`, a RESP3 client whose
/// messages and subscription changes go there.
pub(crate) fn client(
    nodes: &[String],
    timeout: Duration,
    push: Option<tokio::sync::mpsc::UnboundedSender<PushInfo>>,
) -> Result<ClusterClient> {
    if nodes.is_empty() {
        return Err(Error::argument(
            "cluster must list at least one node url (redis://host:port)",
        ));
    }
    for n in nodes {
        redis::Client::open(n.as_str()).map_err(|e| {
            Error::argument(format!(
                "cluster node '{n}' is not a Redis URL ({e}); use redis://host:port"
            ))
        })?;
    }
    let mut b = ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(8)
        .min_retry_wait(50)
        .max_retry_wait(1000);
    if let Some(tx) = push {
        b = b
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(tx);
    }
    b.build()
        .map_err(|e| Error::argument(format!("cluster: {e}")))
}

/// The nodes of a cluster url, `redis+cluster://host:port,host:port` (or `rediss+cluster://`
/// for TLS; user and password, if any, go before the first host and apply to every node):
/// `None` when `url` is not of that form.
pub fn nodes_of_url(url: &str) -> Option<Result<Vec<String>>> {
    let (scheme, rest) = if let Some(r) = url.strip_prefix("redis+cluster://") {
        ("redis", r)
    } else if let Some(r) = url.strip_prefix("rediss+cluster://") {
        ("rediss", r)
    } else {
        return None;
    };
    let (auth, hosts) = match rest.rfind('@') {
        Some(at) => (&rest[..=at], &rest[at + 1..]),
        None => ("", rest),
    };
    let hosts = hosts.trim_end_matches('/');
    let nodes: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| format!("{scheme}://{auth}{h}"))
        .collect();
    if nodes.is_empty() {
        return Some(Err(Error::argument(format!(
            "url '{url}' names no node; use redis+cluster://host:port,host:port"
        ))));
    }
    Some(Ok(nodes))
}

/// For every slot, a short hash tag that maps to it.
fn slot_tags() -> &'static HashMap<Slot, String> {
    static TAGS: OnceLock<HashMap<Slot, String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        let mut tags = HashMap::with_capacity(SLOTS as usize);
        let mut n: u64 = 0;
        while tags.len() < SLOTS as usize {
            let tag = n.to_string();
            tags.entry(Slot::for_key(format!("{{{tag}}}")))
                .or_insert(tag);
            n += 1;
        }
        tags
    })
}

/// The outbox of the slot `key` is in: `<prefix>:outbox:{<tag>}`.
pub fn outbox_key(prefix: &str, key: &str) -> String {
    outbox_of(prefix, Slot::for_key(key))
}

fn outbox_of(prefix: &str, slot: Slot) -> String {
    format!("{prefix}:outbox:{{{}}}", slot_tags()[&slot])
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The events of one group that live in one slot (indexes into the group).
struct Part {
    group: usize,
    events: Vec<usize>,
}

/// One event for the second step: its id, stream, index entry and stored fields.
struct Second<'a> {
    id: String,
    stream_type: &'a str,
    subject: &'a str,
    index: String,
    fields: Vec<(&'a str, &'a str)>,
}

impl RedisStore {
    fn scripts(&self) -> Result<&Scripts> {
        self.cluster_scripts
            .as_ref()
            .ok_or_else(|| Error::new(ErrorCode::Internal, "not a cluster store"))
    }

    /// Append on a cluster: step 1 per slot (in parallel), then step 2 for what was stored.
    pub(crate) async fn append_cluster(
        &self,
        groups: &[&[PreparedEvent]],
    ) -> Result<Vec<Result<Vec<StreamId>>>> {
        let mut slots: Vec<(Slot, Vec<Part>)> = Vec::new();
        let mut slot_index: HashMap<Slot, usize> = HashMap::new();
        for (g, group) in groups.iter().enumerate() {
            for (i, e) in group.iter().enumerate() {
                let slot = Slot::for_key(self.stream_key(&e.stream));
                let at = *slot_index.entry(slot).or_insert_with(|| {
                    slots.push((slot, Vec::new()));
                    slots.len() - 1
                });
                let parts = &mut slots[at].1;
                match parts.last_mut() {
                    Some(p) if p.group == g => p.events.push(i),
                    _ => parts.push(Part {
                        group: g,
                        events: vec![i],
                    }),
                }
            }
        }
        let conn = self.conn()?;
        let replies = join_all(
            slots
                .iter()
                .map(|(slot, parts)| self.append_slot(&conn, *slot, parts, groups)),
        )
        .await;
        if replies.iter().all(|r| r.is_err()) {
            if let Some(Err(e)) = replies.into_iter().next() {
                return Err(e);
            }
            return Ok(Vec::new());
        }

        let mut ids: Vec<Vec<Option<StreamId>>> =
            groups.iter().map(|g| vec![None; g.len()]).collect();
        let mut errors: Vec<Option<Error>> = vec![None; groups.len()];
        for ((_, parts), reply) in slots.iter().zip(replies) {
            match reply {
                Err(e) => {
                    for p in parts {
                        errors[p.group].get_or_insert_with(|| e.clone());
                    }
                }
                Ok(per_part) => {
                    for (p, r) in parts.iter().zip(per_part) {
                        match r {
                            Ok(part_ids) => {
                                for (&i, id) in p.events.iter().zip(part_ids) {
                                    ids[p.group][i] = Some(id);
                                }
                            }
                            Err(e) => {
                                errors[p.group].get_or_insert(e);
                            }
                        }
                    }
                }
            }
        }

        let mut second = Vec::new();
        let mut done: HashMap<Slot, Vec<String>> = HashMap::new();
        for (g, group) in groups.iter().enumerate() {
            for (e, id) in group.iter().zip(&ids[g]) {
                let Some(id) = id else { continue };
                second.push(Second {
                    id: id.to_string(),
                    stream_type: &e.stream.stream_type,
                    subject: &e.stream.id,
                    index: index_arg(&e.index),
                    fields: e.fields.iter().map(|(k, v)| (*k, v.as_str())).collect(),
                });
                done.entry(Slot::for_key(self.stream_key(&e.stream)))
                    .or_default()
                    .push(outbox_member(
                        &id.to_string(),
                        &e.stream.stream_type,
                        &e.stream.id,
                        &index_arg(&e.index),
                    ));
            }
        }
        if !second.is_empty() {
            match self.second_step(&conn, &second).await {
                Ok(()) => self.clear_outbox(conn, done),
                Err(_) => self.note_repair_due(),
            }
        }

        Ok(ids
            .into_iter()
            .zip(errors)
            .map(|(group_ids, err)| {
                let stored = group_ids.iter().filter(|i| i.is_some()).count();
                match err {
                    None => Ok(group_ids.into_iter().flatten().collect()),
                    Some(e) if stored == 0 => Err(e),
                    Some(e) => {
                        let msg = format!(
                            "{} ({stored} of {} events of this batch were stored: on a Redis \
                             Cluster a batch is atomic per hash slot)",
                            e.message,
                            group_ids.len()
                        );
                        Err(Error::new(e.code, msg))
                    }
                }
            })
            .collect())
    }

    /// Step 1 for the parts of one slot; with `replicated`, `WAIT 1` on the slot's master.
    async fn append_slot(
        &self,
        conn: &Conn,
        slot: Slot,
        parts: &[Part],
        groups: &[&[PreparedEvent]],
    ) -> Result<Vec<Result<Vec<StreamId>>>> {
        let mut inv = self.scripts()?.append.prepare_invoke();
        inv.arg(&self.prefix)
            .arg(self.max_len.unwrap_or(0))
            .arg(parts.len());
        for p in parts {
            inv.arg(p.events.len());
            for &i in &p.events {
                let e = &groups[p.group][i];
                inv.key(self.stream_key(&e.stream));
                inv.arg(&e.stream.stream_type)
                    .arg(&e.stream.id)
                    .arg(index_arg(&e.index))
                    .arg(e.fields.len());
                for (k, v) in &e.fields {
                    inv.arg(*k).arg(v);
                }
            }
        }
        inv.key(outbox_of(&self.prefix, slot));
        let inv = &inv;
        let reply: Value = self
            .send(conn, |mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        let Value::Array(out) = reply else {
            return Err(unexpected("append_cluster", &reply));
        };
        if out.len() != parts.len() {
            return Err(unexpected("append_cluster", &Value::Array(out)));
        }
        let results = parse_append_reply(out)?;
        match self.replicated {
            Some(wait) if results.iter().any(|r| r.is_ok()) => {
                let acked = self.wait_on_master(conn, slot, wait).await?;
                if acked {
                    Ok(results)
                } else {
                    let refused = not_replicated(wait);
                    Ok(results
                        .into_iter()
                        .map(|r| r.and_then(|_| Err(refused.clone())))
                        .collect())
                }
            }
            _ => Ok(results),
        }
    }

    /// `WAIT 1 <ms>` on the master of `slot`: true when a replica confirmed.
    async fn wait_on_master(&self, conn: &Conn, slot: Slot, wait: Duration) -> Result<bool> {
        let Conn::Cluster(cluster) = conn else {
            return Err(Error::new(ErrorCode::Internal, "not a cluster connection"));
        };
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(1).arg(wait.as_millis() as u64);
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
            Route::with_slot(slot, SlotAddr::Master),
        ));
        let reply = super::redis::with_timeout(self.timeout(), async {
            cluster
                .clone()
                .route_command(cmd, routing)
                .await
                .map_err(Error::from)
        })
        .await?;
        Ok(matches!(reply, Value::Int(n) if n >= 1))
    }

    /// Step 2: index entries and event awaits, in the coordination slot.
    async fn second_step(&self, conn: &Conn, events: &[Second<'_>]) -> Result<()> {
        let mut inv = self.scripts()?.second.prepare_invoke();
        inv.key(format!("{}:triggers", self.coord))
            .arg(&self.coord)
            .arg(events.len());
        for e in events {
            inv.arg(&e.id)
                .arg(e.stream_type)
                .arg(e.subject)
                .arg(&e.index)
                .arg(e.fields.len());
            for (k, v) in &e.fields {
                inv.arg(*k).arg(*v);
            }
        }
        let inv = &inv;
        let _: i64 = self
            .send(conn, |mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok(())
    }

    /// Remove done outbox entries, in the background: if this fails, the repair pass does the
    /// (repeatable) second step again and removes them.
    fn clear_outbox(&self, conn: Conn, done: HashMap<Slot, Vec<String>>) {
        let prefix = self.prefix.clone();
        let timeout = self.timeout();
        tokio::spawn(async move {
            join_all(done.into_iter().map(|(slot, members)| {
                let mut cmd = redis::cmd("ZREM");
                cmd.arg(outbox_of(&prefix, slot)).arg(members);
                let mut c = conn.clone();
                async move {
                    let _ = tokio::time::timeout(timeout, cmd.query_async::<()>(&mut c)).await;
                }
            }))
            .await;
        });
    }

    /// Find outbox entries older than `grace` in every slot and do their second step. Returns
    /// how many entries it completed.
    pub async fn repair_outbox(&self, grace: Duration) -> Result<usize> {
        let conn = self.conn()?;
        let cutoff = now_ms().saturating_sub(grace.as_millis() as u64);
        let tags = slot_tags();
        let found: Vec<(Slot, Vec<String>)> = stream::iter(tags.keys().copied())
            .map(|slot| {
                let conn = conn.clone();
                async move {
                    let mut cmd = redis::cmd("ZRANGE");
                    cmd.arg(outbox_of(&self.prefix, slot))
                        .arg("-inf")
                        .arg(cutoff)
                        .arg("BYSCORE")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(REPAIR_BATCH);
                    let cmd = &cmd;
                    let r: Result<Vec<String>> = self
                        .send(&conn, |mut c| async move { cmd.query_async(&mut c).await })
                        .await;
                    (slot, r)
                }
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
        let mut completed = 0;
        for (slot, members) in found {
            completed += self.repair_slot(&conn, slot, members).await?;
        }
        Ok(completed)
    }

    /// Whether a second step failed since the last call (the repair pass should run soon).
    pub fn take_repair_due(&self) -> bool {
        self.repair_due
            .swap(false, std::sync::atomic::Ordering::AcqRel)
    }

    fn note_repair_due(&self) {
        self.repair_due
            .store(true, std::sync::atomic::Ordering::Release);
    }

    async fn repair_slot(&self, conn: &Conn, slot: Slot, members: Vec<String>) -> Result<usize> {
        // read each noted event back from its stream
        let mut entries = Vec::new();
        let mut pipe = redis::pipe();
        for m in &members {
            let parts: Vec<&str> = m.splitn(4, SEP).collect();
            let [id, stype, subject, index] = parts[..] else {
                continue;
            };
            let key = format!("{}:{stype}:{{{subject}}}", self.prefix);
            pipe.cmd("XRANGE").arg(&key).arg(id).arg(id);
            entries.push((m.as_str(), id, stype, subject, index));
        }
        let fetched: Vec<Value> = if entries.is_empty() {
            Vec::new()
        } else {
            let pipe = &pipe;
            self.send(conn, |mut c| async move { pipe.query_async(&mut c).await })
                .await?
        };
        let mut texts: Vec<Vec<String>> = Vec::new();
        for v in &fetched {
            texts.push(entry_fields(v));
        }
        let mut second = Vec::new();
        for ((_, id, stype, subject, index), fields) in entries.iter().zip(&texts) {
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
            self.second_step(conn, &second).await?;
        }
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(outbox_of(&self.prefix, slot)).arg(&members);
        let cmd = &cmd;
        let _: i64 = self
            .send(conn, |mut c| async move { cmd.query_async(&mut c).await })
            .await?;
        Ok(members.len())
    }
}

/// An outbox member: `id SEP type SEP subject SEP index`.
fn outbox_member(id: &str, stream_type: &str, subject: &str, index: &str) -> String {
    format!("{id}{SEP}{stream_type}{SEP}{subject}{SEP}{index}")
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
