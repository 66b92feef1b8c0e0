'use strict'
// Scheduler: retries, awaits, triggers, crash recovery, bad input — Redis and embedded.

const assert = require('node:assert/strict')
const path = require('node:path')
const { Scheduler } = require('..')
const { bothBackends, redisOnly, waitFor, expectCode, startChild, FIXTURES, REDIS_URL } = require('./helpers.js')
const { defineSteps } = require('./fixtures/sched-steps.js')

const kinds = (events) => events.map((e) => e.kind)
const ms = (e) => Number(e.id.split('-')[0])

async function setup(ctx, options = {}) {
  const bus = await ctx.connect()
  const scheduler = new Scheduler(bus, { leaseMs: 1000, ...options })
  await scheduler.ready()
  return { bus, scheduler }
}

bothBackends('retries follow the policy and emit the exact sequence', async (ctx) => {
  const { bus, scheduler } = await setup(ctx)
  try {
    scheduler.define(
      'fetch',
      async (input, ctx2) => {
        if (ctx2.attempt < 3) throw Object.assign(new Error(`boom ${ctx2.attempt}`), { code: 'ECONNRESET' })
        return { got: input.x, attempt: ctx2.attempt }
      },
      { retry: { attempts: 3, backoff: { type: 'exponential', delayMs: 50, maxDelayMs: 80 } } },
    )
    const result = await scheduler.run('fetch', { flow: 'r1', input: { x: 1 } })
    assert.deepEqual(result, { got: 1, attempt: 3 })
    assert.deepEqual(Object.keys(result), ['got', 'attempt'], 'results keep their key order')
    const events = await bus.read({ type: 'flow', id: 'r1' })
    assert.deepEqual(kinds(events), [
      'step.started', 'step.failed', 'step.retry',
      'step.started', 'step.failed', 'step.retry',
      'step.started', 'step.completed',
    ])
    assert.deepEqual(events.filter((e) => e.kind === 'step.started').map((e) => e.meta.attempt), [1, 2, 3])
    assert.deepEqual(events.filter((e) => e.kind === 'step.retry').map((e) => e.data.delayMs), [50, 80], 'exponential, capped')
    assert.deepEqual(events.filter((e) => e.kind === 'step.retry').map((e) => e.meta.attempt), [2, 3])
    assert.equal(events[1].data.willRetry, true)
    assert.equal(events[1].meta.maxAttempts, 3)
    assert.ok(ms(events[3]) - ms(events[0]) >= 50, 'the first back-off was waited for')
    assert.ok(ms(events[6]) - ms(events[3]) >= 80, 'the second back-off was waited for')
    assert.equal(typeof events[3].meta.lateMs, 'number')
    const state = await bus.state({ type: 'flow', id: 'r1' })
    assert.equal(state.steps.fetch.status, 'completed')
    assert.equal(state.steps.fetch.attempt, 3)
  } finally {
    await scheduler.close()
  }
})

bothBackends('retriable: false, retryAfter and retriableErrors', async (ctx) => {
  const { bus, scheduler } = await setup(ctx)
  try {
    const policy = { retry: { attempts: 4, backoff: { type: 'fixed', delayMs: 10 }, retriableErrors: ['ETIMEDOUT', 'RateLimit'] } }
    scheduler.define('fatal', async () => { throw Object.assign(new Error('bad request'), { code: 'ETIMEDOUT', retriable: false }) }, policy)
    scheduler.define('unlisted', async () => { throw new TypeError('type') }, policy)
    scheduler.define('later', async (_, c) => {
      if (c.attempt === 1) throw Object.assign(new Error('slow down'), { name: 'RateLimit', retryAfter: 60 })
      return 'ok'
    }, policy)
    for (const step of ['fatal', 'unlisted']) {
      const err = await expectCode(scheduler.run(step, { flow: `f-${step}` }), 'STEP_FAILED', step)
      assert.ok(err.cause && typeof err.cause.message === 'string')
      const events = await bus.read({ type: 'flow', id: `f-${step}` })
      assert.deepEqual(kinds(events), ['step.started', 'step.failed'], step)
      assert.equal(events[1].data.willRetry, false)
    }
    assert.equal(await scheduler.run('later', { flow: 'f-later' }), 'ok')
    const retry = (await bus.read({ type: 'flow', id: 'f-later' })).find((e) => e.kind === 'step.retry')
    assert.equal(retry.data.delayMs, 60, 'retryAfter overrides the back-off')
  } finally {
    await scheduler.close()
  }
})

bothBackends('await.time and await.event (with match and timeout)', async (ctx) => {
  const { bus, scheduler } = await setup(ctx)
  try {
    scheduler.define('nap', async (_, c) => {
      const before = Date.now()
      await c.await.time(60)
      return Date.now() - before
    })
    scheduler.define('pay', async (input, c) => c.await.event({ kind: 'payment.confirmed', match: { 'data.orderId': input.orderId }, timeoutMs: 10_000 }))
    scheduler.define('never', async (_, c) => {
      try {
        await c.await.event({ kind: 'never.happens', timeoutMs: 50 })
      } catch (err) {
        return err.code
      }
    })
    assert.ok((await scheduler.run('nap', { flow: 'n1' })) >= 55)
    const nap = await bus.read({ type: 'flow', id: 'n1' })
    assert.deepEqual(kinds(nap), ['step.started', 'step.await.time', 'step.resumed', 'step.completed'])
    assert.equal(nap[2].meta.awaitType, 'time')

    const run = scheduler.run('pay', { flow: 'p1', input: { orderId: '42' } })
    await waitFor(async () => kinds(await bus.read({ type: 'flow', id: 'p1' })).includes('step.await.event'))
    await bus.emit({ kind: 'payment.confirmed', subject: 'o-41', data: { orderId: '41' } })
    const hit = await bus.emit({ kind: 'payment.confirmed', subject: 'o-42', data: { orderId: '42' } })
    assert.deepEqual(await run, hit, 'resolves to the matching event, not the earlier one')

    assert.equal(await scheduler.run('never', { flow: 'x1' }), 'AWAIT_TIMEOUT')
    assert.deepEqual(kinds(await bus.read({ type: 'flow', id: 'x1' })), ['step.started', 'step.await.event', 'step.await.timeout', 'step.completed'])
  } finally {
    await scheduler.close()
  }
})

redisOnly('await.event resolves from an event emitted by another process', async (ctx) => {
  const { bus, scheduler } = await setup(ctx)
  try {
    scheduler.define('pay', async (input, c) => c.await.event({ kind: 'payment.confirmed', match: { 'data.orderId': input.orderId } }))
    const run = scheduler.run('pay', { flow: 'p2', input: { orderId: 'A7' } })
    await waitFor(async () => kinds(await bus.read({ type: 'flow', id: 'p2' })).includes('step.await.event'))
    const child = startChild(process.execPath, [
      path.join(FIXTURES, 'event-emitter.js'),
      JSON.stringify({ kind: 'payment.confirmed', subject: 'x', data: { orderId: 'other' } }),
      JSON.stringify({ kind: 'payment.confirmed', subject: 'y', data: { orderId: 'A7' } }),
    ], { env: { ...process.env, REDIS_URL, PREFIX: ctx.prefix } })
    const { code } = await child.exited
    assert.equal(code, 0, child.stderr)
    const event = await run
    assert.equal(event.subject, 'y')
  } finally {
    await scheduler.close()
  }
})

bothBackends('triggers: fire, one winner of ten, timeout, unknown, cancel', async (ctx) => {
  const { bus, scheduler } = await setup(ctx)
  try {
    const ids = []
    scheduler.define('approve', async (input, c) => {
      const t = await c.await.trigger({ type: 'webhook', timeoutMs: input.timeoutMs })
      ids.push(t.id)
      try {
        return await t.wait()
      } catch (err) {
        return { code: err.code }
      }
    })
    const run = scheduler.run('approve', { flow: 't1', input: {} })
    await waitFor(() => ids.length === 1)
    assert.match(ids[0], /^[0-9a-f]{32}$/)
    const results = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => scheduler.fire(ids[0], { by: i })))
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1, 'exactly one fire wins')
    for (const r of results.filter((x) => x.status === 'rejected')) assert.equal(r.reason.code, 'TRIGGER_RESOLVED')
    assert.equal(typeof (await run).by, 'number')
    const triggerEvents = await bus.read({ type: 'trigger', id: ids[0] })
    assert.deepEqual(kinds(triggerEvents), ['trigger.registered', 'trigger.fired'])
    assert.equal(triggerEvents[0].correlationId, 't1')
    assert.ok((await bus.listRuns('none')).length === 0)
    assert.equal((await bus.state({ type: 'trigger', id: ids[0] })).status, 'fired')
    assert.equal(kinds(await bus.read({ type: 'flow', id: 't1' })).filter((k) => k === 'step.resumed').length, 1)

    const timed = scheduler.run('approve', { flow: 't2', input: { timeoutMs: 50 } })
    await waitFor(() => ids.length === 2)
    assert.deepEqual(await timed, { code: 'AWAIT_TIMEOUT' })
    await expectCode(scheduler.fire(ids[1], {}), 'TRIGGER_RESOLVED', 'fire after timeout')
    assert.equal(kinds(await bus.read({ type: 'trigger', id: ids[1] })).at(-1), 'trigger.timeout')

    await expectCode(scheduler.fire('0123456789abcdef0123456789abcdef', {}), 'TRIGGER_NOT_FOUND', 'unknown id')
    await expectCode(scheduler.fire('../../etc', {}), 'TRIGGER_NOT_FOUND', 'malformed id')

    const cancelled = scheduler.run('approve', { flow: 't3', input: {} })
    await waitFor(() => ids.length === 3)
    await scheduler.cancel(ids[2], 'not needed')
    assert.deepEqual(await cancelled, { code: 'TRIGGER_CANCELLED' })
    await expectCode(scheduler.cancel(ids[2]), 'TRIGGER_RESOLVED', 'cancel twice')
  } finally {
    await scheduler.close()
  }
})

bothBackends('bad input gives typed errors', async (ctx) => {
  const { bus, scheduler } = await setup(ctx)
  try {
    assert.throws(() => scheduler.define('x', async () => {}, { retry: { attempts: 0 } }), { code: 'INVALID_ARGUMENT' })
    assert.throws(() => scheduler.define('x', async () => {}, { retry: { backoff: { type: 'linear' } } }), { code: 'INVALID_ARGUMENT' })
    assert.throws(() => scheduler.define('x', 'not a function'), { code: 'INVALID_ARGUMENT' })
    assert.throws(() => new Scheduler({}), { code: 'INVALID_ARGUMENT' })
    await expectCode(scheduler.run('undefined-step', { flow: 'f' }), 'INVALID_ARGUMENT', 'undefined step')
    scheduler.define('ok', async () => 1)
    await expectCode(scheduler.run('ok', {}), 'INVALID_ARGUMENT', 'no flow')
    await expectCode(scheduler.run('ok', { flow: 'has space' }), 'INVALID_ARGUMENT', 'bad flow id')
    await expectCode(scheduler.run('ok', { flow: 'f', input: { n: 1n } }), 'INVALID_ARGUMENT', 'BigInt input')
    await scheduler.run('ok', { flow: 'f', jobId: 'same' })
    await expectCode(scheduler.run('ok', { flow: 'f', jobId: 'same' }), 'JOB_EXISTS', 'job id reused')
    const big = 'x'.repeat(2 * 1024 * 1024)
    await expectCode(scheduler.fire('0123456789abcdef0123456789abcdef', { big }), 'PAYLOAD_TOO_LARGE', 'huge payload')
    scheduler.define('badmatch', async (_, c) => {
      try {
        await c.await.event({ kind: 'a.b', match: { '': 1 } })
      } catch (err) {
        return err.code
      }
    })
    assert.equal(await scheduler.run('badmatch', { flow: 'f3' }), 'INVALID_ARGUMENT')
    assert.ok(bus)
  } finally {
    await scheduler.close()
  }
})

redisOnly('a killed process: another one resumes its await and its back-off, once each', async (ctx) => {
  const env = { ...process.env, REDIS_URL, PREFIX: ctx.prefix }
  const child = startChild(process.execPath, [path.join(FIXTURES, 'sched-crash-child.js')], { env })
  let trigger
  await waitFor(() => {
    for (const line of child.stdout.split('\n')) {
      if (line.startsWith('{"trigger"')) trigger = JSON.parse(line).trigger
    }
    return trigger && child.stdout.includes('"retrying":true')
  }, 15_000, () => `child output: ${child.stdout} ${child.stderr}`)
  child.child.kill('SIGKILL')
  await child.exited

  const { bus, scheduler } = await setup(ctx)
  try {
    defineSteps(scheduler)
    await scheduler.fire(trigger, { approved: true })
    const completed = async (flow) => kinds(await bus.read({ type: 'flow', id: flow })).includes('step.completed')
    await waitFor(async () => (await completed('crash-approve')) && (await completed('crash-later')), 15_000, 'both steps completed')
    // give a duplicate resume the time to show up before counting
    await new Promise((r) => setTimeout(r, 1500))
    const approve = kinds(await bus.read({ type: 'flow', id: 'crash-approve' }))
    assert.equal(approve.filter((k) => k === 'step.resumed').length, 1, approve.join(' '))
    assert.equal(approve.filter((k) => k === 'step.completed').length, 1, approve.join(' '))
    const later = await bus.read({ type: 'flow', id: 'crash-later' })
    assert.deepEqual(kinds(later), ['step.started', 'step.failed', 'step.retry', 'step.started', 'step.completed'])
    assert.deepEqual(later.at(-1).data.result, { input: { n: 2 }, attempt: 2 })
    const done = (await bus.read({ type: 'flow', id: 'crash-approve' })).at(-1)
    assert.deepEqual(done.data.result, { input: { n: 1 }, payload: { approved: true } })
  } finally {
    await scheduler.close()
  }
}, { timeout: 60_000 })

bothBackends('dispatch hands work to the host, execute runs it', async (ctx) => {
  const bus = await ctx.connect()
  const queued = []
  const scheduler = new Scheduler(bus, { leaseMs: 1000, dispatch: (work) => queued.push(work) })
  try {
    scheduler.define('job', async (input, c) => ({ doubled: input.n * 2, attempt: c.attempt }))
    const run = scheduler.run('job', { flow: 'd1', input: { n: 21 } })
    await waitFor(() => queued.length === 1)
    const work = queued[0]
    assert.equal(work.step, 'job')
    assert.equal(work.flow, 'd1')
    assert.deepEqual(work.input, { n: 21 })
    assert.equal(work.attempt, 1)
    assert.equal(work.replay, false)
    assert.equal(typeof work.jobId, 'string')
    await scheduler.execute(work) // e.g. from a queue worker
    assert.deepEqual(await run, { doubled: 42, attempt: 1 })
  } finally {
    await scheduler.close()
  }
})
