'use strict'
// lean-events/nitro: the h3 handlers and adapters in-process, the example Nitro app over HTTP
// (SSE backfill + live, Last-Event-ID resume, the trigger webhook, authorization, shutdown),
// and its run page in Debian's chromium. The package installed from its npm tarball, with
// lean-events/nitro imported in the app, is in install.test.js.

const test = require('node:test')
const { describe, before, after } = test
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const nodeHttp = require('node:http')
const { spawn } = require('node:child_process')
const { EventBus, BACKENDS, makeContext, waitFor, freePort, startChild, deleteRedisPrefix } = require('./helpers')
const { openSse } = require('./fixtures/nitro-sse')

const ROOT = path.join(__dirname, '..')
const EXAMPLE = path.join(ROOT, 'examples', 'nitro')
const RESULTS = path.join(ROOT, 'test-results')
const CHROMIUM = '/usr/bin/chromium'
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
]
const { Scheduler } = require('..')

const nitroModule = () => import('lean-events/nitro')
const clientModule = () => import('lean-events/client')
const h3Fixture = () => import('./fixtures/nitro-h3-app.mjs')

const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`

/** fetch with JSON body parsing; never throws on HTTP errors. */
async function http(url, options = {}) {
  const res = await fetch(url, options)
  const text = await res.text()
  let json
  try {
    json = JSON.parse(text)
  } catch {
    json = undefined
  }
  return { status: res.status, headers: res.headers, text, json }
}

function post(url, body, headers = { 'content-type': 'application/json' }) {
  return http(url, { method: 'POST', headers, body })
}

/** An error response: the status, a JSON body with a code, and no stack trace. */
function assertError(res, status, code, what) {
  assert.equal(res.status, status, `${what}: expected ${status}, got ${res.status}: ${res.text}`)
  assert.ok(res.json, `${what}: the error body is not JSON: ${res.text}`)
  if (code) assert.equal(res.json.code, code, `${what}: ${res.text}`)
  assert.doesNotMatch(res.text, /\bat .+:\d+:\d+|"stack"/, `${what}: a stack trace leaked: ${res.text}`)
}

const ids = (messages) => messages.map((m) => m.id)
/** The kinds of SSE messages: the record's (messages have no event name by default). */
const kinds = (messages) => messages.map((m) => (m.record ? m.record.kind : m.event))
const kindOf = (m) => (m.record ? m.record.kind : undefined)

function assertIncreasingIds(list, what) {
  const key = (id) => id.split('-').map(BigInt)
  for (let i = 1; i < list.length; i++) {
    const [am, as] = key(list[i - 1])
    const [bm, bs] = key(list[i])
    assert.ok(am < bm || (am === bm && as < bs), `${what}: ${list[i - 1]} is not before ${list[i]}`)
  }
}

/** Is `sub` a subsequence of `seq` (same order, gaps allowed)? */
function isSubsequence(sub, seq) {
  let i = 0
  for (const x of seq) if (i < sub.length && x === sub[i]) i++
  return i === sub.length
}

// ---------------------------------------------------------------------------------------------
// The handlers and adapters in an h3 app, in this process

describe('lean-events/nitro handlers in an h3 app (in-process)', () => {
  let bus
  let scheduler
  let app
  let nitro
  let denied
  // the scheduler holds subscriptions of its own (timers, awaits): counts are relative to these
  let baseSubs
  let baseChannels
  const released = () => bus.subscriptionCount === baseSubs && bus.channelCount === baseChannels

  before(async () => {
    nitro = await nitroModule()
    bus = await EventBus.connect({ maxEventBytes: 4096 })
    scheduler = new Scheduler(bus)
    scheduler.define('wait_for_webhook', async (_input, ctx) => {
      const t = await ctx.await.trigger({ type: 'webhook', timeoutMs: 60_000 })
      await ctx.emit('webhook.registered', { triggerId: t.id })
      return t.wait()
    })
    await scheduler.ready()
    baseSubs = bus.subscriptionCount
    baseChannels = bus.channelCount
    denied = new Set()
    const authorize = (_event, { type, id }) => {
      if (id.startsWith('throw-')) throw new Error('tenant lookup failed')
      return !denied.has(`${type}:${id}`)
    }
    const { startH3App } = await h3Fixture()
    app = await startH3App({ bus, scheduler, authorize, heartbeatMs: 100, maxBodyBytes: 16 * 1024 })
  })

  after(async () => {
    if (app) await app.close()
    if (scheduler) await scheduler.close()
    if (bus) await bus.close()
  })

  test('SSE: headers, backfill then live, ?after= and Last-Event-ID (the header wins)', async () => {
    const id = `h3-run-${Date.now()}`
    const first = await bus.emitMany([
      { kind: 'flow.started', subject: id, data: { name: 'h3-flow' } },
      { kind: 'step.started', subject: id, step: 'a', meta: { attempt: 1 } },
      { kind: 'log', subject: id, step: 'a', data: { level: 'info', msg: 'hello' } },
    ])
    const sse = await openSse(`${app.url}/api/_events/flow/${id}/stream`)
    try {
      assert.equal(sse.status, 200)
      assert.match(sse.headers['content-type'], /^text\/event-stream/)
      assert.equal(sse.headers['x-accel-buffering'], 'no')
      assert.match(sse.headers['cache-control'], /no-cache/)
      await waitFor(() => sse.messages.length >= 3, 5000, 'backfill')
      const live = await bus.emit({ kind: 'step.completed', subject: id, step: 'a', data: { result: 1 }, meta: { attempt: 1 } })
      await waitFor(() => sse.messages.length >= 4, 5000, 'live event')
      assert.deepEqual(ids(sse.messages), [...first.map((e) => e.id), live.id])
      assert.deepEqual(kinds(sse.messages), ['flow.started', 'step.started', 'log', 'step.completed'])
      assert.deepEqual(
        sse.messages.map((m) => m.event),
        ['message', 'message', 'message', 'message'],
        'no event name: EventSource.onmessage receives every kind',
      )
      assert.deepEqual(sse.messages[3].record, live, 'data: is the record as JSON')
    } finally {
      sse.close()
    }
    // named events, for pages that listen per kind
    const { eventStreamHandler } = nitro
    assert.throws(() => eventStreamHandler({ namedEvents: 'yes' }), { code: 'INVALID_ARGUMENT' })
    const named = await (await h3Fixture()).startH3App({ bus, namedEvents: true })
    const sseNamed = await openSse(`${named.url}/api/_events/flow/${id}/stream`)
    try {
      await waitFor(() => sseNamed.messages.length >= 4, 5000, 'backfill with named events')
      assert.deepEqual(
        sseNamed.messages.map((m) => m.event),
        ['flow.started', 'step.started', 'log', 'step.completed'],
      )
      assert.deepEqual(ids(sseNamed.messages), ids(sse.messages))
    } finally {
      sseNamed.close()
      await named.close()
    }

    const fromQuery = await openSse(`${app.url}/api/_events/flow/${id}/stream?after=${first[0].id}`)
    const fromHeader = await openSse(`${app.url}/api/_events/flow/${id}/stream?after=${first[0].id}`, { 'Last-Event-ID': first[1].id })
    try {
      await waitFor(() => fromQuery.messages.length >= 3 && fromHeader.messages.length >= 2, 5000, 'resumed streams')
      assert.deepEqual(ids(fromQuery.messages), [first[1].id, first[2].id, sse.messages[3].id])
      assert.deepEqual(ids(fromHeader.messages), [first[2].id, sse.messages[3].id])
    } finally {
      fromQuery.close()
      fromHeader.close()
    }
  })

  test('SSE: heartbeat comments, and the subscription ends when the client disconnects', async () => {
    await waitFor(released, 5000, () => `subscriptions left by earlier streams: ${bus.subscriptionCount - baseSubs}`)
    const id = `h3-idle-${Date.now()}`
    const sse = await openSse(`${app.url}/api/_events/flow/${id}/stream`)
    assert.equal(sse.status, 200)
    await waitFor(() => sse.comments.filter((c) => c === 'ping').length >= 2, 5000, 'two heartbeats')
    assert.equal(bus.subscriptionCount, baseSubs + 1)
    sse.close()
    await waitFor(released, 5000, () => `subscriptions ${bus.subscriptionCount - baseSubs}, channels ${bus.channelCount - baseChannels}`)
  })

  test('SSE: closing the HTTP server ends open event streams (graceful shutdown is not held up)', async () => {
    const { startH3App } = await h3Fixture()
    const other = await startH3App({ bus, heartbeatMs: 60_000 })
    const sse = await openSse(`${other.url}/api/_events/flow/h3-shutdown/stream`)
    assert.equal(sse.status, 200)
    const closed = new Promise((resolve) => other.server.close(resolve))
    await waitFor(() => sse.ended, 3000, 'the stream ends when the server closes')
    await closed
    await waitFor(released, 5000, 'subscription released')
  })

  test('SSE: a client that leaves while authorize is still pending leaves no subscription behind', async () => {
    const { startH3App } = await h3Fixture()
    let asked = 0
    let letThrough
    const gate = new Promise((resolve) => (letThrough = resolve))
    const authorize = async () => {
      asked++
      await gate
      return true
    }
    // the handler's subscription, seen from outside
    let handed
    const watched = {
      subscribe: async (...args) => {
        const sub = await bus.subscribe(...args)
        handed = { sub, at: bus.subscriptionCount }
        return sub
      },
    }
    const other = await startH3App({ bus: watched, authorize, heartbeatMs: 60_000 })
    const sockets = new Set()
    other.server.on('connection', (s) => {
      sockets.add(s)
      s.on('close', () => sockets.delete(s))
    })
    try {
      const req = nodeHttp.get(`${other.url}/api/_events/flow/h3-leaves-early/stream`)
      req.on('error', () => {})
      await waitFor(() => asked === 1, 5000, 'authorize was called')
      req.destroy()
      await waitFor(() => sockets.size === 0, 5000, 'the server saw the client go')
      letThrough()
      await waitFor(() => handed !== undefined, 5000, 'the handler subscribed after authorize')
      assert.equal(handed.at, baseSubs + 1)
      await waitFor(released, 5000, () => `subscriptions left: ${bus.subscriptionCount - baseSubs}`)
    } finally {
      letThrough()
      await other.close()
    }
  })

  test('SSE: a cursor older than the trimmed entries gets `event: gap`, then the rest', async () => {
    const trimmed = await EventBus.connect({ maxLen: 5 })
    const { startH3App } = await h3Fixture()
    const other = await startH3App({ bus: trimmed, heartbeatMs: 60_000 })
    try {
      const id = `h3-gap-${Date.now()}`
      const recs = await trimmed.emitMany(Array.from({ length: 12 }, (_, i) => ({ kind: 'step.progress', subject: id, data: { i } })))
      const kept = recs.slice(-5)
      const sse = await openSse(`${other.url}/api/_events/flow/${id}/stream`, { 'last-event-id': recs[0].id })
      assert.equal(sse.status, 200)
      await waitFor(() => sse.messages.length >= 6, 5000, () => `messages: ${JSON.stringify(sse.messages)}`)
      assert.equal(sse.messages[0].event, 'gap')
      assert.equal(sse.messages[0].id, undefined, 'a gap message does not move the cursor')
      assert.deepEqual(JSON.parse(sse.messages[0].data), { after: recs[0].id, firstId: kept[0].id })
      assert.deepEqual(ids(sse.messages.slice(1)), ids(kept))
      const live = await trimmed.emit({ kind: 'step.progress', subject: id, data: { i: 12 } })
      await waitFor(() => sse.messages.length === 7, 5000, 'the live event after the gap')
      assert.equal(sse.messages[6].id, live.id)
      sse.close()
    } finally {
      await other.close()
      await trimmed.close()
    }
  })

  test('authorize: false or a throw → 403 on every handler; allowed otherwise', async () => {
    const id = `h3-private-${Date.now()}`
    await bus.emit({ kind: 'flow.started', subject: id, data: { name: 'private-flow' } })
    assert.equal((await http(`${app.url}/api/_events/flow/${id}`)).status, 200)
    denied.add(`flow:${id}`)
    denied.add('flows:private-flow')
    denied.add('trigger:0123456789abcdef0123456789abcdef')
    assertError(await http(`${app.url}/api/_events/flow/${id}`), 403, 'FORBIDDEN', 'state')
    const sse = await openSse(`${app.url}/api/_events/flow/${id}/stream`)
    assert.equal(sse.status, 403)
    sse.close()
    assertError(await http(`${app.url}/api/_flows/private-flow/runs`), 403, 'FORBIDDEN', 'runs')
    assertError(await post(`${app.url}/api/_triggers/0123456789abcdef0123456789abcdef`, '{}'), 403, 'FORBIDDEN', 'trigger')
    assertError(await http(`${app.url}/api/_events/flow/throw-${id}`), 403, 'FORBIDDEN', 'authorize threw')
    assert.equal(bus.subscriptionCount, baseSubs, 'a refused stream subscribes nothing')
  })

  test('validation: bad ids, types, cursors and queries → 400, never a stack trace', async () => {
    const long = 'x'.repeat(257)
    const cases = [
      [`/api/_events/flow/a%20b`, 'id with a space'],
      [`/api/_events/flow/a%0Ab/stream`, 'id with a newline'],
      [`/api/_events/flow/${long}`, 'id of 257 characters'],
      [`/api/_events/Flow/abc`, 'upper-case type'],
      [`/api/_events/flows/abc/stream`, 'reserved type'],
      [`/api/_events/flow/abc/stream?after=yesterday`, 'bad ?after='],
      [`/api/_flows/h3-flow/runs?limit=0`, 'limit 0'],
      [`/api/_flows/h3-flow/runs?offset=-1`, 'negative offset'],
    ]
    for (const [p, what] of cases) assertError(await http(app.url + p), 400, undefined, what)
    const sse = await openSse(`${app.url}/api/_events/flow/abc/stream`, { 'Last-Event-ID': 'not-an-id' })
    assert.equal(sse.status, 400)
    assert.equal(JSON.parse(sse.body).code, 'INVALID_ARGUMENT')
    sse.close()
    assertError(await http(`${app.url}/api/_events/flow/never-written`), 404, 'NOT_FOUND', 'empty stream')
    assertError(await post(`${app.url}/api/_triggers/a%20b`, '{}'), 400, 'INVALID_ARGUMENT', 'trigger id')
  })

  test('cancel a trigger: 200, its wait() rejects with TRIGGER_CANCELLED; then 409, 404 unknown, 403 denied', async () => {
    const flow = `h3-cancel-${Date.now()}`
    const result = scheduler.run('wait_for_webhook', { flow, input: null })
    result.catch(() => {})
    const registered = await waitFor(async () => (await bus.read({ type: 'flow', id: flow })).find((e) => e.kind === 'webhook.registered'), 5000, 'trigger registered')
    const triggerId = registered.data.triggerId
    const url = `${app.url}/api/_triggers/${triggerId}/cancel`
    assertError(await post(url, '{"reason'), 400, 'BODY_INVALID', 'bad JSON')
    denied.add(`trigger:${triggerId}`)
    assertError(await post(url, '{}'), 403, 'FORBIDDEN', 'denied by authorize')
    denied.delete(`trigger:${triggerId}`)
    const cancelled = await post(url, JSON.stringify({ reason: 'changed my mind' }))
    assert.equal(cancelled.status, 200, cancelled.text)
    assert.deepEqual(cancelled.json, { id: triggerId, status: 'cancelled' })
    await assert.rejects(result, (err) => /TRIGGER_CANCELLED|STEP_FAILED/.test(err.code) && /changed my mind|cancel/i.test(`${err.message} ${err.cause && err.cause.message}`))
    assertError(await post(url, '{}'), 409, 'TRIGGER_RESOLVED', 'second cancel')
    assertError(await post(`${app.url}/api/_triggers/ffffffffffffffffffffffffffffffff/cancel`, ''), 404, 'TRIGGER_NOT_FOUND', 'unknown trigger')
    const state = await http(`${app.url}/api/_events/trigger/${triggerId}`)
    assert.equal(state.json.state.status, 'cancelled')
  })

  test('trigger webhook: 200 then 409, 404 unknown, 400 bad JSON, 413 over the body limit or the event limit', async () => {
    const flow = `h3-wh-${Date.now()}`
    const result = scheduler.run('wait_for_webhook', { flow, input: null })
    const registered = await waitFor(async () => (await bus.read({ type: 'flow', id: flow })).find((e) => e.kind === 'webhook.registered'), 5000, 'trigger registered')
    const triggerId = registered.data.triggerId
    const url = `${app.url}/api/_triggers/${triggerId}`

    assertError(await post(url, '{"unterminated'), 400, 'BODY_INVALID', 'bad JSON')
    assertError(await post(url, JSON.stringify({ pad: 'x'.repeat(20 * 1024) })), 413, 'PAYLOAD_TOO_LARGE', 'over maxBodyBytes')
    // under the handler's limit but over the bus's maxEventBytes (4096): the library says 413
    assertError(await post(url, JSON.stringify({ pad: 'x'.repeat(6000) })), 413, 'PAYLOAD_TOO_LARGE', 'over maxEventBytes')
    assertError(await post(`${app.url}/api/_triggers/ffffffffffffffffffffffffffffffff`, '{}'), 404, 'TRIGGER_NOT_FOUND', 'unknown trigger')

    const fired = await post(url, JSON.stringify({ approved: true }))
    assert.equal(fired.status, 200, fired.text)
    assert.deepEqual(fired.json, { id: triggerId, status: 'fired' })
    assert.deepEqual(await result, { approved: true })
    assertError(await post(url, JSON.stringify({ approved: false })), 409, 'TRIGGER_RESOLVED', 'second fire')
    const state = await http(`${app.url}/api/_events/trigger/${triggerId}`)
    assert.equal(state.status, 200)
    assert.equal(state.json.state.status, 'fired')
    assert.deepEqual(state.json.state.payload, { approved: true })
  })

  test('store errors map to 503 and unexpected errors to a bare 500', async () => {
    const { startH3App } = await h3Fixture()
    const quietError = console.error
    const failing = (err) => ({
      state: async () => {
        throw err
      },
      read: async () => [],
      listRuns: async () => {
        throw err
      },
    })
    const down = await startH3App({ bus: failing(Object.assign(new Error('connection refused 127.0.0.1:6379'), { code: 'STORE_UNAVAILABLE' })) })
    const broken = await startH3App({ bus: failing(new Error('secret detail at /srv/app.js:1:2')) })
    console.error = () => {}
    try {
      const r1 = await http(`${down.url}/api/_events/flow/abc`)
      assertError(r1, 503, 'STORE_UNAVAILABLE', 'store down')
      assert.doesNotMatch(r1.text, /6379/)
      const r2 = await http(`${broken.url}/api/_flows/x/runs`)
      assertError(r2, 500, 'INTERNAL', 'unexpected error')
      assert.doesNotMatch(r2.text, /secret/)
    } finally {
      console.error = quietError
      await down.close()
      await broken.close()
    }
  })

  test('an h3 error thrown by the id hook keeps its 4xx; bad heartbeatMs / retryMs are refused up front', async () => {
    const { createError } = await import('h3')
    const { startH3App } = await h3Fixture()
    const other = await startH3App({
      bus,
      id: () => {
        throw createError({ statusCode: 404, statusMessage: 'no such run' })
      },
    })
    try {
      const res = await http(`${other.url}/api/_events/flow/anything/stream`)
      assertError(res, 404, 'HTTP_404', 'id hook 404')
      assert.equal(res.json.message, 'no such run')
    } finally {
      await other.close()
    }
    for (const bad of [0, -5, 1.5, Infinity, '100']) {
      assert.throws(() => nitro.eventStreamHandler({ heartbeatMs: bad }), { code: 'INVALID_ARGUMENT' }, `heartbeatMs ${bad}`)
      assert.throws(() => nitro.eventStreamHandler({ retryMs: bad }), { code: 'INVALID_ARGUMENT' }, `retryMs ${bad}`)
    }
    assert.equal(typeof nitro.eventStreamHandler({ heartbeatMs: 250, retryMs: 500 }), 'function')
  })

  test('runs: newest first, with ?state=1 each run has its status', async () => {
    const name = `h3-runs-${Date.now()}`
    for (const id of ['r1', 'r2', 'r3']) {
      await bus.emit({ kind: 'flow.started', subject: `${name}-${id}`, data: { name } })
    }
    await bus.emit({ kind: 'flow.completed', subject: `${name}-r1`, data: { duration: 1 } })
    const res = await http(`${app.url}/api/_flows/${name}/runs?state=1&limit=2`)
    assert.equal(res.status, 200)
    assert.equal(res.json.name, name)
    assert.deepEqual(res.json.runs.map((r) => [r.id, r.status]), [
      [`${name}-r3`, 'running'],
      [`${name}-r2`, 'running'],
    ])
    const rest = await http(`${app.url}/api/_flows/${name}/runs?state=1&offset=2`)
    assert.deepEqual(rest.json.runs.map((r) => [r.id, r.status]), [[`${name}-r1`, 'completed']])
  })

  test('createStreamAdapter: legacy untouched unless enabled; the lean-events adapter speaks the module shape', async () => {
    const legacyAdapter = { legacy: true }
    assert.equal(nitro.createStreamAdapter({ legacy: () => legacyAdapter, enabled: false }), legacyAdapter)
    const adapter = nitro.createStreamAdapter({ legacy: () => legacyAdapter, enabled: true, bus })
    assert.notEqual(adapter, legacyAdapter)
    const run = `ad-${Date.now()}`
    const stream = `nq:flow:${run}`
    const seen = []
    const sub = await adapter.subscribe(stream, (e) => seen.push(e))
    const a = await adapter.append(stream, { kind: 'flow.started', data: { name: 'adapter-flow' } })
    // the module's older field names are understood too
    const b = await adapter.append(stream, { type: 'step.started', stepName: 'fetch', attempt: 1 })
    const c = await adapter.append(stream, { kind: 'log', step: 'fetch', data: { level: 'info', msg: 'x' } })
    assert.equal(a.subject, run)
    assert.equal(a.stream, stream)
    assert.equal(b.step, 'fetch')
    assert.deepEqual(b.meta, { attempt: 1 })
    await waitFor(() => seen.length === 3, 5000, 'live events to the adapter subscriber')
    assert.deepEqual(seen.map((e) => e.id), [a.id, b.id, c.id])
    assert.deepEqual((await adapter.read(stream)).map((e) => e.id), [a.id, b.id, c.id])
    assert.deepEqual((await adapter.read(stream, { fromId: a.id, limit: 1 })).map((e) => e.id), [b.id])
    assert.deepEqual((await adapter.read(stream, { direction: 'backward', limit: 2 })).map((e) => e.id), [c.id, b.id])
    assert.deepEqual((await adapter.read(stream, { direction: 'backward', fromId: c.id })).map((e) => e.id), [b.id, a.id])
    // a trigger stream by key, and a bare subject (a flow)
    assert.deepEqual((await adapter.read(run)).map((e) => e.id), [a.id, b.id, c.id])
    await sub.unsubscribe()
    await adapter.close()
    await waitFor(released, 5000, 'adapter subscriptions released')
  })

  test('createBusAdapter: publish stores and delivers; subscribeSubject / onKind return unsubscribe functions', async () => {
    const legacyBus = { legacy: true }
    assert.equal(nitro.createBusAdapter({ legacy: () => legacyBus, enabled: false }), legacyBus)
    const eventsBus = nitro.createBusAdapter({ legacy: () => legacyBus, enabled: true, bus })
    const subject = `busad-${Date.now()}`
    const bySubject = []
    const byKind = []
    const offSubject = eventsBus.subscribeSubject(subject, (e) => bySubject.push(e))
    const offKind = eventsBus.onKind('order.created', (e) => byKind.push(e))
    await waitFor(() => bus.subscriptionCount >= baseSubs + 2, 5000, 'subscriptions open')
    const rec = await eventsBus.publish({ kind: 'order.created', subject, data: { orderId: 7 } })
    await waitFor(() => bySubject.length === 1 && byKind.length === 1, 5000, 'delivered to both')
    assert.equal(bySubject[0].id, rec.id)
    assert.equal(byKind[0].id, rec.id)
    offSubject()
    offKind()
    await waitFor(released, 5000, 'released')
    const logged = []
    const consoleError = console.error
    console.error = (...args) => logged.push(args.join(' '))
    try {
      await assert.rejects(eventsBus.publish({ kind: 'Bad Kind', subject }), (err) => err.code === 'EVENT_INVALID')
    } finally {
      console.error = consoleError
    }
    assert.match(logged.join('\n'), /publish failed/, 'a fire-and-forget publish that fails is reported')
  })

  test('LEAN_EVENTS=1 swaps in the shared instance; useLeanEvents is one per process, closed by the plugin hook', async () => {
    const saved = { LEAN_EVENTS: process.env.LEAN_EVENTS, REDIS_URL: process.env.REDIS_URL, NQ: process.env.NUXT_QUEUE_REDIS_URL }
    delete process.env.REDIS_URL
    delete process.env.NUXT_QUEUE_REDIS_URL
    const hooks = {}
    try {
      process.env.LEAN_EVENTS = '0'
      const legacy = { legacy: true }
      assert.equal(nitro.createStreamAdapter({ legacy: () => legacy }), legacy)
      process.env.LEAN_EVENTS = '1'
      const adapter = nitro.createStreamAdapter({ legacy: () => legacy })
      assert.equal(adapter.leanEvents, true)
      nitro.leanEventsPlugin({ hooks: { hook: (name, fn) => (hooks[name] = fn) } })
      assert.equal(typeof hooks.close, 'function', 'the plugin registers a close hook')
      const one = await nitro.useLeanEvents()
      const two = await nitro.useLeanEvents()
      assert.equal(one, two)
      assert.equal(one.bus.embedded, true, 'no REDIS_URL: the embedded store')
      const rec = await adapter.append('nq:flow:shared-1', { kind: 'flow.started', data: { name: 'shared' } })
      assert.equal((await one.bus.read({ type: 'flow', id: 'shared-1' }))[0].id, rec.id)
      await hooks.close()
      await assert.rejects(one.bus.read({ type: 'flow', id: 'shared-1' }), (err) => err.code === 'BUS_CLOSED')
      const three = await nitro.useLeanEvents()
      assert.notEqual(three, one, 'a new instance after close')
    } finally {
      await nitro.closeLeanEvents()
      for (const [k, v] of Object.entries({ LEAN_EVENTS: saved.LEAN_EVENTS, REDIS_URL: saved.REDIS_URL, NUXT_QUEUE_REDIS_URL: saved.NQ })) {
        if (v === undefined) delete process.env[k]
        else process.env[k] = v
      }
    }
  })
})

// ?status= on the runs route: a scan of the run index, capped per request, on both stores
for (const backend of BACKENDS) {
  test(`runs ?status=: the newest runs with that status, at most maxScan runs read per request, nextOffset pages through all; a bad status → 400 [${backend.name}]`, async (t) => {
    const nitro = await nitroModule()
    const ctx = makeContext(backend, 'runs-status')
    t.after(() => ctx.cleanup())
    const bus = await ctx.connect()
    const { startH3App } = await h3Fixture()
    const app = await startH3App({ bus, maxScan: 4 })
    t.after(() => app.close())
    const name = 'status-flow'
    const run = (n) => `${name}-r${n}`
    for (let n = 1; n <= 7; n++) {
      await bus.emit({ kind: 'flow.started', subject: run(n), data: { name } })
      // distinct start times: the index order is r7 (newest) … r1
      await bus.indexRun(name, run(n), 1_700_000_000_000 + n * 1000)
    }
    for (const n of [1, 3, 6]) await bus.emit({ kind: 'flow.completed', subject: run(n), data: { duration: 1 } })
    await bus.emit({ kind: 'flow.failed', subject: run(4), data: { error: { message: 'no' } } })
    const get = async (q) => {
      const res = await http(`${app.url}/api/_flows/${name}/runs?${q}`)
      assert.equal(res.status, 200, `${q}: ${res.text}`)
      return { ids: res.json.runs.map((r) => r.id), statuses: res.json.runs.map((r) => r.status), scanned: res.json.scanned, nextOffset: res.json.nextOffset }
    }
    const ids = (...ns) => ns.map(run)

    // the cap (4 runs read) ends the first request with one match of two; the next one goes on
    assert.deepEqual(await get('status=completed&limit=2'), { ids: ids(6), statuses: ['completed'], scanned: 4, nextOffset: 4 })
    assert.deepEqual(await get('status=completed&limit=2&offset=4'), { ids: ids(3, 1), statuses: ['completed', 'completed'], scanned: 3, nextOffset: null })
    // limit reached before the cap: nextOffset is just past the last match
    assert.deepEqual(await get('status=completed&limit=1'), { ids: ids(6), statuses: ['completed'], scanned: 2, nextOffset: 2 })
    assert.deepEqual(await get('status=running&offset=2'), { ids: ids(5, 2), statuses: ['running', 'running'], scanned: 4, nextOffset: 6 })
    // a page with no match still says where to go on
    assert.deepEqual(await get('status=failed&offset=4'), { ids: [], statuses: [], scanned: 3, nextOffset: null })
    const failed = await get('status=failed')
    assert.deepEqual(failed, { ids: ids(4), statuses: ['failed'], scanned: 4, nextOffset: 4 })
    // following nextOffset reaches every match of the index
    const all = []
    for (let offset = 0; offset !== null; ) {
      const page = await get(`status=running&limit=1&offset=${offset}`)
      all.push(...page.ids)
      offset = page.nextOffset
    }
    assert.deepEqual(all, ids(7, 5, 2))

    // without ?status=: nextOffset from one run more than asked
    assert.deepEqual(await get('limit=3'), { ids: ids(7, 6, 5), statuses: [undefined, undefined, undefined], scanned: undefined, nextOffset: 3 })
    assert.deepEqual((await get('limit=3&offset=6&state=1')).nextOffset, null)
    assert.deepEqual((await get('limit=7')).nextOffset, null)

    for (const bad of ['done', 'Running', 'registered']) {
      const res = await http(`${app.url}/api/_flows/${name}/runs?status=${bad}`)
      assertError(res, 400, 'INVALID_ARGUMENT', `status=${bad}`)
      assert.match(res.json.message, /status must be one of running, completed, failed, cancelled/)
    }
    assert.deepEqual(nitro.FLOW_STATUSES, ['running', 'completed', 'failed', 'cancelled'])
    assert.equal(nitro.RUNS_MAX_SCAN, 1000)
    for (const maxScan of [0, -1, 1.5, '10']) assert.throws(() => nitro.runsHandler({ maxScan }), { code: 'INVALID_ARGUMENT' }, `maxScan ${maxScan}`)
  })
}

test('in the primary of a Node cluster the shared scheduler accepts step definitions (the app\'s plugins run there too) and refuses work', async () => {
  const child = startChild(process.execPath, [path.join(__dirname, 'fixtures', 'nitro-cluster-primary-steps.mjs')], { cwd: ROOT })
  const { code } = await child.exited
  assert.equal(code, 0, child.stderr)
  assert.deepEqual(JSON.parse(child.stdout.trim().split('\n').pop()), {
    defineReturns: true,
    ready: true,
    run: 'INVALID_ARGUMENT',
    fire: 'INVALID_ARGUMENT',
    cancel: 'INVALID_ARGUMENT',
  })
})

// ---------------------------------------------------------------------------------------------
// The example Nitro app, built and started like `npm run demo` does

/** Build examples/nitro (install its deps when missing): once per test run. */
let built
function buildExample() {
  built ??= new Promise((resolve, reject) => {
    const t0 = Date.now()
    const child = spawn(process.execPath, [path.join(ROOT, 'scripts', 'demo.js'), '--build-only'], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (out += d))
    child.on('exit', (code) => {
      const ms = Date.now() - t0
      if (code === 0) {
        const did = out.match(/^demo: (dependencies installed.*|built in.*|the example build is up to date)$/gm) || []
        console.log(`example app ready in ${seconds(ms)} (${did.join('; ')})`)
        resolve()
      } else reject(new Error(`scripts/demo.js --build-only failed (exit ${code}) after ${seconds(ms)}:\n${out}`))
    })
  })
  return built
}

async function startExampleServer(extraEnv = {}) {
  await buildExample()
  const port = await freePort()
  const env = {
    ...process.env,
    PORT: String(port),
    HOST: '127.0.0.1',
    EXAMPLE_WAIT_MS: '600',
    EXAMPLE_RETRY_MS: '150',
    LEAN_EVENTS_SSE_HEARTBEAT_MS: '250',
    ...extraEnv,
  }
  if (!('REDIS_URL' in extraEnv)) delete env.REDIS_URL
  delete env.NUXT_QUEUE_REDIS_URL
  const child = startChild(process.execPath, [path.join(EXAMPLE, '.output', 'server', 'index.mjs')], { cwd: EXAMPLE, env })
  const url = `http://127.0.0.1:${port}`
  await waitFor(
    async () => {
      if (child.done) throw new Error(`the example server exited: ${child.stdout}${child.stderr}`)
      try {
        return (await fetch(`${url}/api/_flows/example-flow/runs`)).status === 200
      } catch {
        return false
      }
    },
    20_000,
    () => `the example server to answer on ${url}: ${child.stdout}${child.stderr}`,
  )
  return { url, child }
}

async function stopServer(server) {
  if (!server || server.child.done) return
  await server.child.kill('SIGTERM')
}

async function startRun(url) {
  const res = await post(`${url}/api/_flows/example-flow/start`, JSON.stringify({ orderId: 'A-1' }))
  assert.equal(res.status, 200, res.text)
  assert.match(res.json.id, /^run-/)
  return res.json.id
}

async function flowState(url, id) {
  const res = await http(`${url}/api/_events/flow/${id}`)
  return res.status === 200 ? res.json.state : undefined
}

/** The id of the trigger a run waits for, once it waits. */
async function waitingTrigger(url, id) {
  return waitFor(async () => {
    const s = await flowState(url, id)
    // a step's await, or one of the flow function itself (the run's `waiting` list)
    const waiting = [...Object.values(s?.steps ?? {}).filter((step) => step.status === 'waiting'), ...(s?.waiting ?? [])]
    return waiting.find((w) => w.awaitData?.triggerId)?.awaitData.triggerId
  }, 15_000, `run ${id} waiting for its trigger`)
}

const EXPECTED_KINDS = [
  'flow.started',
  'step.started', // fetch_order, attempt 1
  'step.failed',
  'step.retry',
  'step.started', // attempt 2
  'step.completed',
  'step.await.time', // the flow's timer
  'step.resumed',
  'step.await.trigger', // the flow waits for approval
  'step.resumed',
  'step.started', // approval, recorded
  'step.completed',
  'flow.completed',
]

describe('example Nitro app (embedded store)', { timeout: 600_000 }, () => {
  let server

  before(async () => {
    server = await startExampleServer()
  })

  after(async () => {
    await stopServer(server)
  })

  test('start a run: POST and GET /api/_flows/example-flow/start → { id }; listed in runs', async () => {
    const a = await startRun(server.url)
    const b = await http(`${server.url}/api/_flows/example-flow/start`)
    assert.equal(b.status, 200)
    assert.match(b.json.id, /^run-/)
    const runs = await http(`${server.url}/api/_flows/example-flow/runs?state=1`)
    assert.equal(runs.status, 200)
    const listed = runs.json.runs.map((r) => r.id)
    assert.ok(listed.indexOf(b.json.id) >= 0 && listed.indexOf(a) > listed.indexOf(b.json.id), `newest first: ${listed}`)
    assert.equal(runs.json.runs[0].status, 'running')
    assertError(await http(`${server.url}/api/_flows/other-flow/start`), 404, undefined, 'unknown flow')
  })

  test('SSE: backfill then live; reconnect with Last-Event-ID misses and repeats nothing; trigger fired over HTTP', async () => {
    const { reduceFlowState } = await clientModule()
    const id = await startRun(server.url)
    const streamUrl = `${server.url}/api/_flows/example-flow/runs/${id}/stream`
    // connect once the first step is done, so that there is a backfill and the rest is live
    await waitFor(async () => (await flowState(server.url, id))?.steps?.fetch_order?.status === 'completed', 10_000, 'fetch_order completed')

    const first = await openSse(streamUrl)
    assert.equal(first.status, 200)
    assert.match(first.headers['content-type'], /^text\/event-stream/)
    assert.equal(first.headers['x-accel-buffering'], 'no')
    await waitFor(() => first.messages.some((m) => kindOf(m) === 'step.await.trigger'), 10_000, () => `await.trigger on the stream: ${kinds(first.messages)}`)
    assert.equal(kindOf(first.messages[0]), 'flow.started', 'the backfill starts at the beginning')
    const awaitTime = first.messages.find((m) => kindOf(m) === 'step.await.time')
    assert.ok(awaitTime, 'the timer wait was streamed')
    const triggerId = first.messages.find((m) => kindOf(m) === 'step.await.trigger').record.data.triggerId
    // disconnect, like a browser tab losing its network
    first.close()
    const lastId = first.messages[first.messages.length - 1].id

    // while nobody listens: the webhook fires the trigger (once), the run completes
    const fired = await post(`${server.url}/api/_triggers/${triggerId}`, JSON.stringify({ approved: true, by: 'test' }))
    assert.equal(fired.status, 200, fired.text)
    assert.deepEqual(fired.json, { id: triggerId, status: 'fired' })
    assertError(await post(`${server.url}/api/_triggers/${triggerId}`, JSON.stringify({ approved: false })), 409, 'TRIGGER_RESOLVED', 'second fire')
    await waitFor(async () => (await flowState(server.url, id))?.status === 'completed', 10_000, 'run completed')

    // the browser reconnects with Last-Event-ID
    const second = await openSse(streamUrl, { 'Last-Event-ID': lastId })
    await waitFor(() => second.messages.some((m) => kindOf(m) === 'flow.completed'), 10_000, () => `flow.completed after reconnect: ${kinds(second.messages)}`)
    // a fresh connection replays everything
    const full = await openSse(streamUrl)
    await waitFor(() => full.messages.some((m) => kindOf(m) === 'flow.completed'), 10_000, 'full replay')
    second.close()
    full.close()

    const all = ids(full.messages)
    assertIncreasingIds(all, 'full replay')
    assert.deepEqual([...ids(first.messages), ...ids(second.messages)], all, 'first + resumed = everything, no gap, no repeat')
    assert.ok(second.messages.length >= 4, 'the trigger, resume and completion came after the reconnect')
    assert.ok(isSubsequence(EXPECTED_KINDS, kinds(full.messages)), `unexpected sequence: ${kinds(full.messages)}`)
    for (const m of full.messages) assert.equal(m.record.id, m.id, 'id: is the stream id of the record')

    // the browser reducer over the streamed events gives the server's state
    const server_ = await flowState(server.url, id)
    assert.deepEqual(reduceFlowState(full.messages.map((m) => m.record)), server_)
    assert.equal(server_.steps.fetch_order.attempt, 2)
    assert.deepEqual(server_.steps.approval.result, { decision: { approved: true, by: 'test' } })

    // ?after= gives the same tail
    const tail = await openSse(`${streamUrl}?after=${all[2]}`)
    await waitFor(() => tail.messages.length === all.length - 3, 5000, 'tail via ?after=')
    tail.close()
    assert.deepEqual(ids(tail.messages), all.slice(3))
  })

  test('SSE heartbeat comments on an idle stream (250 ms in this test)', async () => {
    const sse = await openSse(`${server.url}/api/_events/flow/idle-${Date.now()}/stream`)
    try {
      assert.equal(sse.status, 200)
      await waitFor(() => sse.comments.includes('ping'), 5000, 'a heartbeat comment')
    } finally {
      sse.close()
    }
  })

  test('trigger endpoint: unknown → 404, bad body → 400, bad id → 400, too large → 413, GET → 405', async () => {
    const base = `${server.url}/api/_triggers`
    assertError(await post(`${base}/0123456789abcdef0123456789abcdef`, '{}'), 404, 'TRIGGER_NOT_FOUND', 'unknown')
    assertError(await post(`${base}/not-a-trigger`, '{}'), 404, 'TRIGGER_NOT_FOUND', 'unknown, any shape')
    assertError(await post(`${base}/0123456789abcdef0123456789abcdef`, 'not json'), 400, 'BODY_INVALID', 'bad body')
    assertError(await post(`${base}/bad%20id`, '{}'), 400, 'INVALID_ARGUMENT', 'bad id')
    assertError(await post(`${base}/0123456789abcdef0123456789abcdef`, 'x'.repeat(1024 * 1024 + 1)), 413, 'PAYLOAD_TOO_LARGE', 'over 1 MiB')
    const get = await http(`${base}/0123456789abcdef0123456789abcdef`)
    assert.equal(get.status, 405)
  })

  test('authorize hook of the example (flow and trigger streams only) → 403; bad type → 400', async () => {
    assertError(await http(`${server.url}/api/_events/secrets/abc`), 403, 'FORBIDDEN', 'state of another type')
    const sse = await openSse(`${server.url}/api/_events/secrets/abc/stream`)
    assert.equal(sse.status, 403)
    sse.close()
    assertError(await http(`${server.url}/api/_events/FLOW/abc`), 400, 'INVALID_ARGUMENT', 'bad type')
    assertError(await http(`${server.url}/api/_events/flow/nope-${Date.now()}`), 404, 'NOT_FOUND', 'no such run')
  })

  test('SIGTERM: the server ends open event streams, runs the close hook and exits', async () => {
    const sse = await openSse(`${server.url}/api/_events/flow/idle-shutdown/stream`)
    assert.equal(sse.status, 200)
    const t0 = Date.now()
    server.child.child.kill('SIGTERM')
    const { code, signal } = await Promise.race([
      server.child.exited,
      new Promise((_, reject) => setTimeout(() => reject(new Error('the server did not exit within 10 s of SIGTERM')), 10_000)),
    ])
    assert.ok(sse.ended, 'the event stream was ended')
    assert.ok(code === 0 || signal === 'SIGTERM', `exit code ${code}, signal ${signal}`)
    console.log(`example server exited ${Date.now() - t0} ms after SIGTERM with an event stream open`)
  })
})

describe('example Nitro app on Redis', { timeout: 120_000 }, () => {
  test('a run completes on Redis too (REDIS_URL switches the store)', async (t) => {
    const url = process.env.REDIS_URL || 'redis://127.0.0.1:6379'
    try {
      const probe = await EventBus.connect({ url, timeoutMs: 1000, prefix: 'nitro-probe' })
      await probe.read({ type: 'flow', id: 'probe' })
      await probe.close()
    } catch (err) {
      t.skip(`no Redis at ${url}: ${err.message}`)
      return
    }
    const prefix = `nitro-e2e-${process.pid}-${Date.now()}`
    const server = await startExampleServer({ REDIS_URL: url, LEAN_EVENTS_PREFIX: prefix })
    try {
      const id = await startRun(server.url)
      const triggerId = await waitingTrigger(server.url, id)
      const fired = await post(`${server.url}/api/_triggers/${triggerId}`, '{"ok":true}')
      assert.equal(fired.status, 200, fired.text)
      await waitFor(async () => (await flowState(server.url, id))?.status === 'completed', 10_000, 'completed on Redis')
    } finally {
      await stopServer(server)
      // on a cluster url too (redis-cli -u knows no redis+cluster://)
      await deleteRedisPrefix(prefix)
    }
  })

  test('on Redis a run survives Ctrl-C and a restart, and completes when the trigger is fired on the new process', async (t) => {
    const url = process.env.REDIS_URL || 'redis://127.0.0.1:6379'
    try {
      const probe = await EventBus.connect({ url, timeoutMs: 1000, prefix: 'nitro-probe' })
      await probe.read({ type: 'flow', id: 'probe' })
      await probe.close()
    } catch (err) {
      t.skip(`no Redis at ${url}: ${err.message}`)
      return
    }
    const prefix = `nitro-restart-${process.pid}-${Date.now()}`
    const env = { REDIS_URL: url, LEAN_EVENTS_PREFIX: prefix }
    let server = await startExampleServer(env)
    try {
      const id = await startRun(server.url)
      await waitingTrigger(server.url, id)
      server.child.child.kill('SIGINT')
      await server.child.exited
      const stopped = await flowState((server = await startExampleServer(env)).url, id)
      assert.equal(stopped.status, 'running', 'Ctrl-C is not a failure of the run')
      // the new process takes the run over once the old lease is gone, and replays it up to
      // the trigger it waits for: the same trigger
      const triggerId = await waitingTrigger(server.url, id)
      const fired = await post(`${server.url}/api/_triggers/${triggerId}`, '{"ok":"after restart"}')
      assert.equal(fired.status, 200, fired.text)
      const done = await waitFor(async () => {
        const s = await flowState(server.url, id)
        return s?.status === 'completed' && s
      }, 20_000, 'completed after the restart')
      assert.deepEqual(done.steps.approval.result, { decision: { ok: 'after restart' } })
      assert.equal(done.steps.fetch_order.attempt, 2, 'the recorded fetch_order was not run again')
    } finally {
      await stopServer(server)
      try {
        const keys = execFileSync('redis-cli', ['-u', url, '--scan', '--pattern', `${prefix}:*`], { encoding: 'utf8' }).split('\n').filter(Boolean)
        if (keys.length) execFileSync('redis-cli', ['-u', url, 'UNLINK', ...keys])
      } catch {
        // cleanup is best effort
      }
    }
  })
})

// ---------------------------------------------------------------------------------------------
// The run page in a real browser

describe('run page in chromium', { timeout: 180_000 }, () => {
  test('start a run from /, click the trigger button on /runs/:id, see it complete', async (t) => {
    let chromium
    try {
      ;({ chromium } = require('playwright-core'))
    } catch (err) {
      t.skip(`playwright-core is not installed: ${err.message}`)
      return
    }
    if (!fs.existsSync(CHROMIUM)) {
      console.log(`browser test skipped: ${CHROMIUM} is missing (apt-get install chromium)`)
      t.skip(`${CHROMIUM} is missing`)
      return
    }
    const server = await startExampleServer()
    let browser
    try {
      try {
        browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
      } catch (err) {
        console.log(`browser test skipped: chromium cannot be launched: ${err.message.split('\n')[0]}`)
        t.skip(`chromium cannot be launched: ${err.message.split('\n')[0]}`)
        return
      }
      const page = await browser.newPage({ viewport: { width: 1100, height: 760 } })
      const problems = []
      page.on('pageerror', (err) => problems.push(`page error: ${err.message}`))
      page.on('console', (msg) => {
        if (msg.type() === 'error') problems.push(`console: ${msg.text()}`)
      })
      await page.goto(`${server.url}/`)
      await page.click('[data-testid=start]')
      await page.waitForURL(/\/runs\/run-/, { timeout: 10_000 })
      const id = decodeURIComponent(new URL(page.url()).pathname.split('/').pop())
      await page.waitForSelector('[data-testid=fire-trigger]', { timeout: 15_000 })
      // the page shows what the server knows
      assert.equal(await page.getAttribute('tr[data-step=fetch_order]', 'data-status'), 'completed')
      assert.match(await page.textContent('tr[data-step=fetch_order]'), /2\s*\(1 retry\)/)
      // the flow itself waits for the trigger (its awaits are listed under the flow's name)
      assert.equal(await page.getAttribute('tr[data-step=example-flow]', 'data-status'), 'waiting')
      assert.match(await page.textContent('#logs'), /waiting for approval/)
      fs.mkdirSync(RESULTS, { recursive: true })
      await page.screenshot({ path: path.join(RESULTS, 'nitro-run-waiting.png'), fullPage: true })
      await page.click('[data-testid=fire-trigger]')
      await page.waitForSelector('[data-testid=flow-status][data-status=completed]', { timeout: 15_000 })
      assert.equal(await page.getAttribute('tr[data-step=approval]', 'data-status'), 'completed')
      assert.match(await page.textContent('#message'), /trigger fired \(200\)/)
      await page.screenshot({ path: path.join(RESULTS, 'nitro-run-completed.png'), fullPage: true })
      assert.equal((await flowState(server.url, id)).status, 'completed')
      assert.deepEqual(problems, [])
    } finally {
      if (browser) await browser.close()
      await stopServer(server)
    }
  })
})
