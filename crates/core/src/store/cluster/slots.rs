//! Hash slots: which master serves each (as last read), a hash tag for every slot (the
//! outboxes' names), and batching events by the node or slot a call goes to.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, OnceLock};

use redis::cluster_routing::Slot;
use redis::Value;

use crate::error::Result;
use crate::keys::Keys;
use crate::store::redis::connection::Connection;
use crate::store::redis::reply::{text, unexpected};

/// Hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// For every slot, a short hash tag that maps to it.
pub fn slot_tags() -> &'static HashMap<Slot, String> {
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

/// The outbox of the slot `key` is in (see `Keys::outbox`).
pub fn outbox_key(prefix: &str, key: &str) -> String {
    outbox_of(&Keys::cluster(prefix), Slot::for_key(key))
}

/// The outbox of `slot`.
pub fn outbox_of(keys: &Keys, slot: Slot) -> String {
    keys.outbox(&slot_tags()[&slot])
}

/// Which master (an index of our own) serves each slot.
pub type SlotOwners = Arc<HashMap<Slot, usize>>;

/// The slot map as last read, valid until the connection is renewed (a failover) or an
/// append finds it stale.
#[derive(Default)]
pub struct SlotMap {
    /// The map and the connection renewal it was read at.
    cached: Mutex<Option<(SlotOwners, u64)>>,
}

impl SlotMap {
    /// The current map (`CLUSTER SLOTS` when none is known for this connection).
    pub async fn get(&self, conn: &Connection) -> Result<SlotOwners> {
        let renewals = conn.renewals();
        if let Some((owners, at)) = self.lock().clone() {
            if at == renewals {
                return Ok(owners);
            }
        }
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SLOTS");
        let cmd = &cmd;
        let reply: Value = conn
            .send(|mut c| async move { cmd.query_async(&mut c).await })
            .await?;
        let owners = Arc::new(parse_slots(reply)?);
        *self.lock() = Some((owners.clone(), renewals));
        Ok(owners)
    }

    /// The map turned out stale: read it again next time.
    pub fn forget(&self) {
        self.lock().take();
    }

    /// Plant a map (tests of the stale-map path).
    #[cfg(test)]
    pub fn set(&self, owners: SlotOwners, renewals: u64) {
        *self.lock() = Some((owners, renewals));
    }

    /// Whether a map is cached.
    #[cfg(test)]
    pub fn is_known(&self) -> bool {
        self.lock().is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(SlotOwners, u64)>> {
        self.cached.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `CLUSTER SLOTS` → slot → master index.
fn parse_slots(reply: Value) -> Result<HashMap<Slot, usize>> {
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
    Ok(owners)
}

/// Where a call of step 1 (or of the outbox clean-up) goes: a master by the slot map, or one
/// slot when the map is not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// A master, by the slot map.
    Node(usize),
    /// One slot.
    Slot(Slot),
}

impl Target {
    /// The node serving `slot`, or the slot itself without a map.
    pub fn of(owners: Option<&SlotOwners>, slot: Slot) -> Target {
        match owners.and_then(|o| o.get(&slot)) {
            Some(&node) => Target::Node(node),
            None => Target::Slot(slot),
        }
    }
}

/// The events of one group that go in one call (indexes into the group).
pub struct Part {
    /// The group.
    pub group: usize,
    /// Indexes of its events.
    pub events: Vec<usize>,
}

/// The events `(group, index)` batched by `target`, each batch's parts in the order given.
pub fn batch_by<K: Hash + Eq>(
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
