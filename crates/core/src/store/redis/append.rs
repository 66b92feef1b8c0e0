//! The append path on one Redis: every group of a group commit in one `append.lua` call
//! (store, publish, index, event awaits), and with `durability: 'replicated'` a `WAIT 1` on
//! the appends' own connection.

use std::time::Duration;

use async_trait::async_trait;
use redis::{Script, ScriptInvocation, ToRedisArgs, Value};

use super::commands::Commands;
use super::connection::Connection;
use super::reply::{event_index_arg, not_replicated, parse_append_reply, unexpected};
use super::wire::Wire;
use super::AppendPath;
use crate::error::Result;
use crate::event::PreparedEvent;
use crate::keys::Keys;
use crate::store::awaits::RESOLVED_TTL_MS;
use crate::store::GroupResults;

/// The one-event fast path comes first, so a plain emit returns before the shared functions
/// of `match.lua` and `retention.lua` are defined (each definition is work on every call).
static APPEND_LUA: &str = concat!(
    include_str!("lua/append_event.lua"),
    include_str!("lua/match.lua"),
    include_str!("lua/retention.lua"),
    include_str!("lua/append.lua")
);

/// The append script's text (what `EVALSHA` names by its SHA1).
pub fn append_script() -> &'static str {
    APPEND_LUA
}

/// The append script's arguments after its keys (one stream key per event, in order): the
/// prefix, `maxLen` (0: none), the resolved-await TTL, then per group its size and per event
/// its stream, index argument and fields.
pub fn append_args(
    cmd: &mut impl ScriptArgs,
    prefix: &str,
    max_len: Option<u64>,
    groups: &[&[PreparedEvent]],
) {
    cmd.push(prefix)
        .push(max_len.unwrap_or(0))
        .push(RESOLVED_TTL_MS)
        .push(groups.len());
    for group in groups {
        cmd.push(group.len());
        for e in group.iter() {
            cmd.push(&e.stream.stream_type)
                .push(&e.stream.id)
                .push(event_index_arg(e))
                .push(e.fields.len());
            for (k, v) in &e.fields {
                cmd.push(*k).push(v);
            }
        }
    }
}

/// Where script arguments go: a `redis::Cmd` (an `EVALSHA` written by hand) or a script
/// invocation.
pub trait ScriptArgs {
    /// Add one argument.
    fn push<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self;
}

impl ScriptArgs for redis::Cmd {
    fn push<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.arg(arg)
    }
}

impl ScriptArgs for ScriptInvocation<'_> {
    fn push<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.arg(arg)
    }
}

/// Appends on one node.
pub struct SingleNodeAppend {
    script: Script,
    max_len: Option<u64>,
    /// With `replicated`: how long `WAIT` waits, and the appends' own connection, so that
    /// `WAIT` counts exactly their writes and blocks nothing else while it waits.
    replicated: Option<(Duration, Connection)>,
}

impl SingleNodeAppend {
    /// The append path; `replicated` brings its own connection.
    pub fn new(max_len: Option<u64>, replicated: Option<(Duration, Connection)>) -> Self {
        SingleNodeAppend {
            script: Script::new(APPEND_LUA),
            max_len,
            replicated,
        }
    }
}

#[async_trait]
impl AppendPath for SingleNodeAppend {
    async fn append(&self, cmds: &Commands, groups: &[&[PreparedEvent]]) -> Result<GroupResults> {
        let mut inv = self.script.prepare_invoke();
        for group in groups {
            for e in group.iter() {
                inv.key(cmds.keys.stream(&e.stream));
            }
        }
        append_args(&mut inv, cmds.keys.prefix(), self.max_len, groups);
        let conn = match &self.replicated {
            Some((_, own)) => own,
            None => &cmds.conn,
        };
        let inv = &inv;
        let reply: Value = conn
            .send(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        let Value::Array(groups_out) = reply else {
            return Err(unexpected("append", &reply));
        };
        if groups_out.len() != groups.len() {
            return Err(unexpected("append", &Value::Array(groups_out)));
        }
        let results = parse_append_reply(groups_out)?;
        match &self.replicated {
            Some((wait, own)) if results.iter().any(|r| r.is_ok()) => {
                wait_for_replica(own, *wait, results).await
            }
            _ => Ok(results),
        }
    }

    fn wire(&self, url: &str, keys: &Keys, timeout: Duration) -> Option<Wire> {
        if self.replicated.is_some() {
            // WAIT must follow the appends on their own connection; that stays on Tokio
            return None;
        }
        Wire::for_url(url, keys.clone(), self.max_len, timeout)
    }

    fn close(&self) {
        if let Some((_, own)) = &self.replicated {
            own.close();
        }
    }
}

/// `WAIT 1 <ms>` on the appends' connection: stored appends whose write no replica confirmed
/// in time become `NOT_REPLICATED` (they are on the master, and were published).
async fn wait_for_replica(
    conn: &Connection,
    wait: Duration,
    results: GroupResults,
) -> Result<GroupResults> {
    let mut cmd = redis::cmd("WAIT");
    cmd.arg(1).arg(wait.as_millis() as u64);
    let cmd = &cmd;
    let acked: i64 = conn
        .send(|mut c| async move { cmd.query_async(&mut c).await })
        .await?;
    if acked >= 1 {
        return Ok(results);
    }
    let refused = not_replicated(wait);
    Ok(results
        .into_iter()
        .map(|r| r.and_then(|_| Err(refused.clone())))
        .collect())
}
