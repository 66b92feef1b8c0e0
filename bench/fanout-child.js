'use strict'
// Fan-out child (forked by bench/run.js, one process per system so RSS and CPU are its own):
// 10 000 subscriptions over 1 000 streams (10 handlers per stream), one event emitted to each
// stream (delivery latency of all 10 000 deliveries), then idle CPU over `idleMs` with no
// traffic. RSS is read after a forced GC.

const { serve, rssAfterGc } = require('./lib/children.js')
const { openSystem } = require('./lib/systems.js')
const { Collector, stamped, inFlight } = require('./lib/workload.js')
const { latencyHandler } = require('./lib/subscribers.js')
const { latencySummary } = require('./lib/stats.js')
const { realisticRun } = require('./run-events.js')

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

serve({
  async run(m) {
    const rssStart = rssAfterGc()
    const sys = await openSystem(m.system, m.url, m.prefix)
    const ids = Array.from({ length: m.streams }, (_, i) => `fan_${i}`)
    const total = m.streams * m.perStream
    const col = new Collector(total)

    const t0 = performance.now()
    await inFlight(100, total, (k) => sys.subscribe(ids[k % m.streams], latencyHandler(col)))
    const setupMs = performance.now() - t0
    const rssAfterSetup = rssAfterGc()
    const heapAfterSetup = process.memoryUsage().heapUsed
    const counts = sys.counts()

    const run = realisticRun('fan')
    await inFlight(256, ids.length, (i) => sys.emit(stamped({ ...run[i % run.length], subject: ids[i] })))
    const complete = await col.done(total, 30000)
    const l = latencySummary(col.values())

    await sleep(1000)
    const cpu0 = process.cpuUsage()
    const wall0 = performance.now()
    await sleep(m.idleMs)
    const cpu = process.cpuUsage(cpu0)
    const wallMs = performance.now() - wall0
    const rssAfterIdle = process.memoryUsage().rss
    await sys.close()
    return {
      type: 'result',
      setupMs,
      rssStartMB: rssStart / 2 ** 20,
      rssAfterSetupMB: rssAfterSetup / 2 ** 20,
      heapAfterSetupMB: heapAfterSetup / 2 ** 20,
      rssAfterIdleMB: rssAfterIdle / 2 ** 20,
      deliveryP50: l.p50,
      deliveryP99: l.p99,
      deliveryMax: l.max,
      delivered: col.count,
      lost: total - Math.min(col.count, total),
      complete,
      idleCpuPct: ((cpu.user + cpu.system) / 1000 / wallMs) * 100,
      idleCpuUs: cpu.user + cpu.system,
      subscriptions: counts.subscriptions ?? total,
      channels: counts.channels,
    }
  },
})
