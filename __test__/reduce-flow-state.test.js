'use strict'
// What bus.state() says of real flow runs: awaits of the flow function itself are the run's
// `waiting` list (no step named after the flow), nothing is left pending once a run ended, a
// stream with no events is 'unknown'; and a resolved event await leaves no timeout timer behind.
// Redis and the embedded store.

const assert = require('node:assert/strict')
const { Scheduler } = require('..')
const { bothBackends, waitFor } = require('./helpers.js')

const client = () => import('lean-events/client')

bothBackends('flow-level awaits are the run\'s waiting list, not a step, and end with the run', async (ctx) => {
  const { reduceFlowState } = await client()
  const bus = await ctx.connect()
  const scheduler = new Scheduler(bus)
  try {
    let trigger
    scheduler.defineFlow('ship-order', async (input, ctx) => {
      const order = await ctx.step('fetch_order', () => ({ id: input.orderId }))
      await ctx.await.time(30)
      const approval = await ctx.await.trigger({ type: 'approval' })
      trigger = approval.id
      const decision = await approval.wait()
      return ctx.step('ship', () => ({ shipped: order.id, decision }))
    })
    const run = await scheduler.startFlow('ship-order', { input: { orderId: '42' } })
    const stream = { type: 'flow', id: run }
    const waiting = await waitFor(async () => {
      const s = await bus.state(stream)
      return s.waiting && s.waiting[0].awaitType === 'trigger' ? s : null
    }, 10_000, 'the run waiting on its trigger')
    assert.equal(waiting.status, 'running')
    assert.equal(waiting.waiting.length, 1, 'the timer resumed: only the trigger is pending')
    assert.equal(waiting.waiting[0].awaitData.triggerType, 'approval')
    assert.deepEqual(Object.keys(waiting.steps), ['fetch_order'], 'no step named after the flow')
    await waitFor(() => trigger, 5000, 'the trigger id')
    await scheduler.fire(trigger, { ok: true })
    assert.deepEqual(await scheduler.result(run), { shipped: '42', decision: { ok: true } })
    const done = await bus.state(stream)
    assert.equal(done.status, 'completed')
    assert.equal(done.waiting, undefined)
    assert.deepEqual(Object.keys(done.steps).sort(), ['fetch_order', 'ship'])
    for (const step of Object.values(done.steps)) assert.equal(step.status, 'completed')
    assert.deepStrictEqual(done, reduceFlowState(await bus.read(stream, { limit: 1000 })))

    // cancelled while waiting at flow level: nothing stays waiting
    scheduler.defineFlow('waits', async (input, ctx) => {
      await ctx.await.time(60_000)
      return 1
    })
    const w = await scheduler.startFlow('waits', { input: {} })
    await waitFor(async () => (await bus.state({ type: 'flow', id: w })).waiting, 10_000, 'the run waiting')
    await scheduler.cancelFlow(w, 'customer left')
    await assert.rejects(scheduler.result(w), { code: 'FLOW_CANCELLED' })
    const cancelled = await bus.state({ type: 'flow', id: w })
    assert.equal(cancelled.status, 'cancelled')
    assert.equal(cancelled.waiting, undefined)
    assert.deepEqual(cancelled.steps, {})
  } finally {
    await scheduler.close()
  }
})

bothBackends('the state of a stream with no events is unknown, not a running run', async (ctx) => {
  const { initialFlowState } = await client()
  const bus = await ctx.connect()
  const empty = await bus.state({ type: 'flow', id: 'never-existed' })
  assert.deepStrictEqual(empty, { status: 'unknown', steps: {}, logs: [] })
  assert.deepStrictEqual(empty, initialFlowState())
  await bus.emit({ kind: 'order.noted', subject: 'has-events', flow: 'has-events' })
  assert.equal((await bus.state({ type: 'flow', id: 'has-events' })).status, 'running', 'any event makes a run')
})

bothBackends('an event await resolved by its event leaves no timeout timer pending', async (ctx) => {
  const bus = await ctx.connect()
  const scheduler = new Scheduler(bus)
  try {
    scheduler.defineFlow('paid', async (input, ctx) => {
      const e = await ctx.await.event({ kind: 'order.paid', match: { 'data.id': input.id }, timeoutMs: 3_600_000 })
      return e.data
    })
    const run = await scheduler.startFlow('paid', { input: { id: 'o7' } })
    const awaiting = async () => (await bus.read({ type: 'flow', id: run })).some((e) => e.kind === 'step.await.event')
    await waitFor(awaiting, 10_000, 'the run waiting')
    assert.equal((await bus.metrics()).timers.pending, 1, 'the await\'s timeout')
    await bus.emit({ kind: 'order.paid', subject: 'o7', data: { id: 'o7' } })
    assert.deepEqual(await scheduler.result(run), { id: 'o7' })
    assert.equal((await bus.metrics()).timers.pending, 0, 'the timeout went with the resolution')
  } finally {
    await scheduler.close()
  }
})
