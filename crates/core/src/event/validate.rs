//! Validation of events before anything is written, and their stored fields.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    IndexEntry, Limits, PreparedEvent, StreamRef, MAX_ID_LEN, MAX_KIND_LEN, RESERVED_TYPES,
};
use crate::error::{Error, Result};

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

/// Check a kind: dot-separated segments of `[A-Za-z0-9_-]`, at most 128 bytes. Capitals are
/// accepted because the Nitro module's users name their events so (`Order.Created`); kinds are
/// case-sensitive. A kind is part of channel and key names (`<prefix>:kind:<kind>`,
/// `<prefix>:await:kind:<kind>`), so no spaces, colons or other punctuation.
pub fn validate_kind(kind: &str) -> Result<()> {
    let ok = !kind.is_empty()
        && kind.len() <= MAX_KIND_LEN
        && kind.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "kind '{}' is invalid: use dot-separated segments of letters, digits, '_' or '-' (at most {MAX_KIND_LEN} characters), e.g. 'order.created'",
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

/// Check a name that is never part of a key (a step name): 1-256 characters with no control
/// characters; spaces are allowed (`Fetch Data`).
pub fn validate_label(what: &str, v: &str) -> Result<()> {
    let n = v.chars().count();
    if n == 0 || n > MAX_ID_LEN {
        return Err(Error::invalid(format!(
            "{what} must be 1-{MAX_ID_LEN} characters long (got {n})"
        )));
    }
    if let Some(c) = v.chars().find(|c| c.is_control()) {
        return Err(Error::invalid(format!(
            "{what} '{}' contains a control character ({:?})",
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

/// The part of `meta` the run index falls back to: the seed-era module carries the flow's
/// name beside the payload (`flowName`), which the Nitro adapters keep in `meta.flowName`.
#[derive(Deserialize)]
struct StartedMeta<'a> {
    #[serde(borrow, rename = "flowName")]
    flow_name: Option<Cow<'a, str>>,
}

/// The flow name a run-starting event indexes its run under: `data.name`, else
/// `meta.flowName`; it becomes part of a key, so it follows the id rules.
fn run_index_name(data: Option<&RawValue>, meta: Option<&RawValue>) -> Result<Option<String>> {
    let from_data = data
        .and_then(|d| serde_json::from_str::<StartedData>(d.get()).ok())
        .and_then(|d| d.name)
        .map(|n| ("data.name", n));
    let name = from_data.or_else(|| {
        meta.and_then(|m| serde_json::from_str::<StartedMeta>(m.get()).ok())
            .and_then(|m| m.flow_name)
            .map(|n| ("meta.flowName", n))
    });
    match name {
        Some((what, name)) => {
            validate_id(what, &name)?;
            Ok(Some(name.into_owned()))
        }
        None => Ok(None),
    }
}

/// The flow name a stored run-starting event indexed its run under, from its stored `data` and
/// `meta` fields (JSON text), as `prepare` found it; `None` when it has none.
pub fn run_index_name_of(data: Option<&str>, meta: Option<&str>) -> Option<String> {
    fn raw(s: Option<&str>) -> Option<&RawValue> {
        s.and_then(|s| serde_json::from_str::<&RawValue>(s).ok())
    }
    run_index_name(raw(data), raw(meta)).ok().flatten()
}

/// What serde found wrong with an envelope, without the line and column it appends: the
/// JSON text is ours (serialized from the caller's object), so a position in it means nothing
/// to the caller.
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    text.strip_suffix(&suffix).unwrap_or(&text).to_string()
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
    let input: EventInput = serde_json::from_str(json).map_err(|e| {
        Error::invalid(format!(
            "the event is not a valid envelope: {}",
            without_position(&e)
        ))
    })?;
    validate_kind(&input.kind)?;
    validate_id("subject", &input.subject)?;
    for (what, v) in [
        ("flow", &input.flow),
        ("trigger", &input.trigger),
        ("correlationId", &input.correlation_id),
    ] {
        if let Some(v) = v {
            validate_id(what, v)?;
        }
    }
    if let Some(step) = &input.step {
        validate_label("step", step)?;
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
        ("flow", kind @ ("flow.started" | "flow.start")) => {
            match run_index_name(input.data, meta)? {
                Some(name) => Some(IndexEntry::Flow(name)),
                // `flow.start` is the seed-era module's kind: without a name it is stored
                // like any event; `flow.started` (this envelope's kind) needs one
                None if kind == "flow.start" => None,
                None => {
                    return Err(Error::invalid(
                        "flow.started needs data.name (the flow's name) to index the run",
                    ))
                }
            }
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
        expire_ms: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::StreamId;

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
            "Order.Created",
            "Flow.started",
        ] {
            validate_kind(ok).unwrap();
        }
        for bad in [
            "",
            "a..b",
            "a:b",
            "a/b",
            "Order Created",
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
    fn envelope_errors_name_the_field_without_a_position() {
        for (json, says) in [
            (r#"{"subject":"s"}"#, "missing field `kind`"),
            (r#"{"kind":5,"subject":"s"}"#, "invalid type: integer `5`"),
            (
                r#"{"kind":"a","subject":"s","foo":1}"#,
                "unknown field `foo`",
            ),
        ] {
            let err = prep(json).unwrap_err();
            assert_eq!(err.code, crate::error::ErrorCode::EventInvalid);
            assert!(err.message.contains(says), "{}", err.message);
            assert!(!err.message.contains(" at line "), "{}", err.message);
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
    fn step_names_may_have_spaces_but_ids_may_not() {
        let e = prep(r#"{"kind":"step.started","subject":"f1","step":"Fetch Data"}"#).unwrap();
        assert_eq!(e.fields[1], ("step", "Fetch Data".to_owned()));
        validate_label("step", "  padded ").unwrap();
        for bad in ["", "a\nb", "a\tb", "a\u{1f}b", &"x".repeat(257)] {
            assert!(validate_label("step", bad).is_err(), "{bad:?}");
        }
        // what becomes part of a key keeps the id rules
        for (field, v) in [
            ("subject", "run 1"),
            ("flow", "run 1"),
            ("trigger", "t 1"),
            ("correlationId", "c 1"),
        ] {
            let json = format!(r#"{{"kind":"a","subject":"s","{field}":"{v}"}}"#);
            let err = prep(&json).unwrap_err();
            assert_eq!(err.code, crate::error::ErrorCode::EventInvalid, "{field}");
        }
        let r = prepare(
            r#"{"kind":"a","subject":"s"}"#,
            Some("Flow"),
            Limits::default(),
        );
        assert!(r.is_err(), "stream types stay lowercase");
    }

    #[test]
    fn run_starting_events_index_under_data_name_else_meta_flow_name() {
        let index = |json: &str| prep(json).map(|e| e.index);
        assert_eq!(
            index(r#"{"kind":"flow.started","subject":"r","data":{"name":"a"}}"#).unwrap(),
            Some(IndexEntry::Flow("a".into()))
        );
        assert_eq!(
            index(r#"{"kind":"flow.started","subject":"r","meta":{"flowName":"b"}}"#).unwrap(),
            Some(IndexEntry::Flow("b".into()))
        );
        assert_eq!(
            index(r#"{"kind":"flow.start","subject":"r","data":{"input":{"name":1}},"meta":{"flowName":"c"}}"#)
                .unwrap(),
            Some(IndexEntry::Flow("c".into()))
        );
        assert_eq!(
            index(
                r#"{"kind":"flow.start","subject":"r","data":{"name":"d"},"meta":{"flowName":"c"}}"#
            )
            .unwrap(),
            Some(IndexEntry::Flow("d".into()))
        );
        // the seed-era kind without a name is an ordinary event; ours needs one
        assert_eq!(
            index(r#"{"kind":"flow.start","subject":"r","data":{}}"#).unwrap(),
            None
        );
        assert!(index(r#"{"kind":"flow.started","subject":"r","meta":{}}"#).is_err());
        // a name is part of a key: no whitespace
        assert!(
            index(r#"{"kind":"flow.start","subject":"r","meta":{"flowName":"my flow"}}"#).is_err()
        );
        // outside a flow stream nothing is indexed
        let e = prepare(
            r#"{"kind":"flow.start","subject":"r","meta":{"flowName":"c"}}"#,
            Some("job"),
            Limits::default(),
        )
        .unwrap();
        assert_eq!(e.index, None);
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
}
