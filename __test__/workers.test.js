'use strict'
// Worker threads come and go freely: every native resource of a terminated worker is released
// by its environment's cleanup, nothing runs against a torn-down environment, and a worker
// that closes what it opened exits by itself.

const assert = require('node:assert/strict')
const path = require('node:path')
const { test } = require('node:test')
const { startChild, REDIS_URL, uniquePrefix, deleteRedisPrefix } = require('./helpers')

const SCRIPT = path.join(__dirname, 'fixtures', 'workers.js')

async function run(args, deadlineMs) {
  const child = startChild(process.execPath, [SCRIPT, ...args])
  const timer = setTimeout(() => child.kill('SIGKILL'), deadlineMs)
  const { code, signal } = await child.exited
  clearTimeout(timer)
  return { code, signal, out: `${child.stdout}\n${child.stderr}` }
}

for (const [name, url] of [['embedded', undefined], ['redis', REDIS_URL]]) {
  const target = (prefix) => (url ? [url, prefix] : [])
  test(`workers terminated while a Scheduler starts do not crash the process [${name}]`, { timeout: 120_000 }, async (t) => {
    const prefix = uniquePrefix('workers')
    t.after(() => deleteRedisPrefix(prefix))
    // a crash here was intermittent: several runs make a regression show
    for (let i = 0; i < 3; i++) {
      const r = await run(['churn', ...target(prefix)], 60_000)
      assert.equal(r.signal, null, `run ${i}: killed by ${r.signal}: ${r.out}`)
      assert.equal(r.code, 0, `run ${i}: ${r.out}`)
      assert.match(r.out, /done/)
    }
  })

  test(`a worker that closes its scheduler and bus exits by itself [${name}]`, { timeout: 60_000 }, async (t) => {
    const prefix = uniquePrefix('workers')
    t.after(() => deleteRedisPrefix(prefix))
    const r = await run(['close', ...target(prefix)], 30_000)
    assert.equal(r.signal, null, `killed by ${r.signal} (a hang): ${r.out}`)
    assert.equal(r.code, 0, r.out)
  })
}
