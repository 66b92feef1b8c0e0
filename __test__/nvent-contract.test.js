'use strict'
// lean-events/nvent/adapters against nvent 0.5's adapter contract (NVENT-ADAPTERS.md §2 and §4),
// on the embedded store and on Redis. On a Redis Cluster the store refuses with UNSUPPORTED.

const test = require('node:test')
const assert = require('node:assert/strict')
const { bothBackends, CLUSTER, waitFor, expectCode } = require('./helpers.js')

const adapters = import('../nvent/adapters.js')

/** A store and a stream adapter sharing one bus of the test's backend and prefix. */
async function open(ctx, extra = {}) {
  const { createStoreAdapter, createStreamAdapter } = await adapters
  const bus = await ctx.connect()
  const store = createStoreAdapter({ bus, prefix: ctx.prefix, ...extra })
  const stream = createStreamAdapter({ bus, prefix: ctx.prefix })
  return { bus, store, stream, p: ctx.prefix }
}

/** On a cluster: the keyspace calls are refused with UNSUPPORTED (true: nothing more to test). */
async function refusedOnCluster(ctx, store) {
  if (!(ctx.redis && CLUSTER)) return false
  await expectCode(store.kv.get(`${ctx.prefix}:x`), 'UNSUPPORTED', 'kv.get on a cluster')
  return true
}

bothBackends(
  'stream: append returns a truthy id and ts in ms, keeps extra fields, and reads back every field as written',
  async (ctx) => {
    const { store, p } = await open(ctx)
    if (await refusedOnCluster(ctx, store)) return
    assert.equal(store.indexAdd, undefined, 'no 0.4-era indexAdd (the scheduler would lock through it)')
    const subject = `${p}:flow:run:r1`
    const before = Date.now()
    const rec = await store.stream.append(subject, {
      type: 'emit',
      runId: 'r1',
      flowName: 'f',
      stepName: '42',
      stepId: 'true',
      attempt: 2,
      data: { name: 'a.b', payload: [1, null, { z: '' }], empty: {} },
      triggerName: 'manual',
    })
    assert.ok(rec.id && typeof rec.id === 'string', 'a truthy id')
    assert.ok(typeof rec.ts === 'number' && rec.ts >= before && rec.ts <= Date.now(), 'ts in ms')
    assert.equal(rec.triggerName, 'manual', 'extra input fields are kept')
    const [read] = await store.stream.read(subject)
    assert.deepEqual(read, rec, 'read gives back the record append returned')
    assert.equal(read.stepName, '42', 'a numeric-looking string stays a string')
    assert.equal(read.stepId, 'true')
    assert.equal(read.attempt, 2)
    assert.equal(await store.stream.delete(subject), true)
    assert.equal(await store.stream.delete(subject), false)
    assert.deepEqual(await store.stream.read(subject), [])
  },
  { tag: 'nv-append' },
)

bothBackends(
  'stream: read filters types before the limit (full pages), honours exclusive ids, inclusive times, order, and has no default limit',
  async (ctx) => {
    const { store, p } = await open(ctx)
    if (await refusedOnCluster(ctx, store)) return
    const subject = `${p}:flow:run:r2`
    const recs = []
    for (let i = 0; i < 1200; i++) {
      recs.push(await store.stream.append(subject, { type: i % 3 === 0 ? 'log' : 'step.started', runId: 'r2', flowName: 'f', data: { i } }))
    }
    const all = await store.stream.read(subject)
    assert.equal(all.length, 1200, 'no default limit (nvent reads whole runs)')
    const logs = await store.stream.read(subject, { types: ['log'], limit: 5 })
    assert.deepEqual(
      logs.map((r) => r.data.i),
      [0, 3, 6, 9, 12],
      'a filtered page is full',
    )
    const last = await store.stream.read(subject, { types: ['log', 'nope'], order: 'desc', limit: 2 })
    assert.deepEqual(
      last.map((r) => r.data.i),
      [1197, 1194],
    )
    const mid = await store.stream.read(subject, { after: recs[10].id, before: recs[14].id })
    assert.deepEqual(
      mid.map((r) => r.data.i),
      [11, 12, 13],
      'after and before are exclusive',
    )
    const ms = (id) => Number(id.split('-')[0])
    const fromTo = await store.stream.read(subject, { from: ms(recs[5].id), to: ms(recs[5].id) })
    assert.ok(
      fromTo.some((r) => r.id === recs[5].id) && fromTo.every((r) => ms(r.id) === ms(recs[5].id)),
      'from and to are inclusive milliseconds',
    )
    const both = await store.stream.read(subject, { after: recs[100].id, from: ms(recs[0].id), limit: 1 })
    assert.equal(both[0].id, recs[101].id, 'after and from together: both hold')
  },
  { tag: 'nv-read', timeout: 120_000 },
)

bothBackends(
  'kv: values round-trip as written (0, false, "", "42", objects), ttl in seconds expires, clear takes a glob, increment is visible to get',
  async (ctx) => {
    const { store, p } = await open(ctx)
    if (await refusedOnCluster(ctx, store)) return
    assert.equal(await store.kv.get(`${p}:none`), null)
    const values = { zero: 0, no: false, empty: '', num: '42', yes: 'true', word: 'hello', obj: { a: [1, { b: null }] }, nil: null, n: 3.5 }
    for (const [k, v] of Object.entries(values)) await store.kv.set(`${p}:kv:${k}`, v)
    for (const [k, v] of Object.entries(values)) assert.deepEqual(await store.kv.get(`${p}:kv:${k}`), v, k)
    await store.kv.set(`${p}:ttl`, { x: 1 }, 0.05)
    await waitFor(async () => (await store.kv.get(`${p}:ttl`)) === null, 5000, 'the value expired')
    assert.equal(await store.kv.increment(`${p}:scheduler:stats:job1`), 1)
    assert.equal(await store.kv.increment(`${p}:scheduler:stats:job1`, 4), 5)
    assert.equal(await store.kv.get(`${p}:scheduler:stats:job1`), 5, 'get sees the counter (a:b:c is one key)')
    await store.kv.delete(`${p}:kv:obj`)
    assert.equal(await store.kv.get(`${p}:kv:obj`), null)
    assert.equal(await store.kv.clear(`${p}:kv:*`), Object.keys(values).length - 1)
    assert.equal(await store.kv.get(`${p}:kv:num`), null)
  },
  { tag: 'nv-kv' },
)

bothBackends(
  'index: add seeds version 0, replaces an existing entry, expands dotted keys, keeps {} and arrays with nulls, stores Dates as ISO text',
  async (ctx) => {
    const { store, p } = await open(ctx)
    if (await refusedOnCluster(ctx, store)) return
    const key = `${p}:flows`
    const when = new Date('2025-01-02T03:04:05.678Z')
    await store.index.add(key, 'f1', 10, { name: 'f1', 'stats.total': 2, stats: { running: 1 }, tags: ['a', null], emittedEvents: {}, at: when, gone: null, code: '007' })
    const got = await store.index.get(key, 'f1')
    assert.deepEqual(got, {
      id: 'f1',
      score: 10,
      metadata: { version: 0, name: 'f1', stats: { total: 2, running: 1 }, tags: ['a', null], emittedEvents: {}, at: when.toISOString(), code: '007' },
    })
    await store.index.add(key, 'f1', 11, { lastRunAt: 5 })
    assert.deepEqual(await store.index.get(key, 'f1'), { id: 'f1', score: 11, metadata: { version: 0, lastRunAt: 5 } }, 'add replaces')
    await store.index.add(key, 'f2', 12, { name: 'f2', version: 1 })
    assert.equal((await store.index.get(key, 'f2')).metadata.version, 1, "nvent's flow seeding passes version 1")
    await store.index.add(key, 'bare', 1)
    assert.deepEqual(await store.index.get(key, 'bare'), { id: 'bare', score: 1 }, 'no metadata')
    assert.equal(await store.index.get(key, 'missing'), null)
    assert.equal(await store.index.update(key, 'bare', { a: 1 }), false, 'no metadata to merge into')
    assert.equal(await store.index.delete(key, 'f2'), true)
    assert.equal(await store.index.delete(key, 'f2'), false)
  },
  { tag: 'nv-add' },
)

bothBackends(
  'index: read is highest score first, 50 by default, with offset and a top-level filter (=== and array any-of)',
  async (ctx) => {
    const { store, p } = await open(ctx)
    if (await refusedOnCluster(ctx, store)) return
    const key = `${p}:flow:runs:f`
    const statuses = ['running', 'completed', 'failed', 'awaiting']
    for (let i = 0; i < 60; i++) {
      await store.index.add(key, `r${i}`, 1000 + i, { status: statuses[i % 4], n: i, ok: i % 2 === 0, label: String(i) })
    }
    const page = await store.index.read(key)
    assert.equal(page.length, 50)
    assert.deepEqual(
      page.slice(0, 3).map((e) => e.id),
      ['r59', 'r58', 'r57'],
    )
    assert.equal(page[0].metadata.status, 'awaiting')
    const second = await store.index.read(key, { offset: 50, limit: 50 })
    assert.equal(second.length, 10)
    const active = await store.index.read(key, { filter: { status: ['running', 'awaiting'] }, limit: 5 })
    assert.deepEqual(
      active.map((e) => e.id),
      ['r59', 'r56', 'r55', 'r52', 'r51'],
    )
    const one = await store.index.read(key, { filter: { n: 7, ok: false } })
    assert.deepEqual(
      one.map((e) => e.id),
      ['r7'],
    )
    assert.deepEqual(await store.index.read(key, { filter: { label: 7 } }), [], 'the string "7" is not the number 7')
    assert.equal((await store.index.read(key, { filter: { label: '7' } }))[0].id, 'r7')
    assert.equal((await store.index.read(key, { filter: { status: 'failed' }, offset: 2, limit: 1 }))[0].id, 'r50')
    assert.equal((await store.index.read(key, { filter: { missing: undefined }, limit: 1 }))[0].id, 'r59')
    assert.deepEqual(await store.index.read(key, { filter: { status: null } }), [])
  },
  { tag: 'nv-iread' },
)

bothBackends(
  'index: update deep-merges, null deletes the subtree, arrays are replaced, dotted keys are refused at any depth, version increments',
  async (ctx) => {
    const { store, p } = await open(ctx)
    if (await refusedOnCluster(ctx, store)) return
    const key = `${p}:flow:runs:f`
    await store.index.add(key, 'r', 1, { status: 'running', emittedEvents: {}, awaitingSteps: { 's1:before': { status: 'awaiting', position: 'before' } }, list: [1, 2] })
    assert.equal(await store.index.update(key, 'r', { emittedEvents: { s1: { done: 5 } } }), true)
    assert.equal(await store.index.update(key, 'r', { emittedEvents: { s2: { done: 6 } }, list: [3], code: '42', flag: true }), true)
    let m = (await store.index.get(key, 'r')).metadata
    assert.deepEqual(m.emittedEvents, { s1: { done: 5 }, s2: { done: 6 } })
    assert.deepEqual(m.list, [3], 'arrays are replaced')
    assert.equal(m.code, '42')
    assert.equal(m.flag, true)
    assert.equal(m.version, 2)
    await store.index.update(key, 'r', { awaitingSteps: { 's1:before': null }, emittedEvents: { s1: null }, status: undefined })
    m = (await store.index.get(key, 'r')).metadata
    assert.deepEqual(m.awaitingSteps, {}, 'null deletes the whole subtree; the emptied object stays')
    assert.deepEqual(m.emittedEvents, { s2: { done: 6 } })
    assert.equal(m.status, 'running', 'undefined is skipped')
    await store.index.update(key, 'r', { status: { nested: 1 } })
    assert.deepEqual((await store.index.get(key, 'r')).metadata.status, { nested: 1 }, 'a leaf becomes an object')
    await store.index.update(key, 'r', { awaitingSteps: {} })
    assert.deepEqual((await store.index.get(key, 'r')).metadata.awaitingSteps, {})
    await assert.rejects(store.index.update(key, 'r', { 'stats.total': 1 }), /dot notation/)
    await assert.rejects(store.index.updateWithRetry(key, 'r', { a: { 'b.c': 1 } }), /dot notation/)
    assert.equal((await store.index.get(key, 'r')).metadata.version, 5, 'a refused update writes nothing')
    assert.equal(await store.index.update(key, 'missing', { a: 1 }), false)
  },
  { tag: 'nv-update' },
)

bothBackends(
  'index: updateWithRetry waits for an entry that appears, and says so when it never does; increment adds at a dotted path and bumps version',
  async (ctx) => {
    const { store, p } = await open(ctx)
    if (await refusedOnCluster(ctx, store)) return
    const key = `${p}:flow:runs:f`
    await assert.rejects(store.index.updateWithRetry(key, 'never', { a: 1 }), { message: 'Failed to update index after 3 retries' })
    setTimeout(() => store.index.add(key, 'late', 1, { a: 0 }), 5)
    await store.index.updateWithRetry(key, 'late', { a: 1 }, 5)
    assert.equal((await store.index.get(key, 'late')).metadata.a, 1)

    const flows = `${p}:flows`
    await store.index.add(flows, 'f', 1, { stats: { total: 0 }, version: 1 })
    assert.equal(await store.index.increment(flows, 'f', 'stats.total'), 1)
    assert.equal(await store.index.increment(flows, 'f', 'stats.running', 1), 1)
    assert.equal(await store.index.increment(flows, 'f', 'stats.running', -1), 0)
    assert.equal(await store.index.increment(flows, 'f', 'completedSteps', 2.5), 2.5)
    const m = (await store.index.get(flows, 'f')).metadata
    assert.deepEqual(m.stats, { total: 1, running: 0 })
    assert.equal(m.version, 5)
    await expectCode(store.index.increment(flows, 'nope', 'stats.total'), 'INDEX_ENTRY_NOT_FOUND', 'increment of a missing entry')
    assert.equal(await store.index.get(flows, 'nope'), null, 'no orphan document')
  },
  { tag: 'nv-retry' },
)

bothBackends(
  'index: 20 concurrent updateWithRetry calls with nested partials on one entry all land',
  async (ctx) => {
    const { store, p } = await open(ctx)
    if (await refusedOnCluster(ctx, store)) return
    const key = `${p}:flow:runs:f`
    await store.index.add(key, 'r', 1, { status: 'running', emittedEvents: {} })
    const outcomes = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) => store.index.updateWithRetry(key, 'r', { emittedEvents: { [`s${i}`]: { done: i } }, lastActivityAt: i })),
    )
    assert.equal(outcomes.filter((o) => o.status === 'rejected').length, 0)
    const m = (await store.index.get(key, 'r')).metadata
    assert.equal(Object.keys(m.emittedEvents).length, 20)
    for (let i = 0; i < 20; i++) assert.deepEqual(m.emittedEvents[`s${i}`], { done: i })
    assert.equal(m.version, 20)
  },
  { tag: 'nv-conc' },
)

bothBackends(
  'stream adapter: publish delivers any JSON to every handler of a topic; handlers are not awaited and a throw harms nobody; topics and counts are this process\'s',
  async (ctx) => {
    const { stream, p } = await open(ctx)
    await stream.init()
    const topic = `${p}:stream:flow:events:r1`
    const stats = `${p}:stream:flow:stats`
    const a = []
    const b = []
    const s = []
    const ha = await stream.subscribe(topic, (m) => a.push(m))
    await stream.subscribe(topic, () => {
      throw new Error('a failing handler')
    })
    await stream.subscribe(topic, (m) => {
      b.push(m)
      return new Promise(() => {}) // never settles: must not hold up later messages
    })
    await stream.subscribe(stats, (m) => s.push(m), { group: 'ignored' })
    assert.deepEqual((await stream.listTopics()).sort(), [stats, topic].sort())
    assert.equal(await stream.getSubscriptionCount(topic), 3)
    const ev = { type: 'flow.event', data: { event: { id: '1-0', ts: 1, type: 'step.started', runId: 'r1' } }, timestamp: 5 }
    await stream.publish(topic, ev)
    await stream.publish(topic, { ...ev, timestamp: 6 })
    await stream.publish(stats, { id: 'f', metadata: { stats: { total: 1 } } })
    await waitFor(() => a.length === 2 && b.length === 2 && s.length === 1, 5000, 'every handler got every message')
    assert.deepEqual(a[0], ev, 'the message as published, with nothing added')
    assert.deepEqual(s[0], { id: 'f', metadata: { stats: { total: 1 } } })
    await stream.unsubscribe(ha)
    assert.equal(await stream.getSubscriptionCount(topic), 2)
    await stream.publish(topic, { ...ev, timestamp: 7 })
    await waitFor(() => b.length === 3, 5000, 'the others still get messages')
    assert.equal(a.length, 2, 'an unsubscribed handler gets nothing more')
    await stream.shutdown()
    assert.deepEqual(await stream.listTopics(), [])
  },
  { tag: 'nv-pubsub' },
)

bothBackends(
  'store stream.subscribe follows a run gap-free: every event appended during and after subscribing, once, in order',
  async (ctx) => {
    const { store, p } = await open(ctx)
    if (await refusedOnCluster(ctx, store)) return
    const subject = `${p}:flow:run:live-1`
    const got = []
    const writing = (async () => {
      for (let i = 0; i < 200; i++) await store.stream.append(subject, { type: 'log', runId: 'live-1', flowName: 'f', data: { i } })
    })()
    await new Promise((r) => setTimeout(r, 2))
    const sub = await store.stream.subscribe(subject, (e) => got.push(e))
    await writing
    const all = await store.stream.read(subject)
    const firstSeen = got.length ? all.findIndex((e) => e.id === got[0].id) : all.length
    await waitFor(() => got.length === all.length - firstSeen, 5000, () => `got ${got.length}, want ${all.length - firstSeen}`)
    assert.deepEqual(got, all.slice(firstSeen), 'exactly the events after the subscription point, as read')
    assert.ok(firstSeen < all.length, 'events appended after subscribing were delivered')
    await sub.unsubscribe()
    await assert.rejects(store.stream.subscribe('elsewhere:flow:run:x', () => {}), /bus prefix/)
  },
  { tag: 'nv-live' },
)

test('a bus shared with closeBus closes once every adapter holding it has closed', async () => {
  const { createStoreAdapter, createStreamAdapter } = await adapters
  const { EventBus } = require('..')
  const bus = await EventBus.connect({ prefix: 'nv-close', embedded: 'per-process' })
  const store = createStoreAdapter({ bus, closeBus: true, prefix: 'nv-close' })
  const stream = createStreamAdapter({ bus, closeBus: true, prefix: 'nv-close' })
  await stream.init()
  await store.kv.set('nv-close:a', 1)
  await store.close()
  assert.equal(await bus.keyspace.get('nv-close:a'), '1', 'still open while the stream adapter holds it')
  await stream.shutdown()
  await expectCode(bus.keyspace.get('nv-close:a'), 'BUS_CLOSED', 'closed with the last holder')
  await expectCode(store.kv.get('nv-close:a'), 'BUS_CLOSED', 'a closed adapter')
})
