//! Warnings from background work: failures nobody awaits (a lease renewal, a timer, a repair
//! pass, a control channel cut off) are counted by code and handed to one sink, so they
//! leave a trace instead of vanishing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

/// One warning: a stable `code` (e.g. `LEASE_RENEWAL_FAILED`), what happened, and an
/// optional detail (the underlying error, an id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Stable code, SCREAMING_SNAKE_CASE.
    pub code: &'static str,
    /// What happened and what it means for the caller.
    pub message: String,
    /// The cause, as text (an error's `CODE: message`, an id), if any.
    pub detail: Option<String>,
}

/// Where warnings go (the binding hands them to JavaScript's `onWarning`).
pub type WarningSink = Arc<dyn Fn(&Warning) + Send + Sync>;

/// Counters by code and the sink of one bus and everything built on it.
#[derive(Default)]
pub struct Diagnostics {
    counts: Mutex<BTreeMap<&'static str, u64>>,
    sink: RwLock<Option<WarningSink>>,
}

impl Diagnostics {
    /// Count a warning and hand it to the sink, if one is set.
    pub fn warn(&self, code: &'static str, message: impl Into<String>, detail: Option<String>) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(code)
            .or_default() += 1;
        let sink = self.sink.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(sink) = sink {
            sink(&Warning {
                code,
                message: message.into(),
                detail,
            });
        }
    }

    /// Count and report `result`'s error, if any, under `code`; pass the value on.
    pub fn check<T>(
        &self,
        code: &'static str,
        what: &str,
        result: crate::error::Result<T>,
    ) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.warn(code, format!("{what} failed"), Some(e.to_string()));
                None
            }
        }
    }

    /// How many warnings of each code were raised so far.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Send warnings to `sink` from now on (`None`: only count them).
    pub fn set_sink(&self, sink: Option<WarningSink>) {
        *self.sink.write().unwrap_or_else(|p| p.into_inner()) = sink;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_counted_and_handed_to_the_sink() {
        let d = Diagnostics::default();
        d.warn("A_FAILED", "first", None);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        d.set_sink(Some(Arc::new(move |w: &Warning| {
            s.lock().unwrap().push(w.clone())
        })));
        d.warn("A_FAILED", "second", Some("x".into()));
        let err = crate::error::Error::argument("bad");
        assert_eq!(d.check::<()>("B_FAILED", "the thing", Err(err)), None);
        assert_eq!(d.counts().get("A_FAILED"), Some(&2));
        assert_eq!(d.counts().get("B_FAILED"), Some(&1));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].message, "the thing failed");
        assert_eq!(seen[1].detail.as_deref(), Some("INVALID_ARGUMENT: bad"));
    }
}
