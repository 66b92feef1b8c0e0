'use strict'
// Start a private redis-server on a free port (or use BENCH_REDIS_URL), and stop it again.

const net = require('node:net')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn } = require('node:child_process')
const Redis = require('ioredis')

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

async function waitForPing(url, timeoutMs) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const client = new Redis(url, { lazyConnect: true, retryStrategy: null, maxRetriesPerRequest: 0 })
    client.on('error', () => {})
    try {
      await client.connect()
      if ((await client.ping()) === 'PONG') return
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`redis at ${url} did not answer PING: ${err.message}`)
    } finally {
      client.disconnect()
    }
    await new Promise((r) => setTimeout(r, 50))
  }
}

/**
 * Returns { url, owned, stop() }. With BENCH_REDIS_URL the server is someone else's: it is
 * only pinged, never flushed or stopped. `own: true` starts one anyway; `args` are appended to
 * redis-server's command line (e.g. `--replicaof`).
 */
async function startRedis({ args: extra = [], own = false } = {}) {
  if (process.env.BENCH_REDIS_URL && !own) {
    const url = process.env.BENCH_REDIS_URL
    await waitForPing(url, 5000)
    return { url, owned: false, stop() {} }
  }
  const port = await freePort()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lean-events-bench-redis-'))
  const args = ['--save', '', '--appendonly', 'no', '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, ...extra]
  const child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let log = ''
  const keep = (chunk) => {
    log = (log + chunk).slice(-4000)
  }
  child.stdout.on('data', keep)
  child.stderr.on('data', keep)
  const exited = new Promise((resolve) => child.once('exit', resolve))
  let stopped = false
  const stop = () => {
    if (stopped) return
    stopped = true
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
    fs.rmSync(dir, { recursive: true, force: true })
  }
  const url = `redis://127.0.0.1:${port}`
  try {
    await Promise.race([
      waitForPing(url, 10000),
      exited.then((code) => {
        throw new Error(`redis-server exited (${code}) before answering PING:\n${log}`)
      }),
    ])
  } catch (err) {
    stop()
    throw err
  }
  return { url, owned: true, pid: child.pid, stop, exited }
}

module.exports = { startRedis }
