'use strict'
// The systems under test behind one small interface:
//   emit(event), emitMany(events), subscribe(flowId, handler) -> unsubscribe(), close(), cleanup()
// - addon:  lean-events (EventBus) as connected by default (`transport: 'auto'`), which on one
//           Redis is the event-loop transport: emits and the live connection on sockets Node's
//           own loop drives. Opening it fails if the bus is on another transport.
// - thread: lean-events with `transport: 'thread'`: emits and Pub/Sub cross to the addon's Tokio
//           worker and back (the transport before the event loop drove the sockets).
// - lua:   ioredis + one EVALSHA per event doing XADD + PUBLISH (stream) + PUBLISH (kind) + ZADD
//          for flow.started, i.e. the work of append.lua for one event (the strongest JS variant).
// - spec:  what the v0.3 JS spec shipped: XADD, then PUBLISH <key>:live, two awaited round trips.
// Both baselines store the spec layout (one field per attribute: kind, subject, flow, step, ts,
// data and meta as JSON) and publish the record with its id as JSON; their subscriber is one
// ioredis SUBSCRIBE connection per process, one JSON.parse per message, JS handlers per channel.

const Redis = require('ioredis')
const { EventBus } = require('../..')

const SYSTEMS = {
  addon: "lean-events, transport 'loop'",
  thread: "lean-events, transport 'thread'",
  lua: 'ioredis+Lua',
  spec: 'ioredis XADD+PUBLISH',
}

const APPEND_LUA = `
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
local payload = '{"id":"' .. id .. '",' .. string.sub(ARGV[1], 2)
redis.call('PUBLISH', KEYS[1] .. ':live', payload)
redis.call('PUBLISH', KEYS[2], payload)
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[3], 'NX', string.match(id, '^(%d+)'), ARGV[2])
end
return id
`

/** The spec's record (without id) and its stream fields. */
function specRecord(e) {
  const rec = { ts: new Date().toISOString(), kind: e.kind, subject: e.subject, flow: e.flow ?? e.subject }
  if (e.step !== undefined) rec.step = e.step
  if (e.data !== undefined) rec.data = e.data
  if (e.meta !== undefined) rec.meta = e.meta
  const fields = ['kind', rec.kind, 'subject', rec.subject, 'flow', rec.flow]
  if (rec.step !== undefined) fields.push('step', rec.step)
  fields.push('ts', rec.ts)
  if (rec.data !== undefined) fields.push('data', JSON.stringify(rec.data))
  if (rec.meta !== undefined) fields.push('meta', JSON.stringify(rec.meta))
  return { rec, fields }
}

/** Delete every key under `prefix` (only keys this benchmark created). */
async function deletePrefix(redis, prefix) {
  let cursor = '0'
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000)
    cursor = next
    if (keys.length) await redis.unlink(...keys)
  } while (cursor !== '0')
}

/** One ioredis SUBSCRIBE connection shared by many JS handlers, reference-counted per channel. */
class JsSubscriber {
  constructor(url) {
    this.redis = new Redis(url)
    this.handlers = new Map()
    this.redis.on('message', (channel, message) => {
      const hs = this.handlers.get(channel)
      if (!hs) return
      const record = JSON.parse(message)
      for (const h of hs) {
        try {
          h(record)
        } catch (err) {
          console.error('[baseline] handler error', err)
        }
      }
    })
  }

  async subscribe(channel, handler) {
    let hs = this.handlers.get(channel)
    if (!hs) {
      hs = new Set()
      this.handlers.set(channel, hs)
      hs.add(handler)
      await this.redis.subscribe(channel)
    } else hs.add(handler)
    return async () => {
      hs.delete(handler)
      if (hs.size === 0 && this.handlers.get(channel) === hs) {
        this.handlers.delete(channel)
        await this.redis.unsubscribe(channel)
      }
    }
  }

  close() {
    this.redis.disconnect()
  }
}

/** The transport each addon system must be on (`bus.transport`) when measured on one Redis. */
const ADDON_TRANSPORTS = { addon: { asked: 'auto', expected: 'loop' }, thread: { asked: 'thread', expected: 'thread' } }

/** `bus.transport` of every addon bus this process opened, by system name. */
const transportsSeen = {}

async function openAddon(name, url, prefix) {
  const { asked, expected } = ADDON_TRANSPORTS[name]
  const bus = await EventBus.connect({ url, prefix, transport: asked })
  if (bus.transport !== expected) {
    await bus.close()
    throw new Error(
      `system '${name}' (transport: '${asked}') connected to ${url} on transport '${bus.transport}', not '${expected}': ` +
        `the benchmark would not measure the transport its tables name`,
    )
  }
  ;(transportsSeen[name] ??= new Set()).add(bus.transport)
  return {
    name,
    transport: bus.transport,
    emit: (e) => bus.emit(e),
    emitMany: (es) => bus.emitMany(es),
    async subscribe(flowId, handler) {
      const sub = await bus.subscribe({ type: 'flow', id: flowId }, handler, {
        onError: (err) => console.error(`[${name}] subscription error`, err.code, err.message),
      })
      return () => sub.unsubscribe()
    },
    counts: () => ({ subscriptions: bus.subscriptionCount, channels: bus.channelCount }),
    close: () => bus.close(),
  }
}

async function openBaseline(name, url, prefix) {
  const redis = new Redis(url)
  redis.defineCommand('leanAppend', { numberOfKeys: 3, lua: APPEND_LUA })
  let subscriber = null
  const streamKey = (subject) => `${prefix}:flow:${subject}`

  function luaArgs(e) {
    const { rec, fields } = specRecord(e)
    const key = streamKey(e.subject)
    const indexed = e.kind === 'flow.started' && e.data && typeof e.data.name === 'string'
    const indexKey = indexed ? `${prefix}:flows:${e.data.name}` : key
    return [key, `${prefix}:kind:${e.kind}`, indexKey, JSON.stringify(rec), indexed ? e.subject : '', ...fields]
  }

  async function emitSpec(e) {
    const { rec, fields } = specRecord(e)
    const key = streamKey(e.subject)
    const id = await redis.xadd(key, '*', ...fields)
    const record = { id, ...rec }
    await redis.publish(`${key}:live`, JSON.stringify(record))
    return record
  }

  async function emitManySpec(events) {
    const xadds = redis.pipeline()
    const recs = events.map((e) => {
      const { rec, fields } = specRecord(e)
      xadds.xadd(streamKey(e.subject), '*', ...fields)
      return rec
    })
    const ids = await xadds.exec()
    const pubs = redis.pipeline()
    const records = recs.map((rec, i) => {
      const [err, id] = ids[i]
      if (err) throw err
      const record = { id, ...rec }
      pubs.publish(`${streamKey(rec.subject)}:live`, JSON.stringify(record))
      return record
    })
    await pubs.exec()
    return records
  }

  async function emitManyLua(events) {
    const p = redis.pipeline()
    for (const e of events) p.leanAppend(...luaArgs(e))
    const out = await p.exec()
    return out.map(([err, id]) => {
      if (err) throw err
      return id
    })
  }

  return {
    name,
    emit: name === 'lua' ? (e) => redis.leanAppend(...luaArgs(e)) : emitSpec,
    emitMany: name === 'lua' ? emitManyLua : emitManySpec,
    async subscribe(flowId, handler) {
      if (!subscriber) subscriber = new JsSubscriber(url)
      return subscriber.subscribe(`${streamKey(flowId)}:live`, handler)
    },
    counts: () => ({ channels: subscriber ? subscriber.handlers.size : 0 }),
    close() {
      redis.disconnect()
      if (subscriber) subscriber.close()
    },
  }
}

/** Open a system by name ('addon' | 'thread' | 'lua' | 'spec') on keys under `prefix`. */
function openSystem(name, url, prefix) {
  if (name === 'addon' || name === 'thread') return openAddon(name, url, prefix)
  if (name === 'lua' || name === 'spec') return openBaseline(name, url, prefix)
  throw new Error(`unknown system ${name}`)
}

/** Remove the keys of one run, on a short-lived admin connection. */
async function cleanup(url, prefix) {
  const redis = new Redis(url)
  try {
    await deletePrefix(redis, prefix)
  } finally {
    redis.disconnect()
  }
}

/** `{ system: 'loop' }` for every addon system opened in this process so far. */
function transports() {
  return Object.fromEntries(Object.entries(transportsSeen).map(([k, v]) => [k, [...v].join(', ')]))
}

module.exports = { SYSTEMS, openSystem, cleanup, specRecord, transports }
