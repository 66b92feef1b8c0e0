'use strict'
// Shared helpers of the node --test suite: unique prefixes, both backends, polling, error checks.

const test = require('node:test')
const assert = require('node:assert/strict')
const { execFile, spawn } = require('node:child_process')
const net = require('node:net')
const path = require('node:path')
const { EventBus } = require('..')

const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379'
/** The Redis tests run on a Redis Cluster when REDIS_URL is `redis+cluster://host:port,…`. */
const CLUSTER = REDIS_URL.startsWith('redis+cluster://')
const CLUSTER_NODES = CLUSTER ? REDIS_URL.slice('redis+cluster://'.length).split(',').filter(Boolean) : []
const FIXTURES = path.join(__dirname, 'fixtures')

let counter = 0
/** A key prefix no other test (or other run) uses. */
function uniquePrefix(tag = 't') {
  counter += 1
  return `${tag}-${process.pid}-${Date.now()}-${counter}`
}

/** A stream/subject id unique within a prefix. */
let subjectCounter = 0
function uniqueId(tag = 'run') {
  subjectCounter += 1
  return `${tag}-${subjectCounter}-${Math.random().toString(36).slice(2, 8)}`
}

const BACKENDS = [
  { name: 'redis', url: REDIS_URL },
  { name: 'embedded', url: undefined },
]

/** redis-cli against `url`; on a cluster url, against its first node, following redirects. */
function redisCli(args, url = REDIS_URL) {
  let target = ['-u', url]
  if (url.startsWith('redis+cluster://')) {
    const [host, port] = url.slice('redis+cluster://'.length).split(',')[0].split(':')
    target = ['-c', '-h', host, '-p', port]
  }
  return new Promise((resolve, reject) => {
    execFile('redis-cli', [...target, ...args], { maxBuffer: 64 * 1024 * 1024 }, (err, stdout) =>
      err ? reject(err) : resolve(stdout),
    )
  })
}

/** The key of a stream: on a cluster its id is a hash tag. */
function streamKey(prefix, type, id) {
  return CLUSTER ? `${prefix}:${type}:{${id}}` : `${prefix}:${type}:${id}`
}

/** How many connections subscribe to a stream's live channel (sharded Pub/Sub on a cluster). */
async function liveSubscribers(prefix, type, id) {
  const channel = `${streamKey(prefix, type, id)}:live`
  if (!CLUSTER) {
    const out = (await redisCli(['PUBSUB', 'NUMSUB', channel])).trim().split('\n')
    return Number(out[1])
  }
  let total = 0
  for (const node of CLUSTER_NODES) {
    const out = (await redisCli(['PUBSUB', 'SHARDNUMSUB', channel], `redis://${node}`)).trim().split('\n')
    total += Number(out[1] || 0)
  }
  return total
}

/**
 * The keys under a test's prefix. On a cluster they are spread over the masters, and the
 * cluster layout names some with the prefix as hash tag (`{prefix}:…`): every node is scanned
 * for both forms.
 */
async function redisKeysUnder(prefix) {
  if (!CLUSTER) return (await redisCli(['--scan', '--pattern', `${prefix}:*`])).split('\n').filter(Boolean)
  const keys = new Set()
  for (const node of CLUSTER_NODES) {
    for (const pattern of [`${prefix}:*`, `{${prefix}}:*`]) {
      const out = await redisCli(['--scan', '--pattern', pattern], `redis://${node}`)
      for (const k of out.split('\n')) if (k) keys.add(k)
    }
  }
  return [...keys].sort()
}

/** Best effort: delete the keys a test wrote to the shared Redis (never FLUSH anything). */
async function deleteRedisPrefix(prefix) {
  try {
    const keys = await redisKeysUnder(prefix)
    if (!CLUSTER) {
      for (let i = 0; i < keys.length; i += 500) await redisCli(['UNLINK', ...keys.slice(i, i + 500)])
      return
    }
    if (keys.length === 0) return
    // one UNLINK may not span slots: one per key, through a redis-cli that follows redirects
    const [host, port] = CLUSTER_NODES[0].split(':')
    const script = keys.map((k) => `UNLINK ${JSON.stringify(k)}\n`).join('')
    await new Promise((resolve, reject) => {
      const cli = execFile('redis-cli', ['-c', '-h', host, '-p', port], { maxBuffer: 64 * 1024 * 1024 }, (err) => (err ? reject(err) : resolve()))
      cli.stdin.end(script)
    })
  } catch {
    // cleanup is best effort
  }
}

/**
 * A per-test context: `connect(extra)` opens a bus with the test's prefix and backend, and
 * every bus opened through it is closed (and its Redis keys deleted) when the test ends.
 */
function makeContext(backend, tag) {
  const prefix = uniquePrefix(tag)
  const buses = []
  return {
    backend: backend.name,
    url: backend.url,
    prefix,
    redis: backend.name === 'redis',
    async connect(extra = {}) {
      const opts = { prefix, ...extra }
      if (backend.url && !('url' in extra)) opts.url = backend.url
      const bus = await EventBus.connect(opts)
      buses.push(bus)
      return bus
    },
    async cleanup() {
      for (const bus of buses) {
        try {
          await bus.close()
        } catch {
          // already closed
        }
      }
      if (backend.url) await deleteRedisPrefix(prefix)
    },
  }
}

/** Define `name` once per backend: `fn(ctx, t)` where ctx.connect() opens buses on that backend. */
function bothBackends(name, fn, options = {}) {
  for (const backend of BACKENDS) {
    if (options.only && options.only !== backend.name) continue
    const testOptions = { timeout: options.timeout ?? 60_000 }
    if (options.todo) testOptions.todo = options.todo
    test(`${name} [${backend.name}]`, testOptions, async (t) => {
      const ctx = makeContext(backend, options.tag || 't')
      try {
        await fn(ctx, t)
      } finally {
        await ctx.cleanup()
      }
    })
  }
}

/** Define `name` for Redis only. */
function redisOnly(name, fn, options = {}) {
  return bothBackends(name, fn, { ...options, only: 'redis' })
}

/** Poll `predicate` every 5 ms until it is truthy; throw on the deadline. */
async function waitFor(predicate, timeoutMs = 5000, what = 'condition') {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await predicate()
    if (v) return v
    if (Date.now() > deadline) {
      const detail = typeof what === 'function' ? what() : what
      throw new Error(`waitFor timed out after ${timeoutMs} ms: ${detail}`)
    }
    await new Promise((r) => setTimeout(r, 5))
  }
}

/** Assert that `fnOrPromise` rejects (or throws) an Error with a string `code` equal to `code`. */
async function expectCode(fnOrPromise, code, what = '') {
  let err
  try {
    await (typeof fnOrPromise === 'function' ? fnOrPromise() : fnOrPromise)
  } catch (e) {
    err = e
  }
  assert.ok(err, `${what}: expected a rejection with code ${code}, but it resolved`)
  assertTypedError(err, what)
  assert.equal(err.code, code, `${what}: expected ${code}, got ${err.code}: ${err.message}`)
  return err
}

function assertTypedError(err, what = '') {
  assert.ok(err instanceof Error, `${what}: not an Error instance: ${String(err)}`)
  assert.equal(typeof err.code, 'string', `${what}: err.code is not a string (${err.message})`)
  assert.ok(err.message.length > 0, `${what}: empty message`)
}

/** Parse "<ms>-<seq>" (or "<ms>", seq 0) into [BigInt ms, BigInt seq]. */
function parseId(id) {
  const m = /^(\d+)(?:-(\d+))?$/.exec(id)
  assert.ok(m, `not a stream id: ${id}`)
  return [BigInt(m[1]), BigInt(m[2] ?? 0)]
}

/** Compare two stream ids: negative, 0, positive. */
function cmpId(a, b) {
  const [am, as] = parseId(a)
  const [bm, bs] = parseId(b)
  if (am !== bm) return am < bm ? -1 : 1
  if (as !== bs) return as < bs ? -1 : 1
  return 0
}

function assertIncreasing(ids, what = 'ids') {
  for (let i = 1; i < ids.length; i++) {
    assert.ok(cmpId(ids[i - 1], ids[i]) < 0, `${what}: ${ids[i - 1]} is not before ${ids[i]} (index ${i})`)
  }
}

/** Every record of a stream, paging with `after` past the 10 000 read limit. */
async function readAll(bus, stream) {
  const out = []
  let after
  for (;;) {
    const page = await bus.read(stream, after ? { after, limit: 10_000 } : { limit: 10_000 })
    out.push(...page)
    if (page.length < 10_000) return out
    after = page[page.length - 1].id
  }
}

/** A free TCP port on 127.0.0.1 (bind to 0, read it, close). */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

/**
 * Start a child process; collects stdout/stderr, and exposes `exited` (a promise of
 * { code, signal }) and `kill()`. Every child is killed when the test file ends.
 */
const children = new Set()
function startChild(cmd, args, options = {}) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options })
  const info = { child, stdout: '', stderr: '', exitCode: null, signal: null, done: false }
  child.stdout.on('data', (d) => (info.stdout += d))
  child.stderr.on('data', (d) => (info.stderr += d))
  info.exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      info.exitCode = code
      info.signal = signal
      info.done = true
      children.delete(info)
      resolve({ code, signal })
    })
    child.on('error', (err) => {
      info.error = err
      info.done = true
      children.delete(info)
      resolve({ code: null, signal: null, error: err })
    })
  })
  info.kill = async (signal = 'SIGKILL') => {
    if (!info.done) {
      try {
        child.kill(signal)
      } catch {
        // gone already
      }
      await info.exited
    }
  }
  children.add(info)
  return info
}

process.on('exit', () => {
  for (const c of children) {
    try {
      c.child.kill('SIGKILL')
    } catch {
      // ignore
    }
  }
})

/** Deterministic PRNG (mulberry32), so a failing random schedule can be replayed by seed. */
function rng(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

module.exports = {
  EventBus,
  REDIS_URL,
  CLUSTER,
  CLUSTER_NODES,
  streamKey,
  liveSubscribers,
  FIXTURES,
  BACKENDS,
  uniquePrefix,
  uniqueId,
  makeContext,
  bothBackends,
  redisOnly,
  waitFor,
  expectCode,
  assertTypedError,
  cmpId,
  assertIncreasing,
  readAll,
  freePort,
  startChild,
  redisCli,
  deleteRedisPrefix,
  redisKeysUnder,
  rng,
}
