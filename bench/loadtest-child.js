'use strict'
// The seed's load test, in its own process (forked by bench/run.js): per round, 100 flows run
// concurrently, each emitting its realistic 100-event run sequentially, with one SSE-style
// subscriber per flow (the handler formats an SSE frame and pushes it to an array). Records
// write latency (emit call -> resolved) and delivery latency (emit call -> handler), and RSS
// after a forced GC before the first and after every round; subscriptions end every round.

const { serve, rssAfterGc } = require('./lib/children.js')
const { openSystem, cleanup } = require('./lib/systems.js')
const { Collector } = require('./lib/workload.js')
const { latencySummary } = require('./lib/stats.js')
const { realisticRun } = require('./run-events.js')

const MB = 2 ** 20

async function round(sys, r, flows) {
  const ids = Array.from({ length: flows }, (_, f) => `lt${r}_${f}`)
  const runs = ids.map((id) => realisticRun(id))
  const perFlow = runs[0].length
  const sent = ids.map(() => new Float64Array(perFlow))
  const received = new Int32Array(flows)
  const sse = ids.map(() => [])
  const writes = new Float64Array(flows * perFlow)
  const deliveries = new Collector(flows * perFlow)

  const unsubs = await Promise.all(
    ids.map((id, f) =>
      sys.subscribe(id, (e) => {
        deliveries.record(performance.now() - sent[f][received[f]++])
        sse[f].push(`id: ${e.id}\nevent: ${e.kind}\ndata: ${JSON.stringify(e)}\n\n`)
      }),
    ),
  )
  await Promise.all(
    runs.map(async (events, f) => {
      for (let k = 0; k < events.length; k++) {
        sent[f][k] = performance.now()
        await sys.emit(events[k])
        writes[f * perFlow + k] = performance.now() - sent[f][k]
      }
    }),
  )
  const complete = await deliveries.done(flows * perFlow, 30000)
  for (const u of unsubs) await u()
  return { writes, deliveries: deliveries.values().slice(), complete, delivered: deliveries.count }
}

serve({
  async run(m) {
    const sys = await openSystem(m.system, m.url, m.prefix)
    const rss = [rssAfterGc() / MB]
    const heap = [process.memoryUsage().heapUsed / MB]
    const writes = []
    const deliveries = []
    const rounds = []
    for (let r = 0; r < m.rounds; r++) {
      const out = await round(sys, r, m.flows)
      await cleanup(m.url, m.prefix)
      rss.push(rssAfterGc() / MB)
      heap.push(process.memoryUsage().heapUsed / MB)
      writes.push(out.writes)
      deliveries.push(out.deliveries)
      rounds.push({
        writeP99: latencySummary(out.writes).p99,
        deliveryP99: latencySummary(out.deliveries).p99,
        delivered: out.delivered,
        complete: out.complete,
      })
    }
    const counts = sys.counts()
    await sys.close()
    const w = latencySummary(concat(writes))
    const d = latencySummary(concat(deliveries))
    return {
      type: 'result',
      writeP50: w.p50,
      writeP99: w.p99,
      deliveryP50: d.p50,
      deliveryP99: d.p99,
      rssStartMB: rss[0],
      rssAfterRound1MB: rss[1],
      rssAfterLastMB: rss[rss.length - 1],
      rssGrowthMB: rss[rss.length - 1] - rss[1],
      heapAfterRound1MB: heap[1],
      heapAfterLastMB: heap[heap.length - 1],
      openAfter: counts,
      rssPerRoundMB: rss,
      rounds,
    }
  },
})

function concat(arrays) {
  const out = new Float64Array(arrays.reduce((n, a) => n + a.length, 0))
  let o = 0
  for (const a of arrays) {
    out.set(a, o)
    o += a.length
  }
  return out
}
