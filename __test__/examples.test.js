'use strict'
// The examples the README points to run as written (on the embedded store) and say what they should.

const test = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const { execFile } = require('node:child_process')

function runExample(file) {
  const env = { ...process.env }
  delete env.REDIS_URL
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(__dirname, '..', 'examples', file)], { env, timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? err.code ?? 1 : 0, stdout, stderr }),
    )
  })
}

test('examples/emit-subscribe.js', async () => {
  const { code, stdout, stderr } = await runExample('emit-subscribe.js')
  assert.equal(code, 0, stderr)
  assert.match(stdout, /delivered: flow\.started step\.started log/)
  assert.match(stdout, /runs: true/)
})

test('examples/scheduler.js', async () => {
  const { code, stdout, stderr } = await runExample('scheduler.js')
  assert.equal(code, 0, stderr)
  assert.match(stdout, /waiting for trigger [0-9a-f]{32}/)
  assert.match(stdout, /result: \{"orderId":"42","paidIn":"\d+-\d+","decision":\{"approved":true,"by":"ann"\}\}/)
  assert.match(stdout, /events: step\.started log step\.failed step\.retry step\.started log step\.await\.time step\.resumed step\.await\.event step\.resumed step\.await\.trigger step\.resumed step\.completed/)
  assert.match(stdout, /state: completed/)
})
