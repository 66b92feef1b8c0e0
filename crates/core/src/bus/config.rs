//! How to connect a bus, and the checks every option passes before anything connects (here
//! only: the binding converts JavaScript values with the helpers below and leaves the rules
//! to this file).

use std::time::Duration;

use crate::error::{Error, Result};
use crate::event::{self, Limits};
use crate::store::redis::connection::nodes_of_url;
use crate::store::{Location, StoreOptions};

/// Default bound on emits handed to the store and not yet settled, in events.
pub const DEFAULT_MAX_PENDING_EMITS: usize = 100_000;
/// Longest `retention.finishedRunsMs`: about 10 years (a larger TTL is no retention at all).
pub const MAX_RETENTION_MS: u64 = 10 * 366 * 24 * 3600 * 1000;

/// How to connect.
#[derive(Debug, Clone)]
pub struct Config {
    /// `redis://…`, `rediss://…` or a cluster url (`redis+cluster://h1:p1,h2:p2`); `None` (and
    /// no `cluster`) selects the embedded store.
    pub url: Option<String>,
    /// Redis Cluster: urls of some of its nodes (instead of `url`).
    pub cluster: Option<Vec<String>>,
    /// Redis Cluster: how often the outbox repair pass looks for appends whose second step
    /// (index entry, event awaits) did not happen, and how old such an entry must be.
    pub repair_interval: Duration,
    /// Key prefix (default `nq`).
    pub prefix: String,
    /// Approximate cap on entries per stream.
    pub max_len: Option<u64>,
    /// Largest serialized event, in bytes.
    pub max_event_bytes: usize,
    /// Bound on every store call.
    pub timeout: Duration,
    /// Default bound on a subscriber's queue, in events.
    pub max_queue: usize,
    /// How many reduced states `state()` keeps (least recently used go first); 0 disables.
    pub state_cache_size: usize,
    /// Redis only: acknowledge an append once a replica has it too (`WAIT 1 <ms>` after each
    /// group commit), waiting at most this long; `None` acknowledges on the master's word.
    pub replicated: Option<Duration>,
    /// Most events handed to the store and not yet settled; past it an emit fails at once
    /// with `BACKPRESSURE` (nothing is buffered without limit while Redis is slow or away).
    pub max_pending_emits: usize,
    /// Retention (`retention.finishedRunsMs`): a flow run's stream and run-index entry expire
    /// this long after its `flow.completed` / `flow.failed`, a trigger's stream and trigger-index
    /// entry this long after it resolved (`reduce::is_terminal`); `None` keeps them.
    pub finished_runs_retention: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            url: None,
            cluster: None,
            repair_interval: Duration::from_secs(10),
            prefix: "nq".into(),
            max_len: None,
            max_event_bytes: event::DEFAULT_MAX_EVENT_BYTES,
            timeout: Duration::from_millis(5000),
            max_queue: 10_000,
            state_cache_size: 1000,
            replicated: None,
            max_pending_emits: DEFAULT_MAX_PENDING_EMITS,
            finished_runs_retention: None,
        }
    }
}

/// A config that passed every check, split by who uses what.
pub(crate) struct Checked {
    pub location: Location,
    pub store: StoreOptions,
    pub limits: Limits,
}

impl Config {
    /// Check every option; where the store is and what it gets.
    pub(crate) fn check(&self) -> Result<Checked> {
        if self.url.is_some() && self.cluster.is_some() {
            return Err(Error::argument(
                "give url (one Redis) or cluster (a Redis Cluster), not both",
            ));
        }
        let location = match (&self.url, &self.cluster) {
            (None, None) => Location::Embedded,
            (Some(url), None) => match nodes_of_url(url) {
                Some(nodes) => Location::Cluster(nodes?),
                None => Location::Redis(url.clone()),
            },
            (_, Some(nodes)) => Location::Cluster(nodes.clone()),
        };
        if self.prefix.is_empty()
            || self.prefix.len() > 64
            || self
                .prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '{' || c == '}')
        {
            return Err(Error::argument(
                "prefix must be 1-64 printable characters without spaces or braces",
            ));
        }
        if self.max_event_bytes == 0 {
            return Err(Error::argument("maxEventBytes must be at least 1"));
        }
        if self.max_queue == 0 {
            return Err(Error::argument("maxQueue must be at least 1"));
        }
        if self.max_len == Some(0) {
            return Err(Error::argument("maxLen must be at least 1 when given"));
        }
        if self.timeout.is_zero() {
            return Err(Error::argument("timeoutMs must be at least 1"));
        }
        if self.repair_interval.is_zero() {
            return Err(Error::argument("repair_interval must be above zero"));
        }
        if self.max_pending_emits == 0 {
            return Err(Error::argument("maxPendingEmits must be at least 1"));
        }
        if let Some(keep) = self.finished_runs_retention {
            check_retention(keep.as_millis().try_into().unwrap_or(u64::MAX))?;
        }
        if let Some(wait) = self.replicated {
            if location == Location::Embedded {
                return Err(Error::argument(
                    "durability 'replicated' needs Redis (a url): the embedded store has no replicas",
                ));
            }
            if wait.is_zero() || wait >= self.timeout {
                return Err(Error::argument(format!(
                    "replicationTimeoutMs must be at least 1 and below timeoutMs ({} ms)",
                    self.timeout.as_millis()
                )));
            }
        }
        Ok(Checked {
            location,
            store: StoreOptions {
                prefix: self.prefix.clone(),
                max_len: self.max_len,
                timeout: self.timeout,
                replicated: self.replicated,
                repair_interval: self.repair_interval,
            },
            limits: Limits {
                max_event_bytes: self.max_event_bytes,
            },
        })
    }
}

/// A whole number of at least 1 given from JavaScript as `what`, or an `INVALID_ARGUMENT`
/// that says so.
pub fn positive(what: &str, v: Option<i64>) -> Result<Option<u64>> {
    match v {
        None => Ok(None),
        Some(n) if n >= 1 => Ok(Some(n as u64)),
        Some(n) => Err(Error::argument(format!(
            "{what} must be a positive integer (got {n})"
        ))),
    }
}

/// A whole number of at least 0 given from JavaScript as `what`.
pub fn non_negative(what: &str, v: Option<i64>) -> Result<Option<u64>> {
    match v {
        None => Ok(None),
        Some(n) if n >= 0 => Ok(Some(n as u64)),
        Some(n) => Err(Error::argument(format!(
            "{what} must be 0 or more (got {n})"
        ))),
    }
}

/// A retention of `ms` milliseconds, if it is in range.
pub(crate) fn check_retention(ms: u64) -> Result<u64> {
    if ms == 0 || ms > MAX_RETENTION_MS {
        return Err(Error::argument(format!(
            "retention.finishedRunsMs must be a whole number of milliseconds from 1 to \
             {MAX_RETENTION_MS} (got {ms})"
        )));
    }
    Ok(ms)
}

/// `retention.finishedRunsMs` given from JavaScript: how long a finished run (or a resolved
/// trigger) is kept, or `INVALID_ARGUMENT`.
pub fn retention(finished_runs_ms: Option<i64>) -> Result<Option<Duration>> {
    match finished_runs_ms {
        None => Ok(None),
        Some(n) if n < 1 => Err(Error::argument(format!(
            "retention.finishedRunsMs must be a whole number of milliseconds from 1 to \
             {MAX_RETENTION_MS} (got {n})"
        ))),
        Some(n) => check_retention(n as u64).map(|ms| Some(Duration::from_millis(ms))),
    }
}

/// The `WAIT` bound of `durability` (`local` or `replicated`) and `replicationTimeoutMs`
/// (default 1000 ms): `None` for `local`.
pub fn durability(durability: Option<&str>, timeout_ms: Option<i64>) -> Result<Option<Duration>> {
    let wait = positive("replicationTimeoutMs", timeout_ms)?;
    match durability {
        None | Some("local") if wait.is_some() => Err(Error::argument(
            "replicationTimeoutMs applies only with durability: 'replicated'",
        )),
        None | Some("local") => Ok(None),
        Some("replicated") => Ok(Some(Duration::from_millis(wait.unwrap_or(1000)))),
        Some(other) => Err(Error::argument(format!(
            "durability must be 'local' or 'replicated' (got '{other}')"
        ))),
    }
}
