'use strict'
// Which native binary this machine needs, named the way napi-rs names them: the file
// `lean-events.<platform>.node` and the npm package `lean-events-<platform>`. Shared by the
// loader (lib/native.js) and npm's install script, so both always look for the same thing.

const fs = require('node:fs')

const BINARY_NAME = 'lean-events'

/** True on a musl libc (Alpine), detected like the loader binding.js does it. */
function isMusl() {
  if (process.platform !== 'linux') return false
  try {
    return fs.readFileSync('/usr/bin/ldd', 'utf8').includes('musl')
  } catch {
    // no ldd script: glibc's process report names its version, musl's does not
    const report = process.report && typeof process.report.getReport === 'function' ? process.report.getReport() : null
    return !!(report && report.header && !report.header.glibcVersionRuntime)
  }
}

/** The napi-rs platform name of this machine: `linux-x64-gnu`, `linux-arm64-musl`, `darwin-arm64`, `win32-x64-msvc`, … */
function platformName() {
  const { platform, arch } = process
  if (platform === 'linux') {
    if (arch === 'arm') return `linux-arm-${isMusl() ? 'musleabihf' : 'gnueabihf'}`
    return `linux-${arch}-${isMusl() ? 'musl' : 'gnu'}`
  }
  if (platform === 'win32') return `win32-${arch}-msvc`
  if (platform === 'android') return arch === 'arm' ? 'android-arm-eabi' : `android-${arch}`
  return `${platform}-${arch}`
}

/** File name of the addon for `platform` (default: this machine's). */
function binaryFile(platform = platformName()) {
  return `${BINARY_NAME}.${platform}.node`
}

/** npm package that carries the prebuilt addon for `platform` (default: this machine's). */
function platformPackage(platform = platformName()) {
  return `${BINARY_NAME}-${platform}`
}

/** Platforms with a prebuilt package: the `optionalDependencies` of lean-events' package.json. */
function prebuiltPlatforms() {
  const { optionalDependencies = {} } = require('../package.json')
  const prefix = `${BINARY_NAME}-`
  return Object.keys(optionalDependencies)
    .filter((name) => name.startsWith(prefix))
    .map((name) => name.slice(prefix.length))
}

module.exports = { BINARY_NAME, isMusl, platformName, binaryFile, platformPackage, prebuiltPlatforms }
