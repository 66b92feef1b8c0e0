#!/usr/bin/env node
'use strict'
// npm's `install` script of lean-events.
//
// - A binary for this platform already in the package (`lean-events.<platform>.node`, as a
//   tarball with prebuilt binaries ships it) or a platform package (`lean-events-<platform>`)
//   is used as it is: nothing to build.
// - In a development checkout (a `.git` folder next to package.json) the binary is rebuilt
//   when a Rust source is newer than it.
// - Otherwise the addon is built from source with
//   `napi build --platform --release --js binding.js --dts binding.d.ts`, which needs cargo.
//
// LEAN_EVENTS_BUILD=1 forces a build from source; LEAN_EVENTS_BUILD=0 never builds.

const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')

const ROOT = path.resolve(__dirname, '..')
const BUILD_ARGS = ['build', '--platform', '--release', '--js', 'binding.js', '--dts', 'binding.d.ts']
const SOURCES = ['Cargo.toml', 'Cargo.lock', 'build.rs', 'src', 'crates']

function log(msg) {
  console.log(`lean-events: ${msg}`)
}

function isMusl() {
  if (process.platform !== 'linux') return false
  try {
    return fs.readFileSync('/usr/bin/ldd', 'utf8').includes('musl')
  } catch {
    const report = process.report && process.report.getReport ? process.report.getReport() : null
    return !!(report && report.header && !report.header.glibcVersionRuntime)
  }
}

/** The napi-rs platform name of this machine: linux-x64-gnu, darwin-arm64, win32-x64-msvc, ... */
function platformName() {
  const { platform, arch } = process
  if (platform === 'linux') return `linux-${arch}-${isMusl() ? 'musl' : 'gnu'}`
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

/** Call `onFile(path, stat)` for every file under `p`, in name order, skipping `skip` folders. */
function walkFiles(p, skip, onFile) {
  let st
  try {
    st = fs.statSync(p)
  } catch {
    return
  }
  if (!st.isDirectory()) return onFile(p, st)
  for (const entry of fs.readdirSync(p).sort()) {
    if (!skip.includes(entry)) walkFiles(path.join(p, entry), skip, onFile)
  }
}

/** Newest modification time (ms) of the Rust sources, skipping build output. */
function newestSource() {
  let newest = 0
  for (const s of SOURCES) {
    walkFiles(path.join(ROOT, s), ['target', 'node_modules'], (_, st) => {
      if (st.mtimeMs > newest) newest = st.mtimeMs
    })
  }
  return newest
}

function hasCommand(cmd) {
  const r = spawnSync(cmd, ['--version'], { stdio: 'ignore', shell: process.platform === 'win32' })
  return r.status === 0
}

/** How to run the napi CLI: the local devDependency when present, else npx. */
function napiCommand() {
  try {
    const pkgPath = require.resolve('@napi-rs/cli/package.json', { paths: [ROOT] })
    const pkg = JSON.parse(fs.readFileSync(pkgPath, 'utf8'))
    const bin = typeof pkg.bin === 'string' ? pkg.bin : pkg.bin && (pkg.bin.napi || Object.values(pkg.bin)[0])
    if (bin) return { cmd: process.execPath, args: [path.join(path.dirname(pkgPath), bin), ...BUILD_ARGS] }
  } catch {
    // not installed (an app installing lean-events does not get its devDependencies)
  }
  const npx = process.platform === 'win32' ? 'npx.cmd' : 'npx'
  return { cmd: npx, args: ['--yes', '@napi-rs/cli@^3', ...BUILD_ARGS] }
}

function build(reason) {
  log(`${reason}: building the native addon from source (cargo, release profile; this takes a few minutes)`)
  if (!hasCommand('cargo')) {
    console.error(
      [
        '',
        'lean-events: cannot build the native addon: `cargo` (the Rust toolchain) was not found on PATH.',
        `  There is no prebuilt binary for this platform (${platformName()}) in the package.`,
        '  Install Rust (https://rustup.rs), make sure `cargo --version` works, and run `npm install` again,',
        '  or install a lean-events package that ships a binary for this platform.',
        '',
      ].join('\n'),
    )
    process.exit(1)
  }
  const { cmd, args } = napiCommand()
  const r = spawnSync(cmd, args, { cwd: ROOT, stdio: 'inherit', shell: process.platform === 'win32' })
  if (r.error) {
    console.error(`lean-events: could not run the napi CLI (${cmd}): ${r.error.message}`)
    process.exit(1)
  }
  if (r.status !== 0) {
    console.error(`lean-events: the native build failed (exit code ${r.status}); see the cargo output above.`)
    process.exit(r.status || 1)
  }
  log('native addon built')
}

function main() {
  const name = platformName()
  const binary = path.join(ROOT, `lean-events.${name}.node`)
  const mode = process.env.LEAN_EVENTS_BUILD
  if (mode === '1') return build('LEAN_EVENTS_BUILD=1')
  if (fs.existsSync(binary)) {
    const devCheckout = fs.existsSync(path.join(ROOT, '.git'))
    if (mode === '0' || !devCheckout) {
      log(`using the prebuilt binary lean-events.${name}.node`)
      return
    }
    if (newestSource() <= fs.statSync(binary).mtimeMs) {
      log(`lean-events.${name}.node is up to date with the Rust sources`)
      return
    }
    return build('the Rust sources changed since the last build')
  }
  try {
    require.resolve(`lean-events-${name}`, { paths: [ROOT] })
    log(`using the platform package lean-events-${name}`)
    return
  } catch {
    // no platform package
  }
  if (mode === '0') {
    log(`no binary for ${name} and LEAN_EVENTS_BUILD=0: not building`)
    return
  }
  return build(`no prebuilt binary for ${name}`)
}

if (require.main === module) main()

module.exports = { platformName, newestSource, walkFiles }
