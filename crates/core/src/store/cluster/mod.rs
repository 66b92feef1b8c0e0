//! Redis Cluster: the Redis backend with the append in two steps, because the events of
//! different contexts live on different shards.
//!
//! Key layout (`Keys::cluster`): every stream is `<prefix>:<type>:{<id>}`, so a stream and its
//! live channel (`…:live`, sharded Pub/Sub) share one hash slot; everything else (run and
//! trigger indexes, awaits, jobs, timers, leases) lives under `{<prefix>}:…`, one slot: the
//! coordination slot. Per-kind channels stay plain Pub/Sub, which the cluster carries to
//! every node.
//!
//! An append happens in two steps, because the index entry and the event awaits an event
//! resolves are in the coordination slot, not in the stream's:
//! 1. `lua/append_cluster.lua`, one call per master (per slot when the slot map turns out
//!    stale), stores and publishes the events of the streams it serves and notes each in its
//!    slot's outbox (`<prefix>:outbox:{<tag>}`, a sorted set in the same slot);
//! 2. `lua/index_awaits.lua`, in the coordination slot, adds index entries and resolves
//!    awaits (following `store::awaits`); it is safe to repeat. Then the outbox entries are
//!    removed (`lua/outbox_done.lua`, per master).
//!
//! A process that dies (or loses its connection) between the two leaves outbox entries; the
//! repair pass (`repair.rs`) finds entries older than a grace period in every slot's outbox
//! and does step 2 for them.

mod pubsub;
mod repair;
mod slots;

pub use crate::store::redis::connection::nodes_of_url;
pub use slots::outbox_key;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{Script, Value};

use crate::diagnostics::Diagnostics;
use crate::error::{Error, ErrorCode, Result};
use crate::event::{PreparedEvent, StreamRef};
use crate::id::StreamId;
use crate::keys::Keys;
use crate::store::awaits::RESOLVED_TTL_MS;
use crate::store::redis::commands::Commands;
use crate::store::redis::connection::{with_timeout, Conn, Connection};
use crate::store::redis::reply::{
    event_index_arg, not_replicated, parse_append_reply, text, unexpected,
};
use crate::store::redis::{AppendPath, RedisStore};
use crate::store::{GroupResults, Store, StoreOptions};
use slots::{batch_by, outbox_of, Part, SlotMap, SlotOwners, Target};

static APPEND_CLUSTER_LUA: &str = include_str!("lua/append_cluster.lua");
static OUTBOX_DONE_LUA: &str = include_str!("lua/outbox_done.lua");
static INDEX_AWAITS_LUA: &str = concat!(
    include_str!("../redis/lua/match.lua"),
    include_str!("../redis/lua/retention.lua"),
    include_str!("lua/index_awaits.lua")
);

/// Separator of an outbox member's parts.
const SEP: char = '\u{1f}';

/// Connect to a Redis Cluster through some of its `nodes`, and start its repair pass.
pub async fn connect(
    nodes: &[String],
    opts: &StoreOptions,
    diagnostics: Arc<Diagnostics>,
) -> Result<Arc<dyn Store>> {
    let conn = Connection::cluster(nodes, opts.timeout).await?;
    let cmds = Arc::new(Commands::new(conn, Keys::cluster(&opts.prefix)));
    let shared = Arc::new(Shared::new(cmds.clone(), opts, diagnostics));
    tokio::spawn(repair::run(Arc::downgrade(&shared), opts.repair_interval));
    let pubsub = pubsub::ClusterPubSub::new(nodes, opts.timeout);
    Ok(Arc::new(RedisStore::new(
        cmds,
        Box::new(ClusterAppend { shared }),
        Arc::new(pubsub),
    )))
}

/// The scripts of cluster mode.
struct Scripts {
    append: Script,
    second: Script,
    outbox_done: Script,
}

/// What the append path and its repair pass share.
struct Shared {
    cmds: Arc<Commands>,
    scripts: Scripts,
    slots: SlotMap,
    max_len: Option<u64>,
    replicated: Option<Duration>,
    /// A second step failed: the repair pass should run soon.
    repair_due: AtomicBool,
    closed: AtomicBool,
    diagnostics: Arc<Diagnostics>,
}

/// The append path of a cluster (see the module's doc).
struct ClusterAppend {
    shared: Arc<Shared>,
}

#[async_trait]
impl AppendPath for ClusterAppend {
    async fn append(&self, _: &Commands, groups: &[&[PreparedEvent]]) -> Result<GroupResults> {
        let stored = self.shared.step1(groups).await?;
        self.shared.step2(groups, &stored).await;
        Ok(stored.results())
    }

    fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
    }
}

/// What step 1 of an append stored: the id of each event (by group), and why a group, or part
/// of it, was not stored.
struct Stored {
    /// Each event's stream key and its slot, by group.
    keys: Vec<Vec<(String, Slot)>>,
    ids: Vec<Vec<Option<StreamId>>>,
    errors: Vec<Option<Error>>,
    owners: Option<SlotOwners>,
}

impl Stored {
    /// Per group: its ids, or why (not all of) it was stored.
    fn results(self) -> GroupResults {
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

/// One event for the second step: its id, stream, index entry and stored fields.
struct Second<'a> {
    id: String,
    stream_type: &'a str,
    subject: &'a str,
    index: String,
    fields: Vec<(&'a str, &'a str)>,
}

/// An outbox member: `id SEP type SEP subject SEP index`.
fn outbox_member(id: &str, stream_type: &str, subject: &str, index: &str) -> String {
    format!("{id}{SEP}{stream_type}{SEP}{subject}{SEP}{index}")
}

impl Shared {
    fn new(cmds: Arc<Commands>, opts: &StoreOptions, diagnostics: Arc<Diagnostics>) -> Self {
        Shared {
            cmds,
            scripts: Scripts {
                append: Script::new(APPEND_CLUSTER_LUA),
                second: Script::new(INDEX_AWAITS_LUA),
                outbox_done: Script::new(OUTBOX_DONE_LUA),
            },
            slots: SlotMap::default(),
            max_len: opts.max_len,
            replicated: opts.replicated,
            repair_due: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            diagnostics,
        }
    }

    fn keys(&self) -> &Keys {
        &self.cmds.keys
    }

    fn conn(&self) -> &Connection {
        &self.cmds.conn
    }

    /// Step 1 of an append: per master (in parallel; per slot when the slot map turns out
    /// stale). Fails as a whole only when nothing was stored and a call failed.
    async fn step1(&self, groups: &[&[PreparedEvent]]) -> Result<Stored> {
        let conn = self.conn().get()?;
        let owners = self.slots.get(self.conn()).await.ok();
        let keys: Vec<Vec<(String, Slot)>> = groups
            .iter()
            .map(|group| {
                group
                    .iter()
                    .map(|e| {
                        let key = self.keys().stream(&e.stream);
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
            self.slots.forget();
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
    async fn step2(&self, groups: &[&[PreparedEvent]], stored: &Stored) {
        let mut second = Vec::new();
        let mut done: Vec<(Slot, String)> = Vec::new();
        for (g, group) in groups.iter().enumerate() {
            for ((e, id), (_, slot)) in group.iter().zip(&stored.ids[g]).zip(&stored.keys[g]) {
                let Some(id) = id else { continue };
                let (id, index) = (id.to_string(), event_index_arg(e));
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
        if second.is_empty() {
            return;
        }
        match self.second_step(&second).await {
            Ok(()) => self.clear_outbox(stored.owners.clone(), done),
            Err(e) => {
                self.diagnostics.warn(
                    "APPEND_SECOND_STEP_FAILED",
                    "indexing or event-await matching of stored events failed; the repair pass \
                     will do it",
                    Some(e.to_string()),
                );
                self.repair_due.store(true, Ordering::Release);
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
    ) -> Result<Option<GroupResults>> {
        let mut inv = self.scripts.append.prepare_invoke();
        let (first_key, first_slot) = &keys[parts[0].group][parts[0].events[0]];
        inv.key(first_key)
            .arg(self.keys().prefix())
            .arg(self.max_len.unwrap_or(0))
            .arg(parts.len());
        for p in parts {
            inv.arg(p.events.len());
            for &i in &p.events {
                let e = &groups[p.group][i];
                let (key, slot) = &keys[p.group][i];
                inv.arg(key).arg(outbox_of(self.keys(), *slot));
                inv.arg(&e.stream.stream_type)
                    .arg(&e.stream.id)
                    .arg(event_index_arg(e))
                    .arg(e.fields.len());
                for (k, v) in &e.fields {
                    inv.arg(*k).arg(v);
                }
            }
        }
        let inv = &inv;
        let reply: Value = self
            .conn()
            .send_on(conn, |mut c| async move { inv.invoke_async(&mut c).await })
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
                if self.wait_on_master(conn, *first_slot, wait).await? {
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
        let reply = with_timeout(self.conn().timeout(), async {
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
    async fn second_step(&self, events: &[Second<'_>]) -> Result<()> {
        // retention: which index entry goes with each terminal event's stream (looked up
        // together, one read per finished run)
        let retained: Vec<Option<String>> = join_all(events.iter().map(|e| async move {
            if !e.index.starts_with('e') {
                return Ok(None);
            }
            Ok(self
                .retained_entry(e.stream_type, e.subject)
                .await?
                .map(|entry| format!("{}{SEP}{entry}", e.index)))
        }))
        .await
        .into_iter()
        .collect::<Result<_>>()?;
        let mut inv = self.scripts.second.prepare_invoke();
        inv.key(self.keys().triggers())
            .arg(self.keys().coord())
            .arg(RESOLVED_TTL_MS)
            .arg(events.len());
        for (e, retained) in events.iter().zip(&retained) {
            inv.arg(&e.id)
                .arg(e.stream_type)
                .arg(e.subject)
                .arg(retained.as_deref().unwrap_or(&e.index))
                .arg(e.fields.len());
            for (k, v) in &e.fields {
                inv.arg(*k).arg(*v);
            }
        }
        let inv = &inv;
        let _: i64 = self
            .conn()
            .send(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok(())
    }

    /// Retention: the index entry that goes with the stream of a terminal event — `t` for a
    /// trigger, `f<name>` for a flow run, its name read from the run-starting event at the
    /// stream's start (in the stream's slot, so here, not in step 2's script) — or `None`.
    async fn retained_entry(&self, stream_type: &str, subject: &str) -> Result<Option<String>> {
        if stream_type == "trigger" {
            return Ok(Some("t".into()));
        }
        let stream = StreamRef {
            stream_type: stream_type.to_owned(),
            id: subject.to_owned(),
        };
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(self.keys().stream(&stream))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(16);
        let cmd = &cmd;
        let reply: Value = self
            .conn()
            .send(|mut c| async move { cmd.query_async(&mut c).await })
            .await?;
        let Value::Array(entries) = reply else {
            return Ok(None);
        };
        for entry in &entries {
            let Value::Array(parts) = entry else { continue };
            let Some(Value::Array(fields)) = parts.get(1) else {
                continue;
            };
            let fields: Vec<String> = fields.iter().map(text).collect();
            let field = |name: &str| {
                fields
                    .chunks_exact(2)
                    .find(|kv| kv[0] == name)
                    .map(|kv| kv[1].as_str())
            };
            if matches!(field("kind"), Some("flow.started" | "flow.start")) {
                return Ok(
                    crate::event::run_index_name_of(field("data"), field("meta"))
                        .map(|name| format!("f{name}")),
                );
            }
        }
        Ok(None)
    }

    /// Remove done outbox entries, one call per node, in the background: if this fails, the
    /// repair pass does the (repeatable) second step again and removes them.
    fn clear_outbox(&self, owners: Option<SlotOwners>, done: Vec<(Slot, String)>) {
        let Ok(conn) = self.conn().get() else { return };
        let mut by_node: HashMap<Target, Vec<(String, String)>> = HashMap::new();
        for (slot, member) in done {
            by_node
                .entry(Target::of(owners.as_ref(), slot))
                .or_default()
                .push((outbox_of(self.keys(), slot), member));
        }
        let script = self.scripts.outbox_done.clone();
        let timeout = self.conn().timeout();
        tokio::spawn(async move {
            join_all(by_node.into_values().map(|entries| {
                let mut inv = script.prepare_invoke();
                inv.key(&entries[0].0);
                for (outbox, member) in &entries {
                    inv.arg(outbox).arg(member);
                }
                let mut c = conn.clone();
                async move {
                    // a failure leaves the entries to the repair pass, which is safe
                    let _ = tokio::time::timeout(timeout, inv.invoke_async::<i64>(&mut c)).await;
                }
            }))
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Limits, StreamRef};
    use crate::store::redis::connection::nodes_of_url;
    use crate::store::EventLog;

    /// A slot map gone stale (every slot on one master) costs a second round, per slot; every
    /// event is stored once, in order. Runs when REDIS_URL is a cluster url.
    #[tokio::test]
    async fn a_stale_slot_map_falls_back_to_one_call_per_slot() {
        let url = std::env::var("REDIS_URL").unwrap_or_default();
        let Some(nodes) = nodes_of_url(&url) else {
            eprintln!("needs REDIS_URL=redis+cluster://… (REDIS_CLUSTER=1 npm test)");
            return;
        };
        let nodes = nodes.unwrap();
        let prefix = format!(
            "test-stale-{}-{}",
            std::process::id(),
            crate::clock::now_ms()
        );
        let opts = StoreOptions {
            prefix,
            max_len: None,
            timeout: Duration::from_secs(5),
            replicated: None,
            repair_interval: Duration::from_secs(10),
        };
        let conn = Connection::cluster(&nodes, opts.timeout).await.unwrap();
        let cmds = Arc::new(Commands::new(conn, Keys::cluster(&opts.prefix)));
        let shared = Arc::new(Shared::new(cmds.clone(), &opts, Default::default()));
        let real = shared.slots.get(&cmds.conn).await.unwrap();
        assert!(real.values().any(|&n| n != 0), "more than one master");
        let stale: HashMap<Slot, usize> = real.keys().map(|s| (*s, 0)).collect();
        shared.slots.set(Arc::new(stale), cmds.conn.renewals());

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
        let append = ClusterAppend {
            shared: shared.clone(),
        };
        let out = append.append(&cmds, &groups).await.unwrap();
        assert!(out.iter().all(|r| r.is_ok()), "{out:?}");
        assert!(
            !shared.slots.is_known(),
            "the stale map was found out and dropped"
        );
        let store = RedisStore::new(
            cmds,
            Box::new(append),
            Arc::new(pubsub::ClusterPubSub::new(&nodes, opts.timeout)),
        );
        for s in 0..20 {
            let stream = StreamRef::new("flow", &format!("s{s}")).unwrap();
            let read = store.read(&stream, &Default::default()).await.unwrap();
            assert_eq!(read.len(), 2, "stream s{s}");
        }
    }
}
