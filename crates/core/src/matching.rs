//! Declarative await conditions: `{ "data.orderId": "42", "subject": "run:1" }` — dotted
//! paths into the event record, each compared for JSON equality (numbers by value).
//! The Redis store evaluates the same rules in `append.lua`.

use serde_json::Value;

/// Whether `record` (an `EventRecord` as JSON) satisfies every path of `condition`.
pub fn matches(record: &Value, condition: &Value) -> bool {
    let Some(condition) = condition.as_object() else {
        return false;
    };
    condition.iter().all(|(path, expected)| {
        let mut cur = Some(record);
        for seg in path.split('.') {
            cur = cur.and_then(|v| v.as_object()).and_then(|o| o.get(seg));
        }
        cur.is_some_and(|v| json_eq(v, expected))
    })
}

/// JSON equality where `1` equals `1.0`.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Check a condition given by a caller: an object of dotted paths.
pub fn validate(condition: &Value) -> crate::Result<()> {
    let Some(obj) = condition.as_object() else {
        return Err(crate::Error::argument(
            "match must be an object of dotted paths, e.g. { \"data.orderId\": \"42\" }",
        ));
    };
    for path in obj.keys() {
        let head = path.split('.').next().unwrap_or("");
        let top_level = [
            "kind",
            "subject",
            "flow",
            "step",
            "trigger",
            "correlationId",
        ];
        let known = matches!(head, "data" | "meta") || (top_level.contains(&head) && head == path);
        if !known || path.split('.').any(str::is_empty) {
            return Err(crate::Error::argument(format!(
                "match path '{path}' is invalid: use kind, subject, flow, step, trigger, correlationId, or a dotted path under data or meta like 'data.orderId'"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_and_equality() {
        let r = json!({"kind": "payment.confirmed", "subject": "o1", "data": {"orderId": "42", "amount": 10, "tags": ["a"]}});
        assert!(matches(&r, &json!({"data.orderId": "42"})));
        assert!(matches(&r, &json!({"data.amount": 10.0, "subject": "o1"})));
        assert!(matches(&r, &json!({"data.tags": ["a"]})));
        assert!(!matches(&r, &json!({"data.orderId": 42})));
        assert!(!matches(&r, &json!({"data.missing": null})));
        assert!(matches(&r, &json!({})));
        assert!(!matches(&r, &json!([1])));
    }
}
