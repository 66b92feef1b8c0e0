'use strict'
// Scenario 8: CPU per event, emitted and delivered: 256 emits in flight with one subscriber
// per stream in this process. process.cpuUsage() of the benchmark process counts the addon's
// tokio threads (they are in-process) and excludes the Redis server, whose own CPU (INFO cpu)
// is reported next to it for reference. A per-thread split (main JS thread, tokio workers,
// other threads) from /proc is recorded as a diagnostic. The addon on both transports: 'addon'
// (the event loop's: sockets on the JS thread) and 'thread' (the Tokio worker's).

const { spreadEvents, stamped, inFlight } = require('../lib/workload.js')
const { sameProcess } = require('../lib/subscribers.js')
const threads = require('../lib/threads.js')

const SYSTEMS = ['addon', 'thread', 'lua', 'spec']
const EVENTS = 30000
const WARMUP = 500

async function cpuRun(h, name, rep) {
  return h.withSystem(name, 'cpu', async (sys) => {
    const total = WARMUP + EVENTS
    const { flowIds, events } = spreadEvents(total, `cpu${rep}`)
    const sub = await sameProcess(sys, flowIds, total)
    await inFlight(64, WARMUP, (i) => sys.emit(stamped(events[i])))
    await sub.waitFor(WARMUP)

    const redis0 = await h.redisCpuSeconds()
    const cpu0 = process.cpuUsage()
    const threads0 = threads.snapshot()
    const t0 = performance.now()
    await inFlight(256, EVENTS, (i) => sys.emit(stamped(events[WARMUP + i])))
    const r = await sub.finish(total)
    const cpu = process.cpuUsage(cpu0)
    const perThread = threads.diff(threads0, threads.snapshot())
    const seconds = (performance.now() - t0) / 1000
    const redisCpu = (await h.redisCpuSeconds()) - redis0
    return {
      cpuUsPerEvent: (cpu.user + cpu.system) / EVENTS,
      userUsPerEvent: cpu.user / EVENTS,
      sysUsPerEvent: cpu.system / EVENTS,
      mainThreadUsPerEvent: perThread.mainUs / EVENTS,
      tokioUsPerEvent: perThread.tokioUs / EVENTS,
      otherThreadsUsPerEvent: perThread.otherUs / EVENTS,
      redisCpuUsPerEvent: (redisCpu * 1e6) / EVENTS,
      cores: (cpu.user + cpu.system) / 1e6 / seconds,
      eventsPerSec: EVENTS / seconds,
      lost: total - r.delivered,
    }
  })
}

async function cpuPerEvent(h) {
  return {
    config: { events: EVENTS, inFlight: 256, subscribers: 'one per stream (100), same process' },
    systems: await h.repeat(SYSTEMS, (name, rep) => cpuRun(h, name, rep)),
  }
}

module.exports = { cpuPerEvent }
