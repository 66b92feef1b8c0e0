'use strict'
// Gap-free live subscriptions: subscriptions that start while a writer appends as fast as it
// can get exactly their expected ids, in order, once each.

const assert = require('node:assert/strict')
const { bothBackends, uniqueId, waitFor, cmpId, readAll, rng } = require('./helpers')

const TOTAL = 5000
const SUBS = 20

bothBackends(
  `subscribe: gap-free under a ${TOTAL}-event write burst with ${SUBS} subscriptions starting mid-stream`,
  async (ctx, t) => {
    const seed = Number(process.env.GAPFREE_SEED) || (Date.now() ^ process.pid) >>> 0
    t.diagnostic(`seed ${seed} (replay with GAPFREE_SEED=${seed})`)
    const rand = rng(seed)
    const bus = await ctx.connect()
    // On Redis, half of the subscriptions live on a second bus (its own Pub/Sub connection).
    const otherBus = ctx.redis ? await ctx.connect() : bus
    const id = uniqueId('gapfree')
    const stream = { type: 'flow', id }

    // Subscription plans: where (by events already resolved) each one starts, and its cursor.
    const kinds = ['after', 'backfill', 'live']
    const plans = Array.from({ length: SUBS }, (_, i) => ({
      n: i,
      kind: kinds[i % 3],
      at: Math.floor(rand() * TOTAL * 0.95),
      backfill: 1 + Math.floor(rand() * 300),
      got: [],
      bad: [],
    }))
    plans.sort((a, b) => a.at - b.at)

    let issued = 0
    const resolvedIds = [] // in resolve order
    let maxResolved = null
    const noteResolved = (rec) => {
      resolvedIds.push(rec.id)
      if (maxResolved === null || cmpId(rec.id, maxResolved) > 0) maxResolved = rec.id
    }

    const starting = []
    const start = (plan) => {
      plan.before = maxResolved // every event up to this id is stored before subscribe() is called
      plan.issuedAtStart = issued
      const opts = {}
      if (plan.kind === 'after') {
        plan.after = resolvedIds.length && rand() < 0.85 ? resolvedIds[Math.floor(rand() * resolvedIds.length)] : '0'
        opts.after = plan.after
      } else if (plan.kind === 'backfill') {
        opts.backfill = plan.backfill
      }
      const target = plan.n % 2 ? otherBus : bus
      const handler = (e) => {
        if (e.subject !== id) plan.bad.push(e)
        plan.got.push(e.id)
      }
      const p = target.subscribe(stream, handler, opts).then((sub) => {
        plan.issuedAtResolve = issued // no event issued after this point was stored before the subscription
        plan.sub = sub
      })
      starting.push(p)
    }

    // The writer: chunks of varying size, as concurrent emits or one emitMany.
    let next = 0
    while (issued < TOTAL) {
      while (next < plans.length && plans[next].at <= issued) start(plans[next++])
      const n = Math.min(TOTAL - issued, 1 + Math.floor(rand() * 80))
      const events = Array.from({ length: n }, (_, k) => ({ kind: 'tick', subject: id, data: { i: issued + k } }))
      issued += n
      if (rand() < 0.5) {
        const recs = await bus.emitMany(events)
        recs.forEach(noteResolved)
      } else {
        await Promise.all(events.map((e) => bus.emit(e).then(noteResolved)))
      }
      // let subscription setup interleave with the next chunk
      if (rand() < 0.5) await new Promise((r) => setImmediate(r))
    }
    while (next < plans.length) start(plans[next++])
    await Promise.all(starting)

    // A sentinel written last: once a subscription has it, it has had the chance to get everything.
    const sentinel = await bus.emit({ kind: 'sentinel', subject: id })
    await waitFor(
      () => plans.every((p) => p.got.length && p.got[p.got.length - 1] === sentinel.id),
      60_000,
      () => plans.filter((p) => p.got[p.got.length - 1] !== sentinel.id).map((p) => `#${p.n} ${p.kind} got ${p.got.length}`).join(', '),
    )

    const all = (await readAll(bus, stream)).map((r) => r.id)
    assert.equal(all.length, TOTAL + 1, 'every event stored once')
    assert.equal(all[all.length - 1], sentinel.id)
    const index = new Map(all.map((x, i) => [x, i]))
    const countUpTo = (x) => (x === null ? 0 : index.get(x) + 1) // stream length when x was the newest

    for (const p of plans) {
      const label = `subscription #${p.n} (${p.kind}, at ${p.at}${p.kind === 'after' ? `, after ${p.after}` : ''}${p.kind === 'backfill' ? `, backfill ${p.backfill}` : ''})`
      assert.deepEqual(p.bad, [], `${label}: events of another stream`)
      const first = index.get(p.got[0])
      assert.ok(first !== undefined, `${label}: first id ${p.got[0]} is not in the stream`)
      if (p.kind === 'after') {
        const expected = p.after === '0' ? all : all.slice(index.get(p.after) + 1)
        assert.deepEqual(p.got, expected, `${label}: not exactly the ids after its cursor`)
      } else {
        // a contiguous suffix of the stream, ending at the last id
        assert.deepEqual(p.got, all.slice(first), `${label}: not a contiguous, duplicate-free suffix`)
        const lenBefore = countUpTo(p.before)
        const lenAfter = p.issuedAtResolve
        const back = p.kind === 'backfill' ? p.backfill : 0
        const lo = Math.max(0, lenBefore - back)
        const hi = Math.max(0, lenAfter - back)
        assert.ok(
          first >= lo && first <= hi,
          `${label}: starts at index ${first}, expected between ${lo} and ${hi} (stream had ${lenBefore} events at subscribe(), at most ${lenAfter} when it resolved)`,
        )
      }
    }
    const raced = plans.filter((p) => p.issuedAtResolve > p.issuedAtStart).length
    t.diagnostic(`${raced}/${SUBS} subscriptions were set up while events were being written`)
    for (const p of plans) await p.sub.unsubscribe()
    assert.equal(bus.subscriptionCount, 0)
    assert.equal(bus.channelCount, 0)
    assert.equal(otherBus.channelCount, 0)
  },
  { timeout: 120_000 },
)
