'use strict'
// Repetitions and per-run isolation: every run gets its own key prefix and its own
// connections, and its keys are deleted afterwards. Repetitions rotate the order of the
// systems (addon, baseline, baseline / baseline, baseline, addon / ...).

const { openSystem, cleanup } = require('./systems.js')
const { medianOf } = require('./stats.js')

function createHarness({ url, reps }) {
  let counter = 0
  const runId = `${process.pid.toString(36)}${Date.now().toString(36).slice(-4)}`

  function prefixFor(tag, name) {
    return `leb-${runId}-${tag}-${name}-${++counter}`
  }

  /**
   * Open `name` on a fresh prefix, run fn(sys, prefix), close it and delete its keys. An addon
   * system's result object gets the transport it was measured on (`bus.transport`).
   */
  async function withSystem(name, tag, fn) {
    const prefix = prefixFor(tag, name)
    const sys = await openSystem(name, url, prefix)
    try {
      const r = await fn(sys, prefix)
      if (sys.transport && r && typeof r === 'object') r.transport = sys.transport
      return r
    } finally {
      await sys.close()
      await cleanup(url, prefix)
    }
  }

  /**
   * fn(name, rep) for every system, `reps` times, rotating the order; medians per system, and
   * for an addon system the transport(s) its repetitions were measured on.
   */
  async function repeat(systems, fn) {
    const out = {}
    for (const s of systems) out[s] = { reps: [] }
    for (let rep = 0; rep < reps; rep++) {
      const order = systems.map((_, i) => systems[(i + rep) % systems.length])
      for (const name of order) out[name].reps.push(await fn(name, rep))
    }
    for (const s of systems) {
      out[s].median = medianOf(out[s].reps)
      const transports = [...new Set(out[s].reps.map((r) => r?.transport).filter(Boolean))]
      if (transports.length) out[s].transport = transports.join(', ')
    }
    return out
  }

  return { url, reps, runId, prefixFor, withSystem, repeat }
}

module.exports = { createHarness }
