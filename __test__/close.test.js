'use strict'
// close(): idempotent, ends every subscription, later calls reject with BUS_CLOSED.

const assert = require('node:assert/strict')
const { bothBackends, uniqueId, waitFor, expectCode, liveSubscribers, cmpId } = require('./helpers')

bothBackends('close: ends subscriptions, is idempotent, later calls reject with BUS_CLOSED', async (ctx) => {
  const bus = await ctx.connect()
  const id = uniqueId('close')
  const stream = { type: 'flow', id }
  const got = []
  const errors = []
  const handlerSub = await bus.subscribe(stream, (e) => got.push(e), { after: '0', onError: (e) => errors.push(e) })
  const iterSub = await bus.subscribe(stream, { after: '0' })
  const kindSub = await bus.onKind('tick', () => {})
  const rec = await bus.emit({ kind: 'tick', subject: id })
  await waitFor(() => got.length === 1, 5000, 'delivered before close')
  assert.deepEqual((await iterSub.next()).value, rec)
  const pending = iterSub.next() // waiting for an event when the bus closes
  assert.equal(bus.subscriptionCount, 3)

  await bus.close()
  assert.deepEqual(await pending, { value: undefined, done: true }, 'a waiting iterator ends')
  for (const s of [handlerSub, iterSub, kindSub]) assert.equal(s.closed, true)
  assert.equal(bus.subscriptionCount, 0)
  assert.equal(bus.channelCount, 0)
  assert.deepEqual(errors, [], 'closing is not an error for subscribers')
  await bus.close() // idempotent
  await bus.close()

  await expectCode(bus.emit({ kind: 'tick', subject: id }), 'BUS_CLOSED', 'emit')
  await expectCode(bus.emitMany([{ kind: 'tick', subject: id }]), 'BUS_CLOSED', 'emitMany')
  await expectCode(bus.read(stream), 'BUS_CLOSED', 'read')
  await expectCode(bus.subscribe(stream, () => {}), 'BUS_CLOSED', 'subscribe')
  await expectCode(bus.subscribe(stream, () => {}, { after: '0' }), 'BUS_CLOSED', 'subscribe after')
  await expectCode(bus.onKind('tick', () => {}), 'BUS_CLOSED', 'onKind')
  await expectCode(bus.listRuns('x'), 'BUS_CLOSED', 'listRuns')
  await expectCode(bus.state(stream), 'BUS_CLOSED', 'state')
  // unsubscribing after close is harmless
  await handlerSub.unsubscribe()
  await iterSub.unsubscribe()
  assert.deepEqual(await iterSub.next(), { value: undefined, done: true })

  // other buses are not affected, and the data is still there (Redis) / gone with the bus (embedded)
  const other = await ctx.connect()
  const fresh = await other.emit({ kind: 'tick', subject: id })
  const read = await other.read(stream)
  assert.deepEqual(read, ctx.redis ? [rec, fresh] : [fresh])
  if (ctx.redis) {
    await waitFor(async () => (await liveSubscribers(ctx.prefix, 'flow', id)) === 0, 5000, 'the closed bus released its server-side channel')
  }
})

bothBackends('close: emits in flight settle (resolve or reject with a code), never hang', async (ctx, t) => {
  const bus = await ctx.connect()
  const id = uniqueId('inflight')
  const inflight = Array.from({ length: 200 }, (_, i) => bus.emit({ kind: 'tick', subject: id, data: { i } }))
  const closing = bus.close()
  const results = await Promise.allSettled(inflight)
  await closing
  for (const r of results) {
    if (r.status === 'rejected') {
      assert.ok(r.reason instanceof Error)
      assert.equal(r.reason.code, 'BUS_CLOSED', r.reason.message)
    }
  }
  const resolved = results.filter((r) => r.status === 'fulfilled').map((r) => r.value)
  t.diagnostic(`${resolved.length}/200 in-flight emits resolved`)
  if (ctx.redis) {
    // what resolved is stored; what was refused with BUS_CLOSED is not
    const other = await ctx.connect()
    const stored = await other.read({ type: 'flow', id }, { limit: 1000 })
    assert.deepEqual(stored, [...resolved].sort((a, b) => cmpId(a.id, b.id)))
  }
})

// BUG (reported): onKind() (and, on the embedded store, subscribe({after})) racing close()
// can resolve to an OPEN subscription on the closed bus (sub.closed === false,
// bus.subscriptionCount === 1, bus.channelCount === 1 after close) that never ends: an
// iterator on it waits forever. Bus::subscribe/on_kind check `closed` first, then
// Hub::add (crates/core/src/live.rs) registers without checking again; Hub::close drains the
// channel map (and, on Redis, only then sends Shutdown to the Pub/Sub task), so a
// registration that lands after the drain is kept (and on Redis acknowledged).
bothBackends(
  'close racing subscribe/onKind: each settles (closed handle or BUS_CLOSED), nothing left open',
  async (ctx) => {
    const problems = []
    for (let n = 0; n < 2000 && problems.length < 3; n++) {
      const opts = [{ after: '0' }, { backfill: 2 }, {}][n % 3]
      const bus = await ctx.connect()
      const settled = Promise.allSettled([
        bus.subscribe({ type: 'flow', id: uniqueId('race') }, () => {}, opts),
        bus.onKind('race.kind', () => {}),
      ])
      if (n % 2) await new Promise((r) => setImmediate(r))
      await bus.close()
      const [r1, r2] = await settled
      for (const [what, r] of [['subscribe', r1], ['onKind', r2]]) {
        if (r.status === 'fulfilled' && r.value.closed !== true) problems.push(`#${n} ${what} resolved to an open subscription`)
        if (r.status === 'rejected' && r.reason.code !== 'BUS_CLOSED') problems.push(`#${n} ${what} rejected with ${r.reason.code}`)
      }
      if (bus.subscriptionCount !== 0 || bus.channelCount !== 0) {
        problems.push(`#${n} after close: subscriptionCount ${bus.subscriptionCount}, channelCount ${bus.channelCount}`)
      }
    }
    assert.deepEqual(problems, [])
  },
)

// Doubtful (reported): close() called inside a handler does not stop the batch being drained
// (index.js Subscription._drain only checks `_unsubscribed`, which close() does not set),
// while unsubscribe() inside a handler stops at once.
bothBackends(
  'close inside a handler stops delivery at once, like unsubscribe',
  async (ctx) => {
    const bus = await ctx.connect()
    const id = uniqueId('closeinside')
    const got = []
    const sub = await bus.subscribe({ type: 'flow', id }, (e) => {
      got.push(e.data.i)
      if (got.length === 3) bus.close()
    })
    await bus.emitMany(Array.from({ length: 10 }, (_, i) => ({ kind: 'tick', subject: id, data: { i } })))
    await waitFor(() => sub.closed, 5000, 'closed')
    assert.deepEqual(got, [0, 1, 2])
  },
)
