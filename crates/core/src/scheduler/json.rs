//! User JSON as the scheduler takes it: checked and kept as the text it came as (what `emit`
//! accepts, the scheduler accepts — including lone-surrogate escapes such as JavaScript's
//! `JSON.stringify('\uD800')`), and read lossily where a Rust string is needed (a lone
//! surrogate becomes U+FFFD there, instead of failing the whole read).

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::error::{Error, Result};

/// `text` checked to be one JSON value (lone surrogates and all) and kept as it is;
/// `INVALID_ARGUMENT` naming `what` otherwise.
pub(super) fn checked(what: &str, text: &str) -> Result<Box<RawValue>> {
    RawValue::from_string(text.trim().to_owned())
        .map_err(|e| Error::argument(format!("{what} is not JSON: {e}")))
}

/// JSON text kept as it is; `null` when it is not JSON (stored values always are).
pub(super) fn stored(text: &str) -> Box<RawValue> {
    checked("", text).unwrap_or_else(|_| null())
}

fn null() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable!("null is JSON"))
}

/// Read `text` into `T`, a lone surrogate in a string read as U+FFFD.
pub(super) fn read_lossy<T: DeserializeOwned>(text: &str) -> serde_json::Result<T> {
    serde_json::from_str(&without_lone_surrogates(text))
}

/// `text` with every `\uXXXX` escape of a lone surrogate (one not part of a pair) replaced by
/// `\ufffd`. Escapes appear only inside strings in valid JSON, so the text is read as a
/// sequence of escapes and other characters; an escaped backslash is skipped whole.
fn without_lone_surrogates(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    let escape_at = |i: usize| -> Option<u16> {
        let hex = b.get(i..i + 6)?;
        if hex[0] != b'\\' || hex[1] != b'u' {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()
    };
    let is_high = |u: u16| (0xD800..0xDC00).contains(&u);
    let is_low = |u: u16| (0xDC00..0xE000).contains(&u);
    let mut out: Option<String> = None;
    let (mut i, mut copied) = (0, 0);
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        let Some(unit) = escape_at(i) else {
            // another escape (or a broken one): skip it whole
            i += 2;
            continue;
        };
        if is_high(unit) && escape_at(i + 6).is_some_and(is_low) {
            i += 12;
            continue;
        }
        if is_high(unit) || is_low(unit) {
            let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
            o.push_str(&text[copied..i]);
            o.push_str("\\ufffd");
            copied = i + 6;
        }
        i += 6;
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut o) => {
            o.push_str(&text[copied..]);
            Cow::Owned(o)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lone_surrogates_read_as_replacement_characters() {
        assert_eq!(read_lossy::<String>(r#""a\ud800b""#).unwrap(), "a\u{fffd}b");
        assert_eq!(read_lossy::<String>(r#""\udc00""#).unwrap(), "\u{fffd}");
        // a pair stays a pair; an escaped backslash before a 'u' is no escape
        assert_eq!(
            read_lossy::<String>(r#""\ud83d\ude00""#).unwrap(),
            "\u{1f600}"
        );
        assert_eq!(read_lossy::<String>(r#""\\ud800""#).unwrap(), "\\ud800");
        assert_eq!(
            read_lossy::<String>(r#""\ud800\ud800\n""#).unwrap(),
            "\u{fffd}\u{fffd}\n"
        );
        assert!(matches!(
            without_lone_surrogates(r#"{"a":"b"}"#),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn checked_text_is_kept_as_it_came() {
        assert_eq!(checked("x", r#" "\ud800" "#).unwrap().get(), r#""\ud800""#);
        assert!(checked("input", "{").is_err());
        assert_eq!(stored("not json").get(), "null");
    }
}
