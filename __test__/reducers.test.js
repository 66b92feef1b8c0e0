'use strict'
// The browser reducers (lean-events/client) against the vectors the Rust reducers also run,
// and bus.state() against the client's reduction of the same events.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { EventBus } = require('..')

const dir = path.join(__dirname, '..', 'vectors', 'reducers')
const vectors = fs
  .readdirSync(dir)
  .filter((f) => f.endsWith('.json'))
  .map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')))

test('client reducers match every shared vector', async () => {
  const client = await import('lean-events/client')
  assert.ok(vectors.length >= 10)
  for (const v of vectors) {
    const reduce = v.type === 'trigger' ? client.reduceTriggerState : client.reduceFlowState
    assert.deepStrictEqual(reduce(v.events), v.state, v.name)
    // incremental application from undefined gives the same state
    const apply = v.type === 'trigger' ? client.applyTriggerEvent : client.applyFlowEvent
    let state
    for (const e of structuredClone(v.events)) state = apply(state, e)
    // no event applied: the initial state
    state ??= v.type === 'trigger' ? client.initialTriggerState() : client.initialFlowState()
    assert.deepStrictEqual(state, v.state, `${v.name} (incremental)`)
  }
})

test('client module is browser-safe: no imports, no Node globals', () => {
  const src = fs.readFileSync(path.join(__dirname, '..', 'client', 'index.js'), 'utf8')
  assert.doesNotMatch(src, /\bimport\s|\brequire\(|\bprocess\.|\bBuffer\b/)
})

test('client reducers survive hostile input', async () => {
  const { applyFlowEvent, applyTriggerEvent, reduceFlowState } = await import('lean-events/client')
  const s = reduceFlowState([
    null,
    42,
    { kind: 'step.started', step: '__proto__', ts: 't' },
    { kind: 'step.completed', step: 'constructor', data: 'not an object' },
    { kind: 'log', data: [1, 2] },
  ])
  assert.equal(Object.getPrototypeOf(s.steps), Object.prototype)
  // an array is no event (as in the Rust reducer): it does not make a run appear
  assert.equal(applyFlowEvent(undefined, []).status, 'unknown')
  assert.equal(s.steps.__proto__.status, 'running')
  assert.equal(s.steps.constructor.status, 'completed')
  assert.equal(s.logs.length, 1)
  assert.equal(applyTriggerEvent(undefined, { kind: 'nope' }).status, 'registered')
  assert.equal(applyFlowEvent(undefined, undefined).status, 'unknown', 'no event: no run')
})

for (const backend of ['redis', 'embedded']) {
  test(`bus.state equals the client reduction (${backend})`, async () => {
    const { reduceFlowState, reduceTriggerState } = await import('lean-events/client')
    const url = backend === 'redis' ? process.env.REDIS_URL || 'redis://127.0.0.1:6379' : undefined
    const bus = await EventBus.connect({ url, prefix: `t-state-${process.pid}-${Date.now()}` })
    try {
      const flow = vectors.find((v) => v.name === 'flow-retry-then-complete')
      const inputs = flow.events.map(({ id, ts, ...e }) => e)
      await bus.emitMany(inputs)
      const stream = { type: 'flow', id: 'run1' }
      const state = await bus.state(stream)
      assert.deepStrictEqual(state, reduceFlowState(await bus.read(stream)))
      assert.equal(state.status, 'completed')
      assert.equal(state.steps.fetch.attempt, 2)

      await bus.emit({ kind: 'trigger.registered', subject: 'tr1', correlationId: 'run1', data: { type: 'webhook' } })
      await bus.emit({ kind: 'trigger.fired', subject: 'tr1', data: { payload: { ok: 1 } } })
      const trigger = { type: 'trigger', id: 'tr1' }
      assert.deepStrictEqual(await bus.state(trigger), reduceTriggerState(await bus.read(trigger)))
      await assert.rejects(bus.state({ type: 'flow', id: 'has space' }), { code: 'INVALID_ARGUMENT' })
    } finally {
      await bus.close()
    }
  })
}
