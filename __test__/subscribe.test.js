'use strict'
// subscribe / onKind: cursors, async iteration, reference-counted channels, handler isolation.

const assert = require('node:assert/strict')
const { bothBackends, uniqueId, waitFor, expectCode, liveSubscribers, CLUSTER } = require('./helpers')

/** Server-side subscribers of a flow's live channel. */
async function numsub(ctx, id) {
  return liveSubscribers(ctx.prefix, 'flow', id)
}

bothBackends('subscribe: after, backfill and live-only cursors on a quiet stream', async (ctx) => {
  const bus = await ctx.connect()
  const id = uniqueId('cursors')
  const stream = { type: 'flow', id }
  const old = await bus.emitMany(Array.from({ length: 10 }, (_, i) => ({ kind: 'tick', subject: id, data: { i } })))

  const fromStart = []
  const afterFifth = []
  const back3 = []
  const live = []
  const subs = [
    await bus.subscribe(stream, (e) => fromStart.push(e), { after: '0' }),
    await bus.subscribe(stream, (e) => afterFifth.push(e), { after: old[4].id }),
    await bus.subscribe(stream, (e) => back3.push(e), { backfill: 3 }),
    await bus.subscribe(stream, (e) => live.push(e)),
  ]
  const fresh = await bus.emitMany(Array.from({ length: 5 }, (_, i) => ({ kind: 'tick', subject: id, data: { i: 10 + i } })))
  const last = fresh[fresh.length - 1].id
  await waitFor(() => [fromStart, afterFifth, back3, live].every((l) => l.length && l[l.length - 1].id === last), 5000, 'all caught up')
  assert.deepEqual(fromStart, [...old, ...fresh])
  assert.deepEqual(afterFifth, [...old.slice(5), ...fresh])
  assert.deepEqual(back3, [...old.slice(7), ...fresh])
  assert.deepEqual(live, fresh)
  for (const s of subs) {
    assert.equal(s.lastId, last)
    assert.equal(s.live, true)
  }
  for (const s of subs) await s.unsubscribe()
  assert.equal(bus.subscriptionCount, 0)
  assert.equal(bus.channelCount, 0)

  // backfill larger than the stream: everything there is
  const all = []
  const s = await bus.subscribe(stream, (e) => all.push(e), { backfill: 1000 })
  await waitFor(() => all.length === 15, 5000, () => `backfill 1000 got ${all.length}`)
  assert.deepEqual(all, [...old, ...fresh])
  await s.unsubscribe()

  // a subscription to an empty stream gets the first event
  const emptyId = uniqueId('empty')
  for (const opts of [{ after: '0' }, { backfill: 5 }, undefined]) {
    const got = []
    const sub = await bus.subscribe({ type: 'flow', id: emptyId }, (e) => got.push(e), opts)
    const rec = await bus.emit({ kind: 'first', subject: emptyId, data: { opts: opts ?? null } })
    await waitFor(() => got.some((e) => e.id === rec.id), 5000, `empty stream ${JSON.stringify(opts)}`)
    assert.equal(got[got.length - 1].id, rec.id)
    await sub.unsubscribe()
  }
})

bothBackends('subscribe: bad cursors and options are INVALID_ARGUMENT', async (ctx) => {
  const bus = await ctx.connect()
  const stream = { type: 'flow', id: uniqueId('badsub') }
  await expectCode(bus.subscribe(stream, () => {}, { after: '0', backfill: 2 }), 'INVALID_ARGUMENT', 'after + backfill')
  await expectCode(bus.subscribe(stream, () => {}, { backfill: 0 }), 'INVALID_ARGUMENT', 'backfill 0')
  await expectCode(bus.subscribe(stream, () => {}, { backfill: -3 }), 'INVALID_ARGUMENT', 'backfill -3')
  await expectCode(bus.subscribe(stream, () => {}, { backfill: 10_001 }), 'INVALID_ARGUMENT', 'backfill 10001')
  await expectCode(bus.subscribe(stream, () => {}, { after: 'x-y' }), 'INVALID_ARGUMENT', 'after not an id')
  await expectCode(bus.subscribe(stream, () => {}, { maxQueue: 0 }), 'INVALID_ARGUMENT', 'maxQueue 0')
  await expectCode(bus.subscribe(stream, 'not a function'), 'INVALID_ARGUMENT', 'handler a string')
  await expectCode(bus.subscribe(stream, () => {}, { onError: 1 }), 'INVALID_ARGUMENT', 'onError not a function')
  await expectCode(bus.subscribe({ type: 'flows', id: 'x' }, () => {}), 'INVALID_ARGUMENT', 'reserved type')
  await expectCode(bus.onKind('Bad Kind', () => {}), 'INVALID_ARGUMENT', 'onKind bad kind')
  await expectCode(bus.onKind(42, () => {}), 'INVALID_ARGUMENT', 'onKind kind not a string')
  assert.equal(bus.subscriptionCount, 0)
  assert.equal(bus.channelCount, 0)
})

bothBackends('subscribe: async iterator receives events; break unsubscribes', async (ctx) => {
  const bus = await ctx.connect()
  const id = uniqueId('iter')
  const stream = { type: 'flow', id }
  const first = await bus.emitMany([1, 2, 3].map((i) => ({ kind: 'tick', subject: id, data: { i } })))
  const sub = await bus.subscribe(stream, { after: '0' })
  assert.equal(bus.channelCount, 1)
  const got = []
  let later
  for await (const e of sub) {
    got.push(e)
    if (got.length === 3) {
      // events emitted while iterating arrive too
      later = bus.emitMany([4, 5, 6].map((i) => ({ kind: 'tick', subject: id, data: { i } })))
    }
    if (got.length === 6) break
  }
  const rest = await later
  assert.deepEqual(got, [...first, ...rest])
  assert.equal(sub.closed, true)
  assert.equal(bus.channelCount, 0)
  assert.equal(bus.subscriptionCount, 0)
  if (ctx.redis) {
    await waitFor(async () => (await numsub(ctx, id)) === 0, 5000, 'server channel released')
  }
  // the ended iterator is done
  assert.deepEqual(await sub.next(), { value: undefined, done: true })

  // a pending next() ends (done) when the subscription is unsubscribed from elsewhere
  const sub2 = await bus.subscribe(stream)
  const pending = sub2.next()
  await sub2.unsubscribe()
  assert.deepEqual(await pending, { value: undefined, done: true })

  // a handler subscription cannot be iterated
  const sub3 = await bus.subscribe(stream, () => {})
  await expectCode(sub3.next(), 'INVALID_ARGUMENT', 'next() on a handler subscription')
  await sub3.unsubscribe()
  await sub3.unsubscribe() // idempotent
  assert.equal(bus.channelCount, 0)
})

bothBackends('subscribe: two subscribers share one reference-counted channel', async (ctx) => {
  const bus = await ctx.connect()
  const id = uniqueId('refcount')
  const stream = { type: 'flow', id }
  const a = []
  const b = []
  const subA = await bus.subscribe(stream, (e) => a.push(e))
  const subB = await bus.subscribe(stream, (e) => b.push(e))
  assert.equal(bus.channelCount, 1)
  assert.equal(bus.subscriptionCount, 2)
  if (ctx.redis) assert.equal(await numsub(ctx, id), 1, 'one server-side subscription for two subscribers')

  const e1 = await bus.emit({ kind: 'tick', subject: id, data: { n: 1 } })
  await waitFor(() => a.length === 1 && b.length === 1, 5000, 'both got e1')
  await subA.unsubscribe()
  assert.equal(subA.closed, true)
  assert.equal(bus.channelCount, 1)
  assert.equal(bus.subscriptionCount, 1)
  if (ctx.redis) assert.equal(await numsub(ctx, id), 1, 'channel kept while B listens')

  const e2 = await bus.emit({ kind: 'tick', subject: id, data: { n: 2 } })
  const e3 = await bus.emit({ kind: 'tick', subject: id, data: { n: 3 } })
  await waitFor(() => b.length === 3, 5000, () => `B got ${b.length}`)
  assert.deepEqual(b, [e1, e2, e3])
  assert.deepEqual(a, [e1])
  await subB.unsubscribe()
  assert.equal(bus.channelCount, 0)
  assert.equal(bus.subscriptionCount, 0)
  if (ctx.redis) await waitFor(async () => (await numsub(ctx, id)) === 0, 5000, 'server channel released')

  // subscribing again after the channel was released works
  const c = []
  const subC = await bus.subscribe(stream, (e) => c.push(e))
  assert.equal(bus.channelCount, 1)
  const e4 = await bus.emit({ kind: 'tick', subject: id, data: { n: 4 } })
  await waitFor(() => c.length === 1, 5000, 'C got e4')
  assert.deepEqual(c, [e4])
  await subC.unsubscribe()
  assert.equal(bus.channelCount, 0)
})

bothBackends('onKind: receives one kind from every subject, not other kinds', async (ctx) => {
  const bus = await ctx.connect()
  const got = []
  const sub = await bus.onKind('order.created', (e) => got.push(e))
  const other = []
  const subOther = await bus.onKind('order.shipped', (e) => other.push(e))
  assert.equal(bus.channelCount, 2)
  const subjects = [uniqueId('o'), uniqueId('o'), uniqueId('o')]
  const expected = []
  const expectedOther = []
  for (let i = 0; i < 9; i++) {
    const subject = subjects[i % 3]
    expected.push(await bus.emit({ kind: 'order.created', subject, data: { i } }))
    await bus.emit({ kind: 'order.updated', subject, data: { i } })
    await bus.emit({ kind: 'order.created.v2', subject, data: { i } })
    expectedOther.push(await bus.emit({ kind: 'order.shipped', subject, data: { i } }, { type: 'custom' }))
  }
  // a sentinel of the same kind emitted last: once it is in, everything before it is too
  expected.push(await bus.emit({ kind: 'order.created', subject: subjects[0], data: { sentinel: true } }))
  await waitFor(() => got.length >= expected.length, 5000, () => `onKind got ${got.length}/${expected.length}`)
  await waitFor(() => other.length >= expectedOther.length, 5000, () => `onKind(other) got ${other.length}`)
  if (CLUSTER && ctx.redis) {
    // on a cluster, kind messages of different subjects come from different shards: each
    // subject's events arrive in order, the subjects interleave as they arrive
    for (const subject of subjects) {
      const of = (list) => list.filter((e) => e.subject === subject)
      assert.deepEqual(of(got), of(expected))
      assert.deepEqual(of(other), of(expectedOther))
    }
    assert.equal(got.length, expected.length)
    assert.equal(other.length, expectedOther.length)
  } else {
    assert.deepEqual(got, expected)
    assert.deepEqual(other, expectedOther)
  }
  assert.deepEqual(new Set(got.map((e) => e.subject)), new Set(subjects))
  await sub.unsubscribe()
  await subOther.unsubscribe()
  assert.equal(bus.channelCount, 0)
  assert.equal(bus.subscriptionCount, 0)

  // onKind is live only and iterable too
  const it = await bus.onKind('order.created')
  const rec = await bus.emit({ kind: 'order.created', subject: subjects[1], data: { late: true } })
  const { value } = await it.next()
  assert.deepEqual(value, rec)
  await it.unsubscribe()
  assert.equal(bus.channelCount, 0)
})

bothBackends('handler exceptions go to onError; other subscriptions keep receiving', async (ctx) => {
  const bus = await ctx.connect()
  const id = uniqueId('throw')
  const stream = { type: 'flow', id }
  const syncErrors = []
  const asyncErrors = []
  const good = []
  const good2 = []
  let thrown = 0
  const s1 = await bus.subscribe(
    stream,
    () => {
      thrown++
      throw new Error(`boom ${thrown}`)
    },
    { onError: (err, event) => syncErrors.push({ err, event }) },
  )
  const s2 = await bus.subscribe(stream, async (e) => Promise.reject(new TypeError(`async boom ${e.data.i}`)), {
    onError: (err, event) => asyncErrors.push({ err, event }),
  })
  const s3 = await bus.subscribe(stream, (e) => good.push(e))
  // no onError: the error goes to console.error, never to the process
  const logged = []
  const origError = console.error
  console.error = (...args) => logged.push(args)
  let s4
  try {
    s4 = await bus.subscribe(stream, (e) => {
      good2.push(e)
      throw new Error('unhandled boom')
    })
    // onError that throws itself is also contained
    const s5 = await bus.subscribe(stream, () => { throw new Error('handler') }, {
      onError: () => {
        throw new Error('onError boom')
      },
    })
    const recs = []
    for (let i = 0; i < 5; i++) recs.push(await bus.emit({ kind: 'tick', subject: id, data: { i } }))
    await waitFor(() => good.length === 5 && good2.length === 5, 5000, 'good handlers got all')
    await waitFor(() => syncErrors.length === 5 && asyncErrors.length === 5, 5000, () => `onError calls: ${syncErrors.length}/${asyncErrors.length}`)
    await waitFor(() => logged.length >= 10, 5000, () => `console.error calls: ${logged.length}`)
    assert.deepEqual(good, recs)
    assert.deepEqual(good2, recs)
    syncErrors.forEach(({ err, event }, i) => {
      assert.ok(err instanceof Error)
      assert.equal(err.message, `boom ${i + 1}`)
      assert.deepEqual(event, recs[i])
    })
    const byEvent = new Map(asyncErrors.map(({ err, event }) => [event.id, err]))
    recs.forEach((r) => {
      assert.ok(byEvent.get(r.id) instanceof TypeError)
      assert.equal(byEvent.get(r.id).message, `async boom ${r.data.i}`)
    })
    assert.ok(logged.some((args) => args.some((a) => a instanceof Error && a.message === 'unhandled boom')))
    assert.ok(logged.some((args) => args.some((a) => a instanceof Error && a.message === 'onError boom')))
    // every subscription is still open and live
    for (const s of [s1, s2, s3, s4, s5]) assert.equal(s.closed, false)
    assert.equal(bus.subscriptionCount, 5)
    const after = await bus.emit({ kind: 'tick', subject: id, data: { i: 99 } })
    await waitFor(() => good.length === 6, 5000, 'still delivering')
    assert.deepEqual(good[5], after)
    for (const s of [s1, s2, s3, s4, s5]) await s.unsubscribe()
  } finally {
    console.error = origError
  }
  assert.equal(bus.channelCount, 0)
})

bothBackends('subscribe: unsubscribing inside a handler stops delivery at once, mid-batch', async (ctx) => {
  const bus = await ctx.connect()
  const id = uniqueId('selfunsub')
  const stream = { type: 'flow', id }
  const got = []
  const other = []
  let sub
  sub = await bus.subscribe(stream, (e) => {
    got.push(e)
    if (got.length === 3) sub.unsubscribe()
  })
  const otherSub = await bus.subscribe(stream, (e) => other.push(e))
  const recs = await bus.emitMany(Array.from({ length: 10 }, (_, i) => ({ kind: 'tick', subject: id, data: { i } })))
  await waitFor(() => other.length === 10, 5000, 'other subscriber got the batch')
  assert.deepEqual(got, recs.slice(0, 3))
  assert.equal(sub.closed, true)
  const more = await bus.emit({ kind: 'tick', subject: id })
  await waitFor(() => other.length === 11, 5000, 'other subscriber still live')
  assert.deepEqual(other[10], more)
  assert.equal(got.length, 3)
  assert.equal(bus.subscriptionCount, 1)
  await otherSub.unsubscribe()
  assert.equal(bus.channelCount, 0)
})

bothBackends('subscribe: an event near the 1 MiB default limit is stored and delivered live', async (ctx) => {
  const bus = await ctx.connect()
  const id = uniqueId('big')
  const got = []
  const sub = await bus.subscribe({ type: 'flow', id }, (e) => got.push(e))
  const event = { kind: 'blob', subject: id, data: { s: '' } }
  event.data.s = 'é😀x'.repeat(Math.floor((1024 * 1024 - 200) / 7)) // 7 UTF-8 bytes per repeat
  assert.ok(Buffer.byteLength(JSON.stringify(event)) <= 1024 * 1024)
  const rec = await bus.emit(event)
  await waitFor(() => got.length === 1, 10_000, 'big event delivered')
  assert.equal(got[0].data.s, event.data.s)
  assert.deepEqual(got[0], rec)
  assert.deepEqual((await bus.read({ type: 'flow', id }))[0], rec)
  event.data.s += 'x'.repeat(300)
  await assert.rejects(bus.emit(event), { code: 'PAYLOAD_TOO_LARGE' })
  await sub.unsubscribe()
})

// BUG (reported): index.js Subscription.next() keeps ONE pending waiter (`this._waiter`);
// a second next() before the first settles overwrites it, so the first promise never
// settles — not when events arrive, not on unsubscribe(), not on close().
bothBackends(
  'subscribe: concurrent next() calls each settle, in order',
  async (ctx) => {
    const bus = await ctx.connect()
    const id = uniqueId('nexts')
    const sub = await bus.subscribe({ type: 'flow', id })
    const results = [null, null]
    const a = sub.next().then((r) => (results[0] = r))
    const b = sub.next().then((r) => (results[1] = r))
    const e1 = await bus.emit({ kind: 'tick', subject: id, data: { i: 1 } })
    const e2 = await bus.emit({ kind: 'tick', subject: id, data: { i: 2 } })
    try {
      await waitFor(() => results[0] && results[1], 1500, () => `settled: first ${!!results[0]}, second ${!!results[1]}`)
      assert.deepEqual(results.map((r) => r.value), [e1, e2])
    } finally {
      await sub.unsubscribe()
    }
    await Promise.race([Promise.all([a, b]), waitFor(() => false, 1000, 'the first next() never settles, even after unsubscribe()')])
  },
)
