'use strict'
// Scenario 4: live delivery latency, emit -> handler, at 2 000 events/s (paced) and at the
// maximum rate (256 emits in flight), with the subscriber in this process and in another one.
// Subscribers: one per flow on all 100 flows of the workload. The addon is measured on both
// transports ('addon' = the event loop's, 'thread' = the Tokio worker's).

const { latencySummary } = require('../lib/stats.js')
const { spreadEvents, stamped, inFlight, paced } = require('../lib/workload.js')
const { sameProcess, otherProcess } = require('../lib/subscribers.js')

const SYSTEMS = ['addon', 'thread', 'lua', 'spec']
const WARMUP = 300
const MODES = {
  rate2000: { label: '2 000 events/s', events: 3000, send: (count, fn) => paced(2000, count, fn) },
  max: { label: 'max rate (256 in flight)', events: 20000, send: (count, fn) => inFlight(256, count, fn) },
}

async function liveRun(h, name, rep, placement, modeKey) {
  const mode = MODES[modeKey]
  return h.withSystem(name, 'lv', async (sys, prefix) => {
    const total = WARMUP + mode.events
    const { flowIds, events } = spreadEvents(total, `lv${rep}`)
    const sub =
      placement === 'same'
        ? await sameProcess(sys, flowIds, total)
        : await otherProcess(name, h.url, prefix, flowIds, total)
    let r, sendSeconds
    try {
      await inFlight(16, WARMUP, (i) => sys.emit(stamped(events[i])))
      await sub.waitFor(WARMUP)
      const t0 = performance.now()
      await mode.send(mode.events, (i) => sys.emit(stamped(events[WARMUP + i])))
      sendSeconds = (performance.now() - t0) / 1000
      r = await sub.finish(total)
    } finally {
      sub.close()
    }
    const l = latencySummary(r.latencies.subarray(WARMUP))
    return {
      p50: l.p50,
      p99: l.p99,
      p999: l.p999,
      max: l.max,
      sentPerSec: mode.events / sendSeconds,
      lost: total - r.delivered,
      ...(sub.transport ? { subscriberTransport: sub.transport } : {}),
    }
  })
}

async function live(h) {
  const runs = {}
  for (const modeKey of Object.keys(MODES)) {
    for (const placement of ['same', 'other']) {
      runs[`${placement}.${modeKey}`] = {
        placement,
        mode: MODES[modeKey].label,
        events: MODES[modeKey].events,
        systems: await h.repeat(SYSTEMS, (name, rep) => liveRun(h, name, rep, placement, modeKey)),
      }
    }
  }
  return { config: { warmup: WARMUP, subscribers: 'one per flow, 100 flows' }, runs }
}

module.exports = { live, liveRun }
