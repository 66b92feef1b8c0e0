'use strict'
// Scenario 12: nvent's hot path, per step: the calls nvent's flow wiring makes for a step
// (NVENT-ADAPTERS.md §6) — stream.append, StreamAdapter.publish of the flow event,
// index.updateWithRetry of the run entry (a nested emittedEvents partial), index.increment
// (completedSteps) and index.read of the flow's runs (20 entries) — on lean-events/nvent's
// adapters and on nvent's own Redis store adapter (@nvent-addon/adapter-store-redis 0.5.15, a
// devDependency; its stream adapter is one PUBLISH of the JSON, done here with ioredis), on one
// Redis, in the same run.
//
// - sequential: one step after another, runs of 5 steps (each run added to the index at its
//   start, untimed): latency per step, CPU per step (this process, which includes the addon's
//   threads; the Redis server's CPU on its own row, run starts included);
// - parallel: rounds of 20 steps started together on a new run (parallel steps in a flow):
//   updates lost, updateWithRetry calls that gave up, and the conflict retries it took.

const Redis = require('ioredis')
const { EventBus } = require('../..')
const { cleanup } = require('../lib/systems.js')
const { latencySummary } = require('../lib/stats.js')
const { referenceStoreAdapter } = require('../../__test__/fixtures/nvent-reference/load.js')

const SYSTEMS = ['lean', 'reference']
const STEPS = 1000
const WARMUP = 100
const ROUNDS = 20
const PARALLEL = 20
const RUNS_LISTED = 20
const STEPS_PER_RUN = 5

/** Count the index.update calls updateWithRetry makes (its tries); returns the reader. */
function countUpdates(store) {
  let calls = 0
  const update = store.index.update
  store.index.update = (...args) => {
    calls++
    return update(...args)
  }
  return () => calls
}

/** The adapters of one system on a fresh prefix, with a call counter on index.update. */
async function open(name, url, prefix) {
  if (name === 'lean') {
    const { createStoreAdapter, createStreamAdapter } = await import('../../nvent/adapters.js')
    const bus = await EventBus.connect({ url, prefix })
    const store = createStoreAdapter({ bus, prefix })
    const stream = createStreamAdapter({ bus, prefix })
    return { store, publish: (topic, ev) => stream.publish(topic, ev), updates: countUpdates(store), close: () => bus.close() }
  }
  const RedisStoreAdapter = await referenceStoreAdapter()
  const u = new URL(url)
  const log = console.log
  console.log = () => {}
  const store = new RedisStoreAdapter({ connection: { host: u.hostname, port: Number(u.port || 6379) }, prefix })
  console.log = log
  store.redis.removeAllListeners('connect')
  const pub = new Redis(url)
  return {
    store,
    publish: (topic, ev) => pub.publish(topic, JSON.stringify(ev)),
    updates: countUpdates(store),
    close: async () => {
      await store.close()
      pub.disconnect()
    },
  }
}

/** One step of run `runId`: nvent's calls for an event that emits and completes a step. */
async function step(sys, p, runId, i) {
  const event = { type: 'emit', runId, flowName: 'bench-flow', stepName: `step-${i}`, stepId: `step-${i}:1`, attempt: 1, data: { name: `step-${i}.done`, payload: { i } } }
  const rec = await sys.store.stream.append(`${p}:flow:run:${runId}`, event)
  await sys.publish(`${p}:stream:flow:events:${runId}`, { type: 'flow.event', data: { event: rec }, timestamp: Date.now() })
  let ok = true
  try {
    await sys.store.index.updateWithRetry(`${p}:flow:runs:bench-flow`, runId, { emittedEvents: { [`step-${i}`]: { done: rec.ts } }, lastActivityAt: rec.ts })
  } catch {
    ok = false
  }
  await sys.store.index.increment(`${p}:flow:runs:bench-flow`, runId, 'completedSteps', 1)
  await sys.store.index.read(`${p}:flow:runs:bench-flow`, { limit: RUNS_LISTED })
  return ok
}

/** A run in the flow's runs index, as nvent adds it at run start. */
function addRun(sys, p, runId) {
  const now = Date.now()
  return sys.store.index.add(`${p}:flow:runs:bench-flow`, runId, now, { status: 'running', startedAt: now, lastActivityAt: now, stepCount: STEPS_PER_RUN, completedSteps: 0, emittedEvents: {} })
}

/** A flow with RUNS_LISTED runs in its index. */
async function seed(sys, p) {
  for (let r = 0; r < RUNS_LISTED; r++) await addRun(sys, p, `seed-${r}`)
}

async function sequential(h, name) {
  const p = h.prefixFor('nvent', name)
  const sys = await open(name, h.url, p)
  try {
    await seed(sys, p)
    // runs of STEPS_PER_RUN steps, each run added at its start (untimed, like the run start)
    const run = async (i, tag) => {
      const runId = `${tag}-${Math.floor(i / STEPS_PER_RUN)}`
      if (i % STEPS_PER_RUN === 0) await addRun(sys, p, runId)
      return runId
    }
    for (let i = 0; i < WARMUP; i++) await step(sys, p, await run(i, 'warm'), i)
    const latencies = new Float64Array(STEPS)
    let busy = 0
    let untimed = { user: 0, system: 0 }
    const redis0 = await h.redisCpuSeconds()
    const cpu0 = process.cpuUsage()
    for (let i = 0; i < STEPS; i++) {
      const u0 = process.cpuUsage()
      const runId = await run(i, 'run')
      const u = process.cpuUsage(u0)
      untimed = { user: untimed.user + u.user, system: untimed.system + u.system }
      const s = performance.now()
      await step(sys, p, runId, i)
      latencies[i] = performance.now() - s
      busy += latencies[i]
    }
    const seconds = busy / 1000
    const all = process.cpuUsage(cpu0)
    const cpu = { user: all.user - untimed.user, system: all.system - untimed.system }
    const redisCpu = (await h.redisCpuSeconds()) - redis0
    const lat = latencySummary(latencies)
    return {
      stepP50: lat.p50,
      stepP99: lat.p99,
      stepsPerSec: STEPS / seconds,
      cpuUsPerStep: (cpu.user + cpu.system) / STEPS,
      redisCpuUsPerStep: (redisCpu * 1e6) / STEPS, // includes the untimed run starts (1 in STEPS_PER_RUN steps)
    }
  } finally {
    await sys.close()
    await cleanup(h.url, p)
  }
}

async function parallel(h, name) {
  const p = h.prefixFor('nvent-par', name)
  const sys = await open(name, h.url, p)
  try {
    await seed(sys, p)
    let lost = 0
    let gaveUp = 0
    const durations = []
    const updates0 = sys.updates()
    for (let round = 0; round < ROUNDS; round++) {
      const runId = `par-${round}`
      await addRun(sys, p, runId)
      const before = (await sys.store.index.get(`${p}:flow:runs:bench-flow`, runId)).metadata
      const t0 = performance.now()
      const oks = await Promise.all(Array.from({ length: PARALLEL }, (_, i) => step(sys, p, runId, round * PARALLEL + i)))
      durations.push(performance.now() - t0)
      gaveUp += oks.filter((ok) => !ok).length
      const after = (await sys.store.index.get(`${p}:flow:runs:bench-flow`, runId)).metadata
      const landed = Object.keys(after.emittedEvents || {}).length - Object.keys(before.emittedEvents || {}).length
      lost += PARALLEL - landed
    }
    const calls = sys.updates() - updates0
    return {
      lostPerRound: lost / ROUNDS,
      gaveUpPerRound: gaveUp / ROUNDS,
      retriesPerRound: (calls - ROUNDS * PARALLEL) / ROUNDS,
      roundMsP50: latencySummary(durations).p50,
    }
  } finally {
    await sys.close()
    await cleanup(h.url, p)
  }
}

async function nvent(h) {
  return {
    startedAt: new Date().toISOString(),
    config: { steps: STEPS, stepsPerRun: STEPS_PER_RUN, rounds: ROUNDS, parallel: PARALLEL, runsListed: RUNS_LISTED },
    sequential: await h.repeat(SYSTEMS, (name) => sequential(h, name)),
    parallel: await h.repeat(SYSTEMS, (name) => parallel(h, name)),
  }
}

module.exports = { nvent }
