'use strict'

// The event bus over the native binding: emits settled in batches per wake-up, reads and state
// parsed from JSON once, subscriptions woken by key.

const { NativeBus } = require('./native.js')
const { LeanEventsError, fromJson, withCode, native, argError } = require('./errors.js')
const { embeddedInSeveralProcesses } = require('./processes.js')
const { defaultOnWarning } = require('./warnings.js')
const { isPlainObject, checkOptions, checkStream, serialize } = require('./options.js')
const { Subscription, reportError } = require('./subscription.js')
const { Keyspace } = require('./keyspace.js')

/** `retention: { finishedRunsMs }` (of `connect` or of one emit), checked; its ms or undefined. */
function retentionMs(retention, name) {
  if (retention === undefined) return undefined
  return checkOptions(retention, name, { finishedRunsMs: 'int' }).finishedRunsMs
}

/**
 * Why Node's event loop cannot drive the Redis connection in this runtime, or null: Bun and
 * Deno do not give addons libuv, and the transport is built and tested for Linux and macOS.
 */
function noEventLoopHere() {
  if (process.versions.bun) return 'Bun does not give addons a libuv loop'
  if (process.versions.deno) return 'Deno does not give addons a libuv loop'
  if (process.platform !== 'linux' && process.platform !== 'darwin') {
    return `it is built for Linux and macOS, not ${process.platform}`
  }
  return null
}

/**
 * The transport asked for (the option, else LEAN_EVENTS_TRANSPORT, else 'auto'), checked, and
 * where it was asked for (named in errors).
 */
function transportOption(given) {
  const fromEnv = process.env.LEAN_EVENTS_TRANSPORT
  const where = given !== undefined ? 'options.transport' : fromEnv ? 'LEAN_EVENTS_TRANSPORT' : null
  const t = given ?? (fromEnv || 'auto')
  if (t !== 'auto' && t !== 'loop' && t !== 'thread') {
    throw argError(`${where} must be 'auto', 'loop' or 'thread' (got '${t}')`)
  }
  const why = noEventLoopHere()
  if (t === 'loop' && why) throw argError(`${where} asks for transport 'loop', which is not available here: ${why}`)
  return { transport: why ? 'thread' : t, where }
}

/** `(handler, options)` or `(options)`: a plain object in the handler's place is the options. */
function handlerAndOptions(handler, options) {
  if (handler !== undefined && handler !== null && typeof handler !== 'function') {
    if (options === undefined && isPlainObject(handler)) return [undefined, handler]
    throw argError('handler must be a function')
  }
  return [handler, options]
}

/** The event bus: emit, read, subscribe, list runs. */
class EventBus {
  constructor(nativeBus, onWarning) {
    if (nativeBus === undefined) throw argError('an EventBus is made with `await EventBus.connect(options)`, not `new EventBus()`')
    this._native = nativeBus
    this._onWarning = onWarning
    this._subs = new Set()
    // emits handed to the store, by ticket, until their outcome is taken
    this._pending = new Map()
    // subscriptions by the key the native side wakes them with
    this._byKey = new Map()
    this._nextKey = 0
    // emit/emitMany calls refused here, before the native layer (which counts its own), by code
    this._refusedInJs = new Map()
    // event-loop transport: this turn's emits are written once the turn's code has run
    this._loop = nativeBus.transport === 'loop'
    this._flushQueued = false
    this._flush = () => {
      this._flushQueued = false
      this._native.flush()
    }
  }

  /** Have this turn's emits written after the code that issued them (one write for all). */
  _queueFlush() {
    if (!this._flushQueued) {
      this._flushQueued = true
      queueMicrotask(this._flush)
    }
  }

  /** Count an emit/emitMany call refused before it reached the native layer; returns `err`. */
  _refused(err) {
    const code = (err && typeof err.code === 'string' && err.code) || 'INTERNAL'
    this._refusedInJs.set(code, (this._refusedInJs.get(code) || 0) + 1)
    return err
  }

  /**
   * Connect to Redis (`url`), to a Redis Cluster (`cluster`) or, with neither, open the
   * embedded in-memory store.
   */
  static async connect(options) {
    const o = checkOptions(options, 'options', {
      url: 'string',
      cluster: 'strings',
      prefix: 'string',
      maxLen: 'int',
      maxEventBytes: 'int',
      timeoutMs: 'int',
      maxQueue: 'int',
      stateCacheSize: 'int',
      durability: 'string',
      replicationTimeoutMs: 'int',
      maxPendingEmits: 'int',
      retention: 'object',
      onWarning: 'function',
      embedded: 'string',
      transport: 'string',
    })
    const { transport, where } = transportOption(o.transport)
    if (o.embedded !== undefined && o.embedded !== 'per-process') {
      throw argError(`options.embedded must be 'per-process' (got '${o.embedded}')`)
    }
    // an empty url is no url: `url: process.env.REDIS_URL` with REDIS_URL='' opens the
    // embedded store, as with REDIS_URL unset
    const url = o.url === '' ? undefined : o.url
    if (url === undefined && o.cluster === undefined && o.embedded !== 'per-process') {
      const why = embeddedInSeveralProcesses()
      if (why) {
        throw argError(
          `no Redis is configured, and ${why}: each process would get its own embedded store, so an ` +
            'event emitted in one would never reach a subscriber in another. Set REDIS_URL (or pass ' +
            "url) to share one store, or pass embedded: 'per-process' if separate stores are intended.",
        )
      }
    }
    const onWarning = o.onWarning || defaultOnWarning()
    let bus = null
    const nativeBus = await native(
      NativeBus.connect(
        {
          url,
          cluster: o.cluster,
          prefix: o.prefix,
          maxLen: o.maxLen,
          maxEventBytes: o.maxEventBytes,
          timeoutMs: o.timeoutMs,
          maxQueue: o.maxQueue,
          stateCacheSize: o.stateCacheSize,
          durability: o.durability,
          replicationTimeoutMs: o.replicationTimeoutMs,
          maxPendingEmits: o.maxPendingEmits,
          retention: o.retention === undefined ? undefined : { finishedRunsMs: retentionMs(o.retention, 'options.retention') },
          transport: transport === 'thread' ? 'thread' : 'loop',
        },
        () => {},
        () => bus && bus._settle(),
        () => bus && bus._wakeReady(),
        () => bus && bus._warn(),
      ),
    )
    // closed with this thread's Node environment (a terminated worker included)
    nativeBus.closeWithEnvironment()
    if (transport !== 'thread') {
      let started
      try {
        started = nativeBus.startEventLoop(
          () => bus && bus._settle(),
          () => bus && bus._wakeReady(),
        )
      } catch (err) {
        nativeBus.close()
        throw withCode(err)
      }
      if (!started && transport === 'loop') {
        nativeBus.close()
        throw argError(
          `${where} asks for transport 'loop', which needs one Redis over plain TCP ` +
            "(not TLS, not a cluster, not the embedded store); use 'auto' to fall back to 'thread' elsewhere",
        )
      }
    }
    bus = new EventBus(nativeBus, onWarning)
    bus._warn()
    return bus
  }

  /** Hand every queued warning to `onWarning` (a throwing handler is reported, not thrown). */
  _warn() {
    for (const w of JSON.parse(this._native.takeWarnings())) {
      try {
        this._onWarning(w.code, w.message, w.detail ?? undefined)
      } catch (err) {
        console.error('[lean-events] onWarning threw:', err)
      }
    }
  }

  /** Settle every emit whose outcome is ready: one call and one JSON.parse per wake-up. */
  _settle() {
    const outcomes = JSON.parse(this._native.takeSettled())
    for (const [ticket, ok, value] of outcomes) {
      const p = this._pending.get(ticket)
      if (!p) continue
      this._pending.delete(ticket)
      if (ok) p.resolve(value)
      else p.reject(fromJson(value))
    }
  }

  /** Wake every subscription that has something to take. */
  _wakeReady() {
    for (const key of this._native.takeReady()) {
      const sub = this._byKey.get(key)
      if (!sub) continue
      // one subscription's failure must not keep the others from being woken
      try {
        sub._wake()
      } catch (err) {
        reportError(sub._onError, err)
      }
    }
  }

  /** A key for a new subscription, under which the native side wakes it. */
  _register(sub) {
    this._nextKey = (this._nextKey + 1) >>> 0
    while (this._byKey.has(this._nextKey) || this._nextKey === 0) this._nextKey = (this._nextKey + 1) >>> 0
    sub._key = this._nextKey
    this._byKey.set(sub._key, sub)
    return sub._key
  }

  /** A promise for the outcome of the emit handed to the store under `ticket`. */
  _outcome(ticket) {
    return new Promise((resolve, reject) => this._pending.set(ticket, { resolve, reject }))
  }

  /**
   * `'loop'` when Node's event loop drives this bus's Redis connections (appends, and the live
   * connection; with `durability: 'replicated'` only the live one), `'thread'` when both cross
   * to the addon's Tokio worker (the embedded store, a cluster, TLS, Bun, Deno, Windows, or
   * `transport: 'thread'`).
   */
  get transport() {
    return this._native.transport
  }

  /** True when running on the embedded in-memory store. */
  get embedded() {
    return this._native.embedded
  }

  /** The key prefix (`nq` unless `prefix` was given). */
  get prefix() {
    return this._native.prefix
  }

  /**
   * Keys and channels named in full (raw streams, strings, scored indexes with documents,
   * plain Pub/Sub): what adapters for another program's key layout are built on. One Redis or
   * the embedded store; a Redis Cluster refuses these calls with `UNSUPPORTED`.
   */
  get keyspace() {
    if (!this._keyspace) this._keyspace = new Keyspace(this)
    return this._keyspace
  }

  /**
   * Append one event; resolves to its stored record. `retention: { finishedRunsMs }` applies
   * to a terminal event of this call instead of the bus's.
   */
  async emit(event, options) {
    let o, keepMs, json
    try {
      o = checkOptions(options, 'options', { type: 'string', retention: 'object' })
      keepMs = retentionMs(o.retention, 'options.retention')
      json = serialize(event, 'the event')
    } catch (err) {
      throw this._refused(err)
    }
    // handed to the store before this returns, so emits keep their call order
    let ticket
    try {
      ticket = this._native.emit(json, o.type, keepMs)
    } catch (err) {
      throw withCode(err)
    }
    if (this._loop) this._queueFlush()
    return this._outcome(ticket)
  }

  /** Append many events in one atomic step; one invalid event rejects them all. */
  async emitMany(events, options) {
    let o, keepMs, parts
    try {
      o = checkOptions(options, 'options', { type: 'string', retention: 'object' })
      keepMs = retentionMs(o.retention, 'options.retention')
      if (!Array.isArray(events)) throw new LeanEventsError('EVENT_INVALID', 'emitMany takes an array of events')
      parts = events.map((e, i) => serialize(e, `event ${i}`))
    } catch (err) {
      throw this._refused(err)
    }
    let ticket
    try {
      ticket = this._native.emitMany(`[${parts.join(',')}]`, o.type, keepMs)
    } catch (err) {
      throw withCode(err)
    }
    if (this._loop) this._queueFlush()
    return this._outcome(ticket)
  }

  /** Read a range of a stream: exclusive `after`/`before`, `limit` (default 100), `reverse`. */
  async read(stream, options) {
    checkStream(stream)
    const o = checkOptions(options, 'options', { after: 'string', before: 'string', limit: 'int', reverse: 'boolean' })
    return JSON.parse(await native(this._native.read(stream.type, stream.id, o)))
  }

  /**
   * Subscribe to a stream: `after` (exclusive) or `backfill: N` first, then live, gap-free.
   * With a handler, events are pushed to it; without, iterate the subscription.
   */
  async subscribe(stream, handler, options) {
    checkStream(stream)
    ;[handler, options] = handlerAndOptions(handler, options)
    const o = checkOptions(options, 'options', {
      after: 'string',
      backfill: 'int',
      maxQueue: 'int',
      onError: 'function',
      onGap: 'function',
    })
    return this._open(handler, o, (key) =>
      this._native.subscribe(
        stream.type,
        stream.id,
        { after: o.after, backfill: o.backfill, maxQueue: o.maxQueue, notifyGaps: !!o.onGap },
        key,
      ),
    )
  }

  /** Every event of one kind, from every stream and every instance, while connected. */
  async onKind(kind, handler, options) {
    if (typeof kind !== 'string') throw argError('kind must be a string')
    ;[handler, options] = handlerAndOptions(handler, options)
    const o = checkOptions(options, 'options', { maxQueue: 'int', onError: 'function' })
    return this._open(handler, o, (key) => this._native.onKind(kind, o.maxQueue, key))
  }

  /**
   * A subscription registered under a new key, opened on the native side by `open(key)` and
   * attached once open (on failure its key is released).
   */
  async _open(handler, o, open) {
    const sub = new Subscription(this, handler || null, o)
    const key = this._register(sub)
    let nativeSub
    try {
      nativeSub = await native(open(key))
    } catch (err) {
      this._byKey.delete(key)
      throw err
    }
    this._subs.add(sub)
    sub._attach(nativeSub)
    return sub
  }

  /** Runs of a flow, newest first: `[{ id, startedAt }]`. */
  async listRuns(flowName, options) {
    if (typeof flowName !== 'string') throw argError('flowName must be a string')
    const o = checkOptions(options, 'options', { limit: 'int', offset: 'int' })
    return JSON.parse(await native(this._native.listRuns(flowName, o.limit ?? 50, o.offset ?? 0)))
  }

  /**
   * Put a run in a flow's run index at `startedAtMs` (Unix ms), or move it there; `listRuns`
   * lists it. Runs started with `flow.started` (or `flow.start`) are indexed by their emit.
   */
  async indexRun(flowName, runId, startedAtMs) {
    if (typeof flowName !== 'string') throw argError('flowName must be a string')
    if (typeof runId !== 'string') throw argError('runId must be a string')
    if (!Number.isSafeInteger(startedAtMs) || startedAtMs < 0) {
      throw argError(`startedAtMs must be a whole number of milliseconds, 0 or more (got ${String(startedAtMs)})`)
    }
    await native(this._native.indexRun(flowName, runId, startedAtMs))
  }

  /** The reduced state of a stream: TriggerState for `trigger` streams, FlowState otherwise. */
  async state(stream) {
    checkStream(stream)
    return JSON.parse(await native(this._native.state(stream.type, stream.id)))
  }

  /** Number of Pub/Sub channels this bus holds (0 once every subscription has ended). */
  get channelCount() {
    return this._native.channelCount
  }

  /**
   * How many warnings of each code this bus (and what runs on it) raised: `{ CODE: count }`.
   * Each was also handed to `onWarning`.
   */
  get warningCounts() {
    return JSON.parse(this._native.warningCounts)
  }

  /**
   * Counters (totals since connect) and gauges (now) of this bus, for monitoring; see
   * `BusMetrics` in index.d.ts. `timers` is null unless a scheduler runs on this bus.
   */
  async metrics() {
    const m = JSON.parse(await native(this._native.metrics()))
    if (this._refusedInJs.size > 0) {
      // the core counts what reached it; add the calls refused in JavaScript, codes in order
      const all = { ...m.emitErrors }
      for (const [code, n] of this._refusedInJs) all[code] = (all[code] || 0) + n
      m.emitErrors = Object.fromEntries(Object.entries(all).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
    }
    return m
  }

  /** Number of open subscriptions. */
  get subscriptionCount() {
    return this._native.subscriptionCount
  }

  /** End every subscription and connection; later calls reject with `BUS_CLOSED`. */
  async close() {
    try {
      this._native.close()
    } catch (err) {
      throw withCode(err)
    }
    for (const sub of [...this._subs]) sub._stop()
  }
}

module.exports = { EventBus }
