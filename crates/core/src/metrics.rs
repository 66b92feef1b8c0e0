//! Counters and gauges of one bus, for `Bus::metrics()` (and a Prometheus endpoint on top).
//!
//! The counters are plain atomics bumped with `Relaxed` ordering where the thing happens
//! (an emit settling, an event queued to a subscriber): no lock on the emit path, and a
//! snapshot is a handful of loads. Only timer lateness keeps a small window of samples under a
//! lock, touched once per fired timer, never by an emit.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use crate::error::ErrorCode;

/// Timer lateness samples kept for the quantiles: the most recent ones.
pub const LATENESS_WINDOW: usize = 1024;

/// Outcomes of emits: events stored, and refused or failed emit calls by error code.
pub struct EmitCounters {
    stored: AtomicU64,
    failed: [AtomicU64; ErrorCode::ALL.len()],
}

impl Default for EmitCounters {
    fn default() -> Self {
        EmitCounters {
            stored: AtomicU64::new(0),
            failed: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl EmitCounters {
    /// `n` events were stored.
    pub fn stored(&self, n: usize) {
        self.stored.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// One emit (or `emitMany`) call failed with `code`; nothing of it was stored.
    pub fn failed(&self, code: ErrorCode) {
        self.failed[code as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Events stored so far.
    pub fn stored_total(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    /// Failed emit calls by code (codes that never failed are left out).
    pub fn failed_by_code(&self) -> BTreeMap<&'static str, u64> {
        ErrorCode::ALL
            .iter()
            .zip(&self.failed)
            .map(|(c, n)| (c.as_str(), n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// What live fan-out handed out: events queued to subscribers, and subscribers cut off.
#[derive(Default)]
pub struct LiveCounters {
    deliveries: AtomicU64,
    overflows: AtomicU64,
}

impl LiveCounters {
    /// One event was queued to one subscriber.
    pub fn delivered(&self) {
        self.deliveries.fetch_add(1, Ordering::Relaxed);
    }

    /// One subscriber fell `maxQueue` behind and was cut off (`SUBSCRIBER_OVERFLOW`).
    pub fn overflowed(&self) {
        self.overflows.fetch_add(1, Ordering::Relaxed);
    }

    /// Events queued to subscribers so far.
    pub fn deliveries(&self) -> u64 {
        self.deliveries.load(Ordering::Relaxed)
    }

    /// Subscribers cut off so far.
    pub fn overflows(&self) -> u64 {
        self.overflows.load(Ordering::Relaxed)
    }
}

/// Timers carried out by the schedulers on this bus, and how late they fired.
#[derive(Default)]
pub struct TimerCounters {
    schedulers: AtomicUsize,
    fired: AtomicU64,
    lateness: Mutex<VecDeque<u64>>,
}

impl TimerCounters {
    /// A scheduler started on this bus (its timers count from now on).
    pub fn scheduler_started(&self) {
        self.schedulers.fetch_add(1, Ordering::Relaxed);
    }

    /// A scheduler on this bus stopped.
    pub fn scheduler_stopped(&self) {
        let _ = self
            .schedulers
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// How many schedulers run on this bus.
    pub fn schedulers(&self) -> usize {
        self.schedulers.load(Ordering::Relaxed)
    }

    /// A timer fired `late_ms` after its due time.
    pub fn fired(&self, late_ms: u64) {
        self.fired.fetch_add(1, Ordering::Relaxed);
        let mut window = self.lateness.lock().unwrap_or_else(|p| p.into_inner());
        if window.len() == LATENESS_WINDOW {
            window.pop_front();
        }
        window.push_back(late_ms);
    }

    /// Timers fired so far.
    pub fn fired_total(&self) -> u64 {
        self.fired.load(Ordering::Relaxed)
    }

    /// The lateness quantiles `qs` (0..=1) over the recent window, in ms; `None` before any
    /// timer fired. Nearest-rank: the smallest sample with at least `q` of them at or below.
    pub fn lateness_quantiles<const N: usize>(&self, qs: [f64; N]) -> Option<[u64; N]> {
        let mut samples: Vec<u64> = self
            .lateness
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        Some(qs.map(|q| {
            let rank = (q.clamp(0.0, 1.0) * samples.len() as f64).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1]
        }))
    }
}

/// Timer figures of a bus with a scheduler.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimerMetrics {
    /// Timers in the store not yet carried out (due later, or claimed and running), on every
    /// instance; `None` when the store could not be asked.
    pub pending: Option<u64>,
    /// Timers this process carried out.
    pub fired: u64,
    /// Median lateness of the recent timers this process fired, in ms.
    pub lateness_p50_ms: Option<u64>,
    /// 99th percentile of that lateness, in ms.
    pub lateness_p99_ms: Option<u64>,
}

/// A snapshot of a bus's counters (totals since it connected) and gauges (values now).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    /// Events stored by emits of this bus (an `emitMany` of n counts n).
    pub emits: u64,
    /// Emit calls that failed, by error code (nothing of them was stored).
    pub emit_errors: BTreeMap<&'static str, u64>,
    /// Events queued to this bus's subscribers (catch-up and live).
    pub deliveries: u64,
    /// Subscriptions open now (including a scheduler's own control channels).
    pub live_subscriptions: usize,
    /// Emits handed to the store and not yet settled, now.
    pub pending_emits: usize,
    /// Subscribers cut off for falling `maxQueue` behind.
    pub subscriber_overflows: u64,
    /// Warnings raised, by code.
    pub warnings: BTreeMap<&'static str, u64>,
    /// With a scheduler on the bus: its timers; `None` without one.
    pub timers: Option<TimerMetrics>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_outcomes_are_counted_by_code() {
        let c = EmitCounters::default();
        c.stored(3);
        c.stored(1);
        c.failed(ErrorCode::EventInvalid);
        c.failed(ErrorCode::EventInvalid);
        c.failed(ErrorCode::Backpressure);
        assert_eq!(c.stored_total(), 4);
        let failed = c.failed_by_code();
        assert_eq!(failed.get("EVENT_INVALID"), Some(&2));
        assert_eq!(failed.get("BACKPRESSURE"), Some(&1));
        assert_eq!(failed.len(), 2, "codes that never failed are left out");
    }

    #[test]
    fn lateness_quantiles_are_nearest_rank_over_the_recent_window() {
        let t = TimerCounters::default();
        assert_eq!(t.lateness_quantiles([0.5, 0.99]), None);
        for ms in 1..=100 {
            t.fired(ms);
        }
        assert_eq!(t.fired_total(), 100);
        assert_eq!(t.lateness_quantiles([0.5, 0.99]), Some([50, 99]));
        // the window keeps the most recent samples only
        for _ in 0..LATENESS_WINDOW {
            t.fired(7);
        }
        assert_eq!(t.lateness_quantiles([0.5, 0.99]), Some([7, 7]));
    }

    #[test]
    fn scheduler_count_does_not_go_below_zero() {
        let t = TimerCounters::default();
        t.scheduler_started();
        t.scheduler_stopped();
        t.scheduler_stopped();
        assert_eq!(t.schedulers(), 0);
    }
}
