//! When a failed step is tried again: the retry policy of a step, its back-off (fixed or
//! exponential, capped, with jitter) and which errors it retries.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::timers::FAR_FUTURE_MS;
use crate::clock::now_ms;
use crate::error::{Error, Result};

/// How the delay grows from one attempt to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffKind {
    /// Always `delayMs`.
    Fixed,
    /// `delayMs × 2^(attempt − 1)`.
    Exponential,
}

impl BackoffKind {
    /// The name events carry (`meta.backoff`).
    pub fn as_str(self) -> &'static str {
        match self {
            BackoffKind::Fixed => "fixed",
            BackoffKind::Exponential => "exponential",
        }
    }
}

/// Back-off between attempts.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backoff {
    /// `fixed` or `exponential` (default).
    #[serde(rename = "type", default = "default_backoff_kind")]
    pub kind: BackoffKind,
    /// Base delay in ms.
    #[serde(default = "default_delay")]
    pub delay_ms: u64,
    /// Upper bound in ms.
    #[serde(default)]
    pub max_delay_ms: Option<u64>,
    /// Random spread: the delay is multiplied by a factor in `[1 - jitter, 1 + jitter]`.
    #[serde(default)]
    pub jitter: Option<f64>,
}

fn default_backoff_kind() -> BackoffKind {
    BackoffKind::Exponential
}

fn default_delay() -> u64 {
    1000
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            kind: default_backoff_kind(),
            delay_ms: default_delay(),
            max_delay_ms: None,
            jitter: None,
        }
    }
}

/// When and how often a failed step is tried again.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Total attempts, at least 1 (default 1: no retry).
    #[serde(default)]
    pub attempts: Option<u32>,
    /// The back-off.
    #[serde(default)]
    pub backoff: Backoff,
    /// Only errors whose `name` or `code` is listed are retried.
    #[serde(default)]
    pub retriable_errors: Option<Vec<String>>,
}

impl RetryPolicy {
    /// Parse and check a policy given as JSON (`null` or empty: no retries).
    pub fn from_json(json: &str) -> Result<RetryPolicy> {
        if json.trim().is_empty() || json.trim() == "null" {
            return Ok(RetryPolicy::default());
        }
        let value: Value = serde_json::from_str(json)
            .map_err(|_| Error::argument(format!("retry must be {POLICY_SHAPE}")))?;
        check_policy(&value)?;
        // what check_policy let through deserializes; should it not, say so without the
        // parser's positions
        let p: RetryPolicy = serde_json::from_value(value).map_err(|e| {
            Error::argument(format!("retry is invalid ({e}); it must be {POLICY_SHAPE}"))
        })?;
        Ok(p)
    }

    /// Total attempts.
    pub fn max_attempts(&self) -> u32 {
        self.attempts.unwrap_or(1).max(1)
    }

    /// Whether a thrown error with this `name` and `code` may be retried.
    pub fn retries(&self, name: Option<&str>, code: Option<&str>) -> bool {
        match &self.retriable_errors {
            None => true,
            Some(list) => list
                .iter()
                .any(|e| Some(e.as_str()) == name || Some(e.as_str()) == code),
        }
    }

    /// The delay before attempt `failed + 1`, after attempt `failed` failed.
    pub fn delay_ms(&self, failed: u32) -> u64 {
        let b = &self.backoff;
        let base = match b.kind {
            BackoffKind::Fixed => b.delay_ms as f64,
            BackoffKind::Exponential => {
                b.delay_ms as f64 * 2f64.powi(failed.saturating_sub(1).min(60) as i32)
            }
        };
        let capped = match b.max_delay_ms {
            Some(m) => base.min(m as f64),
            None => base,
        };
        let jittered = match b.jitter {
            Some(j) if j > 0.0 => capped * (1.0 - j + 2.0 * j * random_unit()),
            _ => capped,
        };
        // a float cast saturates: never wraps, whatever the policy says
        jittered.max(0.0).min(FAR_FUTURE_MS as f64) as u64
    }
}

/// What a retry policy looks like, for error messages.
const POLICY_SHAPE: &str = "an object like { attempts: 3, backoff: { type: 'exponential' | 'fixed', delayMs, maxDelayMs, jitter }, retriableErrors: ['ECONNRESET'] }";

/// Check a policy's fields one by one, so that an error names the option that is wrong and
/// what it may be (serde's own messages name Rust types and parser positions).
fn check_policy(v: &Value) -> Result<()> {
    let Value::Object(fields) = v else {
        return Err(Error::argument(format!("retry must be {POLICY_SHAPE}")));
    };
    for (k, v) in fields {
        match k.as_str() {
            "attempts" => {
                if !v.is_null()
                    && !v
                        .as_u64()
                        .is_some_and(|n| (1..=u32::MAX as u64).contains(&n))
                {
                    return Err(Error::argument(format!(
                        "retry.attempts must be a whole number from 1 to {} (got {v})",
                        u32::MAX
                    )));
                }
            }
            "backoff" => check_backoff(v)?,
            "retriableErrors" => {
                let ok =
                    v.is_null() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
                if !ok {
                    return Err(Error::argument(format!(
                        "retry.retriableErrors must be an array of error names or codes (strings), got {v}"
                    )));
                }
            }
            other => {
                return Err(Error::argument(format!(
                    "retry.{other} is not an option (known: attempts, backoff, retriableErrors)"
                )))
            }
        }
    }
    Ok(())
}

fn check_backoff(v: &Value) -> Result<()> {
    let Value::Object(fields) = v else {
        return Err(Error::argument(format!(
            "retry.backoff must be an object like {{ type: 'exponential' | 'fixed', delayMs, maxDelayMs, jitter }} (got {v})"
        )));
    };
    for (k, v) in fields {
        match k.as_str() {
            "type" => {
                if !matches!(v.as_str(), Some("fixed" | "exponential")) {
                    return Err(Error::argument(format!(
                        "retry.backoff.type must be 'fixed' or 'exponential' (got {v})"
                    )));
                }
            }
            "delayMs" | "maxDelayMs" => {
                let ok = v.is_u64() || (k == "maxDelayMs" && v.is_null());
                if !ok {
                    return Err(Error::argument(format!(
                        "retry.backoff.{k} must be a whole number of ms, 0 or more (got {v})"
                    )));
                }
            }
            "jitter" => {
                if !v.is_null() && !v.as_f64().is_some_and(|j| (0.0..=1.0).contains(&j)) {
                    return Err(Error::argument(format!(
                        "retry.backoff.jitter must be a number between 0 and 1 (got {v})"
                    )));
                }
            }
            other => {
                return Err(Error::argument(format!(
                "retry.backoff.{other} is not an option (known: type, delayMs, maxDelayMs, jitter)"
            )))
            }
        }
    }
    Ok(())
}

/// A uniform random number in `[0, 1)`.
fn random_unit() -> f64 {
    (getrandom::u64().unwrap_or(0) >> 11) as f64 / (1u64 << 53) as f64
}

/// An error a handler threw, as the host reports it (JSON `{message, name?, code?,
/// retriable?, retryAfter?, retryAt?}`).
#[derive(Debug, Clone, Default)]
pub struct ThrownError {
    pub message: Option<String>,
    pub name: Option<String>,
    /// Its `code`, as text.
    pub code: Option<String>,
    /// `false`: never retried.
    pub retriable: Option<bool>,
    /// Retry after this many ms instead of the back-off (ignored unless a number ≥ 0).
    pub retry_after: Option<f64>,
    /// Retry at this Unix time in ms instead (a `Date` given as `retryAfter`, as the host
    /// passes it; one in the past retries at once).
    pub retry_at: Option<f64>,
}

impl ThrownError {
    /// Read a reported error field by field, so that one unreadable field (a message with a
    /// lone surrogate is read with U+FFFD in its place) loses nothing else; what is not an
    /// object is an error without details.
    pub fn from_json(json: &str) -> ThrownError {
        let Ok(fields) = super::json::read_lossy::<Map<String, Value>>(json) else {
            return ThrownError::default();
        };
        let text = |k: &str| match fields.get(k) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        };
        ThrownError {
            message: text("message"),
            name: fields
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned),
            code: text("code"),
            retriable: fields.get("retriable").and_then(Value::as_bool),
            retry_after: fields.get("retryAfter").and_then(Value::as_f64),
            retry_at: fields.get("retryAt").and_then(Value::as_f64),
        }
    }
}

impl RetryPolicy {
    /// The delay before the next attempt after attempt `failed` threw `thrown`, or `None`
    /// when the step is not tried again.
    pub fn retry_delay(&self, thrown: &ThrownError, failed: u32) -> Option<u64> {
        let retry = failed < self.max_attempts()
            && thrown.retriable != Some(false)
            && self.retries(thrown.name.as_deref(), thrown.code.as_deref());
        // float casts saturate (1e20 is u64::MAX, kept at the far future by the caller)
        let at = thrown.retry_at.filter(|at| at.is_finite());
        retry.then(|| match (thrown.retry_after, at) {
            (_, Some(at)) => (at as u64).saturating_sub(now_ms()),
            (Some(ms), None) if ms.is_finite() && ms >= 0.0 => ms as u64,
            _ => self.delay_ms(failed),
        })
    }
}
