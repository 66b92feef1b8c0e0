#!/usr/bin/env node
'use strict'
// Dev-only end-to-end check of lean-events/nvent against nvent's own playground (not part of
// `npm test`: it needs a checkout of the module's repository).
//
//   NVENT_DIR=/path/to/nuxt-queue node scripts/nvent-e2e.js
//
// NVENT_DIR is a checkout of DevJoghurt/nuxt-queue (nvent 0.5.x) whose dependencies are
// installed (pnpm@10.20.0: `pnpm install --frozen-lockfile`, which also prepares the
// playground); `pnpm` must be on PATH (`npm install -g pnpm@10.20.0`). Nothing in it is changed: the playground is copied next to it
// (NVENT_DIR/playground-lean-events, so pnpm's relative links still resolve), and in the copy
// - `lean-events/nvent` goes FIRST in `modules` (the plugin must still end up after nvent's
//   Redis adapter modules and before nvent: that is what the module arranges);
// - the Postgres adapter modules are dropped (they connect and migrate even when unselected);
// - nvent's Redis connection points at a redis-server this script starts on a free port;
// - this checkout of lean-events is installed as a real directory in its node_modules.
// Then: `nuxi build` of the copy, its server started with LEAN_EVENTS=1, a flow started through
// the HTTP API with the UI's WebSocket subscribed, and checked: the run completes, its events
// are in the stream and arrive over lean-events' own gap-free subscription, its run index entry
// and the flow's stats say so, and the WebSocket delivered the run's events.
// Options: NVENT_FLOW (default notification-confirmation-flow), E2E_KEEP=1 (keep the copy),
// E2E_TIMEOUT_S (default 120, for the run).

const { spawn, spawnSync, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const path = require('node:path')

if (typeof WebSocket === 'undefined') {
  // Node 20: the WebSocket client is behind a flag
  const r = spawnSync(process.execPath, ['--experimental-websocket', __filename], { stdio: 'inherit' })
  process.exit(r.status ?? 1)
}

const ROOT = path.join(__dirname, '..')
const NVENT_DIR = process.env.NVENT_DIR && path.resolve(process.env.NVENT_DIR)
const FLOW = process.env.NVENT_FLOW || 'notification-confirmation-flow'
const RUN_TIMEOUT_MS = Number(process.env.E2E_TIMEOUT_S || 120) * 1000
const COPY = 'playground-lean-events'

const children = []
function log(msg) {
  console.log(`[nvent-e2e] ${msg}`)
}
function fail(msg) {
  throw new Error(msg)
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

/** A child process whose output is kept (and shown with a prefix when `show`). */
function start(cmd, args, opts, tag, show = false) {
  const child = spawn(cmd, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] })
  children.push(child)
  child.output = ''
  const take = (chunk) => {
    const text = chunk.toString()
    child.output += text
    if (show) for (const line of text.split('\n').filter(Boolean)) console.log(`  ${tag}| ${line}`)
  }
  child.stdout.on('data', take)
  child.stderr.on('data', take)
  child.exitCode_ = null
  child.on('exit', (code, signal) => (child.exitCode_ = code ?? signal))
  return child
}

async function until(what, timeoutMs, check) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await check()
    if (v) return v
    if (Date.now() > deadline) fail(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

/** The playground copy: its config rewritten, this checkout of lean-events installed. */
function prepareCopy(redisPort) {
  const src = path.join(NVENT_DIR, 'playground')
  const dst = path.join(NVENT_DIR, COPY)
  fs.rmSync(dst, { recursive: true, force: true })
  fs.cpSync(src, dst, {
    recursive: true,
    verbatimSymlinks: true,
    filter: (p) => !/[\\/](\.nuxt|\.output|\.data)$/.test(p) && !p.endsWith(`${path.sep}node_modules${path.sep}lean-events`),
  })
  const configFile = path.join(dst, 'nuxt.config.ts')
  let config = fs.readFileSync(configFile, 'utf8')
  const edits = [
    [/^\s*'@nvent-addon\/adapter-(store|queue|stream)-postgres',\s*\n/gm, '', 'the Postgres adapter modules'],
    [/modules:\s*\[/, "modules: [\n    'lean-events/nvent',", 'the modules list'],
    [/(redis:\s*\{\s*host:\s*)'[^']*'(,\s*port:\s*)\d+/, `$1'127.0.0.1'$2${redisPort}`, "nvent's Redis connection"],
  ]
  for (const [re, to, what] of edits) {
    if (!re.test(config)) fail(`playground/nuxt.config.ts: cannot find ${what} (is NVENT_DIR an nvent 0.5 checkout?)`)
    re.lastIndex = 0
    config = config.replace(re, to)
  }
  fs.writeFileSync(configFile, config)

  // lean-events as npm would install it: the tarball's files, plus the addon built here
  const packed = JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json'], { cwd: ROOT, encoding: 'utf8' }))[0]
  const target = path.join(dst, 'node_modules', 'lean-events')
  fs.rmSync(target, { recursive: true, force: true })
  const binaries = fs.readdirSync(ROOT).filter((f) => /^lean-events\..+\.node$/.test(f))
  if (binaries.length === 0) fail('no lean-events.<platform>.node here: build the addon first (npm run build)')
  for (const f of [...packed.files.map((x) => x.path), ...binaries]) {
    fs.mkdirSync(path.dirname(path.join(target, f)), { recursive: true })
    fs.copyFileSync(path.join(ROOT, f), path.join(target, f))
  }
  return { dst, config }
}

async function main() {
  if (!NVENT_DIR) fail('set NVENT_DIR to a checkout of DevJoghurt/nuxt-queue with its dependencies installed (pnpm install)')
  for (const need of ['playground/nuxt.config.ts', 'node_modules', 'packages/nvent']) {
    if (!fs.existsSync(path.join(NVENT_DIR, need))) fail(`NVENT_DIR has no ${need}: run pnpm install --frozen-lockfile there first`)
  }
  const { EventBus } = require(ROOT)

  const redisPort = await freePort()
  const redis = start('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {}, 'redis')
  const redisUrl = `redis://127.0.0.1:${redisPort}`
  await until('redis-server', 10_000, () => spawnSync('redis-cli', ['-p', String(redisPort), 'ping'], { encoding: 'utf8' }).stdout.includes('PONG'))
  log(`redis-server on ${redisUrl}`)

  const { dst, config } = prepareCopy(redisPort)
  log(`playground copied to ${dst}; its modules: ${/modules:\s*\[([^\]]*)\]/.exec(config)[1].replace(/\s+/g, ' ').trim()}`)

  let t = Date.now()
  log(`nuxi build ${COPY} ...`)
  const build = spawnSync('pnpm', ['exec', 'nuxi', 'build', COPY], { cwd: NVENT_DIR, encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, timeout: 15 * 60_000 })
  if (build.error) fail(`could not run pnpm (${build.error.code || build.error.message}): put pnpm@10.20.0 on PATH (npm install -g pnpm@10.20.0)`)
  if (build.status !== 0) {
    console.log(`${build.stdout}${build.stderr}`.split('\n').slice(-60).join('\n'))
    fail(`nuxi build failed (exit ${build.status})`)
  }
  log(`built in ${((Date.now() - t) / 1000).toFixed(0)} s`)

  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  t = Date.now()
  const server = start(process.execPath, [path.join(dst, '.output', 'server', 'index.mjs')], {
    cwd: dst,
    env: { ...process.env, LEAN_EVENTS: '1', PORT: String(port), HOST: '127.0.0.1', NITRO_PORT: String(port), NITRO_HOST: '127.0.0.1' },
  }, 'server')
  await until('the server to initialize its adapters', 60_000, () => {
    if (server.exitCode_ !== null) fail(`the server exited (${server.exitCode_}):\n${server.output}`)
    return server.output.includes('Adapters initialized successfully')
  })
  const registered = /\[lean-events\/nvent\][^\n]*/.exec(server.output)
  if (!registered) fail(`lean-events/nvent did not register:\n${server.output}`)
  if (/Unknown (stream|store) adapter/.test(server.output)) fail(`nvent did not find an adapter:\n${server.output}`)
  log(`server up on ${base} in ${((Date.now() - t) / 1000).toFixed(1)} s; ${registered[0]}`)
  await until('the HTTP server', 20_000, async () => (await fetch(`${base}/api/_flows`).catch(() => null))?.ok)

  // the UI's socket: stats first, then the run once it has an id
  const messages = []
  const ws = new WebSocket(`ws://127.0.0.1:${port}/api/_flows/ws`)
  ws.onmessage = (m) => messages.push(JSON.parse(m.data))
  await new Promise((resolve, reject) => {
    ws.onopen = resolve
    ws.onerror = () => reject(new Error('the WebSocket did not open'))
  })
  ws.send(JSON.stringify({ type: 'subscribe.stats' }))

  const bus = await EventBus.connect({ url: redisUrl, prefix: 'nvent' })
  t = Date.now()
  const res = await fetch(`${base}/api/_flows/${FLOW}/start`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'e2e@example.com' }) })
  const started = await res.json()
  if (!res.ok || !started.flowId) fail(`start answered ${res.status}: ${JSON.stringify(started)}`)
  const runId = started.flowId
  log(`POST /api/_flows/${FLOW}/start → ${res.status} ${JSON.stringify(started)}`)
  ws.send(JSON.stringify({ type: 'subscribe', flowName: FLOW, runId }))

  // lean-events' own subscription to nvent's stream of the run, from its first entry
  const live = []
  const sub = await bus.subscribe({ type: 'flow', id: `run:${runId}` }, (rec) => live.push(rec), { after: '0-0' })

  const streamKey = `nvent:flow:run:${runId}`
  const terminal = await until(`${FLOW} run ${runId} to end`, RUN_TIMEOUT_MS, async () => {
    const entries = await bus.keyspace.readEntries(streamKey)
    return entries.find((e) => e.fields.some(([k, v]) => k === 'type' && (v === 'flow.completed' || v === 'flow.failed')))
  })
  const ranFor = ((Date.now() - t) / 1000).toFixed(1)
  const entries = await bus.keyspace.readEntries(streamKey)
  const types = entries.map((e) => Object.fromEntries(e.fields).type)
  const outcome = Object.fromEntries(terminal.fields).type
  log(`run ended with ${outcome} after ${ranFor} s; ${entries.length} stream entries: ${types.join(', ')}`)
  if (outcome !== 'flow.completed') fail(`the run did not complete: ${outcome}`)

  const { createStoreAdapter } = await import('../nvent/adapters.js')
  const store = createStoreAdapter({ bus, prefix: 'nvent' })
  const entry = await until('the run index entry to say completed', 10_000, async () => {
    const e = await store.index.get(`nvent:flow:runs:${FLOW}`, runId)
    return e?.metadata?.status === 'completed' && e
  })
  log(`index nvent:flow:runs:${FLOW} ${runId}: ${JSON.stringify(entry.metadata)}`)
  const flowEntry = await store.index.get('nvent:flows', FLOW)
  log(`index nvent:flows ${FLOW}: stats ${JSON.stringify(flowEntry?.metadata?.stats)}`)
  if (!(flowEntry?.metadata?.stats?.success >= 1)) fail("the flow's stats do not count the success")

  await until('the WebSocket to deliver the run', 10_000, () => messages.some((m) => m.type === 'event' && JSON.stringify(m).includes('flow.completed')))
  const byType = {}
  for (const m of messages) byType[m.type] = (byType[m.type] || 0) + 1
  const wsEvents = messages.filter((m) => m.type === 'event' && m.runId === runId).length
  log(`WebSocket: ${messages.length} messages ${JSON.stringify(byType)}; ${wsEvents} events of the run`)
  if (wsEvents === 0) fail('no event of the run arrived over the WebSocket')

  await until("lean-events' subscription to catch up", 10_000, () => live.length >= entries.length)
  const liveIds = live.map((r) => r.id)
  if (JSON.stringify(liveIds) !== JSON.stringify(entries.map((e) => e.id))) fail('the lean-events subscription did not deliver the stream as stored')
  log(`lean-events subscription to flow/run:${runId}: ${live.length} records, the stream's entries in order`)

  await sub.unsubscribe()
  ws.close()
  await bus.close()
  log('OK')
}

/** Stop a child: SIGTERM, then SIGKILL after `graceMs`; resolves to how it ended. */
function stopChild(child, graceMs) {
  if (child.exitCode_ !== null) return Promise.resolve(`had exited (${child.exitCode_})`)
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      resolve(`did not exit within ${graceMs / 1000} s of SIGTERM: killed`)
    }, graceMs)
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      resolve(`exited (${code ?? signal}) on SIGTERM`)
    })
    child.kill('SIGTERM')
  })
}

/** The server first (while its Redis is still there), then the redis-server. */
async function stop() {
  for (const c of [...children].reverse()) {
    const how = await stopChild(c, 20_000)
    if (c === children[1]) log(`server ${how}`)
  }
  if (NVENT_DIR && process.env.E2E_KEEP !== '1') fs.rmSync(path.join(NVENT_DIR, COPY), { recursive: true, force: true })
}

main()
  .then(async () => {
    await stop()
    process.exit(0)
  })
  .catch(async (err) => {
    console.error(`[nvent-e2e] FAILED: ${err.message}`)
    const server = children[1]
    if (server && process.env.E2E_VERBOSE === '1') console.error(server.output)
    await stop()
    process.exit(1)
  })
