'use strict'
// retention: { finishedRunsMs }: a finished run's stream and run-index entry expire, a
// resolved trigger's stream too; the option is checked. On Redis (a cluster when REDIS_URL is
// one) and the embedded store.

const test = require('node:test')
const assert = require('node:assert/strict')
const { EventBus, BACKENDS, uniquePrefix, uniqueId, waitFor } = require('./helpers')

async function connect(backend, extra = {}) {
  return EventBus.connect({ url: backend.url, prefix: uniquePrefix('retention'), ...extra })
}

for (const backend of BACKENDS) {
  test(`a finished run and a resolved trigger expire after finishedRunsMs (${backend.name})`, async () => {
    const bus = await connect(backend, { retention: { finishedRunsMs: 300 } })
    try {
      const name = uniqueId('flow')
      const [done, running, trigger] = [uniqueId('done'), uniqueId('running'), uniqueId('tr')]
      for (const id of [done, running]) {
        await bus.emit({ kind: 'flow.started', subject: id, data: { name } })
        await bus.emit({ kind: 'step.completed', subject: id, step: 'a' })
      }
      await bus.emit({ kind: 'flow.completed', subject: done, data: { duration: 1 } })
      await bus.emit({ kind: 'trigger.registered', subject: trigger, data: { type: 'webhook' } })
      await bus.emit({ kind: 'trigger.fired', subject: trigger, data: { payload: 1 } })
      assert.equal((await bus.read({ type: 'flow', id: done })).length, 3, 'kept until the time is up')

      const ids = async () => (await bus.listRuns(name)).map((r) => r.id)
      await waitFor(async () => (await ids()).length === 1, 10_000, 'the finished run left the index')
      assert.deepEqual(await ids(), [running])
      await waitFor(
        async () =>
          (await bus.read({ type: 'flow', id: done })).length === 0 &&
          (await bus.read({ type: 'trigger', id: trigger })).length === 0,
        10_000,
        'the streams expired',
      )
      assert.equal((await bus.read({ type: 'flow', id: running })).length, 2)
    } finally {
      await bus.close()
    }
  })

  test(`an emit can name its own retention (${backend.name})`, async () => {
    const bus = await connect(backend)
    try {
      const name = uniqueId('flow')
      const [short, kept] = [uniqueId('short'), uniqueId('kept')]
      for (const id of [short, kept]) await bus.emit({ kind: 'flow.started', subject: id, data: { name } })
      await bus.emitMany([{ kind: 'flow.failed', subject: short, data: { error: 'x' } }], {
        retention: { finishedRunsMs: 200 },
      })
      await bus.emit({ kind: 'flow.completed', subject: kept })
      await waitFor(async () => (await bus.listRuns(name)).length === 1, 10_000, 'the run with retention left')
      assert.deepEqual((await bus.listRuns(name)).map((r) => r.id), [kept])
      assert.equal((await bus.read({ type: 'flow', id: kept })).length, 2)
    } finally {
      await bus.close()
    }
  })
}

test('retention is checked: INVALID_ARGUMENT', async () => {
  const embedded = BACKENDS.find((b) => b.name === 'embedded')
  for (const retention of [{ finishedRunsMs: 0 }, { finishedRunsMs: -1 }, { finishedRunsMs: 1.5 }, { keepMs: 5 }, 5]) {
    await assert.rejects(connect(embedded, { retention }), { code: 'INVALID_ARGUMENT' }, JSON.stringify(retention))
  }
  await assert.rejects(connect(embedded, { retention: { finishedRunsMs: 1e15 } }), (err) => {
    assert.equal(err.code, 'INVALID_ARGUMENT')
    assert.match(err.message, /retention\.finishedRunsMs/)
    return true
  })
  const bus = await connect(embedded)
  try {
    const event = { kind: 'flow.completed', subject: uniqueId() }
    await assert.rejects(bus.emit(event, { retention: { finishedRunsMs: 0 } }), { code: 'INVALID_ARGUMENT' })
    assert.deepEqual((await bus.metrics()).emitErrors, { INVALID_ARGUMENT: 1 })
    await assert.rejects(bus.emit(event, { retention: 'soon' }), { code: 'INVALID_ARGUMENT' })
  } finally {
    await bus.close()
  }
})
