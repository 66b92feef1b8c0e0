#!/usr/bin/env node
'use strict'
// lean-events benchmark suite: `npm run bench`.
//
// Compares the addon with the JavaScript baselines it replaces (ioredis+Lua, ioredis
// XADD+PUBLISH), side by side in one run, 3 repetitions with the order of the systems rotating,
// medians reported; on the hot path (sections 1, 2, 2b, 4, 8 and 14) the addon on both of its
// transports (its default, the event loop's, and 'thread'). Writes bench/results.json and
// bench/RESULTS.md; prints one line per scenario.
//
// Redis: starts its own redis-server on a free port (stopped at the end, also on error and
// Ctrl-C), unless BENCH_REDIS_URL is set. Keys use unique prefixes and are deleted after each
// run; nothing is ever flushed.
// Development knobs: BENCH_ONLY=sequential,live (scenario keys) and BENCH_REPS=1.

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const Redis = require('ioredis')

const { startRedis } = require('./lib/redis-server.js')
const { createHarness } = require('./lib/harness.js')
const { machineInfo, redisCpuSeconds } = require('./lib/machine.js')
const { killChildren } = require('./lib/children.js')
const { evaluate, hotPath } = require('./lib/targets.js')
const { transports } = require('./lib/systems.js')
const { render } = require('./lib/report.js')
const fmt = require('./lib/format.js')
const { sequential, inFlight256, bursts256, emitMany } = require('./scenarios/throughput.js')
const { live } = require('./scenarios/live.js')
const { fanout } = require('./scenarios/fanout.js')
const { cpuPerEvent } = require('./scenarios/cpu.js')
const { loadtest } = require('./scenarios/loadtest.js')
const { timers } = require('./scenarios/timers.js')
const { durability } = require('./scenarios/durability.js')
const { cluster } = require('./scenarios/cluster.js')
const { nvent } = require('./scenarios/nvent.js')
const { flows } = require('./scenarios/flows.js')
const { pinned } = require('./scenarios/pinned.js')

const REPS = Number(process.env.BENCH_REPS || 3)

/**
 * storage.js reads REDIS_URL when it is loaded, so load it late. The size of one stream depends
 * on where its entries' ids cross millisecond boundaries (it changes how the listpack nodes
 * fill, and the last node is preallocated), so the measurement is repeated and the median kept.
 */
async function storage(h) {
  process.env.REDIS_URL = h.url
  const { measure } = require('./storage.js')
  const samples = []
  for (let i = 0; i < 7; i++) samples.push(await measure())
  const { median } = require('./lib/stats.js')
  const pick = (k) => median(samples.map((s) => s[k]))
  const ours = samples.map((s) => s.ours)
  return {
    events: samples[0].events,
    avgRecordBytes: pick('avgRecordBytes'),
    ours: pick('ours'),
    spec: pick('spec'),
    json: pick('json'),
    oursMin: Math.min(...ours),
    oursMax: Math.max(...ours),
    samples,
  }
}


const med = (r, sys) => r?.systems?.[sys]?.median ?? {}
const trio = (r, show) => ['addon', 'thread', 'lua', 'spec'].filter((s) => r?.systems?.[s]).map((s) => `${s} ${show(med(r, s))}`).join(' | ')

const SCENARIOS = [
  { key: 'sequential', title: 'sequential emit', run: sequential, line: (r) => trio(r, (m) => `${fmt.rate(m.eventsPerSec)}/s p50 ${fmt.ms(m.p50)} p99 ${fmt.ms(m.p99)}`) },
  { key: 'inFlight256', title: '256 in flight', run: inFlight256, line: (r) => trio(r, (m) => `${fmt.rate(m.eventsPerSec)}/s`) },
  { key: 'bursts256', title: 'bursts of 256 awaited together', run: bursts256, line: (r) => trio(r, (m) => `${fmt.rate(m.eventsPerSec)}/s`) },
  {
    key: 'emitMany',
    title: 'emitMany x100',
    run: emitMany,
    line: (r) => trio({ systems: r.oneInFlight }, (m) => `${fmt.rate(m.eventsPerSec)}/s`) + ' (1 batch in flight)',
  },
  {
    key: 'live',
    title: 'live delivery',
    run: live,
    line: (r) =>
      Object.entries(r.runs)
        .map(([k, run]) => `${k}: ${trio(run, (m) => `p50 ${fmt.ms(m.p50)} p99 ${fmt.ms(m.p99)}`)}`)
        .join(' || '),
  },
  {
    key: 'fanout',
    title: 'fan-out 10 000 subs',
    run: fanout,
    line: (r) => trio(r, (m) => `p99 ${fmt.ms(m.deliveryP99)} idle ${fmt.pct(m.idleCpuPct)} RSS ${fmt.mb(m.rssAfterSetupMB)}`),
  },
  { key: 'storage', title: 'storage', run: storage, line: (r) => `ours ${fmt.bytes(r.ours)} vs spec ${fmt.bytes(r.spec)} (${fmt.ratio(r.ours, r.spec)})` },
  {
    key: 'timers',
    title: 'timers',
    run: timers,
    line: (r) =>
      `${r.config.pending} pending: fired late p50 ${r.median.firedP50} ms p99 ${r.median.firedP99} ms; handler resumed p99 ${r.median.resumedP99} ms; idle CPU ${r.median.idleCpuPct.toFixed(2)} %` +
      `; burst of ${r.config.burst} on ${r.config.burstInstances} instances: ${r.burst.firedOnce ? 'each fired once' : 'NOT each fired once'}, fired late p50 ${r.burst.firedP50} ms p99 ${r.burst.firedP99} ms, handler resumed p99 ${r.burst.resumedP99} ms`,
  },
  { key: 'cpuPerEvent', title: 'CPU per event', run: cpuPerEvent, line: (r) => trio(r, (m) => `${fmt.us(m.cpuUsPerEvent)}/event (redis ${fmt.us(m.redisCpuUsPerEvent)})`) },
  {
    key: 'loadtest',
    title: 'load test 100 flows x 10 rounds',
    run: loadtest,
    line: (r) => trio(r, (m) => `write p99 ${fmt.ms(m.writeP99)} delivery p99 ${fmt.ms(m.deliveryP99)} RSS ${fmt.mb(m.rssAfterRound1MB)}→${fmt.mb(m.rssAfterLastMB)}`),
  },
  {
    key: 'durability',
    title: "durability 'replicated'",
    run: durability,
    line: (r) =>
      ['local', 'replicated']
        .map((m) => `${m} seq p50 ${fmt.ms(r.modes[m].median.seqP50)} 256 in flight ${fmt.rate(r.modes[m].median.inFlight256PerSec)}/s`)
        .join(' | '),
  },
  {
    key: 'cluster',
    title: 'Redis Cluster (3 masters) against one Redis',
    run: cluster,
    line: (r) =>
      Object.entries(r.setups)
        .map(([k, v]) => `${k} 256 in flight ${fmt.rate(v.median.inFlight256PerSec)}/s delivery p99 ${fmt.ms(v.median.deliveryP99)}`)
        .join(' | '),
  },
  {
    key: 'nvent',
    title: 'nvent hot path (lean-events/nvent against adapter-store-redis)',
    run: nvent,
    line: (r) =>
      ['lean', 'reference']
        .map((s) => {
          const q = r.sequential[s].median
          const par = r.parallel[s].median
          return `${s} step p50 ${fmt.ms(q.stepP50)} p99 ${fmt.ms(q.stepP99)} CPU ${fmt.us(q.cpuUsPerStep)}/step, 20 parallel: ${par.lostPerRound} lost ${par.retriesPerRound} retries per round`
        })
        .join(' | '),
  },
  {
    key: 'flows',
    title: 'durable flow of 5 steps',
    run: flows,
    line: (r) => {
      const m = r.median
      return `${fmt.rate(m.runsPerSec)} runs/s (${fmt.rate(m.stepsPerSec)} steps/s, ${r.config.inFlight} in flight); one at a time p50 ${fmt.ms(m.runP50)} p99 ${fmt.ms(m.runP99)}; per-step overhead p50 ${fmt.ms(m.stepOverheadP50)}`
    },
  },
  {
    key: 'pinned',
    title: 'hot path with node on CPU 0 and Redis on CPU 1',
    run: pinned,
    line: (r) =>
      r.skipped
        ? `skipped: ${r.skipped}`
        : ['sequential', 'inFlight256', 'bursts256']
            .map((k) => `${k} ${trio({ systems: r[k] }, (m) => `${fmt.rate(m.eventsPerSec)}/s p50 ${fmt.ms(m.p50)}`)}`)
            .join(' || ') + ` || live 2000/s ${trio({ systems: r.live }, (m) => `p50 ${fmt.ms(m.p50)} p99 ${fmt.ms(m.p99)}`)}`,
  },
]

async function main() {
  const started = Date.now()
  const redis = await startRedis()
  const stopAll = () => {
    killChildren()
    redis.stop()
  }
  process.once('exit', stopAll)
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.once(sig, async () => {
      console.error(`\n${sig}: stopping`)
      stopAll()
      if (redis.exited) await Promise.race([redis.exited, new Promise((r) => setTimeout(r, 2000))])
      process.exit(130)
    })
  }

  const admin = new Redis(redis.url)
  const h = createHarness({ url: redis.url, reps: REPS })
  h.redisCpuSeconds = () => redisCpuSeconds(admin)
  h.redisPid = redis.owned ? redis.pid : undefined
  const machine = await machineInfo(redis.url, redis.owned)
  console.log(`lean-events bench: ${machine.cpu}, ${machine.cores} cores, node ${machine.node}, redis ${machine.redis} at ${redis.url}${redis.owned ? ' (own server)' : ''}, ${REPS} repetitions`)

  const only = process.env.BENCH_ONLY ? new Set(process.env.BENCH_ONLY.split(',')) : null
  const scenarios = {}
  const seconds = {}
  let failures = 0
  for (const [i, sc] of SCENARIOS.entries()) {
    if (only && !only.has(sc.key)) continue
    const t0 = Date.now()
    const head = `[${i + 1}/${SCENARIOS.length}] ${sc.title}`
    try {
      scenarios[sc.key] = await sc.run(h)
      console.log(`${head} (${((Date.now() - t0) / 1000).toFixed(0)} s): ${sc.line(scenarios[sc.key])}`)
    } catch (err) {
      failures++
      scenarios[sc.key] = { error: err && err.message ? err.message : String(err) }
      console.log(`${head} FAILED (${((Date.now() - t0) / 1000).toFixed(0)} s): ${scenarios[sc.key].error}`)
      if (process.env.BENCH_DEBUG) console.error(err)
    }
    seconds[sc.key] = (Date.now() - t0) / 1000
  }
  admin.disconnect()

  machine.loadAvgEnd = os.loadavg().map((v) => +v.toFixed(2))
  const results = {
    startedAt: new Date(started).toISOString(),
    durationS: (Date.now() - started) / 1000,
    scenarioSeconds: seconds,
    reps: REPS,
    machine,
    // bus.transport of the addon systems measured in this process ('addon' must be 'loop')
    transports: transports(),
    scenarios,
  }
  results.targets = evaluate(scenarios)
  results.hotPath = hotPath(scenarios)
  fs.writeFileSync(path.join(__dirname, 'results.json'), JSON.stringify(results, null, 2) + '\n')
  fs.writeFileSync(path.join(__dirname, 'RESULTS.md'), render(results))
  console.log(`done in ${results.durationS.toFixed(0)} s: bench/RESULTS.md, bench/results.json${failures ? ` (${failures} scenario(s) failed)` : ''}`)
  stopAll()
  process.exitCode = failures ? 1 : 0
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
  killChildren()
})
