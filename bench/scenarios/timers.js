'use strict'
// Scenario 7: timer accuracy with 10 000 pending timers. 10 000 scheduler jobs each await a
// durable timer (`ctx.await.time`): 500 of them are due in a 5 s window that starts once every
// job is waiting, the other 9 500 an hour later, so 10 000 timers are pending while the 500
// fire. Reported: how late each of the 500 fired (`meta.lateMs` of its `step.resumed` event:
// claim time − due time, whole ms), how late its handler continued (Date.now() − due, in the
// handler), p50/p99/max, and the process CPU over 2 s while all 10 000 wait (no traffic: any
// CPU there is polling). The addon only: the JS baseline has no durable timers.
//
// Burst: 1 000 jobs on two scheduler instances (two buses, one prefix) each await a timer due
// at one and the same moment. Reported: that each fired exactly once (one `step.resumed` per
// job), how late they fired (`meta.lateMs`: claim time − due time) and how late their handlers
// continued, p50/p99/max.

const { EventBus, Scheduler } = require('../..')
const { latencySummary, median } = require('../lib/stats.js')
const { cleanup } = require('../lib/systems.js')

const PENDING = 10_000
const MEASURED = 500
const WINDOW_MS = 5000
const FLOWS = 100
const BURST = 1000

async function waitUntil(cond, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timers scenario: ${what} did not happen within ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

/** The measured step: sleep until `input.due`, then note how late the handler went on. */
async function defineNap(scheduler, resumedLate) {
  scheduler.define('nap', async (input, ctx) => {
    await ctx.await.time(new Date(input.due))
    resumedLate.push(Date.now() - input.due)
    return null
  })
  await scheduler.ready()
}

async function timersRun(h, rep) {
  const prefix = h.prefixFor('timers', `addon${rep}`)
  const bus = await EventBus.connect({ url: h.url, prefix, timeoutMs: 10_000 })
  const scheduler = new Scheduler(bus)
  let waiting = 0
  const counter = await bus.onKind('step.await.time', () => waiting++)
  try {
    const resumedLate = []
    await defineNap(scheduler, resumedLate)
    const t0 = Date.now()
    const farAway = t0 + 3600_000
    const far = []
    for (let i = 0; i < PENDING - MEASURED; i++) {
      far.push(scheduler.run('nap', { flow: `far-${i % FLOWS}`, input: { due: farAway } }).catch(() => {}))
      if (i % 1000 === 999) await waitUntil(() => waiting > i - 200, 60_000, 'registration')
    }
    await waitUntil(() => waiting === PENDING - MEASURED, 60_000, 'registration of the far timers')
    const start = Date.now() + 3000
    const measured = []
    for (let i = 0; i < MEASURED; i++) {
      const due = start + Math.floor((i * WINDOW_MS) / MEASURED)
      measured.push(scheduler.run('nap', { flow: `near-${i % FLOWS}`, input: { due } }))
    }
    await waitUntil(() => waiting === PENDING, 60_000, 'registration of the measured timers')
    const setupMs = Date.now() - t0
    const allPendingBeforeFirstDue = Date.now() < start
    // idle: after the registrations have settled (the last ones' writes may still be going
    // on when their events arrive), until shortly before the first timer is due
    await new Promise((r) => setTimeout(r, 1000))
    const cpu0 = process.cpuUsage()
    const w0 = performance.now()
    await new Promise((r) => setTimeout(r, Math.max(0, Math.min(1500, start - Date.now() - 50))))
    const idle = process.cpuUsage(cpu0)
    const idleMs = performance.now() - w0
    await Promise.all(measured)
    const late = []
    for (let f = 0; f < FLOWS; f++) {
      for (const e of await bus.read({ type: 'flow', id: `near-${f}` }, { limit: 10_000 })) {
        if (e.kind === 'step.resumed') late.push(e.meta.lateMs)
      }
    }
    return {
      pending: PENDING,
      measured: MEASURED,
      setupMs,
      allPendingBeforeFirstDue,
      idleCpuPct: ((idle.user + idle.system) / 1000 / idleMs) * 100,
      idleWindowMs: idleMs,
      fired: late.length,
      firedLateMs: latencySummary(late),
      resumedLateMs: latencySummary(resumedLate),
    }
  } finally {
    await counter.unsubscribe()
    await scheduler.close()
    await bus.close()
    await cleanup(h.url, prefix)
  }
}

async function burstRun(h, rep) {
  const prefix = h.prefixFor('timers-burst', `addon${rep}`)
  const buses = [
    await EventBus.connect({ url: h.url, prefix, timeoutMs: 10_000 }),
    await EventBus.connect({ url: h.url, prefix, timeoutMs: 10_000 }),
  ]
  const schedulers = buses.map((bus) => new Scheduler(bus))
  let waiting = 0
  const counter = await buses[0].onKind('step.await.time', () => waiting++)
  try {
    const resumedLate = []
    for (const scheduler of schedulers) await defineNap(scheduler, resumedLate)
    const t0 = Date.now()
    const due = t0 + 5000
    const runs = []
    for (let i = 0; i < BURST; i++) {
      runs.push(schedulers[i % 2].run('nap', { flow: `burst-${i % FLOWS}`, input: { due }, jobId: `burst-${i}` }))
    }
    // if anything below throws, closing the schedulers rejects the runs: not unhandled
    const finished = Promise.all(runs)
    finished.catch(() => {})
    await waitUntil(() => waiting === BURST, 60_000, 'registration of the burst')
    const setupMs = Date.now() - t0
    const allPendingBeforeDue = Date.now() < due
    await finished
    const late = []
    const resumedPerJob = new Map()
    for (let f = 0; f < FLOWS; f++) {
      for (const e of await buses[0].read({ type: 'flow', id: `burst-${f}` }, { limit: 10_000 })) {
        if (e.kind !== 'step.resumed') continue
        late.push(e.meta.lateMs)
        resumedPerJob.set(e.meta.jobId, (resumedPerJob.get(e.meta.jobId) || 0) + 1)
      }
    }
    const firedOnce = resumedPerJob.size === BURST && [...resumedPerJob.values()].every((n) => n === 1)
    return {
      jobs: BURST,
      instances: schedulers.length,
      setupMs,
      allPendingBeforeDue,
      fired: late.length,
      firedOnce,
      firedLateMs: latencySummary(late),
      resumedLateMs: latencySummary(resumedLate),
    }
  } finally {
    await counter.unsubscribe()
    for (const scheduler of schedulers) await scheduler.close()
    for (const bus of buses) await bus.close()
    await cleanup(h.url, prefix)
  }
}

async function timers(h) {
  const reps = []
  const bursts = []
  for (let rep = 0; rep < h.reps; rep++) {
    reps.push(await timersRun(h, rep))
    bursts.push(await burstRun(h, rep))
  }
  const pick = (f) => {
    const v = reps.map(f).sort((a, b) => a - b)
    return v[v.length >> 1]
  }
  return {
    measured: true,
    startedAt: new Date().toISOString(),
    config: { pending: PENDING, measured: MEASURED, windowMs: WINDOW_MS, burst: BURST, burstInstances: 2 },
    reps,
    bursts,
    median: {
      firedP50: pick((r) => r.firedLateMs.p50),
      firedP99: pick((r) => r.firedLateMs.p99),
      firedMax: pick((r) => r.firedLateMs.max),
      resumedP50: pick((r) => r.resumedLateMs.p50),
      resumedP99: pick((r) => r.resumedLateMs.p99),
      idleCpuPct: pick((r) => r.idleCpuPct),
      setupMs: pick((r) => r.setupMs),
    },
    burst: {
      firedOnce: bursts.every((b) => b.firedOnce),
      firedP50: median(bursts.map((b) => b.firedLateMs.p50)),
      firedP99: median(bursts.map((b) => b.firedLateMs.p99)),
      firedMax: median(bursts.map((b) => b.firedLateMs.max)),
      resumedP50: median(bursts.map((b) => b.resumedLateMs.p50)),
      resumedP99: median(bursts.map((b) => b.resumedLateMs.p99)),
    },
  }
}

module.exports = { timers }
