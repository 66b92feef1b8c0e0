'use strict'
// Scenario 14: the hot-path rows again with this process pinned to one CPU and Redis to
// another (`taskset -a -p -c`, Linux), as in a 1-vCPU container talking to a Redis elsewhere:
// with transport 'thread' the addon's Tokio worker then shares the one CPU with JavaScript, so
// every hop between threads costs a context switch; the event-loop transport ('addon') has no
// such hop. The addon on both transports and ioredis+Lua (the targets are ratios to it).
// Needs the benchmark's own redis-server (its pid) and `taskset`; otherwise it says why not.

const { execFileSync } = require('node:child_process')
const os = require('node:os')

const { emitScenario } = require('./throughput.js')
const { liveRun } = require('./live.js')

const SYSTEMS = ['addon', 'thread', 'lua']

/** The CPU list a process may run on (`taskset -c -p`), e.g. "0,1" or "0-3". */
function affinity(pid) {
  const out = execFileSync('taskset', ['-c', '-p', String(pid)], { encoding: 'utf8' })
  return out.slice(out.lastIndexOf(':') + 1).trim()
}

/** Set the CPU list of every thread of `pid` (threads started later inherit it). */
function pin(pid, cpus) {
  execFileSync('taskset', ['-a', '-c', '-p', cpus, String(pid)], { stdio: 'ignore' })
}

function whyNot(h) {
  if (process.platform !== 'linux') return 'taskset is Linux only'
  if (!h.redisPid) return 'Redis is not the benchmark\'s own server (BENCH_REDIS_URL), so it cannot be pinned'
  if (os.cpus().length < 2) return 'needs 2 CPUs'
  try {
    execFileSync('taskset', ['-V'], { stdio: 'ignore' })
  } catch {
    return 'taskset is not installed (util-linux)'
  }
  return null
}

async function pinned(h) {
  const skipped = whyNot(h)
  if (skipped) return { skipped }
  const own = affinity(process.pid)
  const redisOwn = affinity(h.redisPid)
  try {
    pin(process.pid, '0')
    pin(h.redisPid, '1')
    return {
      config: { node: 'CPU 0', redis: 'CPU 1', sequential: 3000, inFlight256: 30000, bursts256: 40000, live: 3000 },
      affinity: { node: affinity(process.pid), redis: affinity(h.redisPid) },
      sequential: await emitScenario(h, 'pseq', 1, 3000, 'window', SYSTEMS),
      inFlight256: await emitScenario(h, 'pif', 256, 30000, 'window', SYSTEMS),
      bursts256: await emitScenario(h, 'pbu', 256, 40000, 'bursts', SYSTEMS),
      live: await h.repeat(SYSTEMS, (name, rep) => liveRun(h, name, rep, 'same', 'rate2000')),
    }
  } finally {
    pin(process.pid, own)
    pin(h.redisPid, redisOwn)
  }
}

module.exports = { pinned }
