'use strict'
// Scenario 11: one Redis against a Redis Cluster of 3 masters and 3 replicas (scripts/cluster.sh,
// all on loopback, on this machine's cores): 256 emits in flight, sequential emit latency, live
// delivery latency (subscribed to all 100 flows, 256 in flight) and the cost of
// `durability: 'replicated'` on the cluster. Repetitions rotate the order of the setups.

const { spawnSync } = require('node:child_process')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const fs = require('node:fs')
const { EventBus } = require('../..')
const { startRedis } = require('../lib/redis-server.js')
const { latencySummary, medianOf } = require('../lib/stats.js')
const { spreadEvents, stamped, inFlight, clockMs, timedEmits: timed } = require('../lib/workload.js')

const SCRIPT = path.join(__dirname, '..', '..', 'scripts', 'cluster.sh')
const SEQUENTIAL = 2000
const IN_FLIGHT = 20000
const DELIVERY = 10000

function portFree(port) {
  return new Promise((resolve) => {
    const s = net.createServer()
    s.once('error', () => resolve(false))
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)))
  })
}

/** Six consecutive free ports (and their cluster bus ports, +10000). */
async function freeBase() {
  for (let base = 21000; base < 29000; base += 10) {
    let ok = true
    for (let p = base; p < base + 6 && ok; p++) ok = (await portFree(p)) && (await portFree(p + 10000))
    if (ok) return base
  }
  throw new Error('no six consecutive free ports')
}

async function startCluster() {
  const base = await freeBase()
  const env = { ...process.env, CLUSTER_PORT: String(base), CLUSTER_DIR: fs.mkdtempSync(path.join(os.tmpdir(), 'lean-events-bench-cluster-')) }
  const r = spawnSync('bash', [SCRIPT, 'start'], { env, encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`cluster did not start: ${r.stderr}`)
  return { url: r.stdout.trim(), stop: () => spawnSync('bash', [SCRIPT, 'stop'], { env }) }
}

/** Emit-to-handler latency with one subscription per flow, 256 emits in flight. */
async function delivery(bus, reader, tag) {
  const { flowIds, events } = spreadEvents(DELIVERY, tag)
  const lat = new Float64Array(DELIVERY)
  let got = 0
  let done
  const all = new Promise((r) => (done = r))
  const subs = []
  for (const id of flowIds) {
    subs.push(
      await reader.subscribe({ type: 'flow', id }, (e) => {
        lat[got++] = clockMs() - e.data.sentAt
        if (got === DELIVERY) done()
      }),
    )
  }
  try {
    await inFlight(256, DELIVERY, (i) => bus.emit(stamped(events[i])))
    await Promise.race([all, new Promise((_, rej) => setTimeout(() => rej(new Error(`delivered ${got} of ${DELIVERY}`)), 60_000))])
  } finally {
    for (const s of subs) await s.unsubscribe()
  }
  const l = latencySummary(lat)
  return { p50: l.p50, p99: l.p99 }
}

async function cluster(h) {
  const single = await startRedis({ own: true })
  const rig = await startCluster()
  const setups = {
    single: { url: single.url, durability: 'local' },
    cluster: { url: rig.url, durability: 'local' },
    clusterReplicated: { url: rig.url, durability: 'replicated' },
  }
  try {
    const out = {}
    for (const k of Object.keys(setups)) out[k] = { reps: [] }
    for (let rep = 0; rep < h.reps; rep++) {
      const keys = Object.keys(setups)
      for (let i = 0; i < keys.length; i++) {
        const k = keys[(i + rep) % keys.length]
        const { url, durability } = setups[k]
        const prefix = h.prefixFor('cl', k)
        const bus = await EventBus.connect({ url, prefix, durability })
        const reader = await EventBus.connect({ url, prefix })
        try {
          await timed(bus, spreadEvents(500, `clw${rep}`).events, 64)
          const sequential = await timed(bus, spreadEvents(SEQUENTIAL, `cls${rep}`).events, 1)
          const many = await timed(bus, spreadEvents(IN_FLIGHT, `cli${rep}`).events, 256)
          const live = await delivery(bus, reader, `cld${rep}`)
          out[k].reps.push({
            seqP50: sequential.p50,
            seqP99: sequential.p99,
            inFlight256PerSec: many.eventsPerSec,
            deliveryP50: live.p50,
            deliveryP99: live.p99,
          })
        } finally {
          await reader.close()
          await bus.close()
        }
      }
    }
    for (const k of Object.keys(setups)) out[k].median = medianOf(out[k].reps)
    return {
      startedAt: new Date().toISOString(),
      config: { sequential: SEQUENTIAL, inFlight256: IN_FLIGHT, delivery: DELIVERY, masters: 3, replicas: 3 },
      setups: out,
    }
  } finally {
    rig.stop()
    single.stop()
  }
}

module.exports = { cluster }
