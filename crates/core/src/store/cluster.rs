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
//! 1. `append_cluster.lua`, one call per master (per slot when the slot map turns out stale),
//!    stores and publishes the events of the streams it serves and notes each in its slot's
//!    outbox (`<prefix>:outbox:{<tag>}`, a sorted set in the same slot);
//! 2. `index_awaits.lua`, in the coordination slot, adds index entries and resolves awaits; it
//!    is safe to repeat. Then the outbox entries are removed (`outbox_done.lua`, per master).
//!
//! A process that dies (or loses its connection) between the two leaves outbox entries; the
//! repair pass (`repair_outbox`) finds entries older than a grace period in every slot's outbox
//! and does step 2 for them.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{PushInfo, Script, Value};

use super::redis::{
    index_arg, not_replicated, parse_append_reply, text, unexpected, Conn, RedisStore,
};
use crate::clock::now_ms;
use crate::error::{Error, ErrorCode, Result};
use crate::event::{PreparedEvent, StreamRef};
use crate::id::StreamId;

static APPEND_CLUSTER_LUA: &str = include_str!("append_cluster.lua");
static OUTBOX_DONE_LUA: &str = include_str!("outbox_done.lua");
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
    outbox_done: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            append: Script::new(APPEND_CLUSTER_LUA),
            second: Script::new(INDEX_AWAITS_LUA),
            outbox_done: Script::new(OUTBOX_DONE_LUA),
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

/// What step 1 of an append stored: the id of each event (by group), and why a group, or part
/// of it, was not stored.
pub(crate) struct Stored {
    /// Each event's stream key and its slot, by group.
    keys: Vec<Vec<(String, Slot)>>,
    ids: Vec<Vec<Option<StreamId>>>,
    errors: Vec<Option<Error>>,
    owners: Option<SlotOwners>,
}

/// Which master (an index of our own) serves each slot, as last read.
pub(crate) type SlotOwners = Arc<HashMap<Slot, usize>>;

/// Where a call of step 1 (or of the outbox clean-up) goes: a master by the slot map, or one
/// slot when the map is not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Target {
    Node(usize),
    Slot(Slot),
}

impl Target {
    fn of(owners: Option<&SlotOwners>, slot: Slot) -> Target {
        match owners.and_then(|o| o.get(&slot)) {
            Some(&node) => Target::Node(node),
            None => Target::Slot(slot),
        }
    }
}

impl Stored {
    /// Per group: its ids, or why (not all of) it was stored.
    pub(crate) fn results(self) -> Vec<Result<Vec<StreamId>>> {
        self.ids
            .into_iter()
            .zip(self.errors)
            .map(|(group_ids, err)| {
                let stored = group_ids.iter().filter(|i| i.is_some()).count();
                match err {
                    None => Ok(group_ids.into_iter().flatten().collect()),
                    Some(e) if stored == 0 => Err(e),
                    Some(e) => {
                        let msg = format!(
                            "{} ({stored} of {} events of this batch were stored: on a Redis \
                             Cluster a batch is atomic per node)",
                            e.message,
                            group_ids.len()
                        );
                        Err(Error::new(e.code, msg))
                    }
                }
            })
            .collect()
    }
}

/// The events of one group that go in one call (indexes into the group).
struct Part {
    group: usize,
    events: Vec<usize>,
}

/// The events `(group, index)` batched by `target`, each batch's parts in the order given.
fn batch_by<K: Hash + Eq>(
    events: impl IntoIterator<Item = (usize, usize)>,
    target: impl Fn(usize, usize) -> K,
) -> Vec<Vec<Part>> {
    let mut batches: Vec<Vec<Part>> = Vec::new();
    let mut index: HashMap<K, usize> = HashMap::new();
    for (g, i) in events {
        let at = *index.entry(target(g, i)).or_insert_with(|| {
            batches.push(Vec::new());
            batches.len() - 1
        });
        let parts = &mut batches[at];
        match parts.last_mut() {
            Some(p) if p.group == g => p.events.push(i),
            _ => parts.push(Part {
                group: g,
                events: vec![i],
            }),
        }
    }
    batches
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

    /// Append on a cluster: step 1, then step 2 for what was stored.
    pub(crate) async fn append_cluster(
        &self,
        groups: &[&[PreparedEvent]],
    ) -> Result<Vec<Result<Vec<StreamId>>>> {
        let stored = self.append_step1(groups).await?;
        self.append_step2(groups, &stored).await;
        Ok(stored.results())
    }

    /// Step 1 of an append: per master (in parallel; per slot when the slot map turns out
    /// stale). Fails as a whole only when nothing was stored and a call failed.
    pub(crate) async fn append_step1(&self, groups: &[&[PreparedEvent]]) -> Result<Stored> {
        let conn = self.conn()?;
        let owners = self.slot_owners(&conn).await.ok();
        let keys: Vec<Vec<(String, Slot)>> = groups
            .iter()
            .map(|group| {
                group
                    .iter()
                    .map(|e| {
                        let key = self.stream_key(&e.stream);
                        let slot = Slot::for_key(&key);
                        (key, slot)
                    })
                    .collect()
            })
            .collect();
        let all = groups
            .iter()
            .enumerate()
            .flat_map(|(g, group)| (0..group.len()).map(move |i| (g, i)));
        let mut batches = batch_by(all, |g, i| Target::of(owners.as_ref(), keys[g][i].1));
        let mut ids: Vec<Vec<Option<StreamId>>> =
            groups.iter().map(|g| vec![None; g.len()]).collect();
        let mut errors: Vec<Option<Error>> = vec![None; groups.len()];
        let mut outer: Option<Error> = None;
        let mut per_slot = false;
        loop {
            let replies = join_all(
                batches
                    .iter()
                    .map(|parts| self.append_batch(&conn, parts, groups, &keys)),
            )
            .await;
            let mut again = Vec::new();
            for (parts, reply) in batches.into_iter().zip(replies) {
                match reply {
                    Err(e) => {
                        for p in &parts {
                            errors[p.group].get_or_insert_with(|| e.clone());
                        }
                        outer.get_or_insert(e);
                    }
                    Ok(None) => again.extend(parts),
                    Ok(Some(per_part)) => {
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
            if again.is_empty() {
                break;
            }
            if per_slot {
                // the slots moved again while this append ran
                let moved = Error::new(
                    ErrorCode::StoreUnavailable,
                    "the cluster's slots moved while the append ran; nothing of it was written",
                );
                for p in &again {
                    errors[p.group].get_or_insert_with(|| moved.clone());
                }
                break;
            }
            self.forget_slot_owners();
            per_slot = true;
            let again = again
                .into_iter()
                .flat_map(|p| p.events.into_iter().map(move |i| (p.group, i)));
            batches = batch_by(again, |g, i| keys[g][i].1);
        }
        if ids.iter().flatten().all(Option::is_none) {
            if let Some(e) = outer {
                return Err(e);
            }
        }
        Ok(Stored {
            keys,
            ids,
            errors,
            owners,
        })
    }

    /// Step 2 of an append, for the events step 1 stored: index entries and event awaits, then
    /// (in the background) the removal of their outbox entries. A failure leaves the outbox
    /// entries to the repair pass.
    pub(crate) async fn append_step2(&self, groups: &[&[PreparedEvent]], stored: &Stored) {
        let Ok(conn) = self.conn() else { return };
        let mut second = Vec::new();
        let mut done: Vec<(Slot, String)> = Vec::new();
        for (g, group) in groups.iter().enumerate() {
            for ((e, id), (_, slot)) in group.iter().zip(&stored.ids[g]).zip(&stored.keys[g]) {
                let Some(id) = id else { continue };
                let (id, index) = (id.to_string(), index_arg(&e.index));
                done.push((
                    *slot,
                    outbox_member(&id, &e.stream.stream_type, &e.stream.id, &index),
                ));
                second.push(Second {
                    id,
                    stream_type: &e.stream.stream_type,
                    subject: &e.stream.id,
                    index,
                    fields: e.fields.iter().map(|(k, v)| (*k, v.as_str())).collect(),
                });
            }
        }
        if !second.is_empty() {
            match self.second_step(&conn, &second).await {
                Ok(()) => self.clear_outbox(conn, stored.owners.clone(), done),
                Err(_) => self.note_repair_due(),
            }
        }
    }

    /// Step 1 for the parts of one batch (all on one node, by our slot map); `None` when a key
    /// turned out not to be on that node. With `replicated`, `WAIT 1` on that node.
    async fn append_batch(
        &self,
        conn: &Conn,
        parts: &[Part],
        groups: &[&[PreparedEvent]],
        keys: &[Vec<(String, Slot)>],
    ) -> Result<Option<Vec<Result<Vec<StreamId>>>>> {
        let mut inv = self.scripts()?.append.prepare_invoke();
        let (first_key, first_slot) = &keys[parts[0].group][parts[0].events[0]];
        inv.key(first_key)
            .arg(&self.prefix)
            .arg(self.max_len.unwrap_or(0))
            .arg(parts.len());
        for p in parts {
            inv.arg(p.events.len());
            for &i in &p.events {
                let e = &groups[p.group][i];
                let (key, slot) = &keys[p.group][i];
                inv.arg(key).arg(outbox_of(&self.prefix, *slot));
                inv.arg(&e.stream.stream_type)
                    .arg(&e.stream.id)
                    .arg(index_arg(&e.index))
                    .arg(e.fields.len());
                for (k, v) in &e.fields {
                    inv.arg(*k).arg(v);
                }
            }
        }
        let inv = &inv;
        let reply: Value = self
            .send(conn, |mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        let Value::Array(out) = reply else {
            return Err(unexpected("append_cluster", &reply));
        };
        if out.len() == 1 && text(&out[0]) == "nonlocal" {
            return Ok(None);
        }
        if out.len() != parts.len() {
            return Err(unexpected("append_cluster", &Value::Array(out)));
        }
        let results = parse_append_reply(out)?;
        match self.replicated {
            Some(wait) if results.iter().any(|r| r.is_ok()) => {
                let acked = self.wait_on_master(conn, *first_slot, wait).await?;
                if acked {
                    Ok(Some(results))
                } else {
                    let refused = not_replicated(wait);
                    Ok(Some(
                        results
                            .into_iter()
                            .map(|r| r.and_then(|_| Err(refused.clone())))
                            .collect(),
                    ))
                }
            }
            _ => Ok(Some(results)),
        }
    }

    /// Which master serves each slot, as last read (`CLUSTER SLOTS`).
    async fn slot_owners(&self, conn: &Conn) -> Result<SlotOwners> {
        if let Some(o) = self
            .slot_owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(o);
        }
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SLOTS");
        let cmd = &cmd;
        let reply: Value = self
            .send(conn, |mut c| async move { cmd.query_async(&mut c).await })
            .await?;
        let Value::Array(ranges) = reply else {
            return Err(unexpected("CLUSTER SLOTS", &reply));
        };
        let mut nodes: Vec<String> = Vec::new();
        let mut owners = HashMap::with_capacity(SLOTS as usize);
        for r in ranges {
            let Value::Array(r) = r else { continue };
            let (Some(Value::Int(lo)), Some(Value::Int(hi)), Some(Value::Array(master))) =
                (r.first(), r.get(1), r.get(2))
            else {
                continue;
            };
            let addr = format!(
                "{}:{}",
                master.first().map(text).unwrap_or_default(),
                master.get(1).map(text).unwrap_or_default()
            );
            let node = nodes.iter().position(|n| *n == addr).unwrap_or_else(|| {
                nodes.push(addr);
                nodes.len() - 1
            });
            for s in *lo..=*hi {
                if let Some(slot) = u16::try_from(s).ok().and_then(Slot::new) {
                    owners.insert(slot, node);
                }
            }
        }
        let owners = Arc::new(owners);
        *self.slot_owners.lock().unwrap_or_else(|p| p.into_inner()) = Some(owners.clone());
        Ok(owners)
    }

    /// The slot map is stale: read it again next time.
    pub(crate) fn forget_slot_owners(&self) {
        self.slot_owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
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

    /// Remove done outbox entries, one call per node, in the background: if this fails, the
    /// repair pass does the (repeatable) second step again and removes them.
    fn clear_outbox(&self, conn: Conn, owners: Option<SlotOwners>, done: Vec<(Slot, String)>) {
        let mut by_node: HashMap<Target, Vec<(String, String)>> = HashMap::new();
        for (slot, member) in done {
            by_node
                .entry(Target::of(owners.as_ref(), slot))
                .or_default()
                .push((outbox_of(&self.prefix, slot), member));
        }
        let Ok(script) = self.scripts().map(|s| s.outbox_done.clone()) else {
            return;
        };
        let timeout = self.timeout();
        tokio::spawn(async move {
            join_all(by_node.into_values().map(|entries| {
                let mut inv = script.prepare_invoke();
                inv.key(&entries[0].0);
                for (outbox, member) in &entries {
                    inv.arg(outbox).arg(member);
                }
                let mut c = conn.clone();
                async move {
                    let _ = tokio::time::timeout(timeout, inv.invoke_async::<i64>(&mut c)).await;
                }
            }))
            .await;
        });
    }

    /// Find outbox entries older than `grace` in every slot and do their second step.
    pub(crate) async fn repair_outbox(&self, grace: Duration) -> Result<()> {
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
        for (slot, members) in found {
            self.repair_slot(&conn, slot, members).await?;
        }
        Ok(())
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

    async fn repair_slot(&self, conn: &Conn, slot: Slot, members: Vec<String>) -> Result<()> {
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
                .arg(self.stream_key(&stream))
                .arg(id)
                .arg(id);
            entries.push((id, stype, subject, index));
        }
        let fetched: Vec<Value> = if entries.is_empty() {
            Vec::new()
        } else {
            let pipe = &pipe;
            self.send(conn, |mut c| async move { pipe.query_async(&mut c).await })
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
            self.second_step(conn, &second).await?;
        }
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(outbox_of(&self.prefix, slot)).arg(&members);
        let cmd = &cmd;
        self.send(
            conn,
            |mut c| async move { cmd.query_async::<()>(&mut c).await },
        )
        .await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Limits, StreamRef};
    use crate::store::redis::RedisOptions;

    /// A slot map gone stale (every slot on one master) costs a second round, per slot; every
    /// event is stored once, in order. Runs when REDIS_URL is a cluster url.
    #[tokio::test]
    async fn a_stale_slot_map_falls_back_to_one_call_per_slot() {
        let url = std::env::var("REDIS_URL").unwrap_or_default();
        let Some(nodes) = nodes_of_url(&url) else {
            eprintln!("needs REDIS_URL=redis+cluster://… (REDIS_CLUSTER=1 npm test)");
            return;
        };
        let prefix = format!("test-stale-{}-{}", std::process::id(), now_ms());
        let store = RedisStore::connect(&RedisOptions {
            url,
            cluster: Some(nodes.unwrap()),
            prefix: prefix.clone(),
            max_len: None,
            timeout: Duration::from_secs(5),
            replicated: None,
        })
        .await
        .unwrap();
        let conn = store.conn().unwrap();
        let real = store.slot_owners(&conn).await.unwrap();
        assert!(real.values().any(|&n| n != 0), "more than one master");
        let stale: HashMap<Slot, usize> = real.keys().map(|s| (*s, 0)).collect();
        *store.slot_owners.lock().unwrap() = Some(Arc::new(stale));

        let limits = Limits {
            max_event_bytes: 1 << 20,
        };
        let events: Vec<PreparedEvent> = (0..40)
            .map(|i| {
                let json = format!(
                    r#"{{"kind":"tick","subject":"s{}","data":{{"i":{i}}}}}"#,
                    i % 20
                );
                crate::event::prepare(&json, None, limits).unwrap()
            })
            .collect();
        let groups: Vec<&[PreparedEvent]> = events.chunks(4).collect();
        let out = store.append_cluster(&groups).await.unwrap();
        assert!(out.iter().all(|r| r.is_ok()), "{out:?}");
        assert!(
            store.slot_owners.lock().unwrap().is_none(),
            "the stale map was found out and dropped"
        );
        for s in 0..20 {
            let stream = StreamRef::new("flow", &format!("s{s}")).unwrap();
            let read = store.read(&stream, &Default::default()).await.unwrap();
            assert_eq!(read.len(), 2, "stream s{s}");
        }
    }
}
