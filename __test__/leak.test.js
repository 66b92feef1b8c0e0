'use strict'
// Leak check: many subscribe/unsubscribe cycles leave no channel or subscription behind and
// RSS growth stays bounded. Runs in a child process with --expose-gc.

const test = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const { BACKENDS, FIXTURES, startChild, uniquePrefix, deleteRedisPrefix } = require('./helpers')

const WARMUP = 5000
const CYCLES = { embedded: 50_000, redis: 50_000 } // total cycles, warm-up included
const MAX_RSS_GROWTH = 50 * 1024 * 1024

for (const backend of BACKENDS) {
  const total = CYCLES[backend.name]
  test(`leak: ${total} subscribe/unsubscribe cycles leave nothing behind [${backend.name}]`, { timeout: 120_000 }, async (t) => {
    const prefix = uniquePrefix('leak')
    const child = startChild(process.execPath, [
      '--expose-gc',
      path.join(FIXTURES, 'leak.js'),
      backend.url || '',
      prefix,
      String(WARMUP),
      String(total - WARMUP),
    ])
    try {
      const { code } = await child.exited
      assert.equal(code, 0, `leak fixture failed: ${child.stderr}`)
      const r = JSON.parse(child.stdout.trim().split('\n').pop())
      t.diagnostic(JSON.stringify(r))
      assert.equal(r.gc, true, 'ran with --expose-gc')
      assert.equal(r.cycles, total)
      assert.equal(r.channelCount, 0, 'bus.channelCount')
      assert.equal(r.subscriptionCount, 0, 'bus.subscriptionCount')
      if (backend.url) assert.equal(r.serverChannels, 0, 'channels still subscribed on the Redis server')
      assert.ok(r.rssGrowth < MAX_RSS_GROWTH, `RSS grew by ${(r.rssGrowth / 1048576).toFixed(1)} MB over ${total - WARMUP} cycles`)
    } finally {
      await child.kill()
      if (backend.url) await deleteRedisPrefix(prefix)
    }
  })
}
