'use strict'
// Scheduler edges: what emit accepts the scheduler accepts (lone surrogates), huge and Date
// retry delays, the concurrency limit, a replayed relative await.time — Redis and embedded.

const assert = require('node:assert/strict')
const path = require('node:path')
const { Scheduler } = require('..')
const { bothBackends, redisOnly, waitFor, expectCode, startChild, FIXTURES, REDIS_URL } = require('./helpers.js')
const { defineNap } = require('./fixtures/sched-nap.js')

const kinds = (events) => events.map((e) => e.kind)
const ms = (e) => Number(e.id.split('-')[0])
const LONE = '\uD800'

async function setup(ctx, options = {}) {
  const bus = await ctx.connect()
  const scheduler = new Scheduler(bus, { leaseMs: 1000, ...options })
  await scheduler.ready()
  return { bus, scheduler }
}

bothBackends('a step result that is not valid Unicode is recorded and run() settles with it', async (ctx) => {
  const { bus, scheduler } = await setup(ctx)
  try {
    scheduler.define('s', () => LONE)
    assert.equal(await scheduler.run('s', { flow: 'u1' }), LONE)
    const events = await bus.read({ type: 'flow', id: 'u1' })
    assert.deepEqual(kinds(events), ['step.started', 'step.completed'])
    assert.equal(events[1].data.result, LONE)
  } finally {
    await scheduler.close()
  }
})

bothBackends('an error message that is not valid Unicode keeps the message and the policy', async (ctx) => {
  const { bus, scheduler } = await setup(ctx)
  try {
    let calls = 0
    scheduler.define('s', () => {
      calls++
      throw Object.assign(new Error(LONE), { retriable: false, code: 'E_LONE' })
    }, { retry: { attempts: 3, backoff: { type: 'fixed', delayMs: 10 } } })
    const err = await expectCode(scheduler.run('s', { flow: 'u2' }), 'STEP_FAILED')
    assert.equal(calls, 1, 'retriable: false is one call')
    assert.equal(err.cause.message, LONE, 'the error as thrown')
    assert.equal(err.cause.code, 'E_LONE')
    const events = await bus.read({ type: 'flow', id: 'u2' })
    assert.deepEqual(kinds(events), ['step.started', 'step.failed'])
    assert.equal(events[1].data.error, '\uFFFD', 'the message, its lone surrogate replaced')

    scheduler.define('later', (_, c) => {
      if (c.attempt === 1) throw Object.assign(new Error(`x${LONE}`), { retryAfter: 30 })
      return 'done'
    }, { retry: { attempts: 2 } })
    assert.equal(await scheduler.run('later', { flow: 'u3' }), 'done')
    const retry = (await bus.read({ type: 'flow', id: 'u3' })).find((e) => e.kind === 'step.retry')
    assert.equal(retry.data.delayMs, 30, 'retryAfter kept')
  } finally {
    await scheduler.close()
  }
})

bothBackends('run input, trigger and fire payloads and match values take what emit takes', async (ctx) => {
  const { bus, scheduler } = await setup(ctx)
  try {
    await bus.emit({ kind: 'x.y', subject: 'yardstick', data: LONE })
    scheduler.define('echo', (input) => input)
    assert.equal(await scheduler.run('echo', { flow: 'u4', input: LONE }), LONE)
    assert.equal((await bus.read({ type: 'flow', id: 'u4' }))[0].data.input, LONE)

    const ids = []
    scheduler.define('approve', async (_, c) => {
      const t = await c.await.trigger({ payload: { v: LONE } })
      ids.push(t.id)
      return t.wait()
    })
    const run = scheduler.run('approve', { flow: 'u5' })
    await waitFor(() => ids.length === 1)
    await scheduler.fire(ids[0], { v: LONE })
    assert.deepEqual(await run, { v: LONE })
    const waiting = (await bus.read({ type: 'flow', id: 'u5' })).find((e) => e.kind === 'step.await.trigger')
    assert.deepEqual(waiting.data.payload, { v: LONE })
    const fired = (await bus.read({ type: 'trigger', id: ids[0] })).at(-1)
    assert.deepEqual(fired.data.payload, { v: LONE })

    scheduler.define('match', async (_, c) => {
      try {
        await c.await.event({ kind: 'never.comes', match: { 'data.v': LONE }, timeoutMs: 50 })
      } catch (err) {
        return err.code
      }
    })
    assert.equal(await scheduler.run('match', { flow: 'u6' }), 'AWAIT_TIMEOUT', 'the match is taken')
  } finally {
    await scheduler.close()
  }
})

bothBackends('a huge retryAfter does not retry at once; a Date retryAfter retries then', async (ctx) => {
  const { bus, scheduler } = await setup(ctx)
  try {
    let calls = 0
    scheduler.define('huge', () => {
      calls++
      throw Object.assign(new Error('much later'), { retryAfter: 1e20 })
    }, { retry: { attempts: 2 } })
    const failed = Date.now()
    scheduler.run('huge', { flow: 'h1' }).catch(() => {})
    await waitFor(async () => kinds(await bus.read({ type: 'flow', id: 'h1' })).includes('step.retry'))
    const events = await bus.read({ type: 'flow', id: 'h1' })
    assert.equal(events[1].data.nextRetryAt, '9999-12-31T23:59:59.999Z')
    assert.ok(Date.parse(events[1].data.nextRetryAt) > failed)
    assert.ok(events[2].data.delayMs <= Date.parse('9999-12-31T23:59:59.999Z') - failed)
    // a retry due now would have started by then
    await new Promise((r) => setTimeout(r, 500))
    assert.equal(calls, 1, 'not retried at once')

    const at = new Date(Date.now() + 300)
    scheduler.define('dated', (_, c) => {
      if (c.attempt === 1) throw Object.assign(new Error('at a date'), { retryAfter: at })
      return Date.now()
    }, { retry: { attempts: 2 } })
    const second = await scheduler.run('dated', { flow: 'h2' })
    assert.ok(second >= at.getTime(), `retried ${at.getTime() - second} ms before its date`)
    const retry = (await bus.read({ type: 'flow', id: 'h2' })).find((e) => e.kind === 'step.retry')
    assert.ok(retry.data.delayMs > 100 && retry.data.delayMs <= 300, `delayMs ${retry.data.delayMs}`)
  } finally {
    await scheduler.close()
  }
})

bothBackends('concurrency bounds the handlers running at once, not those parked in an await', async (ctx) => {
  const bus = await ctx.connect()
  await expectCode(() => new Scheduler(bus, { concurrency: 0 }), 'INVALID_ARGUMENT', 'concurrency 0 throws at once')
  assert.throws(() => new Scheduler(bus, { concurrency: 1.5 }), { code: 'INVALID_ARGUMENT' })
  const scheduler = new Scheduler(bus, { leaseMs: 1000, concurrency: 2 })
  await scheduler.ready()
  try {
    let running = 0
    let mostRunning = 0
    let parked = 0
    let mostParked = 0
    const busy = async () => {
      mostRunning = Math.max(mostRunning, ++running)
      await new Promise((r) => setTimeout(r, 30))
      running--
    }
    scheduler.define('work', busy)
    scheduler.define('nap', async (_, c) => {
      await busy()
      mostParked = Math.max(mostParked, ++parked)
      await c.await.time(300)
      parked--
      await busy()
    })
    await Promise.all(Array.from({ length: 12 }, (_, i) => scheduler.run(i % 2 ? 'nap' : 'work', { flow: 'c1' })))
    assert.equal(mostRunning, 2, 'handlers at once')
    assert.ok(mostParked > 2, `parked handlers held their turn (${mostParked} parked at most)`)
  } finally {
    await scheduler.close()
  }
})

redisOnly('a replayed relative await.time resumes when its first call said', async (ctx) => {
  const env = { ...process.env, REDIS_URL, PREFIX: ctx.prefix }
  const child = startChild(process.execPath, [path.join(FIXTURES, 'sched-nap-child.js')], { env })
  await waitFor(() => child.stdout.includes('"sleeping":true'), 15_000, () => `child: ${child.stdout} ${child.stderr}`)
  child.child.kill('SIGKILL')
  await child.exited
  // the take-over comes 1.5 s later than it would; the sleep asked for 3 s
  await new Promise((r) => setTimeout(r, 1500))
  const { bus, scheduler } = await setup(ctx, { leaseMs: 300 })
  try {
    defineNap(scheduler)
    await waitFor(async () => kinds(await bus.read({ type: 'flow', id: 'nap-replay' })).includes('step.completed'), 15_000)
    const events = await bus.read({ type: 'flow', id: 'nap-replay' })
    // The due time is taken at the first call, a moment before its `step.await.time` entry is
    // written, so it is compared with the entry's id within a small margin, and the resume with it.
    const awaited = events.find((e) => e.kind === 'step.await.time')
    const due = Date.parse(awaited.data.resumeAt)
    const asked = due - ms(awaited)
    assert.ok(asked > 2900 && asked <= 3050, `the first call asked to resume ${asked} ms after its entry, not 3000`)
    const resumed = ms(events.find((e) => e.kind === 'step.resumed'))
    assert.ok(resumed >= due && resumed < due + 1000, `resumed ${resumed - due} ms after the due time of the first call`)
  } finally {
    await scheduler.close()
  }
}, { timeout: 60_000 })

bothBackends('scheduler options the native side refuses throw at once', async (ctx) => {
  const bus = await ctx.connect()
  for (const [options, says] of [
    [{ concurrency: 0 }, /options\.concurrency must be an integer ≥ 1 \(got 0\)/],
    [{ concurrency: -3 }, /options\.concurrency must be an integer ≥ 1/],
    [{ concurrency: 'x' }, /options\.concurrency must be an integer/],
    [{ leaseMs: 50 }, /options\.leaseMs must be at least 100 ms \(got 50\)/],
  ]) {
    const err = await expectCode(() => new Scheduler(bus, options), 'INVALID_ARGUMENT', JSON.stringify(options))
    assert.match(err.message, says)
  }
  const fine = new Scheduler(bus, { concurrency: 1, leaseMs: 100 })
  await fine.ready()
  await fine.close()
})

bothBackends('a refused retry policy names the option and what it may be, without parser positions', async (ctx) => {
  const { scheduler } = await setup(ctx)
  try {
    for (const [retry, says] of [
      [{ attempts: -1 }, /^retry\.attempts must be a whole number from 1 to 4294967295 \(got -1\)$/],
      [{ attempts: 2, backoff: { delayMs: -5 } }, /^retry\.backoff\.delayMs must be a whole number of ms, 0 or more \(got -5\)$/],
      [{ backoff: { type: 'linear' } }, /^retry\.backoff\.type must be 'fixed' or 'exponential' \(got "linear"\)$/],
      [{ tries: 3 }, /^retry\.tries is not an option \(known: attempts, backoff, retriableErrors\)$/],
    ]) {
      const err = await expectCode(() => scheduler.define('p', () => 1, { retry }), 'INVALID_ARGUMENT', JSON.stringify(retry))
      assert.match(err.message, says)
      assert.doesNotMatch(err.message, /line \d+|column \d+|u32|u64/)
    }
    // a flow step's policy is checked the same way: the step throws it
    scheduler.defineFlow('bad-policy', async (_input, c) => {
      try {
        await c.step('s', () => {
          throw new Error('down')
        }, { retry: { attempts: -1 } })
      } catch (err) {
        return { code: err.code, message: err.message }
      }
    })
    const out = await scheduler.result(await scheduler.startFlow('bad-policy', {}))
    assert.equal(out.code, 'INVALID_ARGUMENT')
    assert.match(out.message, /^retry\.attempts must be a whole number/)
  } finally {
    await scheduler.close()
  }
})

bothBackends('a negative timeout rejects with INVALID_ARGUMENT in await.event and await.trigger alike; a negative delay, like a past Date, resolves at once', async (ctx) => {
  const { scheduler } = await setup(ctx)
  try {
    const outcome = (p) => p.then(() => 'resolved', (err) => `${err.code}: ${err.message}`)
    scheduler.define('negative', async (_input, c) => ({
      time: await outcome(c.await.time(-100)),
      event: await outcome(c.await.event({ kind: 'k', timeoutMs: -1 })),
      trigger: await outcome(c.await.trigger({ timeoutMs: -1 })),
      pastDate: await outcome(c.await.time(new Date(Date.now() - 1000))),
      zero: await outcome(c.await.time(0)),
    }))
    assert.deepEqual(await scheduler.run('negative', { flow: 'neg-1' }), {
      time: 'resolved',
      event: 'INVALID_ARGUMENT: await.event.timeoutMs must be 0 or more ms (got -1); leave it out to wait without a timeout',
      trigger: 'INVALID_ARGUMENT: await.trigger.timeoutMs must be 0 or more ms (got -1); leave it out to wait without a timeout',
      pastDate: 'resolved',
      zero: 'resolved',
    })
  } finally {
    await scheduler.close()
  }
})

bothBackends('firing a resolved trigger says how it ended', async (ctx) => {
  const { scheduler } = await setup(ctx)
  try {
    const ids = []
    scheduler.define('approve', async (_input, c) => {
      const t = await c.await.trigger({ type: 'approval' })
      ids.push(t.id)
      return t.wait()
    })
    const run = scheduler.run('approve', { flow: 'tr-1' })
    await waitFor(() => ids.length === 1)
    await scheduler.fire(ids[0], { ok: true })
    assert.deepEqual(await run, { ok: true })
    const err = await expectCode(scheduler.fire(ids[0], {}), 'TRIGGER_RESOLVED', 'a second fire')
    assert.equal(err.message, `trigger ${ids[0]} was fired already`)
  } finally {
    await scheduler.close()
  }
})
