//! The record JSON handed to callers, and the live message format: a record's fields joined
//! by a separator, parsed back into the record by every subscriber.

use super::{Record, StreamRef};
use crate::id::StreamId;

/// Build the record JSON from stored fields. Unknown fields are ignored; a `flow` stream's
/// missing `flow` is its subject. An entry lean-events did not write (its first field is not
/// `kind`: another program's stream, e.g. nvent's) becomes a record with an empty `kind` and
/// its stored fields as they are, in order: `{"id","ts","kind":"","subject","fields":{…}}`.
pub fn record_from_fields<'a>(
    id: StreamId,
    stream_type: &str,
    subject: &str,
    fields: impl Iterator<Item = (&'a str, &'a str)>,
) -> Record {
    let mut fields = fields.peekable();
    if fields.peek().is_some_and(|(k, _)| *k != "kind") {
        return foreign_record(id, subject, fields);
    }
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

/// The record of an entry another program wrote: its fields as strings, in stored order.
fn foreign_record<'a>(
    id: StreamId,
    subject: &str,
    fields: impl Iterator<Item = (&'a str, &'a str)>,
) -> Record {
    let mut out = String::with_capacity(128 + subject.len());
    out.push_str("{\"id\":\"");
    out.push_str(&id.to_string());
    out.push_str("\",\"ts\":\"");
    out.push_str(&id.iso());
    out.push_str("\",\"kind\":\"\",\"subject\":");
    push_json_str(&mut out, subject);
    out.push_str(",\"fields\":{");
    for (i, (k, v)) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, k);
        out.push(':');
        push_json_str(&mut out, v);
    }
    out.push_str("}}");
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

/// What a subscriber of a channel receives for a message: the record of a live-format message
/// or, for any other message that is JSON text (another program's Pub/Sub, e.g. nvent's
/// stream topics), that JSON as it is, with id `0-0`. Anything else is dropped.
pub fn message_record(payload: &str) -> Option<Record> {
    record_from_live(payload).or_else(|| {
        serde_json::from_str::<serde::de::IgnoredAny>(payload)
            .ok()
            .map(|_| Record {
                id: StreamId::ZERO,
                json: payload.to_owned(),
            })
    })
}

/// The live message of a stored event: `id␟type␟subject␟field␟value…` (what `append.lua`
/// publishes, and what the embedded store hands its subscribers as records).
pub fn live_payload<'a>(
    id: StreamId,
    stream: &StreamRef,
    fields: impl Iterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut payload = format!(
        "{id}{LIVE_SEP}{}{LIVE_SEP}{}",
        stream.stream_type, stream.id
    );
    for (k, v) in fields {
        payload.push(LIVE_SEP);
        payload.push_str(k);
        payload.push(LIVE_SEP);
        payload.push_str(v);
    }
    payload
}

/// A control message in the live format (id `0-0`, stream type `sched`): the scheduler's
/// notes to its instances, parsed by subscribers like any record (`kind`, `data`).
pub fn note_payload(subject: &str, kind: &str, data_json: &str) -> String {
    format!(
        "0-0{LIVE_SEP}sched{LIVE_SEP}{subject}{LIVE_SEP}kind{LIVE_SEP}{kind}{LIVE_SEP}data{LIVE_SEP}{data_json}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{prepare, Limits};

    #[test]
    fn live_payload_round_trip() {
        let e = prepare(
            r#"{"kind":"log","subject":"f\"1","step":"s","data":{"msg":"a\u001fb"}}"#,
            None,
            Limits::default(),
        )
        .unwrap();
        let id = StreamId::new(5, 1);
        let payload = live_payload(
            id,
            &e.stream,
            e.fields.iter().map(|(k, v)| (*k, v.as_str())),
        );
        assert_eq!(record_from_live(&payload).unwrap(), e.to_record(id));
        let v: serde_json::Value = serde_json::from_str(&e.to_record(id).json).unwrap();
        assert_eq!(v["subject"], "f\"1");
        assert_eq!(v["data"]["msg"], "a\u{1f}b");
    }

    #[test]
    fn entries_of_another_writer_keep_their_fields() {
        let fields = [
            ("type", "step.started"),
            ("data", "{\"a\":1}"),
            ("x", "q\"\u{1}"),
        ];
        let r = record_from_fields(StreamId::new(5, 0), "flow", "run:1", fields.into_iter());
        let v: serde_json::Value = serde_json::from_str(&r.json).unwrap();
        assert_eq!(v["kind"], "");
        assert_eq!(v["subject"], "run:1");
        assert_eq!(v["fields"]["type"], "step.started");
        assert_eq!(v["fields"]["data"], "{\"a\":1}");
        assert_eq!(v["fields"]["x"], "q\"\u{1}");
        let keys: Vec<&String> = v["fields"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["type", "data", "x"]);
    }

    #[test]
    fn plain_json_messages_pass_as_they_are() {
        let r = message_record(r#"{"type":"flow.event","data":{}}"#).unwrap();
        assert_eq!(r.id, StreamId::ZERO);
        assert_eq!(r.json, r#"{"type":"flow.event","data":{}}"#);
        assert!(message_record("not json").is_none());
        let note = note_payload("i", "sched.ended", "{}");
        assert_eq!(message_record(&note), record_from_live(&note));
    }

    #[test]
    fn notes_parse_as_records() {
        let r = record_from_live(&note_payload("inst-1", "sched.ended", r#"{"job":"j"}"#)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&r.json).unwrap();
        assert_eq!(v["kind"], "sched.ended");
        assert_eq!(v["subject"], "inst-1");
        assert_eq!(v["data"]["job"], "j");
    }
}
