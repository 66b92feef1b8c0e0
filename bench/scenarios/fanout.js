'use strict'
// Scenario 5: fan-out, 10 000 subscriptions over 1 000 streams in one process; delivery p99 of
// one event per stream, idle CPU over 10 s, RSS after setup. Each run is its own child process.
// Baseline: ioredis subscriber with 1 000 channels and 10 JS handlers per channel, emitting
// with ioredis+Lua (the XADD+PUBLISH baseline has the same subscriber, so it is not repeated).

const path = require('node:path')
const { forkChild, request, waitExit } = require('../lib/children.js')
const { cleanup } = require('../lib/systems.js')

const CONFIG = { streams: 1000, perStream: 10, idleMs: 10000 }

async function fanoutRun(h, name) {
  const prefix = h.prefixFor('fan', name)
  const child = forkChild(path.join(__dirname, '..', 'fanout-child.js'))
  try {
    const r = await request(child, { cmd: 'run', system: name, url: h.url, prefix, ...CONFIG }, 'result', 180000)
    delete r.type
    return r
  } finally {
    child.disconnect()
    await waitExit(child)
    await cleanup(h.url, prefix)
  }
}

async function fanout(h) {
  return { config: CONFIG, systems: await h.repeat(['addon', 'lua'], (name) => fanoutRun(h, name)) }
}

module.exports = { fanout }
