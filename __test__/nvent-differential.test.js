'use strict'
// lean-events/nvent/adapters beside nvent's own Redis store adapter (the real
// @nvent-addon/adapter-store-redis 0.5.15, a devDependency), on one Redis: what one writes the
// other reads, values compared; where the reference breaks nvent's store interface, the
// difference is asserted as the README documents it. Then 20 concurrent updateWithRetry calls
// on each, and the stream adapter against a raw ioredis client speaking the reference's wire
// format. One Redis only (the reference adapter is single-node, and so are these calls).

const test = require('node:test')
const assert = require('node:assert/strict')
const Redis = require('ioredis')
const { REDIS_URL, CLUSTER, uniquePrefix, deleteRedisPrefix, waitFor, expectCode, EventBus } = require('./helpers.js')
const { referenceStoreAdapter } = require('./fixtures/nvent-reference/load.js')

const adapters = import('../nvent/adapters.js')
const skip = CLUSTER ? 'the reference adapter and the keyspace calls need one Redis' : false

/** The reference adapter and lean-events' adapters on REDIS_URL; closed and cleaned up after. */
async function both(t, tag) {
  const prefix = uniquePrefix(tag)
  const RedisStoreAdapter = await referenceStoreAdapter()
  const url = new URL(REDIS_URL)
  const log = console.log
  console.log = () => {} // the reference announces every connection
  const ref = new RedisStoreAdapter({
    connection: { host: url.hostname, port: Number(url.port || 6379), password: url.password || undefined },
    prefix,
    streams: { trim: { maxLen: 10000, approx: true } },
  })
  console.log = log
  ref.redis.removeAllListeners('connect')
  const { createStoreAdapter, createStreamAdapter } = await adapters
  const bus = await EventBus.connect({ url: REDIS_URL, prefix })
  const lean = createStoreAdapter({ bus, prefix })
  const stream = createStreamAdapter({ bus, prefix })
  t.after(async () => {
    await ref.close()
    await stream.shutdown()
    await bus.close()
    await deleteRedisPrefix(prefix)
  })
  return { ref, lean, stream, bus, p: prefix }
}

/** The EventRecord keys of a record (what the reference's read returns). */
function recordKeys(r) {
  const { id, ts, type, runId, flowName, stepName, stepId, attempt, data } = r
  return JSON.parse(JSON.stringify({ id, ts, type, runId, flowName, stepName, stepId, attempt, data }))
}

test('streams: what either appends, the other reads back with the same values', { skip }, async (t) => {
  const { ref, lean, p } = await both(t, 'nvd-stream')
  const subject = `${p}:flow:run:r1`
  const events = [
    { type: 'flow.start', runId: 'r1', flowName: 'f', data: { input: { a: [1, null, 'x'] } } },
    { type: 'step.started', runId: 'r1', flowName: 'f', stepName: 'Fetch Data', stepId: 'Fetch Data:1', attempt: 1, data: {} },
    { type: 'emit', runId: 'r1', flowName: 'f', stepName: '42', stepId: 'true', attempt: 2, data: { name: 'order.created', payload: 'null' }, triggerName: 'extra' },
    { type: 'log', runId: 'r1', flowName: 'f', data: 'plain text' },
  ]
  for (const e of events.slice(0, 2)) await lean.stream.append(subject, e)
  for (const e of events.slice(2)) await ref.stream.append(subject, e)
  await lean.stream.append(subject, events[2])

  const byRef = await ref.stream.read(subject)
  const byLean = await lean.stream.read(subject)
  assert.equal(byRef.length, 5)
  assert.deepEqual(byLean.map(recordKeys).slice(0, 2), byRef.map(recordKeys).slice(0, 2), 'lean-written entries: the reference reads the same values')
  assert.deepEqual(byLean[0].data, events[0].data)
  // reference-written entries: lean-events reads them as the reference does ...
  assert.deepEqual(byLean.slice(2, 4).map(recordKeys), byRef.slice(2, 4).map(recordKeys))
  assert.equal(byRef[2].stepName, 42, "the reference reads its own '42' back as a number")
  assert.equal(byLean[2].stepName, 42, '... and so does lean-events, reading that entry')
  assert.equal(byLean[2].payload, undefined)
  // ... while a string lean-events wrote stays a string for both
  assert.equal(byLean[4].stepName, '42')
  assert.equal(byRef[4].stepName, '42')
  assert.equal(byRef[4].stepId, 'true')
  assert.equal(byRef[4].data.payload, 'null')
  // documented: the reference drops fields outside EventRecord; lean-events keeps them
  assert.equal(byRef[2].triggerName, undefined)
  assert.equal(byLean[2].triggerName, 'extra')
  assert.equal(byLean[4].triggerName, 'extra')

  // documented: the reference applies COUNT before its type filter (short pages)
  const s2 = `${p}:flow:run:r2`
  for (let i = 0; i < 10; i++) await lean.stream.append(s2, { type: i % 2 ? 'log' : 'step.started', runId: 'r2', flowName: 'f', data: { i } })
  assert.equal((await ref.stream.read(s2, { types: ['log'], limit: 4 })).length, 2)
  assert.equal((await lean.stream.read(s2, { types: ['log'], limit: 4 })).length, 4)
  assert.equal(await lean.stream.delete(s2), true)
  assert.deepEqual(await ref.stream.read(s2), [])
})

test('index: documents either writes, the other reads with the same values; the reference\'s own losses show as documented', { skip }, async (t) => {
  const { ref, lean, p } = await both(t, 'nvd-index')
  const runs = `${p}:flow:runs:f`
  const flows = `${p}:flows`
  const started = Date.now()

  // a run as nvent's flow wiring writes it, on lean-events; the reference reads it
  await lean.index.add(runs, 'r1', started, { status: 'running', startedAt: started, lastActivityAt: started, stepCount: 0, completedSteps: 0, emittedEvents: {} })
  let fromRef = await ref.index.get(runs, 'r1')
  let fromLean = await lean.index.get(runs, 'r1')
  assert.deepEqual(fromRef.metadata.emittedEvents, { '': '' }, "documented: an empty object lean-events keeps reads as { '': '' } on the reference")
  assert.deepEqual(fromLean.metadata.emittedEvents, {})
  await lean.index.updateWithRetry(runs, 'r1', { emittedEvents: { 'step-a': { done: started } }, awaitingSteps: { 's1:before': { status: 'awaiting', position: 'before', awaitType: 'event' } } })
  await lean.index.increment(runs, 'r1', 'completedSteps', 1)
  await ref.index.updateWithRetry(runs, 'r1', { emittedEvents: { 'step-b': { done: started + 1 } }, status: 'completed', tags: ['x', 'y'] })
  await ref.index.increment(runs, 'r1', 'completedSteps', 1)
  fromRef = await ref.index.get(runs, 'r1')
  fromLean = await lean.index.get(runs, 'r1')
  assert.deepEqual(fromLean, fromRef, 'after updates and increments from both, both read the same entry')
  assert.deepEqual(fromLean.metadata.emittedEvents, { 'step-a': { done: started }, 'step-b': { done: started + 1 } })
  assert.equal(fromLean.metadata.completedSteps, 2)
  assert.equal(fromLean.metadata.version, 4)

  // the flows index as nvent seeds it, by the reference; lean-events increments and reads it
  await ref.index.add(flows, 'f', started, { name: 'f', displayName: 'f', registeredAt: started, stats: { total: 0, success: 0, running: 0 }, version: 1 })
  await lean.index.increment(flows, 'f', 'stats.total')
  await lean.index.increment(flows, 'f', 'stats.running')
  await ref.index.increment(flows, 'f', 'stats.running', -1)
  assert.deepEqual(await lean.index.get(flows, 'f'), await ref.index.get(flows, 'f'))
  assert.equal((await lean.index.get(flows, 'f')).metadata.stats.total, 1)
  for (let i = 0; i < 6; i++) {
    const writer = i % 2 ? ref : lean
    await writer.index.add(runs, `q${i}`, started + 10 + i, { status: ['running', 'awaiting', 'completed'][i % 3], n: i })
  }
  const filter = { status: ['running', 'awaiting'] }
  assert.deepEqual(await lean.index.read(runs, { filter, limit: 3 }), await ref.index.read(runs, { filter, limit: 3 }))
  assert.deepEqual(await lean.index.read(runs, { offset: 1, limit: 4 }), await ref.index.read(runs, { offset: 1, limit: 4 }))

  // documented differences, entry by entry
  // add on an existing entry: the reference leaves old fields in place, lean-events replaces
  await ref.index.add(runs, 'a-ref', 1, { a: 1, b: 2 })
  await ref.index.add(runs, 'a-ref', 1, { a: 3 })
  await lean.index.add(runs, 'a-lean', 1, { a: 1, b: 2 })
  await lean.index.add(runs, 'a-lean', 1, { a: 3 })
  assert.deepEqual((await lean.index.get(runs, 'a-ref')).metadata, { version: 0, a: 3, b: 2 })
  assert.deepEqual((await ref.index.get(runs, 'a-lean')).metadata, { version: 0, a: 3 })
  // null: the reference deletes only that exact field, lean-events the whole subtree
  await ref.index.update(runs, 'r1', { awaitingSteps: { 's1:before': null } })
  assert.equal((await ref.index.get(runs, 'r1')).metadata.awaitingSteps['s1:before'].status, 'awaiting')
  await lean.index.update(runs, 'r1', { awaitingSteps: { 's1:before': null } })
  assert.deepEqual((await lean.index.get(runs, 'r1')).metadata.awaitingSteps, {})
  // strings that look like numbers: the reference reads its own back as numbers, lean-events
  // keeps its own strings (a reference instance sees them with their JSON quotes)
  await ref.index.add(runs, 's-ref', 1, { code: '42', ok: 'true' })
  await lean.index.add(runs, 's-lean', 1, { code: '42', ok: 'true', arr: [1, null, 2] })
  assert.deepEqual((await lean.index.get(runs, 's-ref')).metadata, { version: 0, code: 42, ok: true })
  assert.deepEqual((await lean.index.get(runs, 's-lean')).metadata, { version: 0, code: '42', ok: 'true', arr: [1, null, 2] })
  assert.deepEqual((await ref.index.get(runs, 's-lean')).metadata, { version: 0, code: '"42"', ok: '"true"', arr: [1, null, 2] })
  // {} and Dates: the reference loses them; lean-events keeps {} and stores a Date as ISO text
  const at = new Date(started)
  await ref.index.add(runs, 'd-ref', 1, { empty: {}, at })
  await lean.index.add(runs, 'd-lean', 1, { empty: {}, at })
  assert.deepEqual((await lean.index.get(runs, 'd-ref')).metadata, { version: 0 })
  assert.deepEqual((await lean.index.get(runs, 'd-lean')).metadata, { version: 0, empty: {}, at: at.toISOString() })
  assert.equal((await ref.index.get(runs, 'd-lean')).metadata.at, at.toISOString())
  // increment of a missing entry: the reference writes an orphan document, lean-events refuses
  await ref.index.increment(runs, 'ghost-ref', 'n', 1)
  await expectCode(lean.index.increment(runs, 'ghost-lean', 'n', 1), 'INDEX_ENTRY_NOT_FOUND')
  assert.equal(await lean.index.get(runs, 'ghost-ref'), null)
})

test('kv: values either writes, the other reads back; kv.increment of a:b:c is a string key for lean-events', { skip }, async (t) => {
  const { ref, lean, p } = await both(t, 'nvd-kv')
  const values = { obj: { a: [1, { b: 'c' }] }, word: 'hello', num: 7, bool: true, numeric: '42', empty: '', json: '{"x":1}' }
  for (const [k, v] of Object.entries(values)) {
    await lean.kv.set(`${p}:lean:${k}`, v)
    assert.deepEqual(await ref.kv.get(`${p}:lean:${k}`), v, `the reference reads lean-events' ${k}`)
    await ref.kv.set(`${p}:ref:${k}`, v)
    assert.deepEqual(await lean.kv.get(`${p}:ref:${k}`), await ref.kv.get(`${p}:ref:${k}`), `lean-events reads the reference's ${k} as it does`)
  }
  assert.equal(await lean.kv.get(`${p}:ref:numeric`), 42, "the reference's own '42' is 42 for both")
  assert.equal(await lean.kv.get(`${p}:ref:empty`), null, "the reference's own '' is null for both")
  await ref.kv.set(`${p}:scheduler:lock:j1`, { owner: 'i1' }, 300)
  const ttl = await lean.kv.get(`${p}:scheduler:lock:j1`)
  assert.deepEqual(ttl, { owner: 'i1' })

  // documented: the reference's kv.increment('a:b:c') increments field c of the hash a:b,
  // which kv.get cannot see; lean-events increments the key itself
  await ref.kv.increment(`${p}:scheduler:stats:j1`, 2)
  assert.equal(await ref.kv.get(`${p}:scheduler:stats:j1`), null)
  assert.equal(await lean.kv.get(`${p}:scheduler:stats:j1`), null)
  await lean.kv.increment(`${p}:counter:x:y`, 2)
  assert.equal(await ref.kv.get(`${p}:counter:x:y`), 2)
  assert.equal(await lean.kv.clear(`${p}:lean:*`), Object.keys(values).length)
})

test('20 concurrent updateWithRetry calls with nested partials on one entry: lean-events loses none; the reference gives up on some', { skip }, async (t) => {
  const { ref, lean, p } = await both(t, 'nvd-race')
  const runs = `${p}:flow:runs:f`
  const race = async (adapter, id, writers) => {
    await adapter.index.add(runs, id, 1, { status: 'running', emittedEvents: {} })
    const outcomes = await Promise.allSettled(
      writers.map((w, i) => w.index.updateWithRetry(runs, id, { emittedEvents: { [`step-${i}`]: { done: 1000 + i } }, lastActivityAt: i })),
    )
    const meta = (await lean.index.get(runs, id)).metadata
    const landed = Object.keys(meta.emittedEvents).filter((k) => k.startsWith('step-')).length
    const leanLanded = writers.every((w, i) => w !== lean || meta.emittedEvents[`step-${i}`]?.done === 1000 + i)
    return { rejected: outcomes.filter((o) => o.status === 'rejected').length, landed, leanLanded, reasons: [...new Set(outcomes.filter((o) => o.status === 'rejected').map((o) => o.reason.message))] }
  }
  const ours = await race(lean, 'race-lean', Array(20).fill(lean))
  const theirs = await race(ref, 'race-ref', Array(20).fill(ref))
  const mixed = await race(lean, 'race-mixed', Array.from({ length: 20 }, (_, i) => (i % 2 ? ref : lean)))
  t.diagnostic(`lean-events: ${20 - ours.landed} of 20 updates lost, ${ours.rejected} rejected`)
  t.diagnostic(`reference adapter-store-redis 0.5.15: ${20 - theirs.landed} of 20 updates lost, ${theirs.rejected} rejected (${theirs.reasons.join('; ')})`)
  t.diagnostic(`mixed fleet (10 lean-events, 10 reference): ${20 - mixed.landed} of 20 lost, ${mixed.rejected} rejected`)
  assert.equal(ours.landed, 20)
  assert.equal(ours.rejected, 0)
  assert.ok(theirs.landed < 20 && theirs.rejected === 20 - theirs.landed, 'the reference loses exactly the updates it gave up on')
  assert.ok(mixed.leanLanded, "every update of lean-events' half of a mixed fleet lands")
})

test('stream adapter: the reference wire format, both ways, on one Pub/Sub connection per process', { skip }, async (t) => {
  const { stream, p } = await both(t, 'nvd-wire')
  const raw = new Redis(REDIS_URL, { lazyConnect: true })
  const rawSub = new Redis(REDIS_URL, { lazyConnect: true })
  await raw.connect()
  await rawSub.connect()
  t.after(() => {
    raw.disconnect()
    rawSub.disconnect()
  })
  const topic = `${p}:stream:flow:events:r1`
  const stats = `${p}:stream:flow:stats`

  // what the reference publishes, lean-events' subscribers receive
  const got = []
  await stream.subscribe(topic, (m) => got.push(m))
  await stream.subscribe(topic, () => {})
  await stream.subscribe(stats, (m) => got.push(m))
  const numsub = await raw.pubsub('NUMSUB', topic, stats)
  assert.deepEqual(numsub.map(String), [topic, '1', stats, '1'], 'one connection carries every handler and topic')
  const ev = { type: 'flow.event', data: { event: { id: '1-0', ts: 1, type: 'step.completed', runId: 'r1', flowName: 'f', stepName: 's', attempt: 1, data: { ok: true } } }, timestamp: 2 }
  await raw.publish(topic, 'not json') // the reference logs and drops such a message
  await raw.publish(topic, JSON.stringify(ev))
  await raw.publish(stats, JSON.stringify({ id: 'f', metadata: { stats: { total: 1 } } }))
  await waitFor(() => got.length === 2, 5000, 'both messages arrived')
  assert.deepEqual(got, [ev, { id: 'f', metadata: { stats: { total: 1 } } }])

  // what lean-events publishes, a reference subscriber receives as it would its own
  const heard = []
  rawSub.on('message', (channel, message) => heard.push([channel, message]))
  await rawSub.subscribe(topic)
  await stream.publish(topic, ev)
  await waitFor(() => heard.length === 1, 5000, 'the raw subscriber got it')
  assert.deepEqual(heard[0], [topic, JSON.stringify(ev)], 'PUBLISH topic JSON.stringify(event)')
})
