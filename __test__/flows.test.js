'use strict'
// Durable flows: a run survives SIGKILL in each phase and close(); steps replay their recorded
// results (also in parallel); a changed flow fails with REPLAY_MISMATCH; cancel and rerun.
// Redis (or the cluster rig, with REDIS_URL=redis+cluster://…) and the embedded store.

const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Scheduler, LeanEventsError } = require('..')
const { bothBackends, redisOnly, waitFor, expectCode, startChild, FIXTURES } = require('./helpers.js')

const kinds = (events) => events.map((e) => e.kind)
const CHILD = path.join(FIXTURES, 'flow-child.js')

function countFile() {
  const file = path.join(os.tmpdir(), `lean-flows-${process.pid}-${Math.random().toString(36).slice(2)}.txt`)
  fs.writeFileSync(file, '')
  return file
}

/** How often each line was appended (each step function run). */
function counts(file) {
  const out = {}
  for (const line of fs.readFileSync(file, 'utf8').split('\n').filter(Boolean)) out[line] = (out[line] ?? 0) + 1
  return out
}

function child(ctx, file, extra) {
  const env = { ...process.env, REDIS_URL: ctx.url, PREFIX: ctx.prefix, COUNT_FILE: file, ...extra }
  return startChild(process.execPath, [CHILD], { env })
}

async function events(bus, id) {
  return bus.read({ type: 'flow', id }, { limit: 1000 })
}

/** Wait for an event of `kind` in the run's stream. */
async function eventOf(bus, id, kind, timeoutMs = 10_000) {
  return waitFor(async () => (await events(bus, id)).find((e) => e.kind === kind), timeoutMs, `${kind} in run ${id}`)
}

async function observer(ctx) {
  const bus = await ctx.connect()
  const scheduler = new Scheduler(bus, { leaseMs: 1000 })
  await scheduler.ready()
  return { bus, scheduler }
}

for (const phase of ['work', 'timer', 'trigger']) {
  redisOnly(`a run killed (SIGKILL) ${phase === 'work' ? 'inside step 2' : `while waiting for the ${phase}`} is finished by another instance; each step ran as often as expected`, async (ctx) => {
    const file = countFile()
    const { bus, scheduler } = await observer(ctx)
    const run = `run-${phase}`
    const first = child(ctx, file, { RUN_ID: run, FLOW: 'durable', HANG: phase === 'work' ? 'work' : '' })
    try {
      if (phase === 'work') await waitFor(() => first.stdout.includes('"phase":"work"'), 10_000, () => first.stderr)
      if (phase === 'timer') await eventOf(bus, run, 'step.await.time')
      if (phase === 'trigger') await waitFor(() => first.stdout.includes('"trigger"'), 10_000, () => first.stderr)
      await first.kill('SIGKILL')
      const second = child(ctx, file, {})
      const registered = await eventOf(bus, run, 'step.await.trigger', 20_000)
      await scheduler.fire(registered.data.triggerId, { approved: true })
      const result = await Promise.race([
        scheduler.result(run),
        second.exited.then(() => Promise.reject(new Error(`the second instance exited: ${second.stderr}`))),
      ])
      assert.deepEqual(result, { order: { orderId: 'o-1' }, packed: { packed: true }, decision: { approved: true }, shipped: 'shipped' })
      await second.kill()
      const all = await events(bus, run)
      assert.equal(kinds(all).filter((k) => k === 'flow.completed').length, 1, 'one flow.completed')
      assert.equal(kinds(all).filter((k) => k === 'flow.started').length, 1, 'one flow.started')
      assert.ok(!kinds(all).includes('flow.failed'), 'no flow.failed')
      assert.equal((await bus.state({ type: 'flow', id: run })).status, 'completed')
      // fetch failed once and was retried; work ran again only when it was killed inside it
      assert.deepEqual(counts(file), { 'fetch 1': 1, 'fetch 2': 1, work: phase === 'work' ? 2 : 1, ship: 1 })
    } finally {
      await first.kill()
      await scheduler.close()
      fs.rmSync(file, { force: true })
    }
  }, { timeout: 60_000 })
}

redisOnly('close() while a run waits writes no flow.failed; a new instance completes the run', async (ctx) => {
  const file = countFile()
  const { bus, scheduler } = await observer(ctx)
  const run = 'run-close'
  const first = child(ctx, file, { RUN_ID: run, FLOW: 'durable', WAIT_MS: '10', CLOSE_AT: 'trigger' })
  try {
    const { code } = await first.exited
    assert.equal(code, 0, first.stderr)
    assert.ok(first.stdout.includes('"closed":true'))
    assert.ok(!kinds(await events(bus, run)).includes('flow.failed'), 'close() is not a failure of the run')
    assert.equal((await bus.state({ type: 'flow', id: run })).status, 'running')
    const second = child(ctx, file, {})
    try {
      const registered = await eventOf(bus, run, 'step.await.trigger')
      await scheduler.fire(registered.data.triggerId, { approved: 'later' })
      const result = await scheduler.result(run)
      assert.deepEqual(result.decision, { approved: 'later' })
      const all = kinds(await events(bus, run))
      assert.equal(all.filter((k) => k === 'flow.completed').length, 1)
      assert.ok(!all.includes('flow.failed'))
      assert.deepEqual(counts(file), { 'fetch 1': 1, 'fetch 2': 1, work: 1, ship: 1 })
    } finally {
      await second.kill()
    }
  } finally {
    await first.kill()
    await scheduler.close()
    fs.rmSync(file, { force: true })
  }
})

bothBackends('close() of one instance: another instance on the same store carries the run on', async (ctx) => {
  const bus = await ctx.connect()
  const ran = { approve: 0, done: 0 }
  const define = (s) =>
    s.defineFlow('handover', async (input, c) => {
      const first = await c.step('approve', async () => ++ran.approve)
      const t = await c.await.trigger({ type: 'go' })
      const payload = await t.wait()
      const done = await c.step('done', async () => ++ran.done)
      return { first, payload, done, input }
    })
  const a = new Scheduler(bus, { leaseMs: 300 })
  define(a)
  await a.ready()
  const run = await a.startFlow('handover', { input: 7 })
  const registered = await eventOf(bus, run, 'step.await.trigger')
  await a.close()
  assert.ok(!kinds(await events(bus, run)).includes('flow.failed'))
  const b = new Scheduler(bus, { leaseMs: 300 })
  define(b)
  await b.ready()
  try {
    await b.fire(registered.data.triggerId, 'go')
    assert.deepEqual(await b.result(run), { first: 1, payload: 'go', done: 1, input: 7 })
    assert.deepEqual(ran, { approve: 1, done: 1 }, 'the replay returned the recorded step')
  } finally {
    await b.close()
  }
})

bothBackends('parallel steps: one fails and retries, the result has both', async (ctx) => {
  const bus = await ctx.connect()
  const scheduler = new Scheduler(bus, { leaseMs: 1000 })
  const ran = []
  scheduler.defineFlow('fanout', async (_input, c) => {
    const [a, b] = await c.parallel([
      () =>
        c.step(
          'a',
          async ({ attempt }) => {
            ran.push(`a${attempt}`)
            if (attempt === 1) throw Object.assign(new Error('flaky'), { code: 'ECONNRESET' })
            return 'A'
          },
          { retry: { attempts: 2, backoff: { type: 'fixed', delayMs: 30 } } },
        ),
      c.step('b', async () => (ran.push('b'), 'B')),
    ])
    return { a, b }
  })
  await scheduler.ready()
  try {
    const run = await scheduler.startFlow('fanout', {})
    assert.deepEqual(await scheduler.result(run), { a: 'A', b: 'B' })
    assert.deepEqual(ran.sort(), ['a1', 'a2', 'b'])
    const all = await events(bus, run)
    assert.deepEqual(all.filter((e) => e.kind === 'step.retry').map((e) => e.step), ['a'])
    const state = await bus.state({ type: 'flow', id: run })
    assert.equal(state.status, 'completed')
    assert.equal(state.steps.a.attempt, 2)
  } finally {
    await scheduler.close()
  }
})

redisOnly('parallel steps: a crash between them replays the finished one and gives the same result', async (ctx) => {
  const file = countFile()
  const { bus, scheduler } = await observer(ctx)
  const run = 'run-parallel'
  const first = child(ctx, file, { RUN_ID: run, FLOW: 'parallel', HANG: 'b' })
  try {
    await waitFor(async () => (await events(bus, run)).some((e) => e.kind === 'step.completed' && e.step === 'a'), 10_000, () => first.stderr)
    await first.kill('SIGKILL')
    const second = child(ctx, file, {})
    try {
      assert.deepEqual(await scheduler.result(run), { a: 'a2', b: 'b' })
    } finally {
      await second.kill()
    }
    assert.deepEqual(counts(file), { 'a 1': 1, 'a 2': 1, b: 2 })
    assert.equal(kinds(await events(bus, run)).filter((k) => k === 'flow.completed').length, 1)
  } finally {
    await first.kill()
    await scheduler.close()
    fs.rmSync(file, { force: true })
  }
})

redisOnly('a flow whose step order changed between two instances fails with REPLAY_MISMATCH', async (ctx) => {
  const file = countFile()
  const { bus, scheduler } = await observer(ctx)
  const run = 'run-mismatch'
  const first = child(ctx, file, { RUN_ID: run, FLOW: 'order', HANG: 'two' })
  try {
    await waitFor(() => first.stdout.includes('"phase":"two"'), 10_000, () => first.stderr)
    await first.kill('SIGKILL')
    const second = child(ctx, file, { ORDER: 'swap' })
    try {
      const err = await expectCode(scheduler.result(run), 'FLOW_FAILED', 'result')
      assert.equal(err.error.code, 'REPLAY_MISMATCH')
      assert.match(err.error.message, /recorded step 'one'.*calls step 'two'/)
    } finally {
      await second.kill()
    }
    const all = kinds(await events(bus, run))
    assert.equal(all.filter((k) => k === 'flow.failed').length, 1)
    assert.deepEqual(counts(file), { one: 1, two: 1 }, 'the swapped code ran no step')
  } finally {
    await first.kill()
    await scheduler.close()
    fs.rmSync(file, { force: true })
  }
})

bothBackends('cancel a run waiting for a trigger: fire gets TRIGGER_CANCELLED; rerun starts a new run', async (ctx) => {
  const bus = await ctx.connect()
  const scheduler = new Scheduler(bus, { leaseMs: 1000 })
  let after = 0
  scheduler.defineFlow('approval', async (input, c) => {
    const t = await c.await.trigger({ type: 'approval' })
    const decision = await t.wait()
    await c.step('after', async () => ++after)
    return { input, decision }
  })
  await scheduler.ready()
  try {
    const run = await scheduler.startFlow('approval', { input: { n: 1 } })
    const registered = await eventOf(bus, run, 'step.await.trigger')
    await scheduler.cancelFlow(run, 'not needed')
    await expectCode(scheduler.result(run), 'FLOW_CANCELLED', 'result of a cancelled run')
    await expectCode(scheduler.fire(registered.data.triggerId, {}), 'TRIGGER_CANCELLED', 'fire after cancel')
    await expectCode(scheduler.cancelFlow(run), 'FLOW_ENDED', 'cancel twice')
    await expectCode(scheduler.cancelFlow('no-such-run'), 'FLOW_NOT_FOUND', 'cancel of nothing')
    const all = await events(bus, run)
    assert.equal(kinds(all).filter((k) => k === 'flow.cancelled').length, 1)
    assert.ok(!kinds(all).includes('flow.failed'), 'the interrupted function does not fail the run')
    const state = await bus.state({ type: 'flow', id: run })
    assert.equal(state.status, 'cancelled')
    assert.equal(state.reason, 'not needed')
    assert.equal((await bus.state({ type: 'trigger', id: registered.data.triggerId })).status, 'cancelled')
    assert.equal(after, 0)

    const again = await scheduler.rerunFlow(run)
    assert.notEqual(again, run)
    const started = await eventOf(bus, again, 'flow.started')
    assert.equal(started.correlationId, run)
    assert.deepEqual(started.data.input, { n: 1 })
    const next = await eventOf(bus, again, 'step.await.trigger')
    await scheduler.fire(next.data.triggerId, 'yes')
    assert.deepEqual(await scheduler.result(again), { input: { n: 1 }, decision: 'yes' })
    assert.equal(after, 1)
  } finally {
    await scheduler.close()
  }
})

bothBackends('flow status comes from the engine: flow.failed once, with the step that failed', async (ctx) => {
  const bus = await ctx.connect()
  const scheduler = new Scheduler(bus, { leaseMs: 1000 })
  scheduler.defineFlow('doomed', async (_input, c) => {
    await c.step('bad', async () => {
      throw Object.assign(new Error('card declined'), { code: 'DECLINED', retriable: false })
    })
  })
  await scheduler.ready()
  try {
    const run = await scheduler.startFlow('doomed', { id: 'doomed-1' })
    await expectCode(scheduler.startFlow('doomed', { id: 'doomed-1' }), 'JOB_EXISTS', 'same id')
    await expectCode(scheduler.run('doomed', { flow: 'x' }), 'INVALID_ARGUMENT', 'run() of a flow')
    await expectCode(scheduler.startFlow('nope', {}), 'INVALID_ARGUMENT', 'an undefined flow')
    const err = await expectCode(scheduler.result(run), 'FLOW_FAILED', 'result')
    assert.deepEqual(err.error, { message: 'card declined', name: 'Error', code: 'DECLINED', step: 'bad' })
    const all = await events(bus, run)
    assert.deepEqual(kinds(all), ['flow.started', 'step.started', 'step.failed', 'flow.failed'])
    assert.equal(typeof all[3].data.duration, 'number')
    await expectCode(scheduler.result('nothing-here'), 'FLOW_NOT_FOUND', 'unknown run')
  } finally {
    await scheduler.close()
  }
})

bothBackends('cancel stops a run in a step back-off and a timer: both reject with FLOW_CANCELLED where the function waits', async (ctx) => {
  const bus = await ctx.connect()
  const scheduler = new Scheduler(bus, { leaseMs: 1000 })
  const seen = []
  const watch = (p) => p.catch((err) => (seen.push(err.code), Promise.reject(err)))
  scheduler.defineFlow('stuck', async (_input, c) => {
    const flaky = c.step(
      'flaky',
      async () => {
        throw new Error('down')
      },
      { retry: { attempts: 5, backoff: { type: 'fixed', delayMs: 600_000 } } },
    )
    await Promise.all([watch(flaky), watch(c.await.time(600_000))])
  })
  await scheduler.ready()
  try {
    const run = await scheduler.startFlow('stuck', {})
    await eventOf(bus, run, 'step.retry')
    await eventOf(bus, run, 'step.await.time')
    await scheduler.cancelFlow(run, 'stop')
    await expectCode(scheduler.result(run), 'FLOW_CANCELLED', 'result')
    await waitFor(() => seen.length === 2, 5000, () => `the waits rejected: ${seen}`)
    assert.deepEqual(seen, ['FLOW_CANCELLED', 'FLOW_CANCELLED'])
    const all = kinds(await events(bus, run))
    assert.deepEqual(all.filter((k) => k.startsWith('flow.')), ['flow.started', 'flow.cancelled'])
    assert.equal(all.filter((k) => k === 'step.started').length, 1, 'the retry never started')
  } finally {
    await scheduler.close()
  }
})

/** Collect what is printed with console.error while `fn` runs (and shortly after). */
async function printed(fn) {
  const lines = []
  const original = console.error
  console.error = (...args) => lines.push(args.map(String).join(' '))
  try {
    await fn()
    // outcomes refused by the close are reported (or not) a few ticks later
    await new Promise((r) => setTimeout(r, 100))
  } finally {
    console.error = original
  }
  return lines
}

/** A flow and a step parked in ctx.await.time; `interrupted` counts their rejected awaits. */
async function parked(ctx) {
  const bus = await ctx.connect()
  const scheduler = new Scheduler(bus, { leaseMs: 1000 })
  const interrupted = []
  const park = (c) => c.await.time(60_000).catch((err) => (interrupted.push(err.code), Promise.reject(err)))
  scheduler.defineFlow('parked', async (_input, c) => park(c))
  scheduler.define('napping', async (_input, c) => park(c))
  await scheduler.ready()
  const run = await scheduler.startFlow('parked', {})
  const step = scheduler.run('napping', { flow: `nap-${run}` }).catch((err) => err)
  await eventOf(bus, run, 'step.await.time')
  await eventOf(bus, `nap-${run}`, 'step.await.time')
  return { bus, scheduler, run, step, interrupted }
}

bothBackends('result() rejects with BUS_CLOSED when the bus closes while it waits; the interrupted handlers print nothing', async (ctx) => {
  const { bus, scheduler, run, step, interrupted } = await parked(ctx)
  const subscribed = bus.subscriptionCount
  const waiting = scheduler.result(run).catch((err) => err)
  // result() is waiting on the run's stream (not failing at once for a closed bus)
  await waitFor(() => bus.subscriptionCount > subscribed, 5000, 'result() to subscribe')
  const lines = await printed(async () => {
    await bus.close()
    const err = await waiting
    assert.ok(err instanceof LeanEventsError, String(err))
    assert.equal(err.code, 'BUS_CLOSED')
    assert.equal((await step).code, 'BUS_CLOSED', 'a pending run() rejects the same way')
    await waitFor(() => interrupted.length === 2, 5000, () => `interrupted: ${interrupted}`)
  })
  assert.deepEqual(interrupted, ['BUS_CLOSED', 'BUS_CLOSED'])
  assert.deepEqual(lines, [], 'closing is not a failure to report')
  await scheduler.close()
})

bothBackends('result() rejects with BUS_CLOSED when the scheduler closes while it waits, and at once after; the run goes on', async (ctx) => {
  const { bus, scheduler, run, step, interrupted } = await parked(ctx)
  const subscribed = bus.subscriptionCount
  const waiting = scheduler.result(run).catch((err) => err)
  // result() is waiting on the run's stream (not failing at once for a closed bus)
  await waitFor(() => bus.subscriptionCount > subscribed, 5000, 'result() to subscribe')
  const lines = await printed(async () => {
    await scheduler.close()
    const err = await waiting
    assert.ok(err instanceof LeanEventsError, String(err))
    assert.equal(err.code, 'BUS_CLOSED')
    assert.equal((await step).code, 'BUS_CLOSED', 'as a pending run() does')
    await expectCode(scheduler.result(run), 'BUS_CLOSED', 'result() after close()')
    await waitFor(() => interrupted.length === 2, 5000, () => `interrupted: ${interrupted}`)
  })
  assert.deepEqual(lines, [], 'closing is not a failure to report')
  const flowKinds = kinds(await events(bus, run)).filter((k) => k.startsWith('flow.'))
  assert.deepEqual(flowKinds, ['flow.started'], 'the run is left to another instance')
  // another scheduler on the same bus still waits for it
  const other = new Scheduler(bus, { leaseMs: 1000 })
  const pending = other.result(run).catch((err) => err)
  await other.cancelFlow(run, 'enough')
  const err = await pending
  assert.equal(err.code, 'FLOW_CANCELLED')
  await other.close()
})

bothBackends('result() errors and a failed step inside a flow are LeanEventsErrors with error, reason, step and cause', async (ctx) => {
  const bus = await ctx.connect()
  const scheduler = new Scheduler(bus, { leaseMs: 1000 })
  let caught
  scheduler.defineFlow('declines', async (_input, c) => {
    try {
      await c.step('charge', () => {
        throw Object.assign(new TypeError('card declined'), { code: 'DECLINED', retriable: false })
      })
    } catch (err) {
      caught = err
      throw err
    }
  })
  scheduler.defineFlow('waits', async (_input, c) => c.await.time(600_000))
  await scheduler.ready()
  try {
    const failed = await scheduler.startFlow('declines', {})
    const err = await expectCode(scheduler.result(failed), 'FLOW_FAILED', 'failed run')
    assert.ok(err instanceof LeanEventsError)
    assert.deepEqual(err.error, { message: 'card declined', name: 'TypeError', code: 'DECLINED', step: 'charge' })
    assert.ok(caught instanceof LeanEventsError, 'the step error inside the flow')
    assert.equal(caught.code, 'DECLINED')
    assert.equal(caught.message, 'card declined')
    assert.equal(caught.step, 'charge')
    assert.equal(caught.retriable, false)
    assert.deepEqual(caught.cause, { message: 'card declined', name: 'TypeError', code: 'DECLINED' })

    const waiting = await scheduler.startFlow('waits', {})
    await eventOf(bus, waiting, 'step.await.time')
    await scheduler.cancelFlow(waiting, 'customer left')
    const cancelled = await expectCode(scheduler.result(waiting), 'FLOW_CANCELLED', 'cancelled run')
    assert.ok(cancelled instanceof LeanEventsError)
    assert.equal(cancelled.reason, 'customer left')

    const missing = await expectCode(scheduler.result('no-such-run'), 'FLOW_NOT_FOUND', 'unknown run')
    assert.ok(missing instanceof LeanEventsError)
  } finally {
    await scheduler.close()
  }
})

bothBackends('steps and flows share one namespace: the other kind under a used name throws INVALID_ARGUMENT, the same kind replaces', async (ctx) => {
  const bus = await ctx.connect()
  const scheduler = new Scheduler(bus, { leaseMs: 1000 })
  // before the instance is ready
  scheduler.defineFlow('f', async () => 'first')
  let err = await expectCode(() => scheduler.define('f', () => 1), 'INVALID_ARGUMENT', 'define over a flow')
  assert.match(err.message, /'f' is already defined as a flow/)
  scheduler.define('s', () => 1)
  err = await expectCode(() => scheduler.defineFlow('s', async () => 1), 'INVALID_ARGUMENT', 'defineFlow over a step')
  assert.match(err.message, /'s' is already defined as a step/)
  await scheduler.ready()
  try {
    // and after
    err = await expectCode(() => scheduler.define('f', () => 1), 'INVALID_ARGUMENT', 'define over a flow, ready')
    assert.match(err.message, /'f' is already defined as a flow/)
    await expectCode(() => scheduler.defineFlow('s', async () => 1), 'INVALID_ARGUMENT', 'defineFlow over a step, ready')
    scheduler.define('t', () => 1)
    await expectCode(() => scheduler.defineFlow('t', async () => 1), 'INVALID_ARGUMENT', 'defineFlow over a step defined when ready')
    // the same kind again replaces the handler
    scheduler.defineFlow('f', async () => 'second')
    assert.equal(await scheduler.result(await scheduler.startFlow('f', {})), 'second')
    scheduler.define('s', () => 2)
    assert.equal(await scheduler.run('s', { flow: 'ns-1' }), 2)
    err = await expectCode(() => scheduler.defineFlow('', async () => 1), 'INVALID_ARGUMENT', 'empty flow name')
    assert.match(err.message, /^flow name /)
  } finally {
    await scheduler.close()
  }
})
