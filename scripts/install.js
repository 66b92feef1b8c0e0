#!/usr/bin/env node
'use strict'
// npm's `install` script of lean-events: make sure a native addon for this platform loads.
//
// - The prebuilt package `lean-events-<platform>` (an optional dependency npm installs on the
//   platforms it fits) or a `lean-events.<platform>.node` in the package is used as it is,
//   once a child process has loaded it: nothing to build.
// - In a development checkout (a `.git` next to package.json) the binary is built when it is
//   missing or a Rust source is newer than it; platform packages are not used there.
// - Otherwise the addon is built from source with the napi CLI (`napi build --platform
//   --release`), which runs cargo; cargo's output is shown, and a failure says what is
//   missing and the two ways out. Outside a checkout, cargo's target/ is removed afterwards.
//
// LEAN_EVENTS_BUILD=1 forces a build from source; LEAN_EVENTS_BUILD=0 never builds (then
// require('lean-events') throws NATIVE_BINDING_MISSING when no binary loads).

const fs = require('node:fs')
const path = require('node:path')
const { spawn, spawnSync } = require('node:child_process')
const { platformName, binaryFile, platformPackage, prebuiltPlatforms } = require('../lib/platform.js')

const ROOT = path.resolve(__dirname, '..')
const BUILD_ARGS = ['build', '--platform', '--release', '--js', 'binding.js', '--dts', 'binding.d.ts']
const SOURCES = ['Cargo.toml', 'Cargo.lock', 'build.rs', 'src', 'crates']
const WINDOWS = process.platform === 'win32'
/** How much of the build's output is kept to recognise why it failed. */
const TAIL_BYTES = 64 * 1024

function log(msg) {
  console.log(`lean-events: ${msg}`)
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

function hasCommand(cmd, args = ['--version']) {
  const r = spawnSync(cmd, args, { stdio: 'ignore', shell: WINDOWS })
  return r.status === 0
}

/**
 * What a build from source needs that is not on this machine, in words for the message.
 * rustc links with the system C compiler (`cc`) on Linux and macOS; on Windows it finds
 * MSVC's linker itself, so only cargo is checked there.
 */
function missingTools() {
  const missing = []
  if (!hasCommand('cargo')) missing.push('cargo (the Rust toolchain)')
  if (!WINDOWS && !hasCommand('cc') && !hasCommand('gcc') && !hasCommand('clang')) {
    missing.push('a C compiler and linker (cc)')
  }
  return missing
}

/** The reason a failed build's output shows, when it is one we can name. */
function diagnose(output) {
  if (/could not determine executable to run|npm (?:ERR!|error) (?:code|404|network)/.test(output)) {
    return 'the napi CLI (@napi-rs/cli) could not be fetched or started by npx: it needs the npm registry'
  }
  const linker = /linker `([^`]+)` not found/.exec(output)
  if (linker) return `the C linker \`${linker[1]}\` is missing`
  if (/Could not find directory of OpenSSL installation|failed to run custom build command for `openssl-sys/.test(output)) {
    return "OpenSSL's development files are missing (libssl-dev and pkg-config on Debian/Ubuntu, openssl-dev on Alpine, openssl-devel on Fedora)"
  }
  return null
}

/** Why a build from source failed, what is missing, and the two ways out. */
function failureMessage(platform, problem) {
  const prebuilt = prebuiltPlatforms()
  const usePrebuilt = prebuilt.includes(platform)
    ? [
        `  2. Install the prebuilt package ${platformPackage(platform)}: npm installs it as an optional dependency,`,
        '     unless optional dependencies are omitted (--omit=optional, --no-optional) or the lockfile was',
        '     made on another platform; run `npm install` again without those.',
      ]
    : [`  2. Use a platform with a prebuilt package: ${prebuilt.join(', ')}.`]
  return [
    '',
    `lean-events: could not build the native addon from source for ${platform}: ${problem}.`,
    `  No prebuilt binary for ${platform} is installed, so it has to be built here. Two ways out:`,
    '  1. Install Rust (https://rustup.rs: cargo) and a C compiler (Debian/Ubuntu: build-essential,',
    '     pkg-config and libssl-dev; Alpine: build-base and openssl-dev; macOS: Xcode Command Line Tools;',
    '     Windows: Visual Studio Build Tools), then run `npm install` (or `npm rebuild lean-events`) again.',
    ...usePrebuilt,
    '  LEAN_EVENTS_BUILD=0 skips this build: the install then succeeds, and require("lean-events") throws',
    '  an error with code NATIVE_BINDING_MISSING until a binary is there.',
    '',
  ].join('\n')
}

/**
 * How to run the napi CLI at the version pinned in devDependencies: the installed one when it
 * is that version (a development checkout), else through npx. `-p … napi` names the bin, as
 * the package has two.
 */
function napiCommand() {
  const pinned = require('../package.json').devDependencies['@napi-rs/cli']
  try {
    const pkgPath = require.resolve('@napi-rs/cli/package.json', { paths: [ROOT] })
    const pkg = JSON.parse(fs.readFileSync(pkgPath, 'utf8'))
    const bin = typeof pkg.bin === 'string' ? pkg.bin : pkg.bin && pkg.bin.napi
    if (bin && pkg.version === pinned) return { cmd: process.execPath, args: [path.join(path.dirname(pkgPath), bin), ...BUILD_ARGS] }
  } catch {
    // an app installing lean-events does not get its devDependencies
  }
  return { cmd: WINDOWS ? 'npx.cmd' : 'npx', args: ['--yes', '-p', `@napi-rs/cli@${pinned}`, '--', 'napi', ...BUILD_ARGS] }
}

/** Run `cmd`, passing its output through as it comes, and resolve with its exit and output tail. */
function runShown(cmd, args, options) {
  return new Promise((resolve) => {
    let tail = ''
    const keep = (chunk) => {
      tail = (tail + chunk.toString()).slice(-TAIL_BYTES)
    }
    const child = spawn(cmd, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'], shell: WINDOWS })
    child.stdout.on('data', (c) => (process.stdout.write(c), keep(c)))
    child.stderr.on('data', (c) => (process.stderr.write(c), keep(c)))
    child.on('error', (error) => resolve({ status: null, error, output: tail }))
    child.on('close', (status) => resolve({ status, error: null, output: tail }))
  })
}

/** Null when the addon `file` loads in a fresh Node process, else the error text. */
function loadError(file) {
  const r = spawnSync(process.execPath, ['-e', 'require(process.argv[1])', file], { cwd: ROOT, encoding: 'utf8' })
  if (r.status === 0) return null
  const lines = String(r.stderr || r.error || '').split('\n').map((l) => l.trim())
  return lines.find((l) => /Error/.test(l)) || lines.find(Boolean) || `exit code ${r.status}`
}

function fail(message) {
  console.error(message)
  process.exit(1)
}

async function build(reason) {
  const platform = platformName()
  const missing = missingTools()
  if (missing.length > 0) return fail(failureMessage(platform, `${missing.join(' and ')} not found on PATH`))

  log(`${reason}: building the native addon from source (cargo, release profile; this takes a few minutes)`)
  const { cmd, args } = napiCommand()
  log(`running ${path.basename(cmd)} ${args.join(' ')}`)
  const devCheckout = fs.existsSync(path.join(ROOT, '.git'))
  const ownTarget = !devCheckout && !process.env.CARGO_TARGET_DIR && !fs.existsSync(path.join(ROOT, 'target'))
  const r = await runShown(cmd, args, { cwd: ROOT })
  if (ownTarget) fs.rmSync(path.join(ROOT, 'target'), { recursive: true, force: true })
  if (r.error) return fail(failureMessage(platform, `${cmd} could not be started (${r.error.message})`))
  if (r.status !== 0) {
    const problem = diagnose(r.output) || `the build failed with exit code ${r.status}; see its output above`
    return fail(failureMessage(platform, problem))
  }
  const error = loadError(path.join(ROOT, binaryFile(platform)))
  if (error) return fail(failureMessage(platform, `the binary was built but does not load: ${error}`))
  log(`native addon built: ${binaryFile(platform)}${ownTarget ? " (cargo's target/ removed)" : ''}`)
}

async function main() {
  const platform = platformName()
  const local = path.join(ROOT, binaryFile(platform))
  const mode = process.env.LEAN_EVENTS_BUILD
  if (mode === '1') return build('LEAN_EVENTS_BUILD=1')
  // a checkout tests its own sources: a published platform package would hide them
  if (fs.existsSync(path.join(ROOT, '.git')) && mode !== '0') {
    if (!fs.existsSync(local)) return build('no binary built in this checkout yet')
    if (newestSource() > fs.statSync(local).mtimeMs) return build('the Rust sources changed since the last build')
    return log(`${binaryFile(platform)} is up to date with the Rust sources`)
  }
  if (fs.existsSync(local)) {
    const error = loadError(local)
    if (!error) return log(`using the prebuilt binary ${binaryFile(platform)}`)
    log(`${binaryFile(platform)} does not load here: ${error}`)
  } else {
    const pkg = platformPackage(platform)
    let main = null
    try {
      main = require.resolve(pkg, { paths: [ROOT] })
    } catch {
      // not installed: no prebuilt package for this platform, or optional dependencies omitted
    }
    if (main) {
      const error = loadError(main)
      if (!error) return log(`using the prebuilt binary from ${pkg}`)
      log(`${pkg} is installed but its binary does not load here: ${error}`)
    }
  }
  if (mode === '0') {
    log(`no loadable binary for ${platform} and LEAN_EVENTS_BUILD=0: not building (require('lean-events') throws NATIVE_BINDING_MISSING)`)
    return
  }
  return build(`no prebuilt binary loads on ${platform}`)
}

if (require.main === module) {
  main().catch((err) => fail(`lean-events: install script failed: ${err.stack || err}`))
}

module.exports = { platformName, newestSource, walkFiles }
