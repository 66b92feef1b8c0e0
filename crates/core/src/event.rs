//! The event envelope: validation before anything is written, the stored field layout,
//! and the JSON record handed back to callers.
//!
//! Stored layout: one stream field per attribute (`kind`, `flow`, `step`, `trigger`,
//! `correlationId`, `data`, `meta`). What the key and the id already say is not stored:
//! `subject` is the stream id, `ts` comes from the entry id, and in a `flow` stream `flow`
//! is omitted when it equals the subject (a flow stream's events always belong to that flow).

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::id::StreamId;

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

    /// `<prefix>:<type>:<id>`
    pub fn key(&self, prefix: &str) -> String {
        format!("{prefix}:{}:{}", self.stream_type, self.id)
    }

    /// `<prefix>:<type>:<id>:live`
    pub fn channel(&self, prefix: &str) -> String {
        format!("{prefix}:{}:{}:live", self.stream_type, self.id)
    }
}

/// `<prefix>:kind:<kind>`: every event of one kind, from every stream.
pub fn kind_channel(prefix: &str, kind: &str) -> String {
    format!("{prefix}:kind:{kind}")
}

/// Check a stream type: `[a-z0-9_-]+`, at most 64 bytes, not reserved.
pub fn validate_type(t: &str) -> Result<()> {
    let ok = !t.is_empty()
        && t.len() <= 64
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok {
        return Err(Error::argument(format!(
            "stream type '{}' is invalid: use 1-64 characters of a-z, 0-9, '_' or '-'",
            truncate(t)
        )));
    }
    if RESERVED_TYPES.contains(&t) {
        return Err(Error::argument(format!(
            "stream type '{t}' is reserved for the store's own keys ({})",
            RESERVED_TYPES.join(", ")
        )));
    }
    Ok(())
}

/// Check a kind: dot.case segments of `[a-z0-9_-]`, at most 128 bytes.
pub fn validate_kind(kind: &str) -> Result<()> {
    let ok = !kind.is_empty()
        && kind.len() <= MAX_KIND_LEN
        && kind.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "kind '{}' is invalid: use dot.case segments of a-z, 0-9, '_' or '-' (at most {MAX_KIND_LEN} characters), e.g. 'order.created'",
            truncate(kind)
        )))
    }
}

/// Check an id-like attribute: 1-256 printable characters, no whitespace or control characters.
pub fn validate_id(what: &str, v: &str) -> Result<()> {
    let n = v.chars().count();
    if n == 0 || n > MAX_ID_LEN {
        return Err(Error::invalid(format!(
            "{what} must be 1-{MAX_ID_LEN} characters long (got {n})"
        )));
    }
    if let Some(c) = v.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(format!(
            "{what} '{}' contains whitespace or a control character ({:?}); ids must be printable with no spaces",
            truncate(v),
            c
        )));
    }
    Ok(())
}

fn truncate(s: &str) -> Cow<'_, str> {
    if s.chars().count() > 64 {
        Cow::Owned(format!("{}…", s.chars().take(64).collect::<String>()))
    } else {
        Cow::Borrowed(s)
    }
}

/// The event as a caller gives it (borrowed from the caller's JSON text).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EventInput<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    subject: Cow<'a, str>,
    #[serde(borrow, default)]
    flow: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    step: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    trigger: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    correlation_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "keep_null")]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    meta: Option<&'a RawValue>,
}

/// `data: null` is a value to keep, not an absent field.
fn keep_null<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<&'a RawValue>, D::Error> {
    <&RawValue as Deserialize>::deserialize(d).map(Some)
}

/// The part of `data` the run index needs from a `flow.started` event.
#[derive(Deserialize)]
struct StartedData<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
}

/// Which sorted set an event adds its subject to, besides its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexEntry {
    /// `flow.started` → `<prefix>:flows:<name>`.
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

/// Validate one event given as JSON text and work out its stream and stored fields.
/// `stream_type` overrides the default (`trigger.*` → `trigger`, else `flow`).
pub fn prepare(json: &str, stream_type: Option<&str>, limits: Limits) -> Result<PreparedEvent> {
    if json.len() > limits.max_event_bytes {
        return Err(Error::new(
            crate::error::ErrorCode::PayloadTooLarge,
            format!(
                "the event is {} bytes serialized; the limit is {} (maxEventBytes)",
                json.len(),
                limits.max_event_bytes
            ),
        ));
    }
    let input: EventInput = serde_json::from_str(json)
        .map_err(|e| Error::invalid(format!("the event is not a valid envelope: {e}")))?;
    validate_kind(&input.kind)?;
    validate_id("subject", &input.subject)?;
    for (what, v) in [
        ("flow", &input.flow),
        ("step", &input.step),
        ("trigger", &input.trigger),
        ("correlationId", &input.correlation_id),
    ] {
        if let Some(v) = v {
            validate_id(what, v)?;
        }
    }
    // `meta: null` means no meta
    let meta = input.meta.filter(|m| m.get().trim() != "null");
    if let Some(meta) = meta {
        if !meta.get().trim_start().starts_with('{') {
            return Err(Error::invalid("meta must be an object"));
        }
    }
    let stream_type = match stream_type {
        Some(t) => {
            validate_type(t)?;
            t
        }
        None if input.kind.starts_with("trigger.") => "trigger",
        None => "flow",
    };
    let index = match (stream_type, input.kind.as_ref()) {
        ("flow", "flow.started") => {
            let name = input
                .data
                .and_then(|d| serde_json::from_str::<StartedData>(d.get()).ok())
                .and_then(|d| d.name)
                .ok_or_else(|| {
                    Error::invalid(
                        "flow.started needs data.name (the flow's name) to index the run",
                    )
                })?;
            validate_id("data.name", &name)?;
            Some(IndexEntry::Flow(name.into_owned()))
        }
        ("trigger", "trigger.registered") => Some(IndexEntry::Trigger),
        _ => None,
    };

    let mut fields: Vec<(&'static str, String)> = Vec::with_capacity(7);
    fields.push(("kind", input.kind.into_owned()));
    if let Some(flow) = input.flow {
        if !(stream_type == "flow" && flow == input.subject) {
            fields.push(("flow", flow.into_owned()));
        }
    }
    if let Some(step) = input.step {
        fields.push(("step", step.into_owned()));
    }
    if let Some(trigger) = input.trigger {
        fields.push(("trigger", trigger.into_owned()));
    }
    if let Some(c) = input.correlation_id {
        fields.push(("correlationId", c.into_owned()));
    }
    if let Some(data) = input.data {
        fields.push(("data", data.get().to_owned()));
    }
    if let Some(meta) = meta {
        fields.push(("meta", meta.get().to_owned()));
    }
    Ok(PreparedEvent {
        stream: StreamRef {
            stream_type: stream_type.to_owned(),
            id: input.subject.into_owned(),
        },
        index,
        fields,
    })
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

/// Build the record JSON from stored fields. Unknown fields are ignored; a `flow` stream's
/// missing `flow` is its subject.
pub fn record_from_fields<'a>(
    id: StreamId,
    stream_type: &str,
    subject: &str,
    fields: impl Iterator<Item = (&'a str, &'a str)>,
) -> Record {
    let mut slots: [Option<&str>; 7] = [None; 7];
    let mut size = 64 + subject.len();
    for (k, v) in fields {
        let i = match k {
            "kind" => 0,
            "flow" => 1,
            "step" => 2,
            "trigger" => 3,
            "correlationId" => 4,
            "data" => 5,
            "meta" => 6,
            _ => continue,
        };
        size += v.len() + 20;
        slots[i] = Some(v);
    }
    if slots[1].is_none() && stream_type == "flow" {
        slots[1] = Some(subject);
    }
    let mut out = String::with_capacity(size);
    out.push_str("{\"id\":\"");
    out.push_str(&id.to_string());
    out.push_str("\",\"ts\":\"");
    out.push_str(&id.iso());
    out.push_str("\",\"kind\":");
    push_json_str(&mut out, slots[0].unwrap_or(""));
    out.push_str(",\"subject\":");
    push_json_str(&mut out, subject);
    for (i, name) in [
        (1, "flow"),
        (2, "step"),
        (3, "trigger"),
        (4, "correlationId"),
    ] {
        if let Some(v) = slots[i] {
            out.push_str(",\"");
            out.push_str(name);
            out.push_str("\":");
            push_json_str(&mut out, v);
        }
    }
    for (i, name) in [(5, "data"), (6, "meta")] {
        if let Some(v) = slots[i] {
            out.push_str(",\"");
            out.push_str(name);
            out.push_str("\":");
            out.push_str(v);
        }
    }
    out.push('}');
    Record { id, json: out }
}

fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => out.push_str(&format!("\\u{b:04x}")),
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Separator of the fields in a live message (`id␟type␟subject␟k␟v…`). It never occurs in
/// the values: ids are validated printable and JSON text escapes control characters.
pub const LIVE_SEP: char = '\u{1f}';

/// Parse a live (Pub/Sub) message into a record.
pub fn record_from_live(payload: &str) -> Option<Record> {
    let mut parts = payload.split(LIVE_SEP);
    let id: StreamId = parts.next()?.parse().ok()?;
    let stream_type = parts.next()?;
    let subject = parts.next()?;
    let mut pairs = Vec::with_capacity(7);
    while let Some(k) = parts.next() {
        pairs.push((k, parts.next()?));
    }
    Some(record_from_fields(
        id,
        stream_type,
        subject,
        pairs.into_iter(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prep(json: &str) -> Result<PreparedEvent> {
        prepare(json, None, Limits::default())
    }

    #[test]
    fn kinds() {
        for ok in [
            "flow.started",
            "order.created",
            "a",
            "step.await.time",
            "x_y-z.0",
        ] {
            validate_kind(ok).unwrap();
        }
        for bad in [
            "",
            "Flow.started",
            "a..b",
            ".a",
            "a.",
            "a b",
            "ä",
            &"a".repeat(129),
        ] {
            assert!(validate_kind(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids() {
        validate_id("subject", "run:42/ä").unwrap();
        for bad in ["", "a b", "a\tb", "a\u{7}", &"x".repeat(257)] {
            assert!(validate_id("subject", bad).is_err(), "{bad:?}");
        }
        validate_id("subject", &"é".repeat(256)).unwrap();
    }

    #[test]
    fn routes_and_drops_redundant_fields() {
        let e = prep(
            r#"{"kind":"step.started","subject":"f1","flow":"f1","step":"s","data":{"a":[1,2]}}"#,
        )
        .unwrap();
        assert_eq!(
            e.stream,
            StreamRef {
                stream_type: "flow".into(),
                id: "f1".into()
            }
        );
        assert_eq!(
            e.fields.iter().map(|f| f.0).collect::<Vec<_>>(),
            ["kind", "step", "data"]
        );
        let r = e.to_record(StreamId::new(1_700_000_000_000, 3));
        let v: serde_json::Value = serde_json::from_str(&r.json).unwrap();
        assert_eq!(v["flow"], "f1");
        assert_eq!(v["ts"], "2023-11-14T22:13:20.000Z");
        assert_eq!(v["data"]["a"][1], 2);

        let t = prep(r#"{"kind":"trigger.registered","subject":"t1","correlationId":"f1","data":{"type":"webhook"}}"#).unwrap();
        assert_eq!(t.stream.stream_type, "trigger");
        assert_eq!(t.index, Some(IndexEntry::Trigger));
        let r = t.to_record(StreamId::new(1, 0));
        assert!(!r.json.contains("\"flow\""));
    }

    #[test]
    fn rejects_bad_events() {
        assert!(prep("{").is_err());
        assert!(prep(r#"{"kind":"a","subject":""}"#).is_err());
        assert!(prep(r#"{"kind":"a","subject":"s","extra":1}"#).is_err());
        assert!(prep(r#"{"kind":"a","subject":"s","meta":[1]}"#).is_err());
        assert!(prep(r#"{"kind":"flow.started","subject":"s","data":{}}"#).is_err());
        let big = format!(
            r#"{{"kind":"a","subject":"s","data":"{}"}}"#,
            "x".repeat(100)
        );
        let e = prepare(
            &big,
            None,
            Limits {
                max_event_bytes: 50,
            },
        )
        .unwrap_err();
        assert_eq!(e.code, crate::error::ErrorCode::PayloadTooLarge);
        assert!(prepare(
            r#"{"kind":"a","subject":"s"}"#,
            Some("flows"),
            Limits::default()
        )
        .is_err());
    }

    #[test]
    fn live_payload_round_trip() {
        let e = prep(r#"{"kind":"log","subject":"f\"1","step":"s","data":{"msg":"a\u001fb"}}"#)
            .unwrap();
        let id = StreamId::new(5, 1);
        let mut payload = format!("{id}{LIVE_SEP}flow{LIVE_SEP}{}", e.stream.id);
        for (k, v) in &e.fields {
            payload.push(LIVE_SEP);
            payload.push_str(k);
            payload.push(LIVE_SEP);
            payload.push_str(v);
        }
        assert_eq!(record_from_live(&payload).unwrap(), e.to_record(id));
        let v: serde_json::Value = serde_json::from_str(&e.to_record(id).json).unwrap();
        assert_eq!(v["subject"], "f\"1");
        assert_eq!(v["data"]["msg"], "a\u{1f}b");
    }
}
