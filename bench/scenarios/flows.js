'use strict'
// Scenario 13: a durable flow of 5 steps (`scheduler.defineFlow`, each `ctx.step` returning a
// small object at once), on Redis. Reported: runs/s with 50 runs in flight (start to
// `flow.completed`), the latency of one run at a time (p50/p99), and the overhead per step:
// (latency of the 5-step flow − latency of a flow with no step) ÷ 5, both sequential. What a
// step costs is its records: `step.started` and `step.completed` in the run's stream, the
// call and the step record in the store (four round trips, replayed by none here).
// The addon only: the JS baselines have no flows.

const { EventBus, Scheduler } = require('../..')
const { latencySummary, medianOf } = require('../lib/stats.js')
const { cleanup } = require('../lib/systems.js')

const STEPS = 5
const SEQUENTIAL = 200
const IN_FLIGHT = 50
const THROUGHPUT_RUNS = 1000

/** Settle each run when its `flow.completed` arrives (one listener for every run). */
async function completions(bus) {
  const waiting = new Map()
  const early = new Set() // completed before startFlow's answer was taken
  const sub = await bus.onKind('flow.completed', (e) => {
    const done = waiting.get(e.subject)
    if (!done) return void early.add(e.subject)
    waiting.delete(e.subject)
    done()
  })
  return {
    sub,
    async run(scheduler, flow) {
      const id = await scheduler.startFlow(flow, {})
      if (early.delete(id)) return
      await new Promise((resolve) => waiting.set(id, resolve))
    },
  }
}

async function flowsRun(h, rep) {
  const prefix = h.prefixFor('flows', `addon${rep}`)
  const bus = await EventBus.connect({ url: h.url, prefix, timeoutMs: 10_000 })
  const scheduler = new Scheduler(bus, { concurrency: 200 })
  scheduler.defineFlow('five', async (_input, ctx) => {
    let sum = 0
    for (let i = 0; i < STEPS; i++) sum += (await ctx.step(`s${i}`, async () => ({ i }))).i
    return { sum }
  })
  scheduler.defineFlow('none', async () => ({ sum: 0 }))
  await scheduler.ready()
  const c = await completions(bus)
  try {
    const timed = async (flow, n) => {
      const out = []
      for (let i = 0; i < n; i++) {
        const t0 = performance.now()
        await c.run(scheduler, flow)
        out.push(performance.now() - t0)
      }
      return latencySummary(out)
    }
    await timed('five', 20) // warm-up
    const five = await timed('five', SEQUENTIAL)
    const none = await timed('none', SEQUENTIAL)
    const t0 = performance.now()
    let next = 0
    await Promise.all(
      Array.from({ length: IN_FLIGHT }, async () => {
        while (next < THROUGHPUT_RUNS) {
          next++
          await c.run(scheduler, 'five')
        }
      }),
    )
    const seconds = (performance.now() - t0) / 1000
    return {
      runsPerSec: THROUGHPUT_RUNS / seconds,
      stepsPerSec: (THROUGHPUT_RUNS * STEPS) / seconds,
      runP50: five.p50,
      runP99: five.p99,
      emptyRunP50: none.p50,
      stepOverheadP50: (five.p50 - none.p50) / STEPS,
    }
  } finally {
    await c.sub.unsubscribe()
    await scheduler.close()
    await bus.close()
    await cleanup(h.url, prefix)
  }
}

async function flows(h) {
  const reps = []
  for (let rep = 0; rep < h.reps; rep++) reps.push(await flowsRun(h, rep))
  return {
    startedAt: new Date().toISOString(),
    config: { steps: STEPS, sequential: SEQUENTIAL, inFlight: IN_FLIGHT, runs: THROUGHPUT_RUNS },
    reps,
    median: medianOf(reps),
  }
}

module.exports = { flows }
