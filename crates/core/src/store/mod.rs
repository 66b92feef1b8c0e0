//! Where events live: Redis, or the embedded in-memory store with the same behaviour.

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
    Memory(memory::MemoryStore),
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
