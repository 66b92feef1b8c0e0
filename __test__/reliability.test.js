'use strict'
// Bounds and faults of the JavaScript surface: BACKPRESSURE past maxPendingEmits, async
// handlers delivered one at a time, warnings, structured errors, and the embedded store
// refused where several processes would each get their own.

const assert = require('node:assert/strict')
const path = require('node:path')
const { test } = require('node:test')
const { bothBackends, uniqueId, waitFor, expectCode, startChild } = require('./helpers')
const { EventBus, LeanEventsError } = require('..')

bothBackends('emits past maxPendingEmits fail at once with BACKPRESSURE; the admitted ones are stored', async (ctx) => {
  const bus = await ctx.connect({ maxPendingEmits: 10 })
  const id = uniqueId('pressure')
  // issued in one turn: none has settled in JavaScript yet
  const admitted = Array.from({ length: 10 }, (_, i) => bus.emit({ kind: 'tick', subject: id, data: { i } }))
  await expectCode(bus.emit({ kind: 'tick', subject: id, data: { i: 10 } }), 'BACKPRESSURE')
  const records = await Promise.all(admitted)
  assert.deepEqual(
    records.map((r) => r.data.i),
    Array.from({ length: 10 }, (_, i) => i),
  )
  // once settled, there is room again
  const more = await bus.emit({ kind: 'tick', subject: id, data: { i: 10 } })
  assert.equal(more.data.i, 10)
  await expectCode(() => EventBus.connect({ maxPendingEmits: 0 }), 'INVALID_ARGUMENT')
})

bothBackends('an async handler sees the next event only after its promise settled', async (ctx) => {
  const bus = await ctx.connect()
  const id = uniqueId('ordered')
  let running = 0
  let most = 0
  const seen = []
  const errors = []
  const sub = await bus.subscribe(
    { type: 'flow', id },
    async (e) => {
      running++
      most = Math.max(most, running)
      // a handler that waits on something slower than the next event's arrival
      await new Promise((resolve) => setImmediate(resolve))
      await new Promise((resolve) => setTimeout(resolve, 2))
      seen.push(e.data.i)
      running--
      if (e.data.i === 3) throw new Error('handler failed on 3')
    },
    { after: '0', onError: (err, e) => errors.push([err.message, e && e.data.i]) },
  )
  await bus.emitMany(Array.from({ length: 20 }, (_, i) => ({ kind: 'tick', subject: id, data: { i } })))
  await waitFor(() => seen.length === 20, 10_000, () => `seen ${seen.length}`)
  assert.equal(most, 1, 'one handler at a time')
  assert.deepEqual(
    seen,
    Array.from({ length: 20 }, (_, i) => i),
  )
  assert.deepEqual(errors, [['handler failed on 3', 3]], 'a rejection goes to onError and delivery goes on')
  await sub.unsubscribe()
})

bothBackends('errors carry their code and fields, not a code inside the message', async (ctx) => {
  const bus = await ctx.connect()
  const err = await expectCode(bus.read({ type: 'flow', id: 'x' }, { after: 'not-an-id' }), 'INVALID_ARGUMENT')
  assert.ok(err instanceof LeanEventsError)
  assert.doesNotMatch(err.message, /^INVALID_ARGUMENT/)
  const sync = await expectCode(bus.emit({ kind: 'Bad Kind', subject: 's' }), 'EVENT_INVALID')
  assert.doesNotMatch(sync.message, /^EVENT_INVALID/)
  assert.match(sync.message, /kind/)
})

test('an embedded store in a worker of a Node cluster is refused unless per-process is asked for', async () => {
  const script = path.join(__dirname, 'fixtures', 'cluster-embedded.js')
  const child = startChild(process.execPath, [script], { env: { ...process.env, REDIS_URL: '' } })
  const { code } = await child.exited
  const { stdout, stderr } = child
  assert.equal(code, 0, `${stdout}\n${stderr}`)
  const lines = stdout.trim().split('\n').map((l) => JSON.parse(l))
  assert.deepEqual(
    lines.map((l) => l.case).sort(),
    ['optIn', 'refused'],
  )
  const refused = lines.find((l) => l.case === 'refused')
  assert.equal(refused.code, 'INVALID_ARGUMENT')
  assert.match(refused.message, /REDIS_URL/)
  assert.equal(lines.find((l) => l.case === 'optIn').embedded, true)
})

test('the default onWarning is one line per code at most every 10 s', async () => {
  const { defaultOnWarning } = require('../lib/warnings.js')
  const warn = console.warn
  const lines = []
  console.warn = (line) => lines.push(line)
  try {
    const onWarning = defaultOnWarning()
    onWarning('A_FAILED', 'first', 'cause')
    onWarning('A_FAILED', 'second')
    onWarning('B_FAILED', 'other')
  } finally {
    console.warn = warn
  }
  assert.deepEqual(lines, ['[lean-events] A_FAILED: first (cause)', '[lean-events] B_FAILED: other'])
})

test('the primary of a Node cluster gets the bus but starts no scheduler (a stand-in takes step definitions); its workers do', async () => {
  const { REDIS_URL, uniquePrefix, deleteRedisPrefix } = require('./helpers')
  const prefix = uniquePrefix('primary')
  const script = path.join(__dirname, 'fixtures', 'nitro-cluster-primary.mjs')
  const child = startChild(process.execPath, [script, REDIS_URL, prefix])
  const { code } = await child.exited
  await deleteRedisPrefix(prefix)
  assert.equal(code, 0, `${child.stdout}\n${child.stderr}`)
  const lines = child.stdout.trim().split('\n').map((l) => JSON.parse(l))
  assert.deepEqual(
    lines.sort((a, b) => a.role.localeCompare(b.role)),
    [
      { role: 'primary', bus: 'function', scheduler: 'definitions only', flows: 'INVALID_ARGUMENT' },
      { role: 'worker', bus: 'function', scheduler: 'started' },
    ],
  )
})

for (const [name, redis] of [['embedded', false], ['redis', true]]) {
  test(`closing the bus under a waiting scheduler settles its run and lets the process exit [${name}]`, { timeout: 60_000 }, async () => {
    const { REDIS_URL, uniquePrefix, deleteRedisPrefix } = require('./helpers')
    const prefix = uniquePrefix('bus-close')
    const script = path.join(__dirname, 'fixtures', 'sched-bus-close.js')
    const child = startChild(process.execPath, [script, ...(redis ? [REDIS_URL, prefix] : [])])
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    const { code, signal } = await child.exited
    clearTimeout(timer)
    if (redis) await deleteRedisPrefix(prefix)
    assert.equal(signal, null, `the process hung and was killed: ${child.stdout} ${child.stderr}`)
    assert.equal(code, 0, `${child.stdout}\n${child.stderr}`)
    assert.deepEqual(JSON.parse(child.stdout.trim()), { pending: 'BUS_CLOSED', later: 'BUS_CLOSED', fire: 'BUS_CLOSED' })
  })
}
