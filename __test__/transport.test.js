'use strict'
// The event-loop transport (`transport: 'loop'`): which bus gets it, emits in call order across
// script calls and turns, a Redis that stops answering (TIMEOUT, what it stores later in call
// order), a live connection Redis cuts off while JavaScript is busy (caught up, nothing lost)
// or that is opened after its wait was given up (closed), a flushed script cache, close(), and
// a connection killed under emits.
// The fault tests use their OWN redis-server on a free port (never the shared one).

const test = require('node:test')
const assert = require('node:assert/strict')
const { execFile, execFileSync } = require('node:child_process')
const path = require('node:path')
const {
  EventBus,
  REDIS_URL,
  CLUSTER,
  waitFor,
  expectCode,
  startChild,
  freePort,
  uniqueId,
  uniquePrefix,
  assertIncreasing,
  readAll,
} = require('./helpers')

const LOOP_HERE = !process.versions.bun && !process.versions.deno && ['linux', 'darwin'].includes(process.platform)
const skip = CLUSTER ? 'the event-loop transport is for one Redis' : !LOOP_HERE ? 'no libuv loop here' : false

function cli(port, args) {
  return new Promise((resolve) => {
    execFile('redis-cli', ['-p', String(port), ...args], { timeout: 5000 }, (err, stdout) =>
      resolve(err ? null : stdout.trim()),
    )
  })
}

/** A redis-server of the test's own, on a free port. */
async function ownRedis(t, extra = []) {
  const port = await freePort()
  const server = startChild('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...extra])
  t.after(() => server.kill('SIGKILL'))
  await waitFor(async () => (await cli(port, ['PING'])) === 'PONG' || server.done, 10_000, 'redis-server up')
  assert.ok(!server.done, `redis-server exited: ${server.stdout} ${server.stderr}`)
  return { port, server, url: `redis://127.0.0.1:${port}` }
}

test('transport: loop by default on one Redis, thread where it cannot be, bad values refused', { skip }, async (t) => {
  const prefix = uniquePrefix('transport')
  const loop = await EventBus.connect({ url: REDIS_URL, prefix, transport: 'auto' })
  t.after(() => loop.close())
  assert.equal(loop.transport, 'loop')
  const thread = await EventBus.connect({ url: REDIS_URL, prefix, transport: 'thread' })
  t.after(() => thread.close())
  assert.equal(thread.transport, 'thread')
  const embedded = await EventBus.connect({ transport: 'auto' })
  t.after(() => embedded.close())
  assert.equal(embedded.transport, 'thread')

  await expectCode(() => EventBus.connect({ url: REDIS_URL, transport: 'fast' }), 'INVALID_ARGUMENT', 'unknown transport')
  const embeddedLoop = await expectCode(() => EventBus.connect({ transport: 'loop' }), 'INVALID_ARGUMENT', "'loop' on the embedded store")
  assert.match(embeddedLoop.message, /options\.transport asks for transport 'loop'/)
  const before = process.env.LEAN_EVENTS_TRANSPORT
  process.env.LEAN_EVENTS_TRANSPORT = 'sideways'
  try {
    await expectCode(() => EventBus.connect({ url: REDIS_URL }), 'INVALID_ARGUMENT', 'bad LEAN_EVENTS_TRANSPORT')
    process.env.LEAN_EVENTS_TRANSPORT = 'loop'
    const err = await expectCode(() => EventBus.connect(), 'INVALID_ARGUMENT', "LEAN_EVENTS_TRANSPORT=loop on the embedded store")
    assert.match(err.message, /LEAN_EVENTS_TRANSPORT asks for transport 'loop'/)
    // the option beats the variable
    const given = await EventBus.connect({ url: REDIS_URL, prefix, transport: 'thread' })
    assert.equal(given.transport, 'thread')
    await given.close()
    process.env.LEAN_EVENTS_TRANSPORT = 'thread'
    const fromEnv = await EventBus.connect({ url: REDIS_URL, prefix })
    assert.equal(fromEnv.transport, 'thread')
    await fromEnv.close()
  } finally {
    if (before === undefined) delete process.env.LEAN_EVENTS_TRANSPORT
    else process.env.LEAN_EVENTS_TRANSPORT = before
  }

  // both transports write the same stream, read back alike
  const stream = { type: 'flow', id: uniqueId('both') }
  const a = await loop.emit({ kind: 'a', subject: stream.id })
  const b = await thread.emit({ kind: 'b', subject: stream.id })
  const read = await loop.read(stream)
  assert.deepEqual(read, [a, b])
})

test('transport loop: emits keep call order across turns and script calls of at most 64 events', { skip }, async (t) => {
  const bus = await EventBus.connect({ url: REDIS_URL, prefix: uniquePrefix('order'), transport: 'loop' })
  t.after(() => bus.close())
  const stream = { type: 'flow', id: uniqueId('order') }
  const emit = (i) => bus.emit({ kind: 'n', subject: stream.id, data: { i } })
  // 300 in one turn: five script calls in one write; then a batch of 200 (one call of its
  // own, atomic), then turns of a few
  const first = Promise.all(Array.from({ length: 300 }, (_, i) => emit(i)))
  const batch = bus.emitMany(Array.from({ length: 200 }, (_, i) => ({ kind: 'n', subject: stream.id, data: { i: 300 + i } })))
  const rest = []
  for (let i = 500; i < 520; i++) {
    rest.push(emit(i))
    if (i % 3 === 0) await Promise.resolve()
  }
  const records = [...(await first), ...(await batch), ...(await Promise.all(rest))]
  assert.deepEqual(records.map((r) => r.data.i), Array.from({ length: 520 }, (_, i) => i))
  assertIncreasing(records.map((r) => r.id), 'ids in call order')
  assert.deepEqual(await readAll(bus, stream), records)
  const m = await bus.metrics()
  assert.equal(m.emits, 520)
  assert.equal(m.pendingEmits, 0)
})

test('transport loop: a Redis that stops answering fails emits with TIMEOUT, and what it stores later stays in call order', { skip, timeout: 60_000 }, async (t) => {
  const { port, server, url } = await ownRedis(t)
  const bus = await EventBus.connect({ url, prefix: uniquePrefix('pause'), transport: 'loop', timeoutMs: 300 })
  t.after(() => bus.close())
  const stream = { type: 'flow', id: uniqueId('pause') }
  let n = 0
  const emit = () => bus.emit({ kind: 'n', subject: stream.id, data: { i: n++ } })
  const before = await emit()

  server.child.kill('SIGSTOP')
  let resumed = false
  t.after(() => resumed || server.child.kill('SIGCONT'))
  // written before Redis stopped reading: they time out, and Redis may still run them later
  const t0 = Date.now()
  const early = await Promise.allSettled(Array.from({ length: 2000 }, emit))
  const elapsed = Date.now() - t0
  for (const r of early) assert.equal(r.status === 'rejected' && r.reason.code, 'TIMEOUT', String(r.reason))
  assert.ok(elapsed >= 250 && elapsed < 3000, `TIMEOUT after ${elapsed} ms`)
  // made while the connection still owes those replies: held back, then TIMEOUT unsent
  const held = await Promise.allSettled(Array.from({ length: 50 }, emit))
  for (const r of held) assert.equal(r.status === 'rejected' && r.reason.code, 'TIMEOUT', String(r.reason))
  assert.match(held[0].reason.message, /not sent/)
  // made just before Redis answers again: they go out after what Redis still had to run
  const late = Array.from({ length: 50 }, emit)
  server.child.kill('SIGCONT')
  resumed = true
  const lateRecords = await Promise.all(late)
  const after = await Promise.all(Array.from({ length: 100 }, emit))

  // whatever was stored is in call order: every timed-out emit Redis ran comes before the
  // emits made after it
  const stored = await readAll(bus, stream)
  const order = stored.map((r) => r.data.i)
  assert.deepEqual(order, [...order].sort((a, b) => a - b), 'stored in call order')
  assert.equal(order[0], before.data.i)
  assert.deepEqual(order.slice(-150), [...lateRecords, ...after].map((r) => r.data.i))
  assert.ok(!order.some((i) => i >= 2001 && i < 2051), 'held emits were never sent')
  assert.equal(await cli(port, ['PING']), 'PONG')
})

test('transport loop: Redis cutting off the live connection while JavaScript is busy loses nothing', { skip, timeout: 90_000 }, async (t) => {
  // a tiny Pub/Sub output buffer: Redis drops the subscriber once 16 kB wait for it
  const { url } = await ownRedis(t, ['--client-output-buffer-limit', 'pubsub 16kb 0 0'])
  const prefix = uniquePrefix('cutoff')
  const warnings = []
  const bus = await EventBus.connect({ url, prefix, transport: 'loop', onWarning: (code) => warnings.push(code) })
  t.after(() => bus.close())
  const id = uniqueId('cutoff')
  const got = []
  const errors = []
  await bus.subscribe({ type: 'flow', id }, (e) => got.push(e), { onError: (e) => errors.push(e), maxQueue: 100_000 })

  const COUNT = 15000
  const emitter = startChild(process.execPath, [
    '-e',
    `
    const { EventBus } = require(${JSON.stringify(path.resolve(__dirname, '..'))})
    ;(async () => {
      const bus = await EventBus.connect({ url: ${JSON.stringify(url)}, prefix: ${JSON.stringify(prefix)}, transport: 'thread' })
      console.log('ready')
      const pad = 'x'.repeat(1000)
      for (let i = 0; i < ${COUNT}; i++) await bus.emit({ kind: 'tick', subject: ${JSON.stringify(id)}, data: { i, pad } })
      console.log('done')
      await bus.close()
    })().catch((e) => { console.error(e); process.exit(1) })
    `,
  ])
  t.after(() => emitter.kill())
  await waitFor(() => emitter.stdout.includes('ready') || emitter.done, 15_000, 'the emitter connected')
  // JavaScript busy (synchronous calls only): nothing reads the live socket while the emitter
  // publishes; Redis is asked synchronously how far it got
  const blockUntil = Date.now() + 20_000
  const flag = new Int32Array(new SharedArrayBuffer(4))
  const stored = () => {
    try {
      return Number(execFileSync('redis-cli', ['-u', url, 'XLEN', `${prefix}:flow:${id}`], { timeout: 5000 }))
    } catch {
      return 0
    }
  }
  while (stored() < COUNT && Date.now() < blockUntil) Atomics.wait(flag, 0, 0, 50)
  await emitter.exited
  assert.equal(emitter.exitCode, 0, emitter.stderr)
  await waitFor(() => got.length >= COUNT, 30_000, () => `delivered ${got.length}/${COUNT}; warnings ${warnings}`)
  assert.equal(got.length, COUNT, 'each event once')
  assert.deepEqual(got.map((e) => e.data.i), Array.from({ length: COUNT }, (_, i) => i))
  assert.deepEqual(errors, [])
  assert.ok(warnings.includes('LIVE_CONNECTION_LOST'), `Redis cut the live connection off: ${warnings}`)
})

test('transport loop: live connections opened after their wait was given up (JavaScript busy past timeoutMs) are closed, not left open', { skip, timeout: 60_000 }, async (t) => {
  const { port, url } = await ownRedis(t)
  const clients = async () => (await cli(port, ['CLIENT', 'LIST'])).split('\n').filter(Boolean).length
  const flag = new Int32Array(new SharedArrayBuffer(4))
  let blocked = false
  const bus = await EventBus.connect({
    url,
    prefix: uniquePrefix('late-open'),
    transport: 'loop',
    timeoutMs: 200,
    onWarning: (code) => {
      // the live task is connecting again: JavaScript is busy for 2 s, so each attempt's wait
      // for the loop to open its socket runs out (200 ms) and the next one is made
      if (code === 'LIVE_CONNECTION_LOST' && !blocked) {
        blocked = true
        Atomics.wait(flag, 0, 0, 2000)
      }
    },
  })
  t.after(() => bus.close())
  const id = uniqueId('late-open')
  const got = []
  await bus.subscribe({ type: 'flow', id }, (e) => got.push(e))
  const before = await clients()
  assert.equal(await cli(port, ['CLIENT', 'KILL', 'TYPE', 'pubsub']), '1', 'the live connection was killed')
  await waitFor(() => blocked, 10_000, 'the loss was reported')
  await waitFor(async () => {
    await bus.emit({ kind: 'n', subject: id }).catch(() => {})
    return got.length > 0
  }, 20_000, 'deliveries resume')
  // the redis-cli asking counts itself, as it did before
  let now
  await waitFor(async () => (now = await clients()) === before, 10_000, () => `clients: ${before} before, ${now} now`)
})

test('transport loop: a flushed script cache costs nothing: the calls are sent again, in order', { skip, timeout: 30_000 }, async (t) => {
  const { port, url } = await ownRedis(t)
  const bus = await EventBus.connect({ url, prefix: uniquePrefix('noscript'), transport: 'loop' })
  t.after(() => bus.close())
  const stream = { type: 'flow', id: uniqueId('noscript') }
  const first = await bus.emit({ kind: 'first', subject: stream.id })
  assert.equal(await cli(port, ['SCRIPT', 'FLUSH']), 'OK')
  // 300 in one turn: five script calls, every one refused with NOSCRIPT, then sent again
  const burst = await Promise.all(Array.from({ length: 300 }, (_, i) => bus.emit({ kind: 'n', subject: stream.id, data: { i } })))
  assert.equal(await cli(port, ['SCRIPT', 'FLUSH']), 'OK')
  const last = await bus.emit({ kind: 'last', subject: stream.id })
  const records = [first, ...burst, last]
  assertIncreasing(records.map((r) => r.id), 'ids in call order')
  assert.deepEqual(await bus.read(stream, { limit: 1000 }), records)
  assert.deepEqual((await bus.metrics()).emitErrors, {})
})

test('transport loop: emits of the turn that closes the bus are still written and stored', { skip }, async (t) => {
  const prefix = uniquePrefix('closeturn')
  const bus = await EventBus.connect({ url: REDIS_URL, prefix, transport: 'loop' })
  const stream = { type: 'flow', id: uniqueId('closeturn') }
  const pending = Array.from({ length: 100 }, (_, i) => bus.emit({ kind: 'n', subject: stream.id, data: { i } }))
  await bus.close()
  const records = await Promise.all(pending)
  const reader = await EventBus.connect({ url: REDIS_URL, prefix, transport: 'thread' })
  t.after(() => reader.close())
  assert.deepEqual(await reader.read(stream, { limit: 1000 }), records)
  await expectCode(bus.emit({ kind: 'n', subject: stream.id }), 'BUS_CLOSED', 'an emit after close')
})

test('transport loop: emits onto a connection Redis has just killed all settle, and none stays pending', { skip, timeout: 60_000 }, async (t) => {
  const { port, url } = await ownRedis(t)
  const bus = await EventBus.connect({ url, prefix: uniquePrefix('killed'), transport: 'loop', onWarning: () => {} })
  t.after(() => bus.close())
  const stream = { type: 'flow', id: uniqueId('killed') }
  const outcomes = new Map()
  let n = 0
  const settle = (p) => p.then(() => 'ok', (e) => e.code)
  for (let round = 0; round < 30; round++) {
    // the Tokio connection is killed too: an emit routed there meanwhile may fail as well
    const warm = await settle(bus.emit({ kind: 'warm', subject: stream.id }))
    outcomes.set(warm, (outcomes.get(warm) || 0) + 1)
    // every normal connection goes, the loop's append connection included; the emits below
    // meet it closed (a failed write, or EOF in the same loop iteration) or its replacement
    assert.notEqual(await cli(port, ['CLIENT', 'KILL', 'TYPE', 'normal']), null)
    const batch = Array.from({ length: 3 }, () => settle(bus.emit({ kind: 'n', subject: stream.id, data: { i: n++ } })))
    for (const r of await Promise.all(batch)) outcomes.set(r, (outcomes.get(r) || 0) + 1)
  }
  t.diagnostic(`outcomes: ${JSON.stringify(Object.fromEntries(outcomes))}`)
  for (const code of outcomes.keys()) assert.ok(['ok', 'STORE_UNAVAILABLE'].includes(code), code)
  await waitFor(async () => (await bus.metrics()).pendingEmits === 0, 5000, 'no emit left pending')
  const last = await waitFor(() => bus.emit({ kind: 'last', subject: stream.id }).catch(() => null), 5000, 'an emit after the kills')
  assert.equal(last.kind, 'last')
})
