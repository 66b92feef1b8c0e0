'use strict'
// The benchmark's per-thread CPU split (bench/lib/threads.js) counts the addon's Tokio worker
// as such: its threads are named by the addon's runtime, not 'tokio-runtime-worker'.

const assert = require('node:assert/strict')
const { test } = require('node:test')
const { EventBus } = require('..')
const threads = require('../bench/lib/threads.js')
const { REDIS_URL, uniquePrefix, deleteRedisPrefix } = require('./helpers')

test('the Tokio worker of a bus on the thread transport is counted as a Tokio thread', { skip: process.platform !== 'linux' && 'reads /proc' }, async (t) => {
  const prefix = uniquePrefix('bench-threads')
  t.after(() => deleteRedisPrefix(prefix))
  // on the thread transport the worker writes and reads the Redis socket of every emit
  const bus = await EventBus.connect({ url: REDIS_URL, prefix, transport: 'thread' })
  try {
    const before = threads.snapshot()
    // emit until the worker has used at least one clock tick (10 ms), or the deadline passes
    const deadline = Date.now() + 20_000
    let split
    for (let round = 0; ; round++) {
      const events = Array.from({ length: 256 }, (_, i) => ({ kind: 'step.log', subject: `thr-${round % 50}`, data: { i } }))
      await Promise.all(events.map((e) => bus.emit(e)))
      split = threads.diff(before, threads.snapshot())
      if (split.tokioUs > 0 || Date.now() > deadline) break
    }
    assert.ok(split.tokioUs > 0, `no CPU counted for the Tokio worker: ${JSON.stringify(split)}`)
  } finally {
    await bus.close()
  }
})
