'use strict'
// Scenarios 1-3: emit throughput and latency (no subscribers).
//   1. sequential emit, one at a time, awaited
//   2. 256 emits in flight: a sliding window (a new emit as soon as one settles), and bursts
//      of 256 awaited together (`await Promise.all(batch.map(e => emit(e)))`, the way a
//      handler that fans out does it)
//   3. emitMany batches of 100 (baselines: one ioredis pipeline per batch)
// Each run also reads the Redis server's CPU (INFO cpu) before and after: Redis CPU per event.
// 1 and 2 measure the addon on both transports ('addon' = the event loop's, 'thread' = the
// Tokio worker's); 3 the default transport only.

const { latencySummary } = require('../lib/stats.js')
const { spreadEvents, inFlight, inBursts } = require('../lib/workload.js')

const SYSTEMS = ['addon', 'lua', 'spec']
const BOTH_TRANSPORTS = ['addon', 'thread', 'lua', 'spec']
const WARMUP = 500

function nowNs() {
  return process.hrtime.bigint()
}

function msSince(t0) {
  return Number(process.hrtime.bigint() - t0) / 1e6
}

const SHAPES = { window: inFlight, bursts: inBursts }

/**
 * Emit `events` with `n` in flight (`shape`: a sliding window or bursts), recording each
 * emit's latency; returns rate, percentiles, process CPU and Redis server CPU per event (µs).
 */
async function timedEmits(h, sys, events, n, shape = 'window') {
  const lat = new Float64Array(events.length)
  const redis0 = await h.redisCpuSeconds()
  const cpu0 = process.cpuUsage()
  const t0 = nowNs()
  await SHAPES[shape](n, events.length, async (i) => {
    const s = nowNs()
    await sys.emit(events[i])
    lat[i] = msSince(s)
  })
  const seconds = msSince(t0) / 1000
  const cpu = process.cpuUsage(cpu0)
  const redisCpu = (await h.redisCpuSeconds()) - redis0
  const l = latencySummary(lat)
  return {
    eventsPerSec: events.length / seconds,
    p50: l.p50,
    p99: l.p99,
    p999: l.p999,
    cpuUsPerEvent: (cpu.user + cpu.system) / events.length,
    redisCpuUsPerEvent: (redisCpu * 1e6) / events.length,
  }
}

async function warmUp(sys, tag) {
  const { events } = spreadEvents(WARMUP, `${tag}w`)
  await inFlight(64, events.length, (i) => sys.emit(events[i]))
}

/** Scenario 1 (n = 1) and 2 (n = 256). */
function emitScenario(h, tag, n, count, shape, systems = BOTH_TRANSPORTS) {
  return h.repeat(systems, (name, rep) =>
    h.withSystem(name, tag, async (sys) => {
      await warmUp(sys, tag)
      const { events } = spreadEvents(count, `${tag}${rep}`)
      return timedEmits(h, sys, events, n, shape)
    }),
  )
}

async function sequential(h) {
  const count = 3000
  return { config: { events: count, inFlight: 1, warmup: WARMUP }, systems: await emitScenario(h, 'seq', 1, count) }
}

async function inFlight256(h) {
  const count = 30000
  return { config: { events: count, inFlight: 256, warmup: WARMUP }, systems: await emitScenario(h, 'if', 256, count) }
}

async function bursts256(h) {
  const count = 40000
  return { config: { events: count, burst: 256, warmup: WARMUP }, systems: await emitScenario(h, 'bu', 256, count, 'bursts') }
}

/** Scenario 3: batches of `size`, `batchesInFlight` batches outstanding. */
async function emitManyRun(h, size, batchesInFlight, count) {
  return h.repeat(SYSTEMS, (name, rep) =>
    h.withSystem(name, `em${batchesInFlight}`, async (sys) => {
      await warmUp(sys, 'em')
      const { events } = spreadEvents(count, `em${rep}`)
      const batches = []
      for (let i = 0; i < events.length; i += size) batches.push(events.slice(i, i + size))
      const lat = new Float64Array(batches.length)
      const t0 = nowNs()
      await inFlight(batchesInFlight, batches.length, async (b) => {
        const s = nowNs()
        await sys.emitMany(batches[b])
        lat[b] = msSince(s)
      })
      const seconds = msSince(t0) / 1000
      const l = latencySummary(lat)
      return { eventsPerSec: events.length / seconds, batchP50: l.p50, batchP99: l.p99 }
    }),
  )
}

async function emitMany(h) {
  const count = 30000
  return {
    config: { events: count, batchSize: 100, warmup: WARMUP },
    oneInFlight: await emitManyRun(h, 100, 1, count),
    fourInFlight: await emitManyRun(h, 100, 4, count),
  }
}

module.exports = { sequential, inFlight256, bursts256, emitMany, emitScenario }
