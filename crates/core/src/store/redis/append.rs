//! The append path on one Redis: every group of a group commit in one `append.lua` call
//! (store, publish, index, event awaits), and with `durability: 'replicated'` a `WAIT 1` on
//! the appends' own connection.

use std::time::Duration;

use async_trait::async_trait;
use redis::{Script, Value};

use super::commands::Commands;
use super::connection::Connection;
use super::reply::{event_index_arg, not_replicated, parse_append_reply, unexpected};
use super::AppendPath;
use crate::error::Result;
use crate::event::PreparedEvent;
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
        let prefix = cmds.keys.prefix();
        let mut inv = self.script.prepare_invoke();
        inv.arg(prefix)
            .arg(self.max_len.unwrap_or(0))
            .arg(RESOLVED_TTL_MS)
            .arg(groups.len());
        for group in groups {
            inv.arg(group.len());
            for e in group.iter() {
                inv.key(cmds.keys.stream(&e.stream));
                inv.arg(&e.stream.stream_type)
                    .arg(&e.stream.id)
                    .arg(event_index_arg(e));
                inv.arg(e.fields.len());
                for (k, v) in &e.fields {
                    inv.arg(*k).arg(v);
                }
            }
        }
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
