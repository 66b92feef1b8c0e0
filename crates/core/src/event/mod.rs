//! The event envelope: what a caller emits, how it is checked (`validate`) and the record
//! handed back, stored and published (`codec`).
//!
//! Stored layout: one stream field per attribute (`kind`, `flow`, `step`, `trigger`,
//! `correlationId`, `data`, `meta`). What the key and the id already say is not stored:
//! `subject` is the stream id, `ts` comes from the entry id, and in a `flow` stream `flow`
//! is omitted when it equals the subject (a flow stream's events always belong to that flow).

mod codec;
mod validate;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::id::StreamId;

pub use codec::{
    live_payload, message_record, note_payload, record_from_fields, record_from_live, LIVE_SEP,
};
pub use validate::{
    prepare, run_index_name_of, validate_id, validate_kind, validate_label, validate_type,
};

/// Longest accepted `kind`.
pub const MAX_KIND_LEN: usize = 128;
/// Longest accepted subject / flow / step / trigger / correlation id, in characters.
pub const MAX_ID_LEN: usize = 256;
/// Default limit for one serialized event.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;
/// Stream types that would collide with the store's own keys (`nq:flows:*`, `nq:kind:*`, ...).
pub const RESERVED_TYPES: &[&str] = &["flows", "triggers", "kind", "await", "sched"];

/// A stream: its type (`flow`, `trigger`, or any `[a-z0-9_-]+`) and its id (the subject).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamRef {
    /// The stream type.
    pub stream_type: String,
    /// The context id.
    pub id: String,
}

impl StreamRef {
    /// A validated stream reference.
    pub fn new(stream_type: &str, id: &str) -> Result<Self> {
        validate_type(stream_type)?;
        validate_id("stream id", id).map_err(|e| Error::argument(e.message))?;
        Ok(StreamRef {
            stream_type: stream_type.to_owned(),
            id: id.to_owned(),
        })
    }
}

/// Which sorted set an event adds its subject to, besides its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexEntry {
    /// `flow.started` (or the seed-era `flow.start`) → `<prefix>:flows:<name>`.
    Flow(String),
    /// `trigger.registered` → `<prefix>:triggers`.
    Trigger,
}

/// A validated event, ready to be written: its stream and the fields to store.
#[derive(Debug, Clone)]
pub struct PreparedEvent {
    /// Where it goes.
    pub stream: StreamRef,
    /// The run or trigger index it joins, if any.
    pub index: Option<IndexEntry>,
    /// Stored fields in layout order; `kind` is always first.
    pub fields: Vec<(&'static str, String)>,
    /// Retention: expire the stream (and its run or trigger index entry) this many ms after
    /// this event is stored. Set by the bus on terminal events (`reduce::is_terminal`) when
    /// retention is configured; `None` otherwise.
    pub expire_ms: Option<u64>,
}

impl PreparedEvent {
    /// The event's kind.
    pub fn kind(&self) -> &str {
        &self.fields[0].1
    }

    /// The record JSON this event becomes once the store has given it `id`.
    pub fn to_record(&self, id: StreamId) -> Record {
        record_from_fields(
            id,
            &self.stream.stream_type,
            &self.stream.id,
            self.fields.iter().map(|(k, v)| (*k, v.as_str())),
        )
    }
}

/// Limits applied while preparing events.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest serialized event, in bytes.
    pub max_event_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
        }
    }
}

/// A stored event: its id and its record as JSON text (`EventRecord` in JavaScript).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The stream id.
    pub id: StreamId,
    /// The record, serialized once: `{"id","ts","kind","subject",...}`.
    pub json: String,
}

/// A shared record, as fan-out hands it to many subscribers.
pub type SharedRecord = Arc<Record>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_ref_is_validated() {
        assert!(StreamRef::new("flow", "run_1").is_ok());
        assert!(StreamRef::new("flows", "run_1").is_err());
        assert!(StreamRef::new("Flow", "run_1").is_err());
        assert!(StreamRef::new("flow", "a b").is_err());
    }
}
