//! What one Redis and a Redis Cluster do alike: reads, catch-up pages, the run index and the
//! scheduler's primitives, over a `Connection`, with the layout's key names.

use std::collections::HashMap;

use redis::{Script, Value};

use super::connection::Connection;
use super::reply::{parse_entries, parse_optional_id, unexpected};
use crate::error::Result;
use crate::event::{Record, StreamRef};
use crate::id::StreamId;
use crate::keys::Keys;
use crate::store::{
    CasResult, CasWrite, CatchUpPage, ClaimedTimer, Expect, ReadOptions, Run, DEFAULT_READ_LIMIT,
};

static CATCHUP_LUA: &str = include_str!("lua/catchup.lua");
static CAS_LUA: &str = include_str!("lua/cas.lua");
static TIMER_CLAIM_LUA: &str = include_str!("lua/timer_claim.lua");
static RUNS_LIST_LUA: &str = concat!(
    include_str!("lua/match.lua"),
    include_str!("lua/retention.lua"),
    include_str!("lua/runs_list.lua")
);

/// Commands on a connection, with the scripts they use (built once).
pub struct Commands {
    /// The command connection.
    pub conn: Connection,
    /// Key and channel names.
    pub keys: Keys,
    catchup: Script,
    cas: Script,
    timer_claim: Script,
    runs_list: Script,
}

impl Commands {
    /// Commands over `conn` with the names of `keys`.
    pub fn new(conn: Connection, keys: Keys) -> Self {
        Commands {
            conn,
            keys,
            catchup: Script::new(CATCHUP_LUA),
            cas: Script::new(CAS_LUA),
            timer_claim: Script::new(TIMER_CLAIM_LUA),
            runs_list: Script::new(RUNS_LIST_LUA),
        }
    }

    /// One command, bounded by the store's timeout.
    pub(crate) async fn query<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T> {
        let cmd = &cmd;
        self.conn
            .send(|mut c| async move { cmd.query_async(&mut c).await })
            .await
    }

    async fn pipeline<T: redis::FromRedisValue>(&self, pipe: redis::Pipeline) -> Result<T> {
        let pipe = &pipe;
        self.conn
            .send(|mut c| async move { pipe.query_async(&mut c).await })
            .await
    }

    /// One script call (reloaded on NOSCRIPT), bounded by the store's timeout.
    pub(crate) async fn script<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T> {
        let inv = &inv;
        self.conn
            .send(|mut c| async move { inv.invoke_async(&mut c).await })
            .await
    }

    /// XRANGE / XREVRANGE with exclusive cursors.
    pub async fn read(&self, stream: &StreamRef, opts: &ReadOptions) -> Result<Vec<Record>> {
        let limit = opts.limit.unwrap_or(DEFAULT_READ_LIMIT);
        let low = opts
            .after
            .map(|a| format!("({a}"))
            .unwrap_or_else(|| "-".into());
        let high = opts
            .before
            .map(|b| format!("({b}"))
            .unwrap_or_else(|| "+".into());
        let key = self.keys.stream(stream);
        let mut cmd = if opts.reverse {
            let mut c = redis::cmd("XREVRANGE");
            c.arg(key).arg(high).arg(low);
            c
        } else {
            let mut c = redis::cmd("XRANGE");
            c.arg(key).arg(low).arg(high);
            c
        };
        cmd.arg("COUNT").arg(limit);
        let reply: Value = self.query(cmd).await?;
        parse_entries(reply, stream)
    }

    /// One `catchup.lua` call.
    pub async fn catch_up(
        &self,
        stream: &StreamRef,
        after: StreamId,
        count: usize,
        check_gap: bool,
    ) -> Result<CatchUpPage> {
        let mut inv = self.catchup.prepare_invoke();
        inv.key(self.keys.stream(stream))
            .arg(after.to_string())
            .arg(count)
            .arg(if check_gap { "1" } else { "0" });
        let reply: Value = self.script(inv).await?;
        let Value::Array(mut parts) = reply else {
            return Err(unexpected("catchup", &reply));
        };
        if parts.len() != 3 {
            return Err(unexpected("catchup", &Value::Array(parts)));
        }
        let entries = parts.pop().unwrap_or(Value::Nil);
        let max_deleted = parse_optional_id(&parts[0])?;
        let first_if_trimmed = parse_optional_id(&parts[1])?;
        // Entries after the cursor are gone if one was deleted above it, or if the stream was
        // trimmed and now starts above it (conservative: the cursor may have been the very last
        // trimmed entry, which is reported as a gap too).
        let gap = check_gap
            && (max_deleted.is_some_and(|m| m > after)
                || first_if_trimmed.is_some_and(|f| f > after.next()));
        Ok(CatchUpPage {
            records: parse_entries(entries, stream)?,
            gap,
        })
    }

    /// A page of the run index, newest first, after the entries whose retention ran out are
    /// removed (`runs_list.lua`).
    pub async fn list_runs(&self, name: &str, limit: usize, offset: usize) -> Result<Vec<Run>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut inv = self.runs_list.prepare_invoke();
        inv.key(self.keys.runs(name))
            .key(self.keys.retention())
            .arg(self.keys.coord())
            .arg(offset)
            .arg(limit);
        let reply: Vec<(String, f64)> = self.script(inv).await?;
        Ok(reply
            .into_iter()
            .map(|(id, score)| Run {
                id,
                started_ms: score as u64,
            })
            .collect())
    }

    /// ZADD to the run index.
    pub async fn index_run(&self, name: &str, id: &str, started_ms: u64) -> Result<()> {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(self.keys.runs(name)).arg(started_ms).arg(id);
        self.query::<()>(cmd).await
    }

    /// HGETALL.
    pub async fn hash_get_all(&self, key: &str) -> Result<HashMap<String, String>> {
        let mut c = redis::cmd("HGETALL");
        c.arg(key);
        self.query(c).await
    }

    /// HSET of some fields.
    pub async fn hash_set(&self, key: &str, pairs: &[(&str, String)]) -> Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut c = redis::cmd("HSET");
        c.arg(key);
        for (k, v) in pairs {
            c.arg(*k).arg(v);
        }
        self.query::<()>(c).await
    }

    /// One `cas.lua` call.
    pub async fn compare_and_set(
        &self,
        key: &str,
        field: &str,
        expect: Expect<'_>,
        write: CasWrite<'_>,
    ) -> Result<CasResult> {
        let mut inv = self.cas.prepare_invoke();
        inv.key(key).arg(field);
        match expect {
            Expect::Absent => inv.arg("1").arg(""),
            Expect::Value(v) => inv.arg("0").arg(v),
        };
        inv.arg(write.new).arg(write.ttl_ms);
        match write.timer {
            Some(t) => {
                inv.key(self.keys.timers()).key(self.keys.timer_payloads());
                inv.arg("1").arg(t.id).arg(t.due_ms).arg(t.payload);
            }
            None => {
                inv.arg("0");
            }
        }
        inv.arg(write.sets.len());
        for c in write.sets {
            inv.key(c.key)
                .arg(c.member)
                .arg(if c.add { "+" } else { "-" });
        }
        inv.arg(write.guards.len());
        for (f, v) in write.guards {
            inv.arg(*f).arg(*v);
        }
        for (k, v) in write.extra {
            inv.arg(*k).arg(v);
        }
        let (set, exists, current): (i64, i64, Option<String>) = self.script(inv).await?;
        Ok(CasResult {
            set: set == 1,
            exists: exists == 1,
            current,
        })
    }

    /// HDEL.
    pub async fn hash_del(&self, key: &str, fields: &[&str]) -> Result<()> {
        let mut c = redis::cmd("HDEL");
        c.arg(key).arg(fields);
        self.query::<()>(c).await
    }

    /// SADD / SREM.
    pub async fn set_update(&self, key: &str, member: &str, add: bool) -> Result<()> {
        let mut c = redis::cmd(if add { "SADD" } else { "SREM" });
        c.arg(key).arg(member);
        self.query::<()>(c).await
    }

    /// SMEMBERS.
    pub async fn set_members(&self, key: &str) -> Result<Vec<String>> {
        let mut c = redis::cmd("SMEMBERS");
        c.arg(key);
        self.query(c).await
    }

    /// `SET key 1 PX ttl`.
    pub async fn lease_renew(&self, key: &str, ttl_ms: u64) -> Result<()> {
        let mut c = redis::cmd("SET");
        c.arg(key).arg("1").arg("PX").arg(ttl_ms.max(1));
        self.query::<()>(c).await
    }

    /// `SET key 1 NX PX ttl`: true when this call created the key.
    pub async fn lease_take(&self, key: &str, ttl_ms: u64) -> Result<bool> {
        let mut c = redis::cmd("SET");
        c.arg(key).arg("1").arg("NX").arg("PX").arg(ttl_ms.max(1));
        Ok(self.query::<Option<String>>(c).await?.is_some())
    }

    /// EXISTS.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        let mut c = redis::cmd("EXISTS");
        c.arg(key);
        Ok(self.query::<i64>(c).await? == 1)
    }

    /// DEL.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let mut c = redis::cmd("DEL");
        c.arg(key);
        self.query::<()>(c).await
    }

    /// The timer's payload and due time, in one step.
    pub async fn timer_add(&self, id: &str, due_ms: u64, payload: &str) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(self.keys.timer_payloads())
            .arg(id)
            .arg(payload)
            .ignore()
            .cmd("ZADD")
            .arg(self.keys.timers())
            .arg(due_ms)
            .arg(id)
            .ignore();
        self.pipeline(pipe).await
    }

    /// One `timer_claim.lua` call.
    pub async fn timer_claim(
        &self,
        now_ms: u64,
        limit: usize,
        lease_ms: u64,
    ) -> Result<Vec<ClaimedTimer>> {
        let mut inv = self.timer_claim.prepare_invoke();
        inv.key(self.keys.timers())
            .key(self.keys.timers_inflight())
            .key(self.keys.timer_payloads())
            .arg(now_ms)
            .arg(limit)
            .arg(lease_ms);
        let flat: Vec<String> = self.script(inv).await?;
        Ok(flat
            .chunks_exact(3)
            .map(|c| ClaimedTimer {
                id: c[0].clone(),
                payload: c[1].clone(),
                due_ms: c[2].parse::<f64>().map(|f| f as u64).unwrap_or(now_ms),
            })
            .collect())
    }

    /// A timer gone from both sets and its payload, in one step.
    pub async fn timer_remove(&self, id: &str) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("ZREM")
            .arg(self.keys.timers())
            .arg(id)
            .ignore()
            .cmd("ZREM")
            .arg(self.keys.timers_inflight())
            .arg(id)
            .ignore()
            .cmd("HDEL")
            .arg(self.keys.timer_payloads())
            .arg(id)
            .ignore();
        self.pipeline(pipe).await
    }

    /// The first due time of either timer set.
    pub async fn timer_next(&self) -> Result<Option<u64>> {
        let mut pipe = redis::pipe();
        for key in [self.keys.timers(), self.keys.timers_inflight()] {
            pipe.cmd("ZRANGE").arg(key).arg(0).arg(0).arg("WITHSCORES");
        }
        type Scored = Vec<(String, f64)>;
        let (a, b): (Scored, Scored) = self.pipeline(pipe).await?;
        Ok(a.into_iter().chain(b).map(|(_, s)| s as u64).min())
    }

    /// How many timers exist: every timer has its payload until it is removed.
    pub async fn timer_count(&self) -> Result<u64> {
        let mut c = redis::cmd("HLEN");
        c.arg(self.keys.timer_payloads());
        self.query(c).await
    }

    /// PUBLISH.
    pub async fn publish(&self, channel: &str, payload: &str) -> Result<()> {
        let mut c = redis::cmd("PUBLISH");
        c.arg(channel).arg(payload);
        self.query::<()>(c).await
    }
}
