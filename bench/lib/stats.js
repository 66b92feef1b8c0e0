'use strict'
// Tiny stats helpers: percentiles (nearest rank), median, and a few formatters.

function sorted(values) {
  return Float64Array.from(values).sort()
}

/** Nearest-rank percentile of `values` (p in 0..100); NaN for an empty list. */
function percentile(values, p) {
  const s = values instanceof Float64Array && isSorted(values) ? values : sorted(values)
  if (s.length === 0) return NaN
  const rank = Math.ceil((p / 100) * s.length)
  return s[Math.min(s.length - 1, Math.max(0, rank - 1))]
}

function isSorted(a) {
  for (let i = 1; i < a.length; i++) if (a[i - 1] > a[i]) return false
  return true
}

/** p50/p99/p999/max of a list of latencies. */
function latencySummary(values) {
  const s = sorted(values)
  return {
    n: s.length,
    p50: percentile(s, 50),
    p99: percentile(s, 99),
    p999: percentile(s, 99.9),
    max: s.length ? s[s.length - 1] : NaN,
  }
}

function median(values) {
  const s = sorted(values.filter((v) => typeof v === 'number' && !Number.isNaN(v)))
  if (s.length === 0) return NaN
  const mid = s.length >> 1
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2
}

/** Median of every numeric field over a list of per-repetition result objects. */
function medianOf(reps) {
  const out = {}
  for (const key of Object.keys(reps[0] || {})) {
    if (typeof reps[0][key] === 'number') out[key] = median(reps.map((r) => r[key]))
  }
  return out
}

module.exports = { percentile, latencySummary, median, medianOf }
