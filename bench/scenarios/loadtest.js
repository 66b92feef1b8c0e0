'use strict'
// Scenario 9: the seed's load test (100 concurrent flows x realistic 100-event runs, one
// SSE-style subscriber per flow), 10 rounds in one child process per system.

const path = require('node:path')
const { forkChild, request, waitExit } = require('../lib/children.js')
const { cleanup } = require('../lib/systems.js')

const CONFIG = { flows: 100, rounds: 10 }

async function loadRun(h, name) {
  const prefix = h.prefixFor('lt', name)
  const child = forkChild(path.join(__dirname, '..', 'loadtest-child.js'))
  try {
    const r = await request(child, { cmd: 'run', system: name, url: h.url, prefix, ...CONFIG }, 'result', 240000)
    delete r.type
    return r
  } finally {
    child.disconnect()
    await waitExit(child)
    await cleanup(h.url, prefix)
  }
}

async function loadtest(h) {
  const systems = {}
  for (const name of ['addon', 'lua']) {
    const r = await loadRun(h, name)
    systems[name] = { reps: [r], median: Object.fromEntries(Object.entries(r).filter(([, v]) => typeof v === 'number')) }
  }
  return { config: CONFIG, systems }
}

module.exports = { loadtest }
