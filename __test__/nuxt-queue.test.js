'use strict'
// lean-events/nitro as the seed-era Nitro module (nuxt-queue 0.1.x) calls it: its flow wiring's
// appends and run index, its event manager's publish / onType / subscribeRunId, its UI's event
// stream (unnamed `data:` frames, reconnect with ?fromId=) and its state and list routes.
// Streams are named as the module names them (`<prefix>:flow:<runId>`, `<prefix>:flows:<flow>`)
// with a prefix of the test's own.

const assert = require('node:assert/strict')
const { bothBackends, uniqueId, waitFor, expectCode } = require('./helpers')
const { openSse } = require('./fixtures/nitro-sse')

const nitroModule = () => import('lean-events/nitro')
const appFixture = () => import('./fixtures/nitro-h3-app.mjs')

const msOf = (id) => Number(id.split('-')[0])
const MODULE_FIELDS = ['id', 'ts', 'type', 'runId', 'flowName', 'data', 'stepName', 'stepId', 'attempt']

/** What the module reads of a record: its own fields only. */
function moduleView(rec) {
  const out = {}
  for (const k of MODULE_FIELDS) if (rec[k] !== undefined) out[k] = rec[k]
  return out
}

/** A record without the adapter's `stream` (what the routes and the event stream send). */
function withoutStream(rec) {
  const { stream: _stream, ...rest } = rec
  return rest
}

/**
 * One run as the module's runner and flow wiring write it (runner/node.ts, flowWiring.ts at
 * b1af2d0): the wiring appends `{ type, runId, flowName, data }` plus the step fields it has.
 */
function moduleRun(runId, flowName) {
  const stepName = 'Fetch Data'
  const step = { stepName, stepId: `${runId}__${stepName}__attempt-1`, attempt: 1 }
  return [
    { type: 'flow.start', runId, flowName, data: { input: { orderId: 42 } } },
    { type: 'step.started', runId, flowName, data: { jobId: '1', name: stepName, queue: 'orders' }, ...step },
    { type: 'log', runId, flowName, data: { level: 'info', message: 'fetching' }, ...step },
    { type: 'emit', runId, flowName, data: { name: 'Order.Created', payload: { orderId: 42 } }, ...step },
    { type: 'Order.Created', runId, flowName, data: { orderId: 42 } },
    { type: 'step.completed', runId, flowName, data: { stepName, queue: 'orders', result: { ok: true } }, ...step },
    { type: 'flow.completed', runId, flowName, data: { result: { ok: true } } },
  ]
}

/** The module-side fields `append` must hand back for `input`, with the store's id. */
function expectedRecord(input, id) {
  return { id, ts: new Date(msOf(id)).toISOString(), ...input }
}

bothBackends("stream adapter: the flow wiring's appends and run index read back as the module reads them", async (ctx) => {
  const { createStreamAdapter } = await nitroModule()
  const bus = await ctx.connect()
  const adapter = createStreamAdapter({ enabled: true, bus, prefix: ctx.prefix })
  const runId = uniqueId('run')
  const flowName = uniqueId('order-flow')
  const stream = `${ctx.prefix}:flow:${runId}`
  const indexKey = `${ctx.prefix}:flows:${flowName}`
  const live = []
  const sub = await adapter.subscribe(stream, (e) => live.push(e))

  const recs = []
  for (const input of moduleRun(runId, flowName)) {
    const rec = await adapter.append(stream, input)
    recs.push(rec)
    assert.deepEqual(moduleView(rec), expectedRecord(input, rec.id), `append(${input.type}) as the module reads it`)
    // the envelope is there beside it
    assert.equal(rec.kind, input.type)
    assert.equal(rec.subject, runId)
    assert.equal(rec.step, input.stepName)
    assert.equal(rec.stream, stream)
    if (input.type === 'flow.start') {
      // indexed by the append itself; then the wiring's own indexAdd, with the record's time
      assert.deepEqual(await adapter.indexRead(indexKey), [{ id: runId, score: msOf(rec.id) }])
      await adapter.indexAdd(indexKey, runId, new Date(rec.ts).getTime())
      assert.deepEqual(await adapter.indexRead(indexKey), [{ id: runId, score: msOf(rec.id) }], 'one entry per run')
    }
  }
  const rec = (i) => recs[i]
  assert.equal(rec(1).stepName, 'Fetch Data', 'a step name with a space')
  assert.equal(rec(4).type, 'Order.Created', 'a type with capitals')

  // reads: fromId exclusive, limit, backward from fromId (exclusive), default 100
  assert.deepEqual(await adapter.read(stream), recs)
  assert.deepEqual(await adapter.read(stream, { fromId: rec(2).id, limit: 2 }), [rec(3), rec(4)])
  assert.deepEqual(await adapter.read(stream, { direction: 'backward', fromId: rec(2).id }), [rec(1), rec(0)])
  assert.deepEqual(await adapter.read(stream, { direction: 'backward', limit: 2 }), [rec(6), rec(5)])
  assert.deepEqual(await adapter.read(stream, { fromId: rec(6).id }), [])
  // subscribe is live only: each appended event once, in order, in the module's shape
  await waitFor(() => live.length >= recs.length, 5000, 'live events')
  assert.deepEqual(live, recs)
  await sub.unsubscribe()

  // the index: ZADD semantics, newest first, default limit 50, offset
  const base = msOf(rec(0).id)
  for (let i = 1; i <= 51; i++) await adapter.indexAdd(indexKey, `other-${i}`, base - i * 1000)
  await adapter.indexAdd(indexKey, 'moved', base + 5000.9)
  const page = await adapter.indexRead(indexKey)
  assert.equal(page.length, 50, 'default limit 50')
  assert.deepEqual(page.slice(0, 3), [
    { id: 'moved', score: base + 5000 },
    { id: runId, score: base },
    { id: 'other-1', score: base - 1000 },
  ])
  assert.deepEqual(await adapter.indexRead(indexKey, { offset: 50, limit: 10 }), [
    { id: 'other-49', score: base - 49_000 },
    { id: 'other-50', score: base - 50_000 },
    { id: 'other-51', score: base - 51_000 },
  ])
  await adapter.indexAdd(indexKey, 'moved', base - 100_000)
  assert.deepEqual((await adapter.indexRead(indexKey, { offset: 52 })).map((e) => e.id), ['moved'], 'an existing run is moved')
  // the same index is lean-events' run list
  assert.equal((await bus.listRuns(flowName, { limit: 1 }))[0].id, runId)
  await expectCode(adapter.indexAdd(`${ctx.prefix}:other:${flowName}`, runId, 1), 'INVALID_ARGUMENT', 'a key that is no run index')
  await expectCode(adapter.indexRead(`${ctx.prefix}:flows:`), 'INVALID_ARGUMENT', 'a run index without a flow name')
  await expectCode(adapter.indexAdd(indexKey, runId, -1), 'INVALID_ARGUMENT', 'a negative score')
  await expectCode(adapter.indexAdd(indexKey, runId, '1'), 'INVALID_ARGUMENT', 'a score that is not a number')
  await adapter.close()
})

bothBackends('stream adapter: empty optional fields are left out, flow.started still takes data.name, ids that become keys keep their rules', async (ctx) => {
  const { createStreamAdapter } = await nitroModule()
  const bus = await ctx.connect()
  const adapter = createStreamAdapter({ enabled: true, bus, prefix: ctx.prefix })
  const runId = uniqueId('run')
  const stream = `${ctx.prefix}:flow:${runId}`
  // the module's memory adapter keeps what it is given; its Redis adapter drops empty step fields
  const bare = await adapter.append(stream, { type: 'step.started', runId, flowName: 'f', stepName: '', stepId: '', data: undefined })
  assert.deepEqual(moduleView(bare), { id: bare.id, ts: bare.ts, type: 'step.started', runId, flowName: 'f' })
  // no flowName: '' as the module's Redis adapter reads it
  const nameless = await adapter.append(stream, { type: 'log', runId, data: { level: 'info', message: 'x' } })
  assert.equal(nameless.flowName, '')
  // this envelope's own run start: data.name indexes the run and is its flowName
  const flowName = uniqueId('v03-flow')
  const started = await adapter.append(`${ctx.prefix}:flow:${runId}-b`, { kind: 'flow.started', data: { name: flowName } })
  assert.equal(started.flowName, flowName)
  assert.deepEqual(await adapter.indexRead(`${ctx.prefix}:flows:${flowName}`), [{ id: `${runId}-b`, score: msOf(started.id) }])
  await expectCode(adapter.append(`${ctx.prefix}:flow:has space`, { type: 'log', runId: 'has space' }), 'EVENT_INVALID', 'a run id with a space')
  await expectCode(adapter.append(stream, { type: 'flow.start', runId, flowName: 'has space' }), 'EVENT_INVALID', 'a flow name with a space')
  await expectCode(adapter.append(stream, { type: 'Order Created', runId }), 'EVENT_INVALID', 'a type with a space')
  await adapter.close()
})

bothBackends("bus adapter: publish hands the event to this process's onType / subscribeRunId handlers at once, stores it when it has a run id", async (ctx) => {
  const { createBusAdapter } = await nitroModule()
  const bus = await ctx.connect()
  const events = createBusAdapter({ enabled: true, bus, prefix: ctx.prefix })
  const runId = uniqueId('run')
  const flowName = uniqueId('flow')
  const byType = []
  const byRun = []
  const offType = events.onType('flow.start', (e) => byType.push(e))
  const offRun = events.subscribeRunId(runId, (e) => byRun.push(e))

  // the module's useFlowEngine().startFlow publishes this
  const start = { type: 'flow.start', runId, flowName, data: { input: { x: 1 } } }
  const pending = events.publish(start)
  assert.equal(byType[0], start, 'onType got the published object before publish returned')
  assert.equal(byRun[0], start, 'subscribeRunId too')
  const stored = await pending
  assert.deepEqual(moduleView(stored), expectedRecord(start, stored.id))
  assert.deepEqual((await bus.read({ type: 'flow', id: runId })).map((r) => r.id), [stored.id])
  assert.deepEqual((await bus.listRuns(flowName)).map((r) => r.id), [runId], 'flow.start indexed the run')

  // the module's BullMQ provider publishes job events with runId '': delivered, not stored
  const jobs = []
  const offJobs = events.onType('job.completed', (e) => jobs.push(e))
  const storedJobs = []
  const jobKind = await bus.onKind('job.completed', (e) => storedJobs.push(e))
  const job = { type: 'job.completed', runId: '', data: { jobId: '7', queue: 'orders' } }
  assert.equal(await events.publish(job), null)
  assert.deepEqual(jobs, [job])
  // a job event with a run id is stored; the store-backed onKind sees it first, so the one
  // without a run id was never stored or published
  const sentinelRun = uniqueId('sentinel')
  const sentinel = await events.publish({ type: 'job.completed', runId: sentinelRun, data: { sentinel: true } })
  await waitFor(() => storedJobs.length >= 1, 5000, 'the stored job event')
  assert.equal(storedJobs[0].id, sentinel.id)
  assert.equal(jobs.length, 2)

  // a handler that throws (or rejects) is reported; the others still run, the event is stored
  const logged = []
  const consoleError = console.error
  console.error = (...args) => logged.push(args.join(' '))
  const order = []
  let rec
  try {
    const offs = [
      events.onType('step.started', () => {
        order.push('throws')
        throw new Error('handler bug')
      }),
      events.onType('step.started', async () => {
        order.push('rejects')
        throw new Error('async handler bug')
      }),
      events.onType('step.started', () => order.push('ok')),
    ]
    rec = await events.publish({ type: 'step.started', runId, flowName, stepName: 'Fetch Data', stepId: 's1', attempt: 1, data: {} })
    await waitFor(() => logged.length >= 2, 5000, 'both failures reported')
    for (const off of offs) off()
  } finally {
    console.error = consoleError
  }
  assert.deepEqual(order, ['throws', 'rejects', 'ok'], 'handlers in registration order, each one called')
  assert.match(logged.join('\n'), /handler bug/)
  assert.equal(rec.stepName, 'Fetch Data')

  // an event published from inside a handler is stored after the one being delivered
  const offNested = events.onType('emit', (e) => {
    if (e.data.name === 'outer') events.publish({ type: 'emit', runId, flowName, data: { name: 'inner' } })
  })
  await events.publishBus({ type: 'emit', runId, flowName, data: { name: 'outer' } })
  await waitFor(async () => (await bus.read({ type: 'flow', id: runId })).length === 4, 5000, 'the nested event stored')
  const names = (await bus.read({ type: 'flow', id: runId })).filter((r) => r.kind === 'emit').map((r) => r.data.name)
  assert.deepEqual(names, ['outer', 'inner'])
  offNested()

  // one table of handlers per bus and process: another adapter over the same bus reaches them
  const other = createBusAdapter({ enabled: true, bus, prefix: ctx.prefix })
  const viaOther = other.publish({ type: 'flow.start', runId: uniqueId('run'), flowName })
  assert.equal(byType.length, 2)
  await viaOther
  // unsubscribed: no more deliveries
  offType()
  offRun()
  offJobs()
  await events.publish({ type: 'flow.start', runId, flowName, data: {} })
  assert.equal(byType.length, 2)
  assert.equal(byRun.filter((e) => e.type === 'flow.start').length, 1)
  assert.equal(jobs.length, 2)
  await jobKind.unsubscribe()
  assert.throws(() => events.onType('x', 'not a function'), (err) => err.code === 'INVALID_ARGUMENT')
  assert.throws(() => events.subscribeRunId(42, () => {}), (err) => err.code === 'INVALID_ARGUMENT')
})

/**
 * The module's flow wiring (streamStore/wiring/flowWiring.ts at b1af2d0 and a60a2a3), over the
 * given bus and stream adapter: it hears ten types on the bus, skips what has an id and ts
 * already or lacks a run id or flow name, appends the rest to the run's stream and indexes
 * the run on `flow.start`.
 */
function startModuleWiring(events, adapter, prefix, appended) {
  const types = ['flow.start', 'flow.completed', 'flow.failed', 'step.started', 'step.completed', 'step.failed', 'step.retry', 'log', 'emit', 'state']
  const offs = types.map((type) =>
    events.onType(type, async (e) => {
      if (e.id && e.ts) return
      if (!e.runId || !e.flowName) return
      const eventData = { type: e.type, runId: e.runId, flowName: e.flowName, data: e.data }
      if (e.stepName) eventData.stepName = e.stepName
      if (e.stepId) eventData.stepId = e.stepId
      if (e.attempt) eventData.attempt = e.attempt
      const rec = await adapter.append(`${prefix}:flow:${e.runId}`, eventData)
      appended.push(rec)
      if (e.type === 'flow.start') await adapter.indexAdd(`${prefix}:flows:${e.flowName}`, e.runId, new Date(rec.ts).getTime())
    }),
  )
  return () => offs.forEach((off) => off())
}

bothBackends("the module's flow wiring on lean-events' bus and stream adapter: every published event is stored once", async (ctx) => {
  const { createBusAdapter, createStreamAdapter } = await nitroModule()
  const bus = await ctx.connect()
  const events = createBusAdapter({ enabled: true, bus, prefix: ctx.prefix })
  const adapter = createStreamAdapter({ enabled: true, bus, prefix: ctx.prefix })
  const appended = []
  const stop = startModuleWiring(events, adapter, ctx.prefix, appended)
  const runId = uniqueId('run')
  const flowName = uniqueId('flow')
  const run = moduleRun(runId, flowName)
  // the module publishes through its event manager (publishBus), one event after another
  const published = []
  for (const input of run) published.push(await events.publishBus(input))
  // the wiring appends 6 of the 7 (it does not persist a user type such as Order.Created)
  await waitFor(() => appended.length === run.length - 1, 5000, 'the wiring appended')
  const stored = await bus.read({ type: 'flow', id: runId })
  assert.deepEqual(stored.map((r) => r.id), published.map((r) => r.id), 'each event stored once, by publish')
  assert.deepEqual(
    appended.map((r) => r.id),
    published.filter((r) => r.type !== 'Order.Created').map((r) => r.id),
    "the wiring's appends answered with the records publish stored",
  )
  assert.deepEqual(await adapter.indexRead(`${ctx.prefix}:flows:${flowName}`), [{ id: runId, score: msOf(published[0].id) }])
  // an append of another event from inside a handler is stored as usual
  const offExtra = events.onType('log', (e) => {
    if (e.data.message === 'outer') adapter.append(`${ctx.prefix}:flow:${runId}`, { type: 'log', runId, flowName, data: { message: 'extra' } })
  })
  await events.publish({ type: 'log', runId, flowName, data: { message: 'outer' } })
  await waitFor(async () => (await bus.read({ type: 'flow', id: runId })).length === run.length + 2, 5000, 'outer and extra, once each')
  const logs = (await bus.read({ type: 'flow', id: runId })).filter((r) => r.kind === 'log').map((r) => r.data.message)
  assert.deepEqual(logs, ['fetching', 'outer', 'extra'])
  offExtra()
  stop()
  await adapter.close()
})

bothBackends('bus adapter: the v0.3 shapes still work, and their records carry the module fields too', async (ctx) => {
  const { createBusAdapter } = await nitroModule()
  const bus = await ctx.connect()
  const events = createBusAdapter({ enabled: true, bus, prefix: ctx.prefix })
  const subject = uniqueId('run')
  const bySubject = []
  const byKind = []
  const offSubject = events.subscribeSubject(subject, (e) => bySubject.push(e))
  const offKind = events.onKind('Order.Created', (e) => byKind.push(e))
  await waitFor(() => bus.subscriptionCount >= 2, 5000, 'subscriptions open')
  // The count includes subscriptions whose channel the server has not confirmed yet; onKind is
  // live-only, so wait for the confirmation: a second subscription to the kind's channel
  // resolves once the channel is subscribed (the subject subscription catches up by itself).
  const probe = await bus.onKind('Order.Created', () => {})
  const rec = await events.publish({ kind: 'Order.Created', subject, step: 'Fetch Data', meta: { flowName: 'shop', attempt: 2 } })
  await waitFor(() => bySubject.length === 1 && byKind.length === 1, 5000, 'delivered to both')
  for (const got of [rec, bySubject[0], byKind[0]]) {
    assert.equal(got.kind, 'Order.Created')
    assert.equal(got.type, 'Order.Created')
    assert.equal(got.subject, subject)
    assert.equal(got.runId, subject)
    assert.equal(got.flowName, 'shop')
    assert.equal(got.stepName, 'Fetch Data')
    assert.equal(got.attempt, 2)
  }
  assert.equal(bySubject[0].id, rec.id)
  offSubject()
  offKind()
  await probe.unsubscribe()
  await waitFor(() => bus.subscriptionCount === 0, 5000, 'released')
})

bothBackends("SSE in the module's format: unnamed frames {v:1,event,record}, backfill then live, resumed by ?fromId= without duplicates", async (ctx) => {
  const { createStreamAdapter } = await nitroModule()
  const { startNuxtQueueApp } = await appFixture()
  const bus = await ctx.connect()
  const adapter = createStreamAdapter({ enabled: true, bus, prefix: ctx.prefix })
  const app = await startNuxtQueueApp({ bus, heartbeatMs: 60_000 })
  const runId = uniqueId('run')
  const stream = `${ctx.prefix}:flow:${runId}`
  const url = `${app.url}/api/_events/flow/${encodeURIComponent(runId)}/stream`
  const run = moduleRun(runId, uniqueId('flow'))
  const recs = []
  try {
    for (const input of run.slice(0, 3)) recs.push(await adapter.append(stream, input))
    const first = await openSse(url)
    assert.equal(first.status, 200)
    assert.match(first.headers['content-type'], /^text\/event-stream/)
    await waitFor(() => first.messages.length >= 3, 5000, 'backfill')
    recs.push(await adapter.append(stream, run[3]))
    await waitFor(() => first.messages.length >= 4, 5000, 'a live event')
    for (const [i, m] of first.messages.entries()) {
      // no `event:` line: the module's UI receives it with EventSource.onmessage
      assert.equal(m.event, 'message', 'an unnamed message')
      assert.deepEqual(Object.keys(m.record), ['v', 'event', 'record'])
      assert.equal(m.record.v, 1)
      assert.equal(m.record.event, run[i].type)
      assert.deepEqual(m.record.record, withoutStream(recs[i]))
      assert.equal(m.id, recs[i].id)
    }
    first.close()

    // the module's client reconnects with ?fromId=<last record.id>: the rest, once each
    recs.push(await adapter.append(stream, run[4]))
    const lastSeen = first.messages[first.messages.length - 1].record.record.id
    const resumed = await openSse(`${url}?fromId=${encodeURIComponent(lastSeen)}`)
    await waitFor(() => resumed.messages.length >= 1, 5000, 'the missed event')
    recs.push(await adapter.append(stream, run[5]))
    await waitFor(() => resumed.messages.length >= 2, 5000, 'live after resuming')
    assert.deepEqual(
      resumed.messages.map((m) => m.record.record.id),
      [recs[4].id, recs[5].id],
    )
    // a browser's own reconnect sends Last-Event-ID, which wins over a stale ?fromId=
    const byHeader = await openSse(`${url}?fromId=${encodeURIComponent(recs[0].id)}`, { 'Last-Event-ID': recs[4].id })
    await waitFor(() => byHeader.messages.length >= 1, 5000, 'resumed by header')
    assert.deepEqual(byHeader.messages.map((m) => m.id), [recs[5].id])
    resumed.close()
    byHeader.close()
    await waitFor(() => bus.subscriptionCount === 0, 5000, 'subscriptions released when the clients left')

    const bad = await openSse(`${url}?fromId=not-an-id`)
    await waitFor(() => bad.ended, 5000, 'the 400 response')
    assert.equal(bad.status, 400)
    assert.equal(JSON.parse(bad.body).code, 'INVALID_ARGUMENT')
  } finally {
    await app.close()
    await adapter.close()
  }
})

bothBackends("routes in the module's shapes: /:type/:id → {type,id,eventCount,events}; /:type/list → {type,name,count,items}", async (ctx) => {
  const nitro = await nitroModule()
  const { startNuxtQueueApp } = await appFixture()
  const bus = await ctx.connect()
  const adapter = nitro.createStreamAdapter({ enabled: true, bus, prefix: ctx.prefix })
  const app = await startNuxtQueueApp({ bus })
  const getJson = async (path) => {
    const res = await fetch(`${app.url}${path}`)
    return { status: res.status, json: await res.json() }
  }
  try {
    const flowName = uniqueId('flow')
    const runs = [uniqueId('run-a'), uniqueId('run-b')]
    const starts = []
    for (const runId of runs) {
      // distinct start milliseconds, so "newest first" is well defined
      if (starts.length) await waitFor(() => Date.now() > msOf(starts[starts.length - 1].id), 1000, 'the next millisecond')
      starts.push(await adapter.append(`${ctx.prefix}:flow:${runId}`, moduleRun(runId, flowName)[0]))
    }
    const runId = runs[1]
    const recs = [starts[1]]
    for (const input of moduleRun(runId, flowName).slice(1)) recs.push(await adapter.append(`${ctx.prefix}:flow:${runId}`, input))

    const state = await getJson(`/api/_events/flow/${runId}`)
    assert.equal(state.status, 200)
    assert.deepEqual(state.json, { type: 'flow', id: runId, eventCount: recs.length, events: recs.map(withoutStream) })
    // the module's UI pages on with ?fromId=<last id>&limit=
    const next = await getJson(`/api/_events/flow/${runId}?fromId=${recs[1].id}&limit=2`)
    assert.deepEqual(next.json.events.map((e) => e.id), [recs[2].id, recs[3].id])
    assert.equal(next.json.eventCount, 2)
    const empty = await getJson(`/api/_events/flow/${uniqueId('nothing')}`)
    assert.equal(empty.status, 200)
    assert.equal(empty.json.eventCount, 0)
    assert.deepEqual(empty.json.events, [])
    assert.equal((await getJson(`/api/_events/flow/${runId}?fromId=bad`)).status, 400)

    const list = await getJson(`/api/_events/flow/list?name=${flowName}`)
    assert.equal(list.status, 200)
    const item = (rec) => ({ id: rec.runId, timestamp: msOf(rec.id), createdAt: rec.ts })
    assert.deepEqual(list.json, { type: 'flow', name: flowName, count: 2, items: [item(starts[1]), item(starts[0])] })
    assert.deepEqual((await getJson(`/api/_events/flow/list?name=${flowName}&limit=1`)).json.items, [item(starts[1])])
    assert.equal((await getJson(`/api/_events/flow/list?name=${flowName}&limit=abc`)).json.count, 2, 'limit not a number → the default')
    assert.deepEqual((await getJson('/api/_events/trigger/list')).json, { type: 'trigger', count: 0, items: [] })
    assert.deepEqual((await getJson('/api/_events/flow/list')).json, { type: 'flow', count: 0, items: [] })

    for (const make of [nitro.stateHandler, nitro.runsHandler, nitro.eventStreamHandler]) {
      assert.throws(() => make({ format: 'nuxt-queue-0.2' }), (err) => err.code === 'INVALID_ARGUMENT')
    }
  } finally {
    await app.close()
    await adapter.close()
  }
})
