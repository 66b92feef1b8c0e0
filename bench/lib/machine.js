'use strict'
// What the numbers were measured on.

const fs = require('node:fs')
const os = require('node:os')
const Redis = require('ioredis')

function cpuModel() {
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))
    if (m) return m[1].trim()
  } catch {}
  return os.cpus()[0]?.model ?? 'unknown'
}

function infoField(info, name) {
  const m = new RegExp(`^${name}:(.*)$`, 'm').exec(info)
  return m ? m[1].trim() : undefined
}

async function machineInfo(url, owned) {
  const redis = new Redis(url)
  try {
    const info = await redis.info('server')
    return {
      cpu: cpuModel(),
      cores: os.cpus().length,
      memoryGB: +(os.totalmem() / 2 ** 30).toFixed(1),
      kernel: `${os.type()} ${os.release()}`,
      node: process.version,
      redis: infoField(info, 'redis_version'),
      redisServer: owned ? 'started by the benchmark (--save "" --appendonly no), same machine' : 'BENCH_REDIS_URL (not started by the benchmark)',
      ioredis: require('ioredis/package.json').version,
      addon: require('../../package.json').version,
      loadAvgStart: os.loadavg().map((v) => +v.toFixed(2)),
    }
  } finally {
    redis.disconnect()
  }
}

/** used_cpu_user + used_cpu_sys of the Redis server, in seconds. */
async function redisCpuSeconds(redis) {
  const info = await redis.info('cpu')
  return Number(infoField(info, 'used_cpu_user')) + Number(infoField(info, 'used_cpu_sys'))
}

module.exports = { machineInfo, redisCpuSeconds }
