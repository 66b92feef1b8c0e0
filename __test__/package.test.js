'use strict'
// What `npm publish` would ship: the main tarball's file list and size (`npm pack --dry-run`),
// and the platform packages under npm/ agreeing with package.json (names, version, targets,
// engines), as the napi-rs release flow (create-npm-dirs, artifacts, prepublish) expects.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { parseTriple } = require('@napi-rs/cli')

const ROOT = path.join(__dirname, '..')
const PKG = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'))
/**
 * Upper bounds with room for growth; today the tarball is about 300 kB (the Rust sources for
 * the fallback build, the Nuxt module's dashboard, the README), ~1.1 MB unpacked.
 */
const MAX_PACKED = 400_000
const MAX_UNPACKED = 1_500_000

/** Files a user needs: entry points, types, the loader, the install script, the Rust sources of the fallback build. */
const REQUIRED = [
  'package.json',
  'README.md',
  'index.js',
  'index.d.ts',
  'binding.js',
  'binding.d.ts',
  'lib/native.js',
  'lib/platform.js',
  'client/index.js',
  'client/index.d.ts',
  'nitro/index.js',
  'nitro/index.d.ts',
  'nvent/index.js',
  'nvent/index.d.ts',
  'nvent/adapters.js',
  'nvent/adapters.d.ts',
  'nvent/runtime/plugin.js',
  'nuxt/index.js',
  'nuxt/index.d.ts',
  'nuxt/runtime/server/plugin.js',
  'nuxt/runtime/dashboard/dashboard.js',
  'nuxt/runtime/dashboard/dashboard.css',
  'vue/index.js',
  'vue/index.d.ts',
  'scripts/install.js',
  'Cargo.toml',
  'Cargo.lock',
  'build.rs',
  'src/lib.rs',
  'crates/core/Cargo.toml',
  'crates/core/src/lib.rs',
  // every module the entry points load
  ...['lib', 'nitro', 'nvent', 'nvent/runtime', 'nuxt', 'nuxt/runtime', 'nuxt/runtime/server', 'nuxt/runtime/server/routes', 'nuxt/runtime/dashboard', 'vue'].flatMap((dir) =>
    fs
      .readdirSync(path.join(ROOT, dir), { withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => `${dir}/${e.name}`),
  ),
]
const ALLOWED = [
  /^(package\.json|README\.md|LICENSE|index\.js|index\.d\.ts|binding\.js|binding\.d\.ts|scripts\/install\.js)$/,
  /^(Cargo\.toml|Cargo\.lock|build\.rs|crates\/core\/Cargo\.toml)$/,
  /^(lib|client|nitro|nvent|nuxt|vue)\/[\w./-]+\.(js|mjs|cjs|d\.ts|json)$/,
  // the run dashboard's stylesheet
  /^nuxt\/runtime\/dashboard\/dashboard\.css$/,
  /^(src|crates\/core\/src)\/[\w./-]+\.(rs|lua)$/,
]

test('npm pack --dry-run: the tarball ships what a user needs and nothing else, within its size', () => {
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'
  const r = spawnSync(npm, ['pack', '--dry-run', '--json'], { cwd: ROOT, encoding: 'utf8', shell: process.platform === 'win32' })
  assert.equal(r.status, 0, r.stderr)
  const [info] = JSON.parse(r.stdout)
  const files = info.files.map((f) => f.path)
  for (const f of REQUIRED) assert.ok(files.includes(f), `${f} is in the tarball`)
  const unexpected = files.filter((f) => !ALLOWED.some((re) => re.test(f)))
  assert.deepEqual(unexpected, [], 'no tests, benches, vectors, examples, binaries or build output')
  assert.ok(info.size <= MAX_PACKED, `packed ${info.size} B <= ${MAX_PACKED} B`)
  assert.ok(info.unpackedSize <= MAX_UNPACKED, `unpacked ${info.unpackedSize} B <= ${MAX_UNPACKED} B`)
  console.log(`tarball: ${files.length} files, ${(info.size / 1000).toFixed(0)} kB packed, ${(info.unpackedSize / 1000).toFixed(0)} kB unpacked`)
})

test('each napi target has its platform package in npm/ and is an optional dependency at the package version', () => {
  const platforms = PKG.napi.targets.map((t) => parseTriple(t).platformArchABI)
  for (const want of ['linux-x64-gnu', 'linux-arm64-gnu', 'linux-x64-musl', 'linux-arm64-musl', 'darwin-x64', 'darwin-arm64', 'win32-x64-msvc']) {
    assert.ok(platforms.includes(want), `${want} is a target`)
  }
  const expected = Object.fromEntries(platforms.map((p) => [`${PKG.napi.binaryName}-${p}`, PKG.version]))
  assert.deepEqual(PKG.optionalDependencies, expected)
  for (const p of platforms) {
    const sub = JSON.parse(fs.readFileSync(path.join(ROOT, 'npm', p, 'package.json'), 'utf8'))
    const binary = `${PKG.napi.binaryName}.${p}.node`
    assert.equal(sub.name, `${PKG.napi.binaryName}-${p}`)
    assert.equal(sub.version, PKG.version, `${sub.name} has the package version`)
    assert.equal(sub.main, binary)
    assert.deepEqual(sub.files, [binary])
    assert.deepEqual(sub.engines, PKG.engines, `${sub.name} has the same engines`)
    assert.ok(sub.os && sub.cpu, `${sub.name} names its os and cpu`)
  }
})

test('engines names the Node lines the suite runs on (20, 22, 24) and this Node is one of them', () => {
  const ranges = PKG.engines.node.split('||').map((r) => r.trim())
  const majors = ranges.map((r) => Number(/(\d+)/.exec(r)[1]))
  assert.deepEqual(majors, [20, 22, 24])
  const major = Number(process.versions.node.split('.')[0])
  assert.ok(major === 20 || major === 22 || major >= 24, `Node ${process.versions.node} is covered by ${PKG.engines.node}`)
})

test('the napi CLI that builds from source is pinned to one version, the one installed for development', () => {
  const pinned = PKG.devDependencies['@napi-rs/cli']
  assert.match(pinned, /^\d+\.\d+\.\d+$/, 'scripts/install.js runs npx -p @napi-rs/cli@<this>')
  assert.equal(require('@napi-rs/cli/package.json').version, pinned)
})
