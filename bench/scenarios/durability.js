'use strict'
// Scenario 10: the cost of `durability: 'replicated'` (WAIT 1 after each group commit) on a
// master with one replica, both its own redis-servers on loopback: sequential emits and 256 in
// flight, `local` against `replicated`, repetitions rotating the order.

const Redis = require('ioredis')
const { EventBus } = require('../..')
const { startRedis } = require('../lib/redis-server.js')
const { medianOf } = require('../lib/stats.js')
const { spreadEvents, timedEmits: timed } = require('../lib/workload.js')

const MODES = ['local', 'replicated']

async function replicaInSync(url, deadlineMs) {
  const r = new Redis(url)
  try {
    const deadline = Date.now() + deadlineMs
    while (!(await r.info('replication')).includes('master_link_status:up')) {
      if (Date.now() > deadline) throw new Error('the replica did not sync')
      await new Promise((res) => setTimeout(res, 20))
    }
  } finally {
    r.disconnect()
  }
}

async function durability(h) {
  const master = await startRedis({ own: true })
  const port = new URL(master.url).port
  const replica = await startRedis({ own: true, args: ['--replicaof', '127.0.0.1', port] })
  try {
    await replicaInSync(replica.url, 10_000)
    const out = {}
    for (const m of MODES) out[m] = { reps: [] }
    for (let rep = 0; rep < h.reps; rep++) {
      for (const mode of rep % 2 ? [...MODES].reverse() : MODES) {
        const bus = await EventBus.connect({ url: master.url, prefix: h.prefixFor('dur', mode), durability: mode })
        try {
          await timed(bus, spreadEvents(500, `durw${rep}`).events, 64)
          const sequential = await timed(bus, spreadEvents(2000, `durs${rep}`).events, 1)
          const inFlight256 = await timed(bus, spreadEvents(20000, `duri${rep}`).events, 256)
          out[mode].reps.push({ seqP50: sequential.p50, seqP99: sequential.p99, inFlight256PerSec: inFlight256.eventsPerSec })
        } finally {
          await bus.close()
        }
      }
    }
    for (const m of MODES) out[m].median = medianOf(out[m].reps)
    return { startedAt: new Date().toISOString(), config: { sequential: 2000, inFlight256: 20000, replicas: 1 }, modes: out }
  } finally {
    replica.stop()
    master.stop()
  }
}

module.exports = { durability }
