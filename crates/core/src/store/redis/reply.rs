//! Script arguments and replies shared by the single-node and cluster append paths, and
//! stream entries turned into records.

use std::time::Duration;

use redis::Value;

use crate::error::{Error, ErrorCode, Result};
use crate::event::{record_from_fields, IndexEntry, PreparedEvent, Record, StreamRef};
use crate::id::StreamId;
use crate::store::GroupResults;

/// How the scripts name an index entry: "" none, "t" the trigger index, "f<name>" a run index.
pub fn index_arg(index: &Option<IndexEntry>) -> String {
    match index {
        None => String::new(),
        Some(IndexEntry::Trigger) => "t".into(),
        Some(IndexEntry::Flow(name)) => format!("f{name}"),
    }
}

/// The index argument of an event in the append scripts: its index entry (`index_arg`), or for
/// a terminal event under retention `e<ms>` (expire the stream, and the index entry of the run
/// or trigger, that long after the event). A run-starting event is never terminal, so one
/// argument carries either.
pub fn event_index_arg(e: &PreparedEvent) -> String {
    match (e.expire_ms, &e.index) {
        (Some(ms), None) => format!("e{ms}"),
        (_, index) => index_arg(index),
    }
}

/// An append stored and published on the master that no replica confirmed within `wait`.
pub fn not_replicated(wait: Duration) -> Error {
    Error::new(
        ErrorCode::NotReplicated,
        format!(
            "stored and published on the master, but no replica confirmed it within {} ms \
             (durability 'replicated'); it is lost if the master fails before a replica has it",
            wait.as_millis()
        ),
    )
}

/// Per group: `{1, id…}` stored, or `{0, message}` refused for a wrong-type key.
pub fn parse_append_reply(groups_out: Vec<Value>) -> Result<GroupResults> {
    groups_out
        .into_iter()
        .map(|g| {
            let Value::Array(items) = g else {
                return Err(unexpected("append group", &g));
            };
            let mut it = items.into_iter();
            match it.next() {
                Some(Value::Int(1)) => Ok(Ok(it.map(|v| parse_id(&v)).collect::<Result<_>>()?)),
                Some(Value::Int(0)) => {
                    let msg = it.next().map(|v| text(&v)).unwrap_or_default();
                    Ok(Err(Error::new(ErrorCode::WrongType, msg)))
                }
                other => Err(Error::new(
                    ErrorCode::Internal,
                    format!("append.lua answered {other:?}"),
                )),
            }
        })
        .collect()
}

/// An `INTERNAL` error for a reply of an unexpected shape.
pub fn unexpected(what: &str, v: &Value) -> Error {
    Error::new(
        ErrorCode::Internal,
        format!("unexpected reply to {what}: {v:?}"),
    )
}

/// A reply value as text ("" for nil and aggregates).
pub fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => String::new(),
    }
}

/// A stream id reply.
pub fn parse_id(v: &Value) -> Result<StreamId> {
    let s = text(v);
    s.parse()
        .map_err(|_| Error::new(ErrorCode::Internal, format!("bad stream id {s:?}")))
}

/// An id reply that may be "" (none).
pub fn parse_optional_id(v: &Value) -> Result<Option<StreamId>> {
    let s = text(v);
    if s.is_empty() {
        return Ok(None);
    }
    s.parse::<StreamId>()
        .map(Some)
        .map_err(|_| Error::new(ErrorCode::Internal, format!("bad stream id {s:?}")))
}

/// XRANGE-shaped entries to records.
pub fn parse_entries(v: Value, stream: &StreamRef) -> Result<Vec<Record>> {
    let entries = match v {
        Value::Array(e) => e,
        Value::Nil => return Ok(Vec::new()),
        other => return Err(unexpected("XRANGE", &other)),
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(mut parts) = entry else {
            return Err(unexpected("XRANGE entry", &entry));
        };
        if parts.len() != 2 {
            return Err(unexpected("XRANGE entry", &Value::Array(parts)));
        }
        let fields = parts.pop().unwrap_or(Value::Nil);
        let id = parse_id(&parts[0])?;
        let Value::Array(fields) = fields else {
            return Err(unexpected("XRANGE fields", &fields));
        };
        let strs: Vec<&[u8]> = fields
            .iter()
            .map(|f| match f {
                Value::BulkString(b) => b.as_slice(),
                _ => &[],
            })
            .collect();
        let pairs = strs.chunks_exact(2).filter_map(|kv| {
            Some((
                std::str::from_utf8(kv[0]).ok()?,
                std::str::from_utf8(kv[1]).ok()?,
            ))
        });
        out.push(record_from_fields(
            id,
            &stream.stream_type,
            &stream.id,
            pairs,
        ));
    }
    Ok(out)
}
