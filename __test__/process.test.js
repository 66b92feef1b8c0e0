'use strict'
// Across processes (a child emits, this process receives) and process lifetime (a closed bus
// lets Node exit; an open one keeps it alive, like a socket).

const test = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const {
  BACKENDS,
  FIXTURES,
  redisOnly,
  uniqueId,
  uniquePrefix,
  waitFor,
  startChild,
  freePort,
  deleteRedisPrefix,
} = require('./helpers')

const EXIT_DEADLINE_MS = 15_000

/** Wait for a child to exit within `ms`; kill it and fail otherwise. */
async function exitsWithin(child, ms, what) {
  let timer
  const deadline = new Promise((resolve) => (timer = setTimeout(resolve, ms, 'deadline')))
  const r = await Promise.race([child.exited, deadline])
  clearTimeout(timer)
  if (r === 'deadline') {
    await child.kill()
    assert.fail(`${what}: still running after ${ms} ms (killed). stdout: ${child.stdout} stderr: ${child.stderr}`)
  }
  return r
}

redisOnly('cross-process: a child process emits, a subscriber here receives all, in order', async (ctx) => {
  const bus = await ctx.connect()
  const id = uniqueId('xp')
  const stream = { type: 'flow', id }
  const COUNT = 300
  const got = []
  const kinds = []
  const sub = await bus.subscribe(stream, (e) => got.push(e)) // live-only: set up before the child starts
  const kindSub = await bus.onKind('xp.tick', (e) => kinds.push(e))
  const child = startChild(process.execPath, [path.join(FIXTURES, 'emitter.js'), ctx.url, ctx.prefix, id, String(COUNT)])
  try {
    await waitFor(() => got.length >= COUNT || child.done, 30_000, () => `received ${got.length}/${COUNT}`)
    const { code } = await exitsWithin(child, EXIT_DEADLINE_MS, 'emitter')
    assert.equal(code, 0, `emitter exit code; stderr: ${child.stderr}`)
    await waitFor(() => got.length >= COUNT && kinds.length >= COUNT, 10_000, () => `received ${got.length}/${COUNT}, onKind ${kinds.length}`)
    const lastId = /done (\S+)/.exec(child.stdout)?.[1]
    assert.equal(got.length, COUNT)
    assert.deepEqual(got.map((e) => e.data.i), Array.from({ length: COUNT }, (_, i) => i), 'all of them, in order')
    assert.ok(got.every((e) => e.data.pid === child.child.pid && e.subject === id))
    assert.equal(got[got.length - 1].id, lastId)
    assert.deepEqual(got, await bus.read(stream, { limit: 1000 }), 'what arrived is what is stored')
    assert.deepEqual(kinds, got, 'onKind saw the same events in the same order')
  } finally {
    await child.kill()
    await sub.unsubscribe()
    await kindSub.unsubscribe()
  }
})

for (const backend of BACKENDS) {
  const url = backend.url || ''
  for (const mode of ['clean', 'close-open-subs', 'close-while-emitting']) {
    test(`process exit: a child that closes its bus (${mode}) exits by itself with code 0 [${backend.name}]`, async () => {
      const prefix = uniquePrefix('life')
      const child = startChild(process.execPath, [path.join(FIXTURES, 'lifecycle.js'), mode, url, prefix])
      try {
        const { code, signal } = await exitsWithin(child, EXIT_DEADLINE_MS, mode)
        assert.equal(signal, null)
        assert.equal(code, 0, `exit code; stderr: ${child.stderr}`)
        assert.match(child.stdout, /^done /m)
        if (mode === 'close-open-subs') assert.match(child.stdout, /"done":true/, 'the pending iterator ended')
        if (mode === 'close-while-emitting') {
          // every emit settled: stored before the close, or refused because the bus closed
          const [, stored, refused, codes] = /^done (\d+) (\d+) (\S+)$/m.exec(child.stdout)
          assert.equal(Number(stored) + Number(refused), 200, child.stdout)
          if (Number(refused) > 0) assert.equal(codes, 'BUS_CLOSED', child.stdout)
        }
      } finally {
        await child.kill()
        if (backend.url) await deleteRedisPrefix(prefix)
      }
    })
  }

  for (const mode of ['no-close', 'no-close-unsubscribed']) {
    test(`process lifetime: a child that does not close its bus stays alive (${mode}) [${backend.name}]`, async () => {
      const prefix = uniquePrefix('life')
      const child = startChild(process.execPath, [path.join(FIXTURES, 'lifecycle.js'), mode, url, prefix])
      try {
        await waitFor(() => /ready/.test(child.stdout) || child.done, EXIT_DEADLINE_MS, 'child ready')
        assert.ok(!child.done, `the child exited (code ${child.exitCode}); stderr: ${child.stderr}`)
        // Asserting an absence: give it a short while to (wrongly) exit.
        await new Promise((r) => setTimeout(r, 500))
        assert.equal(child.done, false, `the child exited by itself (code ${child.exitCode}) with its bus open`)
      } finally {
        await child.kill()
        if (backend.url) await deleteRedisPrefix(prefix)
      }
    })
  }
}

for (const backend of BACKENDS) {
  for (const what of ['scheduler', 'bus']) {
    test(`process exit: more steps than concurrency parked in awaits, then ${what === 'bus' ? 'the bus closes' : 'the scheduler and the bus close'}: the child exits by itself [${backend.name}]`, async () => {
      const prefix = uniquePrefix('parked')
      const args = [path.join(FIXTURES, 'sched-parked-close.js'), what, '2', '6']
      if (backend.url) args.push(backend.url, prefix)
      const child = startChild(process.execPath, args)
      try {
        const { code, signal } = await exitsWithin(child, EXIT_DEADLINE_MS, `parked steps, ${what} closed`)
        assert.equal(signal, null)
        assert.equal(code, 0, `exit code; stderr: ${child.stderr}`)
        assert.match(child.stdout, /^done BUS_CLOSED$/m, 'every pending run() rejected with BUS_CLOSED')
      } finally {
        await child.kill()
        if (backend.url) await deleteRedisPrefix(prefix)
      }
    })
  }
}

for (const backend of BACKENDS) {
  test(`closed buses are garbage-collected, with their store and callbacks [${backend.name}]`, async () => {
    const prefix = uniquePrefix('gc')
    const child = startChild(process.execPath, ['--expose-gc', path.join(FIXTURES, 'bus-gc.js'), backend.url || '', prefix, '20'])
    try {
      const { code } = await exitsWithin(child, 30_000, 'bus-gc')
      assert.equal(code, 0, `stderr: ${child.stderr}`)
      const r = JSON.parse(child.stdout.trim().split('\n').pop())
      assert.equal(r.collected, r.count, `closed buses still reachable: ${child.stdout}`)
    } finally {
      await child.kill()
      if (backend.url) await deleteRedisPrefix(prefix)
    }
  })
}

test('process exit: a failed connect does not keep the process alive', async () => {
  const port = await freePort()
  const child = startChild(process.execPath, [
    path.join(FIXTURES, 'lifecycle.js'),
    'connect-fails',
    `redis://127.0.0.1:${port}`,
    uniquePrefix('life'),
  ])
  try {
    const { code } = await exitsWithin(child, EXIT_DEADLINE_MS, 'connect-fails')
    assert.equal(code, 0, child.stderr)
    assert.match(child.stdout, /done STORE_UNAVAILABLE/)
  } finally {
    await child.kill()
  }
})
