'use strict'
// Workload helpers: realistic events over 100 flows, send-time stamps, and emit drivers
// (sequential, N in flight, paced at a rate).

const { realisticRun } = require('../run-events.js')
const { latencySummary } = require('./stats.js')

const FLOWS = 100

/**
 * Milliseconds (fractional) on the machine's monotonic clock, which every process on this
 * machine reads alike. (`performance.timeOrigin + performance.now()` is not comparable across
 * processes: each fixes its time origin on its own, measured here up to 0.17 ms apart, as much
 * as the latencies being measured.)
 */
function clockMs() {
  return Number(process.hrtime.bigint()) / 1e6
}

/**
 * `count` realistic events spread over `flows` flows (event i goes to flow i % flows, each
 * flow walks through its own realistic 100-event run).
 */
function spreadEvents(count, tag, flows = FLOWS) {
  const ids = Array.from({ length: flows }, (_, f) => `run_${tag}_${f}`)
  const runs = ids.map((id) => realisticRun(id))
  const events = new Array(count)
  for (let i = 0; i < count; i++) {
    const run = runs[i % flows]
    events[i] = run[Math.floor(i / flows) % run.length]
  }
  return { flowIds: ids, events }
}

/** A copy of `event` with the send time in `data.sentAt` (ms, wall clock). */
function stamped(event) {
  const data = event.data && typeof event.data === 'object' ? event.data : {}
  return { ...event, data: { ...data, sentAt: clockMs() } }
}

/** Run fn(i) for i in [0, total) keeping `n` calls outstanding. */
async function inFlight(n, total, fn) {
  let next = 0
  async function worker() {
    while (next < total) await fn(next++)
  }
  await Promise.all(Array.from({ length: Math.min(n, total) }, worker))
}

/** Call fn(i) for i < total in bursts of `n` started together, each awaited before the next. */
async function inBursts(n, total, fn) {
  for (let start = 0; start < total; start += n) {
    const burst = []
    for (let i = start; i < Math.min(total, start + n); i++) burst.push(fn(i))
    await Promise.all(burst)
  }
}

/**
 * Call fn(i) for i in [0, total) at `rate` calls per second: a 1 ms timer loop sends the small
 * burst that is due at each tick, without waiting for earlier calls. Resolves when all settled.
 */
function paced(rate, total, fn) {
  return new Promise((resolve, reject) => {
    const pending = []
    const t0 = performance.now()
    let sent = 0
    const tick = () => {
      const due = Math.min(total, Math.floor(((performance.now() - t0) * rate) / 1000) + 1)
      while (sent < due) pending.push(fn(sent++))
      if (sent < total) setTimeout(tick, 1)
      else Promise.all(pending).then(resolve, reject)
    }
    tick()
  })
}

/** Collects delivery latencies; `done(n)` resolves once n were recorded (or rejects on timeout). */
class Collector {
  constructor(expected) {
    this.latencies = new Float64Array(expected)
    this.count = 0
    this.extra = 0
    this._target = Infinity
    this._resolve = null
  }

  record(latencyMs) {
    if (this.count < this.latencies.length) this.latencies[this.count] = latencyMs
    else this.extra++
    this.count++
    if (this.count >= this._target && this._resolve) {
      const r = this._resolve
      this._resolve = null
      r(true)
    }
  }

  /** Wait until `n` deliveries arrived; resolves false (not throwing) after timeoutMs. */
  done(n = this.latencies.length, timeoutMs = 15000) {
    if (this.count >= n) return Promise.resolve(true)
    this._target = n
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this._resolve = null
        resolve(false)
      }, timeoutMs)
      this._resolve = (v) => {
        clearTimeout(timer)
        resolve(v)
      }
    })
  }

  values() {
    return this.latencies.subarray(0, Math.min(this.count, this.latencies.length))
  }
}

/** Emit `events` on `bus` keeping `n` in flight: events/s and the p50 / p99 of each emit (ms). */
async function timedEmits(bus, events, n) {
  const lat = new Float64Array(events.length)
  const t0 = process.hrtime.bigint()
  await inFlight(n, events.length, async (i) => {
    const s = process.hrtime.bigint()
    await bus.emit(events[i])
    lat[i] = Number(process.hrtime.bigint() - s) / 1e6
  })
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9
  const l = latencySummary(lat)
  return { eventsPerSec: events.length / seconds, p50: l.p50, p99: l.p99 }
}

module.exports = { FLOWS, clockMs, spreadEvents, stamped, inFlight, inBursts, paced, timedEmits, Collector }
