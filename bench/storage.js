'use strict'
// Bytes per 100-event run in Redis: this project's layout (one field per attribute, without
// what the key and id already say) against the spec's layout (every attribute as a field,
// subject/flow/ts included) and one JSON field per entry. Uses `redis-cli` for MEMORY USAGE.
//   node bench/storage.js            (REDIS_URL, default redis://127.0.0.1:6379)

const { execFileSync } = require('node:child_process')
const { EventBus } = require('..')
const { realisticRun } = require('./run-events.js')

const url = process.env.REDIS_URL || 'redis://127.0.0.1:6379'
const { hostname, port } = new URL(url)

function cli(args, input) {
  return execFileSync('redis-cli', ['-h', hostname, '-p', port || '6379', ...args], { input, encoding: 'utf8' }).trim()
}

function resp(args) {
  return `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`
}

async function measure() {
  const prefix = `bench-storage-${process.pid}-${Date.now()}`
  const bus = await EventBus.connect({ url, prefix })
  const flowId = 'run_01J9ZK3V8Q2M'
  const events = realisticRun(flowId)
  const records = await bus.emitMany(events)
  await bus.close()
  const ours = Number(cli(['MEMORY', 'USAGE', `${prefix}:flow:${flowId}`, 'SAMPLES', '0']))

  const specKey = `${prefix}:spec:${flowId}`
  const jsonKey = `${prefix}:json:${flowId}`
  let cmds = ''
  for (const r of records) {
    const fields = []
    for (const k of ['kind', 'subject', 'flow', 'step', 'trigger', 'correlationId']) if (r[k] !== undefined) fields.push(k, r[k])
    fields.push('ts', r.ts)
    if (r.data !== undefined) fields.push('data', JSON.stringify(r.data))
    if (r.meta !== undefined) fields.push('meta', JSON.stringify(r.meta))
    cmds += resp(['XADD', specKey, r.id, ...fields])
    cmds += resp(['XADD', jsonKey, r.id, 'event', JSON.stringify(r)])
  }
  cli(['--pipe'], cmds)
  const spec = Number(cli(['MEMORY', 'USAGE', specKey, 'SAMPLES', '0']))
  const json = Number(cli(['MEMORY', 'USAGE', jsonKey, 'SAMPLES', '0']))
  cli(['DEL', `${prefix}:flow:${flowId}`, specKey, jsonKey, `${prefix}:flows:example-flow`])
  const avg = Math.round(records.reduce((n, r) => n + JSON.stringify(r).length, 0) / records.length)
  return { events: records.length, avgRecordBytes: avg, ours, spec, json }
}

if (require.main === module) {
  measure().then((m) => {
    console.log(`100-event run, ${m.avgRecordBytes} bytes per record as JSON on average`)
    console.log(`  this layout:            ${m.ours} bytes`)
    console.log(`  spec layout (all attrs): ${m.spec} bytes (ours = ${(m.ours / m.spec).toFixed(2)}x)`)
    console.log(`  one JSON field:          ${m.json} bytes (ours = ${(m.ours / m.json).toFixed(2)}x)`)
  }, (err) => {
    console.error(err)
    process.exit(1)
  })
}

module.exports = { measure }
