'use strict'
// lean-events installed as an app installs it: `npm pack` of the main package (which carries
// no binary) and of this platform's prebuilt package, installed into an empty app with and
// without cargo on PATH. The app runs on the embedded store (no Redis url reaches it); every
// temp dir is removed. The build from source takes minutes: it runs only with
// LEAN_EVENTS_TEST_SOURCE_BUILD=1, which .ci/run sets.

const test = require('node:test')
const { describe, before, after } = test
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { parseTriple } = require('@napi-rs/cli')
const { platformName, binaryFile, platformPackage } = require('../lib/platform.js')

const ROOT = path.join(__dirname, '..')
const WINDOWS = process.platform === 'win32'
const NPM = WINDOWS ? 'npm.cmd' : 'npm'
const PLATFORM = platformName()
const PACKAGE = platformPackage(PLATFORM)
const BINARY = binaryFile(PLATFORM)
const NAPI_CLI = path.join(ROOT, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js')
const SOURCE_BUILD = process.env.LEAN_EVENTS_TEST_SOURCE_BUILD === '1'
/** This platform's Rust target among napi's `targets` in package.json, if it has a prebuilt package. */
const TRIPLE = require('../package.json').napi.targets.find((t) => parseTriple(t).platformArchABI === PLATFORM)
const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`

/**
 * The environment of the app's npm: without the variables `npm test` sets for its own
 * package, without any Redis url (the app uses the embedded store), plus `extra`.
 */
function appEnv(extra = {}) {
  const env = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (/^npm_/i.test(k) || ['REDIS_URL', 'NUXT_QUEUE_REDIS_URL', 'LEAN_EVENTS_BUILD'].includes(k)) continue
    env[k] = v
  }
  return { ...env, ...extra }
}

/** `env` with every PATH entry that holds a cargo executable left out (node and npm stay). */
function withoutCargo(env) {
  const names = WINDOWS ? ['cargo.exe'] : ['cargo']
  const dirs = (env.PATH || '').split(path.delimiter).filter((d) => d && !names.some((n) => fs.existsSync(path.join(d, n))))
  return { ...env, PATH: dirs.join(path.delimiter) }
}

function run(cmd, args, options) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', shell: WINDOWS, maxBuffer: 64 * 1024 * 1024, ...options })
  if (r.error) throw r.error
  return { status: r.status, stdout: r.stdout, out: `${r.stdout}${r.stderr}` }
}

/** A new empty app in `dir` that allows lean-events' install script (npm 11's allowScripts). */
function newApp(dir) {
  fs.mkdirSync(dir)
  const pkg = { name: path.basename(dir), version: '1.0.0', private: true, allowScripts: { 'lean-events': true } }
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify(pkg, null, 2))
  return dir
}

/** npm install of `specs` into `app`, scripts' output shown, from npm's cache only. */
// --prefer-offline: npm's cache where it has the package, the registry otherwise (a fresh
// machine's cache holds the tarballs of this checkout's lockfile, not every packument)
function npmInstall(app, specs, env, network = '--prefer-offline') {
  return run(NPM, ['install', ...specs, network, '--no-audit', '--no-fund', '--foreground-scripts'], { cwd: app, env })
}

/** The release flow for this one platform: `napi artifacts` puts the binary in npm/<platform>, then npm pack. */
function packPlatformPackage(tmp) {
  const release = path.join(tmp, 'release')
  const artifacts = path.join(release, 'artifacts', `bindings-${TRIPLE}`)
  fs.mkdirSync(artifacts, { recursive: true })
  fs.cpSync(path.join(ROOT, 'npm', PLATFORM), path.join(release, 'npm', PLATFORM), { recursive: true })
  fs.copyFileSync(path.join(ROOT, BINARY), path.join(artifacts, BINARY))
  // napi artifacts wants a binary for every target of package.json: this copy lists this one
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'))
  pkg.napi.targets = [TRIPLE]
  fs.writeFileSync(path.join(release, 'package.json'), JSON.stringify(pkg, null, 2))
  const moved = run(process.execPath, [NAPI_CLI, 'artifacts', '--cwd', release], { cwd: release })
  assert.equal(moved.status, 0, moved.out)
  return pack(path.join(release, 'npm', PLATFORM), tmp)
}

function pack(dir, dest) {
  const r = run(NPM, ['pack', '--json', '--pack-destination', dest], { cwd: dir, env: appEnv() })
  assert.equal(r.status, 0, r.out)
  const [info] = JSON.parse(r.stdout)
  return { tarball: path.join(dest, info.filename), files: info.files.map((f) => f.path) }
}

/** In `app`: emit and read on the embedded store, fold the run with lean-events/client, load lean-events/nitro. */
function roundTrip(app) {
  const script = `
    const { EventBus, Scheduler } = require('lean-events')
    ;(async () => {
      const bus = await EventBus.connect()
      const rec = await bus.emit({ kind: 'flow.started', subject: 'pkg-1', data: { name: 'pkg' } })
      const events = await bus.read({ type: 'flow', id: 'pkg-1' })
      const client = await import('lean-events/client')
      const state = client.reduceFlowState(events)
      let nitro = null
      try { nitro = await import('lean-events/nitro') } catch (err) { if (err.code !== 'ERR_MODULE_NOT_FOUND') throw err }
      const names = ['useLeanEvents', 'createStreamAdapter', 'createBusAdapter', 'eventStreamHandler', 'stateHandler', 'runsHandler', 'triggerHandler', 'metricsHandler', 'leanEventsPlugin']
      new Scheduler(bus)
      await bus.close()
      console.log(JSON.stringify({ id: rec.id, read: events.map((e) => e.id), status: state.status, nitroMissing: nitro && names.filter((n) => typeof nitro[n] !== 'function') }))
    })().catch((err) => { console.error(err); process.exit(1) })`
  const r = run(process.execPath, ['-e', script], { cwd: app, env: appEnv() })
  assert.equal(r.status, 0, r.out)
  const result = JSON.parse(r.stdout.trim().split('\n').pop())
  assert.deepEqual(result.read, [result.id], 'the emitted event is read back')
  assert.equal(result.status, 'running')
  return result
}

describe('installed from npm tarballs into an empty app', { timeout: 40 * 60_000 }, () => {
  let tmp
  let main
  const noCargo = withoutCargo(appEnv())

  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lean-events-install-'))
    main = pack(ROOT, tmp)
  })
  after(() => fs.rmSync(tmp, { recursive: true, force: true }))

  test('the simulated machine has node and npm but no cargo', () => {
    const cargo = spawnSync('cargo', ['--version'], { env: noCargo })
    assert.ok(cargo.error || cargo.status !== 0, 'cargo is not found')
    assert.equal(run(NPM, ['--version'], { env: noCargo }).status, 0)
  })

  test('the main tarball carries no native binary', () => {
    assert.deepEqual(main.files.filter((f) => f.endsWith('.node')), [])
  })

  test(`main + ${PACKAGE} tarballs, no cargo: nothing is built, require works, a round trip on the embedded store passes`, {
    skip: !TRIPLE || !fs.existsSync(path.join(ROOT, BINARY)) ? `no prebuilt binary for ${PLATFORM} here` : false,
  }, () => {
    const t0 = Date.now()
    const platform = packPlatformPackage(tmp)
    assert.deepEqual(platform.files.sort(), [BINARY, 'README.md', 'package.json'].sort())
    const app = newApp(path.join(tmp, 'app-prebuilt'))
    // h3 is the optional peer lean-events/nitro imports (from npm's cache, else the registry)
    const h3 = `h3@${require('h3/package.json').version}`
    const r = npmInstall(app, [main.tarball, platform.tarball, h3], noCargo)
    assert.equal(r.status, 0, r.out)
    assert.match(r.out, new RegExp(`lean-events: using the prebuilt binary from ${PACKAGE}`), r.out)
    assert.doesNotMatch(r.out, /building the native addon/)
    const installed = path.join(app, 'node_modules', 'lean-events')
    assert.ok(!fs.existsSync(path.join(installed, BINARY)) && !fs.existsSync(path.join(installed, 'target')), 'nothing built')
    const result = roundTrip(app)
    assert.deepEqual(result.nitroMissing, [])
    console.log(`prebuilt install + round trip in ${seconds(Date.now() - t0)}`)
  })

  test('main tarball alone, no cargo: npm install fails naming what is missing and the two ways out', () => {
    const app = newApp(path.join(tmp, 'app-no-cargo'))
    const r = npmInstall(app, [main.tarball], noCargo, '--offline')
    assert.notEqual(r.status, 0, r.out)
    assert.match(r.out, new RegExp(`could not build the native addon from source for ${PLATFORM}: cargo \\(the Rust toolchain\\) not found on PATH`))
    assert.match(r.out, /Two ways out:/)
    assert.match(r.out, /1\. Install Rust \(https:\/\/rustup\.rs: cargo\) and a C compiler/)
    assert.match(r.out, /2\. (Install the prebuilt package lean-events-|Use a platform with a prebuilt package)/)
    assert.match(r.out, /LEAN_EVENTS_BUILD=0 skips this build/)
    assert.doesNotMatch(r.out, /see (its|the cargo) output above/, 'no build ran, so none is blamed')
    assert.ok(!fs.existsSync(path.join(app, 'node_modules', 'lean-events')), 'npm rolled the install back')
  })

  test('main tarball alone, no cargo, LEAN_EVENTS_BUILD=0: the install passes, require throws NATIVE_BINDING_MISSING', () => {
    const app = newApp(path.join(tmp, 'app-no-build'))
    const r = npmInstall(app, [main.tarball], { ...noCargo, LEAN_EVENTS_BUILD: '0' }, '--offline')
    assert.equal(r.status, 0, r.out)
    assert.match(r.out, /LEAN_EVENTS_BUILD=0: not building/)
    const probe = `
      try { require('lean-events'); console.log(JSON.stringify({ loaded: true })) }
      catch (err) { console.log(JSON.stringify({ code: err.code, isError: err instanceof Error, message: err.message, packageName: err.packageName, platform: err.platform })) }`
    const out = run(process.execPath, ['-e', probe], { cwd: app, env: appEnv() })
    assert.equal(out.status, 0, out.out)
    const err = JSON.parse(out.stdout.trim().split('\n').pop())
    assert.equal(err.code, 'NATIVE_BINDING_MISSING', out.out)
    assert.equal(err.isError, true)
    assert.equal(err.platform, PLATFORM)
    assert.equal(err.packageName, PACKAGE)
    assert.match(err.message, new RegExp(`for this platform \\(${PLATFORM}\\)`))
    assert.match(err.message, new RegExp(`Looked for the package ${PACKAGE} and for the file ${BINARY.replace(/\./g, '\\.')}`))
    assert.match(err.message, /run: npm rebuild lean-events/)
    assert.match(err.message, new RegExp(`Cannot find module '${PACKAGE}'`), 'says what failed')
  })

  test('main tarball alone, cargo on PATH: the fallback builds from source and a round trip passes', {
    skip: SOURCE_BUILD ? false : 'a release build from source takes minutes: set LEAN_EVENTS_TEST_SOURCE_BUILD=1 (.ci/run does)',
  }, () => {
    const t0 = Date.now()
    const app = newApp(path.join(tmp, 'app-from-source'))
    const env = appEnv()
    delete env.CARGO_TARGET_DIR
    // npx fetches the pinned @napi-rs/cli from npm's cache, or from the registry if it is not there
    const r = npmInstall(app, [main.tarball], env, '--prefer-offline')
    assert.equal(r.status, 0, r.out)
    assert.match(r.out, new RegExp(`no prebuilt binary loads on ${PLATFORM}: building the native addon from source`))
    assert.match(r.out, /Compiling lean-events/, "cargo's output is shown")
    assert.match(r.out, new RegExp(`native addon built: ${BINARY.replace(/\./g, '\\.')} \\(cargo's target/ removed\\)`))
    const installed = path.join(app, 'node_modules', 'lean-events')
    assert.ok(fs.existsSync(path.join(installed, BINARY)), 'the binary is in the package')
    assert.ok(!fs.existsSync(path.join(installed, 'target')), "cargo's target/ is removed")
    roundTrip(app)
    console.log(`built from source and ran in ${seconds(Date.now() - t0)}`)
  })
})
