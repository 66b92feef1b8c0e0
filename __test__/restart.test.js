'use strict'
// A Redis restart: calls while it is down fail fast with a typed error; afterwards calls
// recover and a subscription resumes from its last delivered id, exactly once, in order.
// Uses its OWN redis-server on a free port (never the shared one).

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { execFile } = require('node:child_process')
const { EventBus, waitFor, startChild, freePort, uniqueId, uniquePrefix, cmpId } = require('./helpers')

const TIMEOUT_MS = 1000

function cli(port, args) {
  return new Promise((resolve) => {
    execFile('redis-cli', ['-p', String(port), ...args], { timeout: 5000 }, (err, stdout) =>
      resolve(err ? null : stdout.trim()),
    )
  })
}

test('Redis restart: bounded failures while down, then exactly-once delivery of all events', { timeout: 90_000 }, async (t) => {
  const port = await freePort()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lean-events-restart-'))
  let server = null
  const startServer = async () => {
    server = startChild('redis-server', [
      '--port', String(port),
      '--bind', '127.0.0.1',
      '--appendonly', 'yes',
      '--dir', dir,
      '--save', '',
    ])
    await waitFor(async () => (await cli(port, ['PING'])) === 'PONG' || server.done, 10_000, 'redis-server up')
    assert.ok(!server.done, `redis-server exited: ${server.stdout} ${server.stderr}`)
  }
  let bus = null
  t.after(async () => {
    if (bus) await bus.close().catch(() => {})
    if (server) await server.kill('SIGKILL')
    fs.rmSync(dir, { recursive: true, force: true })
  })

  await startServer()
  const url = `redis://127.0.0.1:${port}`
  bus = await EventBus.connect({ url, prefix: uniquePrefix('restart'), timeoutMs: TIMEOUT_MS })
  const id = uniqueId('restart')
  const stream = { type: 'flow', id }
  const got = []
  const subErrors = []
  const sub = await bus.subscribe(stream, (e) => got.push(e), { after: '0', onError: (e) => subErrors.push(e) })

  const firstHalf = []
  for (let i = 0; i < 100; i++) firstHalf.push(await bus.emit({ kind: 'tick', subject: id, data: { i } }))
  await waitFor(() => got.length === 100, 10_000, () => `before the restart: ${got.length}/100`)

  // Stop Redis; SHUTDOWN (without NOSAVE) fsyncs the AOF, so the events survive.
  const shutdown = await cli(port, ['SHUTDOWN'])
  t.diagnostic(`SHUTDOWN answered ${JSON.stringify(shutdown)}`)
  const { signal } = await server.exited
  assert.equal(signal, null, 'redis-server stopped by SHUTDOWN')

  // While it is down every call fails with a typed error within timeoutMs + 2 s, never hangs.
  const downErrors = []
  for (let k = 0; k < 3; k++) {
    const t0 = Date.now()
    let err = null
    try {
      const r = await bus.emit({ kind: 'tick', subject: id, data: { down: k } })
      assert.fail(`emit succeeded while Redis was down: ${JSON.stringify(r)}`)
    } catch (e) {
      err = e
    }
    const elapsed = Date.now() - t0
    assert.ok(err instanceof Error, String(err))
    assert.ok(['STORE_UNAVAILABLE', 'TIMEOUT'].includes(err.code), `emit while down: ${err.code}: ${err.message}`)
    assert.ok(elapsed < TIMEOUT_MS + 2000, `emit while down took ${elapsed} ms`)
    downErrors.push(`${err.code} after ${elapsed} ms: ${err.message}`)
  }
  for (const [what, f] of [
    ['read', () => bus.read(stream)],
    ['emitMany', () => bus.emitMany([{ kind: 'tick', subject: id, data: { down: 'many' } }])],
    ['listRuns', () => bus.listRuns('nothing')],
    ['subscribe', () => bus.subscribe({ type: 'flow', id: `${id}-other` }, () => {})],
  ]) {
    const t0 = Date.now()
    let err = null
    try {
      await f()
    } catch (e) {
      err = e
    }
    const elapsed = Date.now() - t0
    assert.ok(err, `${what} succeeded while Redis was down`)
    assert.ok(['STORE_UNAVAILABLE', 'TIMEOUT'].includes(err.code), `${what} while down: ${err.code}: ${err.message}`)
    assert.ok(elapsed < TIMEOUT_MS + 2000, `${what} while down took ${elapsed} ms`)
    downErrors.push(`${what}: ${err.code} after ${elapsed} ms`)
  }
  t.diagnostic(`while down: ${downErrors.join(' | ')}`)
  assert.equal(sub.closed, false, 'the subscription survives the outage')

  await startServer()
  // The first call after the restart meets the reconnect that failed while Redis was down;
  // it is tried again on a fresh connection (nothing was sent), so it succeeds. The loop only
  // gathers what a regression would look like.
  const secondHalf = []
  const recoverDeadline = Date.now() + 15_000
  const attempts = []
  for (;;) {
    try {
      secondHalf.push(await bus.emit({ kind: 'tick', subject: id, data: { i: 100 } }))
      break
    } catch (e) {
      attempts.push(`${e.code}: ${e.message}`)
      assert.ok(['STORE_UNAVAILABLE', 'TIMEOUT'].includes(e.code), `after restart: ${e.code}: ${e.message}`)
      assert.notEqual(e.code, 'TIMEOUT', 'a timed-out write may or may not be applied; this test needs a clean refusal')
      assert.ok(Date.now() < recoverDeadline, `no recovery within 15 s: ${attempts.join(' | ')}`)
      await new Promise((r) => setTimeout(r, 50)) // retry pacing, not a wait for a result
    }
  }
  t.diagnostic(`failed attempts after the restart: ${attempts.length} ${attempts.join(' | ')}`)
  assert.deepEqual(attempts, [], 'the first emit after the restart succeeds')
  for (let i = 101; i < 200; i++) secondHalf.push(await bus.emit({ kind: 'tick', subject: id, data: { i } }))

  const all = [...firstHalf, ...secondHalf]
  await waitFor(() => got.length >= 200, 20_000, () => `after the restart: ${got.length}/200`)
  // a sentinel, so duplicates that would arrive after the 200th event are seen too
  const sentinel = await bus.emit({ kind: 'sentinel', subject: id })
  await waitFor(() => got.length && got[got.length - 1].id === sentinel.id, 10_000, 'sentinel')
  assert.deepEqual(subErrors, [])
  assert.deepEqual(got.slice(0, -1).map((e) => e.data.i), Array.from({ length: 200 }, (_, i) => i), 'all 200, once each, in order')
  assert.deepEqual(got.slice(0, -1), all)
  const stored = await bus.read(stream, { limit: 1000 })
  assert.deepEqual(stored, [...all, sentinel], 'the AOF kept the first 100; nothing refused while down was stored')
  for (let i = 1; i < got.length; i++) assert.ok(cmpId(got[i - 1].id, got[i].id) < 0)
  await sub.unsubscribe()
  assert.equal(bus.channelCount, 0)
})

test('Pub/Sub disconnects while a writer emits: every subscription still gets every event once, in order', { timeout: 90_000 }, async (t) => {
  const port = await freePort()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lean-events-pubsub-'))
  const server = startChild('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no'])
  let bus = null
  t.after(async () => {
    if (bus) await bus.close().catch(() => {})
    await server.kill('SIGKILL')
    fs.rmSync(dir, { recursive: true, force: true })
  })
  await waitFor(async () => (await cli(port, ['PING'])) === 'PONG' || server.done, 10_000, 'redis-server up')
  const warnings = []
  bus = await EventBus.connect({
    url: `redis://127.0.0.1:${port}`,
    prefix: uniquePrefix('kill'),
    timeoutMs: TIMEOUT_MS,
    onWarning: (code, message) => warnings.push([code, message]),
  })
  const id = uniqueId('kill')
  const stream = { type: 'flow', id }
  await bus.emitMany(Array.from({ length: 20 }, (_, i) => ({ kind: 'tick', subject: id, data: { i: -20 + i } })))
  const subs = [{ after: '0' }, { backfill: 5 }, {}].map((opts) => ({ opts, got: [], errors: [] }))
  for (const s of subs) {
    s.sub = await bus.subscribe(stream, (e) => s.got.push(e.id), { ...s.opts, onError: (e) => s.errors.push(e) })
  }
  const TOTAL = 2000
  let kills = 0
  for (let i = 0; i < TOTAL; i += 50) {
    await bus.emitMany(Array.from({ length: 50 }, (_, k) => ({ kind: 'tick', subject: id, data: { i: i + k } })))
    if (i % 400 === 200) {
      const killed = await cli(port, ['CLIENT', 'KILL', 'TYPE', 'pubsub'])
      kills += Number(killed) || 0
    }
  }
  t.diagnostic(`killed ${kills} Pub/Sub connections`)
  assert.ok(kills >= 3, 'the Pub/Sub connection was really killed')
  const sentinel = await bus.emit({ kind: 'sentinel', subject: id })
  await waitFor(() => subs.every((s) => s.got[s.got.length - 1] === sentinel.id), 30_000, () => subs.map((s) => s.got.length).join('/'))
  const all = (await bus.read(stream, { limit: 10_000 })).map((r) => r.id)
  assert.equal(all.length, 20 + TOTAL + 1)
  assert.deepEqual(subs[0].got, all, 'after 0: everything once, in order')
  assert.deepEqual(subs[1].got, all.slice(15), 'backfill 5: the last 5 before, then everything')
  assert.deepEqual(subs[2].got, all.slice(20), 'live-only: everything after it started')
  for (const s of subs) assert.deepEqual(s.errors, [])
  // each loss of the live connection is a warning, handed to onWarning and counted
  await waitFor(() => (bus.warningCounts.LIVE_CONNECTION_LOST ?? 0) === kills, 10_000, () => JSON.stringify(bus.warningCounts))
  assert.equal(warnings.filter(([code]) => code === 'LIVE_CONNECTION_LOST').length, kills)
  for (const s of subs) await s.sub.unsubscribe()
})
