#!/usr/bin/env node
'use strict'
// `npm run demo`: build what is needed and start the example Nitro app (examples/nitro).
//
//   1. the native addon, when it is missing or older than the Rust sources (scripts/install.js)
//   2. the example's dependencies, when examples/nitro/node_modules is missing (npm install)
//   3. the example's Nitro build, when its inputs changed since the last build
//   4. node examples/nitro/.output/server/index.mjs on PORT (default 3000)
//
// The embedded in-memory store is used unless REDIS_URL (or NUXT_QUEUE_REDIS_URL) is set.
// `--build-only` stops after step 3 (the tests use it).

const crypto = require('node:crypto')
const fs = require('node:fs')
const net = require('node:net')
const path = require('node:path')
const { spawn, spawnSync } = require('node:child_process')
const { walkFiles } = require('./install.js')

const ROOT = path.resolve(__dirname, '..')
const EXAMPLE = path.join(ROOT, 'examples', 'nitro')
const OUTPUT = path.join(EXAMPLE, '.output')
const SERVER_ENTRY = path.join(OUTPUT, 'server', 'index.mjs')
const STAMP = path.join(OUTPUT, '.lean-events-build-stamp')
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm'

const EXAMPLE_INPUTS = ['nitro.config.ts', 'package.json', 'package-lock.json', 'routes', 'plugins', 'utils', 'public']
// the package files the build reads (the client module is copied into .output/public)
const PACKAGE_INPUTS = ['package.json', 'index.js', 'lib', 'binding.js', 'client', 'nitro']

function say(msg) {
  console.log(`demo: ${msg}`)
}

function run(cmd, args, options) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', shell: process.platform === 'win32', ...options })
  if (r.error) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}`)
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${r.status}`)
}

/** A hash of every file under the given paths (relative to base). */
function hashInputs(base, entries, hash) {
  for (const e of entries) {
    walkFiles(path.join(base, e), ['node_modules', '.output', '.nitro'], (p) => {
      hash.update(path.relative(base, p))
      hash.update('\0')
      hash.update(fs.readFileSync(p))
      hash.update('\0')
    })
  }
}

function buildStamp() {
  const hash = crypto.createHash('sha256')
  hashInputs(EXAMPLE, EXAMPLE_INPUTS, hash)
  hashInputs(ROOT, PACKAGE_INPUTS, hash)
  hash.update(process.version)
  return hash.digest('hex')
}

function ensureAddon() {
  run(process.execPath, [path.join(__dirname, 'install.js')], { cwd: ROOT })
}

function ensureExampleDeps() {
  const linked = path.join(EXAMPLE, 'node_modules', 'lean-events')
  const nitro = path.join(EXAMPLE, 'node_modules', 'nitropack', 'package.json')
  if (fs.existsSync(nitro) && fs.existsSync(linked)) return
  say('installing the example app dependencies (examples/nitro: npm install)')
  const t0 = Date.now()
  run(NPM, ['install', '--no-audit', '--no-fund', '--prefer-offline'], { cwd: EXAMPLE })
  say(`dependencies installed in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
}

function ensureBuild() {
  const stamp = buildStamp()
  if (fs.existsSync(SERVER_ENTRY) && fs.existsSync(STAMP) && fs.readFileSync(STAMP, 'utf8') === stamp) {
    say('the example build is up to date')
    return
  }
  say('building the example app (nitro build)')
  const t0 = Date.now()
  const cli = path.join(EXAMPLE, 'node_modules', 'nitropack', 'dist', 'cli', 'index.mjs')
  run(process.execPath, [cli, 'build'], { cwd: EXAMPLE })
  fs.writeFileSync(STAMP, stamp)
  say(`built in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
}

function waitForPort(port, host, deadlineMs) {
  const deadline = Date.now() + deadlineMs
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const socket = net.connect({ port, host })
      socket.once('connect', () => {
        socket.destroy()
        resolve()
      })
      socket.once('error', () => {
        socket.destroy()
        if (Date.now() > deadline) reject(new Error(`nothing listens on ${host}:${port}`))
        else setTimeout(attempt, 100)
      })
    }
    attempt()
  })
}

async function serve() {
  const port = Number(process.env.PORT || process.env.NITRO_PORT || 3000)
  const env = { ...process.env, PORT: String(port) }
  const child = spawn(process.execPath, [SERVER_ENTRY], { cwd: EXAMPLE, env, stdio: 'inherit' })
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => {
      if (child.exitCode === null) child.kill(sig)
    })
  }
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 0 : 1)))
  const redis = process.env.REDIS_URL || process.env.NUXT_QUEUE_REDIS_URL
  try {
    await waitForPort(port, process.env.HOST || process.env.NITRO_HOST || '127.0.0.1', 20_000)
    const store = redis ? `Redis (${redis.replace(/\/\/[^@/]*@/, '//***@')})` : 'the embedded in-memory store (set REDIS_URL for Redis)'
    say(`example-flow is running on ${store}`)
    say(`open http://localhost:${port}/   (Ctrl-C stops it)`)
  } catch (err) {
    say(`the server did not start: ${err.message}`)
  }
}

async function main() {
  const buildOnly = process.argv.includes('--build-only')
  ensureAddon()
  ensureExampleDeps()
  ensureBuild()
  if (!buildOnly) await serve()
}

main().catch((err) => {
  console.error(`demo: ${err.message}`)
  process.exit(1)
})
