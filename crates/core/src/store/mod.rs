//! Where events live: Redis, or the embedded in-memory store with the same behaviour.

pub mod awaits;
pub mod cluster;
pub mod memory;
pub mod redis;

use crate::error::Result;
use crate::event::{PreparedEvent, Record, StreamRef};
use crate::id::StreamId;
use crate::live::Hub;

/// Most entries one `read` returns.
pub const MAX_READ_LIMIT: usize = 10_000;
/// Entries one `read` returns when no limit is given.
pub const DEFAULT_READ_LIMIT: usize = 100;

/// Options of `read`: exclusive cursors, a limit and a direction.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Only entries with an id greater than this.
    pub after: Option<StreamId>,
    /// Only entries with an id smaller than this.
    pub before: Option<StreamId>,
    /// At most this many (default 100, at most 10 000).
    pub limit: Option<usize>,
    /// Newest first.
    pub reverse: bool,
}

/// One page of a subscriber's catch-up read.
#[derive(Debug, Default)]
pub struct CatchUpPage {
    /// Entries after the cursor, oldest first.
    pub records: Vec<Record>,
    /// Entries after the cursor were removed (trimmed or deleted) before they could be read.
    pub gap: bool,
}

/// A flow run from the run index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The flow run id (the stream's subject).
    pub id: String,
    /// Milliseconds of its `flow.started` event.
    pub started_ms: u64,
}

/// The store behind a bus.
pub enum Store {
    /// Redis (single node).
    Redis(Box<redis::RedisStore>),
    /// The embedded in-memory store.
    Memory(Box<memory::MemoryStore>),
}

impl Store {
    /// Append groups of events; each group is stored, published and indexed atomically.
    /// The outer error fails every group (the call did not happen or its outcome is unknown);
    /// an inner error refuses one group and nothing of it was written.
    pub async fn append(
        &self,
        groups: &[&[PreparedEvent]],
        hub: &Hub,
    ) -> Result<Vec<Result<Vec<StreamId>>>> {
        match self {
            Store::Redis(s) => s.append(groups).await,
            Store::Memory(s) => Ok(s.append(groups, hub)),
        }
    }

    /// Read a range of a stream.
    pub async fn read(&self, stream: &StreamRef, opts: &ReadOptions) -> Result<Vec<Record>> {
        match self {
            Store::Redis(s) => s.read(stream, opts).await,
            Store::Memory(s) => Ok(s.read(stream, opts)),
        }
    }

    /// The next page after `after`, oldest first, and optionally the stream's trim mark.
    pub async fn catch_up(
        &self,
        stream: &StreamRef,
        after: StreamId,
        count: usize,
        check_gap: bool,
    ) -> Result<CatchUpPage> {
        match self {
            Store::Redis(s) => s.catch_up(stream, after, count, check_gap).await,
            Store::Memory(s) => Ok(s.catch_up(stream, after, count, check_gap)),
        }
    }

    /// Runs of a flow, newest first.
    pub async fn list_runs(&self, name: &str, limit: usize, offset: usize) -> Result<Vec<Run>> {
        match self {
            Store::Redis(s) => s.list_runs(name, limit, offset).await,
            Store::Memory(s) => Ok(s.list_runs(name, limit, offset)),
        }
    }

    /// Release connections; later calls fail with `BUS_CLOSED`.
    pub fn close(&self) {
        match self {
            Store::Redis(s) => s.close(),
            Store::Memory(_) => {}
        }
    }
}

/// What a compare-and-set expects the field to hold.
#[derive(Debug, Clone, Copy)]
pub enum Expect<'a> {
    /// The field must not exist.
    Absent,
    /// The field must hold exactly this.
    Value(&'a str),
}

/// Outcome of a compare-and-set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasResult {
    /// The field matched and the new values were written.
    pub set: bool,
    /// The hash existed before the call.
    pub exists: bool,
    /// The field's value before the call.
    pub current: Option<String>,
}

/// A timer to add together with a compare-and-set.
#[derive(Debug, Clone, Copy)]
pub struct NewTimer<'a> {
    pub id: &'a str,
    pub due_ms: u64,
    pub payload: &'a str,
}

/// A set membership to change together with a compare-and-set.
#[derive(Debug, Clone, Copy)]
pub struct SetChange<'a> {
    pub key: &'a str,
    pub member: &'a str,
    pub add: bool,
}

/// What a compare-and-set writes when the field matched.
pub(crate) struct CasWrite<'a> {
    pub new: &'a str,
    pub ttl_ms: u64,
    pub extra: &'a [(&'a str, String)],
    pub timer: Option<NewTimer<'a>>,
    pub sets: &'a [SetChange<'a>],
    pub guards: &'a [(&'a str, &'a str)],
}

/// A claimed timer.
#[derive(Debug, Clone)]
pub struct ClaimedTimer {
    /// Timer id.
    pub id: String,
    /// What to do (JSON).
    pub payload: String,
    /// When it was due (ms).
    pub due_ms: u64,
}

/// Durable primitives of the scheduler: hashes with compare-and-set, sets, leases, timers and
/// plain publishing. Keys are full keys; the timer keys live under `<prefix>:sched:`.
impl Store {
    /// Every field of a hash (empty when missing or expired).
    pub async fn hash_get_all(
        &self,
        key: &str,
    ) -> Result<std::collections::HashMap<String, String>> {
        match self {
            Store::Redis(s) => s.hash_get_all(key).await,
            Store::Memory(s) => Ok(s.hash_get_all(key)),
        }
    }

    /// Set fields of a hash.
    pub async fn hash_set(&self, key: &str, pairs: &[(&str, String)]) -> Result<()> {
        match self {
            Store::Redis(s) => s.hash_set(key, pairs).await,
            Store::Memory(s) => {
                s.hash_set(key, pairs);
                Ok(())
            }
        }
    }

    /// Compare-and-set `field`; on success also set `extra` and, when `ttl_ms > 0`, expire
    /// the hash after `ttl_ms`.
    pub async fn hash_cas(
        &self,
        key: &str,
        field: &str,
        expect: Expect<'_>,
        new: &str,
        ttl_ms: u64,
        extra: &[(&str, String)],
    ) -> Result<CasResult> {
        let write = CasWrite {
            new,
            ttl_ms,
            extra,
            timer: None,
            sets: &[],
            guards: &[],
        };
        match self {
            Store::Redis(s) => s.hash_cas(key, field, expect, write).await,
            Store::Memory(s) => Ok(s.hash_cas(key, field, expect, write)),
        }
    }

    /// Compare-and-set `field`, when the `guards` fields hold their values too; on success
    /// also set `extra`, add `timer` and apply `sets`, in the same step. `ttl_ms > 0` expires
    /// the hash after `ttl_ms`.
    pub async fn hash_cas_with(
        &self,
        key: &str,
        (field, expect, new): (&str, Expect<'_>, &str),
        guards: &[(&str, &str)],
        (extra, ttl_ms): (&[(&str, String)], u64),
        timer: Option<NewTimer<'_>>,
        sets: &[SetChange<'_>],
    ) -> Result<CasResult> {
        let write = CasWrite {
            new,
            ttl_ms,
            extra,
            timer,
            sets,
            guards,
        };
        match self {
            Store::Redis(s) => s.hash_cas(key, field, expect, write).await,
            Store::Memory(s) => Ok(s.hash_cas(key, field, expect, write)),
        }
    }

    /// Delete fields of a hash.
    pub async fn hash_del(&self, key: &str, fields: &[&str]) -> Result<()> {
        match self {
            Store::Redis(s) => s.hash_del(key, fields).await,
            Store::Memory(s) => {
                s.hash_del(key, fields);
                Ok(())
            }
        }
    }

    /// Add to or remove from a set.
    pub async fn set_update(&self, key: &str, member: &str, add: bool) -> Result<()> {
        match self {
            Store::Redis(s) => s.set_update(key, member, add).await,
            Store::Memory(s) => {
                s.set_update(key, member, add);
                Ok(())
            }
        }
    }

    /// Members of a set.
    pub async fn set_members(&self, key: &str) -> Result<Vec<String>> {
        match self {
            Store::Redis(s) => s.set_members(key).await,
            Store::Memory(s) => Ok(s.set_members(key)),
        }
    }

    /// Set a key that expires after `ttl_ms` (an instance lease).
    pub async fn lease_renew(&self, key: &str, ttl_ms: u64) -> Result<()> {
        match self {
            Store::Redis(s) => s.lease_renew(key, ttl_ms).await,
            Store::Memory(s) => {
                s.lease_renew(key, ttl_ms);
                Ok(())
            }
        }
    }

    /// Whether a lease (or any key) exists.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        match self {
            Store::Redis(s) => s.exists(key).await,
            Store::Memory(s) => Ok(s.exists(key)),
        }
    }

    /// Remove a key.
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self {
            Store::Redis(s) => s.delete(key).await,
            Store::Memory(s) => {
                s.delete(key);
                Ok(())
            }
        }
    }

    /// Add (or move) a timer.
    pub async fn timer_add(&self, id: &str, due_ms: u64, payload: &str) -> Result<()> {
        match self {
            Store::Redis(s) => s.timer_add(id, due_ms, payload).await,
            Store::Memory(s) => {
                s.timer_add(id, due_ms, payload);
                Ok(())
            }
        }
    }

    /// Claim up to `limit` due timers for `lease_ms`.
    pub async fn timer_claim(
        &self,
        now_ms: u64,
        limit: usize,
        lease_ms: u64,
    ) -> Result<Vec<ClaimedTimer>> {
        match self {
            Store::Redis(s) => s.timer_claim(now_ms, limit, lease_ms).await,
            Store::Memory(s) => Ok(s.timer_claim(now_ms, limit, lease_ms)),
        }
    }

    /// Forget a timer (done, or cancelled).
    pub async fn timer_remove(&self, id: &str) -> Result<()> {
        match self {
            Store::Redis(s) => s.timer_remove(id).await,
            Store::Memory(s) => {
                s.timer_remove(id);
                Ok(())
            }
        }
    }

    /// The earliest due time (or in-flight lease end), if any timer exists.
    pub async fn timer_next(&self) -> Result<Option<u64>> {
        match self {
            Store::Redis(s) => s.timer_next().await,
            Store::Memory(s) => Ok(s.timer_next()),
        }
    }

    /// Publish a live-format message on a channel.
    pub async fn publish(&self, channel: &str, payload: &str, hub: &Hub) -> Result<()> {
        match self {
            Store::Redis(s) => s.publish(channel, payload).await,
            Store::Memory(_) => {
                if let Some(rec) = crate::event::record_from_live(payload) {
                    hub.dispatch(channel, &std::sync::Arc::new(rec));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::memory::MemoryStore;
    use super::redis::{RedisOptions, RedisStore};
    use super::*;

    async fn both_stores(prefix: &str) -> Vec<Store> {
        let url =
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let cluster = cluster::nodes_of_url(&url).map(|n| n.expect("a cluster url"));
        let redis = RedisStore::connect(&RedisOptions {
            url,
            cluster,
            prefix: prefix.to_owned(),
            max_len: None,
            timeout: std::time::Duration::from_secs(5),
            replicated: None,
        })
        .await
        .expect("Redis for the store tests");
        vec![
            Store::Memory(Box::new(MemoryStore::new(prefix, None))),
            Store::Redis(Box::new(redis)),
        ]
    }

    /// What depends on a compare-and-set happens with it or not at all.
    #[tokio::test]
    async fn a_compare_and_set_carries_its_timer_and_set_changes_or_nothing() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = format!("test-store-cas-{}-{nanos}", std::process::id());
        let stores = both_stores(&p).await;
        // the keys a compare-and-set touches share the coordination slot on a cluster
        let p = match &stores[1] {
            Store::Redis(r) => r.coord.clone(),
            Store::Memory(_) => p,
        };
        for store in stores {
            let job = format!("{p}:sched:job:j1");
            let (a, b) = (format!("{p}:sched:owned:a"), format!("{p}:sched:owned:b"));
            store.set_update(&a, "j1", true).await.unwrap();
            let timer = NewTimer {
                id: "t1",
                due_ms: 5,
                payload: "p1",
            };
            let moves = [
                SetChange {
                    key: &b,
                    member: "j1",
                    add: true,
                },
                SetChange {
                    key: &a,
                    member: "j1",
                    add: false,
                },
            ];
            let extra = [("f", "1".to_owned())];
            let lost = store
                .hash_cas_with(
                    &job,
                    ("status", Expect::Value("x"), "running"),
                    &[],
                    (&extra, 0),
                    Some(timer),
                    &moves,
                )
                .await
                .unwrap();
            assert!(!lost.set && !lost.exists);
            assert!(store.hash_get_all(&job).await.unwrap().is_empty());
            assert_eq!(store.set_members(&a).await.unwrap(), ["j1"]);
            assert!(store.set_members(&b).await.unwrap().is_empty());
            assert_eq!(store.timer_next().await.unwrap(), None);

            let won = store
                .hash_cas_with(
                    &job,
                    ("status", Expect::Absent, "running"),
                    &[],
                    (&extra, 0),
                    Some(timer),
                    &moves,
                )
                .await
                .unwrap();
            assert!(won.set);
            let fields = store.hash_get_all(&job).await.unwrap();
            assert_eq!(fields.get("status").map(String::as_str), Some("running"));
            assert_eq!(fields.get("f").map(String::as_str), Some("1"));
            assert!(store.set_members(&a).await.unwrap().is_empty());
            assert_eq!(store.set_members(&b).await.unwrap(), ["j1"]);
            let claimed = store.timer_claim(10, 10, 1000).await.unwrap();
            assert_eq!(claimed.len(), 1);
            assert_eq!(
                (claimed[0].id.as_str(), claimed[0].payload.as_str()),
                ("t1", "p1")
            );

            store.timer_remove("t1").await.unwrap();

            // a guard that does not hold stops the whole write; one that holds lets it through
            let timer2 = NewTimer {
                id: "t2",
                due_ms: 5,
                payload: "p2",
            };
            let back = [SetChange {
                key: &a,
                member: "j1",
                add: true,
            }];
            for (guard, wins) in [("2", false), ("1", true)] {
                let r = store
                    .hash_cas_with(
                        &job,
                        ("status", Expect::Value("running"), "done"),
                        &[("f", guard)],
                        (&[("g", guard.to_owned())], 0),
                        Some(timer2),
                        &back,
                    )
                    .await
                    .unwrap();
                assert_eq!(r.set, wins, "guard f={guard}");
                assert_eq!(r.current.as_deref(), Some("running"));
                let fields = store.hash_get_all(&job).await.unwrap();
                let status = if wins { "done" } else { "running" };
                assert_eq!(fields.get("status").map(String::as_str), Some(status));
                assert_eq!(fields.contains_key("g"), wins);
                assert_eq!(store.set_members(&a).await.unwrap().len(), wins as usize);
                assert_eq!(store.timer_next().await.unwrap().is_some(), wins);
            }

            store.timer_remove("t2").await.unwrap();
            for key in [&job, &a, &b] {
                store.delete(key).await.unwrap();
            }
        }
    }
}
