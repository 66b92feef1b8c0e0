'use strict'
// Second-process subscriber for the live delivery benchmark (forked by bench/run.js).
// start: subscribe every flow with the given system -> 'ready' (with an addon's transport)
// wait:  until n events were delivered -> 'reached'
// finish: until n delivered (or timeout) -> 'result' with every latency (ms), then exit.

const { serve } = require('./lib/children.js')
const { openSystem } = require('./lib/systems.js')
const { Collector } = require('./lib/workload.js')
const { subscribeAll } = require('./lib/subscribers.js')

let sys = null
let col = null

serve({
  async start(m) {
    sys = await openSystem(m.system, m.url, m.prefix)
    col = new Collector(m.expected)
    await subscribeAll(sys, m.flowIds, col)
    return { type: 'ready', transport: sys.transport }
  },
  async wait(m) {
    return { type: 'reached', ok: await col.done(m.n), count: col.count }
  },
  async finish(m) {
    const ok = await col.done(m.n)
    const reply = { type: 'result', ok, delivered: col.count, latencies: Array.from(col.values()) }
    await sys.close()
    process.send(reply, () => process.exit(0))
  },
})
