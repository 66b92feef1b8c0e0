'use strict'
// CPU time per thread of this process (Linux /proc), grouped as the main JS thread, the
// addon's tokio workers (named 'lean-events' by the addon's runtime, 'tokio-…' by a default
// one) and everything else (V8 GC/compiler threads, libuv pool).
// Resolution is one clock tick (usually 10 ms); used as a diagnostic next to process.cpuUsage().

const fs = require('node:fs')
const { execFileSync } = require('node:child_process')

let tickUs = 10000
try {
  tickUs = 1e6 / Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim())
} catch {}

function snapshot() {
  const out = new Map()
  let tids = []
  try {
    tids = fs.readdirSync('/proc/self/task')
  } catch {
    return out
  }
  for (const tid of tids) {
    try {
      const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')
      const close = stat.lastIndexOf(')')
      const comm = stat.slice(stat.indexOf('(') + 1, close)
      const fields = stat.slice(close + 2).split(' ')
      out.set(tid, { comm, ticks: Number(fields[11]) + Number(fields[12]) })
    } catch {}
  }
  return out
}

/** True for a thread of the addon's Tokio runtime, by its name (`comm`, at most 15 bytes). */
function isTokio(comm) {
  return comm.startsWith('lean-events') || comm.startsWith('tokio')
}

/** µs of CPU per group between two snapshots: { mainUs, tokioUs, otherUs }. */
function diff(before, after) {
  const groups = { mainUs: 0, tokioUs: 0, otherUs: 0 }
  for (const [tid, t] of after) {
    const ticks = t.ticks - (before.get(tid)?.ticks ?? 0)
    const group = tid === String(process.pid) ? 'mainUs' : isTokio(t.comm) ? 'tokioUs' : 'otherUs'
    groups[group] += ticks * tickUs
  }
  return groups
}

module.exports = { snapshot, diff, isTokio }
