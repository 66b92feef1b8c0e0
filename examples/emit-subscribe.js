// The README's first example: emit, subscribe (backfill then live), read, list runs.
//   node examples/emit-subscribe.js      (REDIS_URL to use Redis; none: embedded store)
const { EventBus } = require('lean-events')

async function main() {
  const bus = await EventBus.connect({ url: process.env.REDIS_URL })
  const run = { type: 'flow', id: `run_${Date.now()}` }

  const seen = []
  const sub = await bus.subscribe(run, (e) => seen.push(e.kind), {
    backfill: 50,
    onError: (err, event) => console.error(err.code, err.lastId ?? event?.id),
  })

  await bus.emit({ kind: 'flow.started', subject: run.id, data: { name: 'example-flow' } })
  await bus.emitMany([
    { kind: 'step.started', subject: run.id, step: 'fetch', meta: { attempt: 1 } },
    { kind: 'log', subject: run.id, step: 'fetch', data: { level: 'info', msg: 'hi' } },
  ])
  while (seen.length < 3) await new Promise((r) => setTimeout(r, 5))
  console.log('delivered:', seen.join(' '))
  console.log('newest:', (await bus.read(run, { reverse: true, limit: 1 }))[0].kind)
  console.log('runs:', (await bus.listRuns('example-flow')).some((r) => r.id === run.id))

  await sub.unsubscribe()
  await bus.close()
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
