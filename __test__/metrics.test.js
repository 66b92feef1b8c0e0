'use strict'
// bus.metrics() after known operations, on Redis and the embedded store, and metricsHandler()
// (lean-events/nitro) served over HTTP, its Prometheus text parsed back.

const test = require('node:test')
const assert = require('node:assert/strict')
const http = require('node:http')
const { EventBus, BACKENDS, uniquePrefix, uniqueId, waitFor } = require('./helpers')
const { Scheduler } = require('..')

const nitroModule = () => import('lean-events/nitro')

async function connect(backend, extra = {}) {
  return EventBus.connect({ url: backend.url, prefix: uniquePrefix('metrics'), ...extra })
}

/** Serve one h3 handler on 127.0.0.1:<free port>. */
async function serveHandler(handler) {
  const { createApp, toNodeListener } = await import('h3')
  const app = createApp()
  app.use('/metrics', handler)
  const server = http.createServer(toNodeListener(app))
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${server.address().port}/metrics`,
    close: () => new Promise((resolve) => server.close(resolve)),
  }
}

/**
 * The Prometheus text exposition format, parsed: `{ types: {name: type}, samples: [{name,
 * labels, value}] }`. Each sample line is `name{l="v",…} value`.
 */
function parseExposition(text) {
  const types = {}
  const samples = []
  for (const line of text.split('\n')) {
    if (line === '') continue
    const typeLine = line.match(/^# TYPE (\S+) (\S+)$/)
    if (typeLine) {
      types[typeLine[1]] = typeLine[2]
      continue
    }
    if (line.startsWith('#')) continue
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/)
    assert.ok(m, `a sample line: ${line}`)
    const labels = {}
    for (const [, k, v] of (m[2] || '').matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v
    samples.push({ name: m[1], labels, value: Number(m[3]) })
  }
  return { types, samples }
}

function sample(parsed, name, labels = {}) {
  const found = parsed.samples.filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  )
  assert.equal(found.length, 1, `one sample ${name} ${JSON.stringify(labels)}`)
  return found[0].value
}

for (const backend of BACKENDS) {
  test(`bus.metrics() counts emits, errors, deliveries and overflows (${backend.name})`, async () => {
    const bus = await connect(backend, { onWarning: () => {} })
    try {
      const empty = await bus.metrics()
      assert.deepEqual(empty, {
        emits: 0,
        emitErrors: {},
        deliveries: 0,
        liveSubscriptions: 0,
        pendingEmits: 0,
        subscriberOverflows: 0,
        warnings: {},
        timers: null,
      })
      const id = uniqueId()
      const seen = []
      const sub = await bus.subscribe({ type: 'flow', id }, (e) => seen.push(e.id))
      const tight = await bus.subscribe({ type: 'flow', id }, { maxQueue: 1 })
      // only a live subscriber is cut off (catching up, a subscription waits for its consumer)
      await waitFor(() => sub.live && tight.live, 10_000, 'both subscriptions live')
      await bus.emit({ kind: 'a.b', subject: id })
      await bus.emitMany([
        { kind: 'a.b', subject: id },
        { kind: 'a.c', subject: id },
      ])
      await assert.rejects(bus.emit({ kind: 'Not A Kind', subject: id }), { code: 'EVENT_INVALID' })
      await waitFor(() => seen.length === 3, 10_000, 'the handler got 3 events')
      // the iterator-style subscriber took nothing: 1 queued, cut off at the 2nd
      await assert.rejects(async () => {
        for await (const _ of tight) {
          // drain
        }
      }, { code: 'SUBSCRIBER_OVERFLOW' })
      const m = await bus.metrics()
      assert.equal(m.emits, 3)
      assert.deepEqual(m.emitErrors, { EVENT_INVALID: 1 })
      assert.equal(m.deliveries, 4, '3 to the handler, 1 to the tight subscriber')
      assert.equal(m.subscriberOverflows, 1)
      assert.equal(m.liveSubscriptions, 1)
      assert.equal(m.pendingEmits, 0)
      assert.equal(m.timers, null)
      await sub.unsubscribe()
    } finally {
      await bus.close()
    }
  })

  test(`bus.metrics().emitErrors counts the calls refused in JavaScript too, before the core sees them (${backend.name})`, async () => {
    const bus = await connect(backend, { onWarning: () => {} })
    try {
      const id = uniqueId()
      // each of these is refused by lib/ before the native layer
      await assert.rejects(bus.emit(null), { code: 'EVENT_INVALID' })
      await assert.rejects(bus.emit('x'), { code: 'EVENT_INVALID' })
      await assert.rejects(bus.emit({ kind: 'a.b', subject: id, data: { n: 1n } }), { code: 'EVENT_INVALID' })
      await assert.rejects(bus.emitMany('nope'), { code: 'EVENT_INVALID' })
      await assert.rejects(bus.emitMany([{ kind: 'a.b', subject: id }, 7]), { code: 'EVENT_INVALID' })
      await assert.rejects(bus.emit({ kind: 'a.b', subject: id }, { nope: 1 }), { code: 'INVALID_ARGUMENT' })
      await assert.rejects(bus.emitMany([], { retention: 5 }), { code: 'INVALID_ARGUMENT' })
      // and one the core refuses, counted once (not again here)
      await assert.rejects(bus.emit({ kind: 'Not A Kind', subject: id }), { code: 'EVENT_INVALID' })
      await bus.emit({ kind: 'a.b', subject: id })
      const m = await bus.metrics()
      assert.equal(m.emits, 1)
      assert.deepEqual(m.emitErrors, { EVENT_INVALID: 6, INVALID_ARGUMENT: 2 })
      assert.deepEqual(Object.keys(m.emitErrors), ['EVENT_INVALID', 'INVALID_ARGUMENT'], 'codes in order, as the core lists them')
    } finally {
      await bus.close()
    }
  })

  test(`bus.metrics() has timer figures while a scheduler runs (${backend.name})`, async () => {
    const bus = await connect(backend)
    const scheduler = new Scheduler(bus)
    try {
      let resumed = false
      scheduler.define('nap', async (_input, ctx) => {
        await ctx.await.time(50)
        resumed = true
        return 'ok'
      })
      await scheduler.run('nap', { flow: uniqueId('nap') })
      assert.ok(resumed)
      const m = await waitFor(async () => {
        const m = await bus.metrics()
        return m.timers && m.timers.fired >= 1 && m.timers.pending === 0 ? m : null
      }, 10_000, 'the await.time timer fired and was removed')
      assert.equal(typeof m.timers.latenessP50Ms, 'number')
      assert.ok(m.timers.latenessP99Ms >= m.timers.latenessP50Ms)
    } finally {
      await scheduler.close()
      await bus.close()
    }
  })
}

test('metricsHandler() serves the metrics in the Prometheus text format', async () => {
  const { metricsHandler } = await nitroModule()
  const bus = await connect(BACKENDS.find((b) => b.name === 'embedded'), { embedded: 'per-process' })
  const app = await serveHandler(metricsHandler({ bus }))
  try {
    const id = uniqueId()
    await bus.emit({ kind: 'a.b', subject: id })
    await bus.emit({ kind: 'a.b', subject: id })
    await assert.rejects(bus.emit({ kind: 'a.b' }), { code: 'EVENT_INVALID' })
    await assert.rejects(bus.emitMany([{ kind: 'a.b', subject: 'a b' }]), { code: 'EVENT_INVALID' })
    // refused in JavaScript, before the core: counted the same
    await assert.rejects(bus.emit(null), { code: 'EVENT_INVALID' })
    await assert.rejects(bus.emit({ kind: 'a.b', subject: id }, { type: 1 }), { code: 'INVALID_ARGUMENT' })

    const res = await fetch(app.url)
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type'), /^text\/plain; version=0\.0\.4/)
    const parsed = parseExposition(await res.text())
    assert.equal(sample(parsed, 'lean_events_emits_total'), 2)
    assert.equal(sample(parsed, 'lean_events_emit_errors_total', { code: 'EVENT_INVALID' }), 3)
    assert.equal(sample(parsed, 'lean_events_emit_errors_total', { code: 'INVALID_ARGUMENT' }), 1)
    assert.equal(sample(parsed, 'lean_events_deliveries_total'), 0)
    assert.equal(sample(parsed, 'lean_events_live_subscriptions'), 0)
    assert.equal(sample(parsed, 'lean_events_pending_emits'), 0)
    assert.equal(sample(parsed, 'lean_events_subscriber_overflows_total'), 0)
    assert.equal(parsed.types.lean_events_emits_total, 'counter')
    assert.equal(parsed.types.lean_events_live_subscriptions, 'gauge')
    for (const s of parsed.samples) assert.match(s.name, /^lean_events_/)
    assert.ok(!parsed.samples.some((s) => s.name.startsWith('lean_events_timer')), 'no scheduler, no timers')

    // with a scheduler: its timers show up, lateness in seconds by quantile
    const scheduler = new Scheduler(bus)
    try {
      scheduler.define('nap', async (_input, ctx) => {
        await ctx.await.time(20)
        return 'ok'
      })
      await scheduler.run('nap', { flow: uniqueId('nap') })
      await waitFor(async () => (await bus.metrics()).timers?.fired >= 1, 10_000, 'a timer fired')
      const withTimers = parseExposition(await (await fetch(app.url)).text())
      assert.equal(withTimers.types.lean_events_timer_lateness_seconds, 'gauge')
      assert.ok(sample(withTimers, 'lean_events_timers_fired_total') >= 1)
      assert.ok(Number.isFinite(sample(withTimers, 'lean_events_timers_pending')))
      const p50 = sample(withTimers, 'lean_events_timer_lateness_seconds', { quantile: '0.5' })
      const p99 = sample(withTimers, 'lean_events_timer_lateness_seconds', { quantile: '0.99' })
      assert.ok(p50 >= 0 && p99 >= p50 && p99 < 60, `${p50} ${p99}`)
      assert.ok(sample(withTimers, 'lean_events_live_subscriptions') >= 2, 'the control channels')
    } finally {
      await scheduler.close()
    }
    const after = parseExposition(await (await fetch(app.url)).text())
    assert.ok(!after.samples.some((s) => s.name.startsWith('lean_events_timer')), 'gone with the scheduler')
  } finally {
    await app.close()
    await bus.close()
  }
})

test("EventBus.connect({ url: '' }) opens the embedded store, as no url does (url: process.env.REDIS_URL with REDIS_URL='')", async () => {
  const bus = await EventBus.connect({ url: '' })
  try {
    const id = uniqueId()
    const stored = await bus.emit({ kind: 'a.b', subject: id })
    assert.deepEqual((await bus.read({ type: 'flow', id })).map((e) => e.id), [stored.id])
  } finally {
    await bus.close()
  }
  // a url that is not empty is still checked
  await assert.rejects(EventBus.connect({ url: ' ' }), { code: 'INVALID_ARGUMENT' })
})

test('metricsHandler() asks authorize', async () => {
  const { metricsHandler } = await nitroModule()
  const bus = await connect(BACKENDS.find((b) => b.name === 'embedded'), { embedded: 'per-process' })
  const asked = []
  const app = await serveHandler(
    metricsHandler({
      bus,
      authorize: (_event, target) => {
        asked.push(target)
        return false
      },
    }),
  )
  try {
    const res = await fetch(app.url)
    assert.equal(res.status, 403)
    assert.deepEqual(asked, [{ type: 'metrics', id: 'bus' }])
  } finally {
    await app.close()
    await bus.close()
  }
})
