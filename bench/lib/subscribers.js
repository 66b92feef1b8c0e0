'use strict'
// Latency-recording subscribers on every flow of a workload: in this process, or in a second
// node process (bench/live-subscriber.js) that sends its latencies back over IPC at the end.
// Latency = receive time - data.sentAt, both on the monotonic clock (process.hrtime), which
// all processes of the machine share.

const path = require('node:path')
const { Collector, clockMs } = require('./workload.js')
const { forkChild, request, waitExit } = require('./children.js')

function latencyHandler(col) {
  return (e) => col.record(clockMs() - e.data.sentAt)
}

/** Subscribe every flow of `flowIds` with one latency handler each. */
async function subscribeAll(sys, flowIds, col) {
  const unsubs = []
  for (const id of flowIds) unsubs.push(await sys.subscribe(id, latencyHandler(col)))
  return unsubs
}

async function sameProcess(sys, flowIds, expected) {
  const col = new Collector(expected)
  const unsubs = await subscribeAll(sys, flowIds, col)
  return {
    waitFor: (n) => col.done(n),
    async finish(n) {
      const ok = await col.done(n)
      for (const u of unsubs) await u()
      return { ok, delivered: col.count, latencies: col.values() }
    },
    close() {},
  }
}

async function otherProcess(system, url, prefix, flowIds, expected) {
  const child = forkChild(path.join(__dirname, '..', 'live-subscriber.js'))
  const ready = await request(child, { cmd: 'start', system, url, prefix, flowIds, expected }, 'ready')
  return {
    /** The transport of the child's bus (an addon system), as `bus.transport` said. */
    transport: ready.transport,
    async waitFor(n) {
      return (await request(child, { cmd: 'wait', n }, 'reached')).ok
    },
    async finish(n) {
      const r = await request(child, { cmd: 'finish', n }, 'result')
      await waitExit(child)
      return { ok: r.ok, delivered: r.delivered, latencies: Float64Array.from(r.latencies) }
    },
    /** Make sure the child is gone (after finish it already is). */
    close() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    },
  }
}

module.exports = { latencyHandler, subscribeAll, sameProcess, otherProcess }
