// Adapters in the shapes the Nitro module calls: lean-events behind them when LEAN_EVENTS=1, else
// the module's own (legacy) factory untouched. They speak this envelope and the seed-era
// module's (nuxt-queue 0.1.x: `type`, `runId`, `flowName`, ...; see nuxt-queue.js) at once.

import { argError } from './errors.js'
import { isModuleEvent, runIndexName, toModuleRecord } from './nuxt-queue.js'
import { closeLeanEvents, resolveBus, resolvePrefix } from './shared.js'

function enabledByEnv(options) {
  if (options && typeof options.enabled === 'boolean') return options.enabled
  return process.env.LEAN_EVENTS === '1'
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

function compact(obj) {
  const out = {}
  for (const [k, v] of Object.entries(obj)) if (v !== undefined) out[k] = v
  return out
}

/**
 * A stream given as the module names it: `{ type, id }`, a key `<prefix>:<type>:<id>`
 * (`nq:flow:run_1`), or a bare subject (a `flow` stream, or `trigger` for `trigger.*` kinds).
 */
export function parseStreamName(stream, prefix = 'nq', kind) {
  if (isObject(stream)) return { type: stream.type, id: stream.id }
  if (typeof stream !== 'string') throw argError('a stream is a string or { type, id }')
  const head = `${prefix}:`
  if (stream.startsWith(head)) {
    const rest = stream.slice(head.length)
    const i = rest.indexOf(':')
    if (i > 0) return { type: rest.slice(0, i), id: rest.slice(i + 1) }
  }
  const type = typeof kind === 'string' && kind.startsWith('trigger.') ? 'trigger' : 'flow'
  return { type, id: stream }
}

/** The module leaves optional fields empty (`''`, `null`) where this envelope omits them. */
const present = (v) => (v === '' || v === null ? undefined : v)

/**
 * An event as the module writes it (this envelope, or the seed-era `type`/`runId`/`flowName`/
 * `stepName`/`stepId`/`attempt` fields) as an `EventInput` for `subject`. `flowName`, `stepId`
 * and `attempt` are kept in `meta`; a run-starting event (`flow.start`, `flow.started`) is
 * indexed under `meta.flowName` when its data names no flow.
 */
export function toEventInput(e, subject) {
  if (!isObject(e)) throw Object.assign(new TypeError('an event is an object like { kind, data }'), { code: 'EVENT_INVALID' })
  const kind = e.kind ?? e.type
  const runId = present(e.runId)
  let data = e.data
  if (kind === 'flow.started' && e.flowName !== undefined && (data === undefined || (isObject(data) && data.name === undefined))) {
    data = { ...(data || {}), name: e.flowName }
  }
  // the module's top-level fields win over `meta`'s, but only when they are there
  const meta = {
    ...(isObject(e.meta) ? e.meta : {}),
    ...compact({
      flowName: typeof e.flowName === 'string' ? present(e.flowName) : undefined,
      attempt: present(e.attempt),
      stepId: present(e.stepId),
      causationId: e.causationId,
    }),
  }
  return compact({
    kind,
    subject: subject ?? e.subject ?? runId,
    flow: e.flow ?? (runId !== undefined && runId !== subject ? runId : undefined),
    step: e.step ?? present(e.stepName),
    trigger: e.trigger ?? e.triggerId,
    correlationId: e.correlationId,
    data,
    meta: Object.keys(meta).length ? meta : undefined,
  })
}

/**
 * The stream adapter of the Nitro module: lean-events when `LEAN_EVENTS=1` (or
 * `enabled: true`), else `legacy()` untouched. Records carry the envelope and the seed-era
 * module's fields; `indexAdd`/`indexRead` are that module's run index (`<prefix>:flows:<name>`).
 */
export function createStreamAdapter(options = {}) {
  if (!enabledByEnv(options)) {
    if (typeof options.legacy !== 'function') {
      throw argError('createStreamAdapter({ legacy }) needs the legacy factory when LEAN_EVENTS is not 1')
    }
    return options.legacy()
  }
  const subs = new Set()
  const prefixOf = () => resolvePrefix(options)
  const withStream = (stream, rec) => ({
    ...toModuleRecord(rec),
    stream: typeof stream === 'string' ? stream : `${stream.type}:${stream.id}`,
  })
  return {
    leanEvents: true,
    async append(stream, e) {
      // looked up before the first await: a handler's append runs while publish delivers
      const publishing = beingPublished(localBus(options), e)
      const bus = await resolveBus(options)
      const ref = parseStreamName(stream, await prefixOf(), e && (e.kind ?? e.type))
      if (publishing && publishing.subject === ref.id && ref.type === defaultType(e)) {
        return withStream(stream, await publishing.stored)
      }
      const rec = await bus.emit(toEventInput(e, ref.id), { type: ref.type })
      return withStream(stream, rec)
    },
    async read(stream, opts = {}) {
      const bus = await resolveBus(options)
      const ref = parseStreamName(stream, await prefixOf())
      const backward = opts.direction === 'backward'
      const o = compact({ limit: opts.limit, reverse: backward || undefined })
      if (opts.fromId && opts.fromId !== '0-0' && opts.fromId !== '0') {
        if (backward) o.before = opts.fromId
        else o.after = opts.fromId
      }
      return (await bus.read(ref, o)).map((r) => withStream(stream, r))
    },
    async subscribe(stream, onEvent) {
      const bus = await resolveBus(options)
      const ref = parseStreamName(stream, await prefixOf())
      const sub = await bus.subscribe(ref, (rec) => onEvent(withStream(stream, rec)))
      subs.add(sub)
      return {
        unsubscribe() {
          subs.delete(sub)
          return sub.unsubscribe()
        },
      }
    },
    /** ZADD: put (or move) run `id` at `score` (ms) in the run index `key`. */
    async indexAdd(key, id, score) {
      const name = runIndexName(key, await prefixOf())
      if (typeof score !== 'number' || !Number.isFinite(score) || score < 0) {
        throw argError(`indexAdd: the score is the run's start in ms, a number 0 or more (got ${String(score)})`)
      }
      // the module reads scores back with parseInt: whole milliseconds are what it sees
      await (await resolveBus(options)).indexRun(name, id, Math.floor(score))
    },
    /** The run index `key`, newest first: `[{ id, score }]` (`limit` 50 unless given, at most 10 000). */
    async indexRead(key, opts = {}) {
      const name = runIndexName(key, await prefixOf())
      const limit = Math.min(opts.limit || DEFAULT_INDEX_LIMIT, MAX_INDEX_LIMIT)
      const runs = await (await resolveBus(options)).listRuns(name, { limit, offset: opts.offset || 0 })
      return runs.map((r) => ({ id: r.id, score: Date.parse(r.startedAt) }))
    },
    async close() {
      const all = [...subs]
      subs.clear()
      await Promise.all(all.map((s) => s.unsubscribe().catch(() => {})))
      if (!options.bus) await closeLeanEvents()
    },
  }
}

/** The module's `indexRead` default, and the most one read returns here. */
const DEFAULT_INDEX_LIMIT = 50
const MAX_INDEX_LIMIT = 10_000

/**
 * The in-process side of the bus adapters, one per bus and process (the module's emitter is
 * one per process), so that adapters created apart still meet: the handlers of `onType` /
 * `subscribeRunId`, and the events `publish` is handing to them right now.
 */
const LOCAL = Symbol.for('lean-events.nitro.localBus')
const localByBus = new WeakMap()

function localBus(options) {
  const fresh = () => ({ runId: new Map(), type: new Map(), delivering: [] })
  if (options.bus) {
    if (!localByBus.has(options.bus)) localByBus.set(options.bus, fresh())
    return localByBus.get(options.bus)
  }
  if (!globalThis[LOCAL]) globalThis[LOCAL] = fresh()
  return globalThis[LOCAL]
}

/** Add `handler` under `key` of `table`; returns the function that removes it. */
function addLocal(table, key, handler) {
  if (typeof handler !== 'function') throw argError('handler must be a function')
  let set = table.get(key)
  if (!set) table.set(key, (set = new Set()))
  // one entry per registration, as EventEmitter.on: the same function twice is called twice
  const entry = (e) => handler(e)
  set.add(entry)
  return () => {
    set.delete(entry)
    if (set.size === 0 && table.get(key) === set) table.delete(key)
  }
}

/**
 * The delivery under way of the event `e` describes, if any: the module's flow wiring hears
 * every event on the bus and appends it to its run's stream (a new object with the same type,
 * run and `data`). lean-events' `publish` stores it already, so that append is the same store,
 * not a second one.
 */
function beingPublished(local, e) {
  if (!isObject(e)) return undefined
  const kind = e.kind ?? e.type
  return local.delivering.find(
    (d) => d.subject !== undefined && (d.event.kind ?? d.event.type) === kind && d.event.data === e.data,
  )
}

/** The stream type `publish` stores an event in (the bus's default routing). */
function defaultType(e) {
  const kind = e.kind ?? e.type
  return typeof kind === 'string' && kind.startsWith('trigger.') ? 'trigger' : 'flow'
}

/** Call every handler of `key` with `event` now; a throw or rejection is reported, not thrown. */
function deliverLocal(table, key, event, report) {
  const set = table.get(key)
  if (!set) return
  for (const entry of [...set]) {
    try {
      const out = entry(event)
      if (out && typeof out.then === 'function') out.then(undefined, report)
    } catch (err) {
      report(err)
    }
  }
}

/**
 * The in-process event bus of the Nitro module: lean-events when `LEAN_EVENTS=1` (or
 * `enabled: true`), else `legacy()` untouched.
 *
 * `publish` stores the event (in the stream of its subject or run id) and, before it returns,
 * hands it to this process's `subscribeRunId` / `onType` handlers, as the seed-era module's
 * EventEmitter does; an event with no run id (the module's job events carry `runId: ''`) is
 * delivered but not stored. `subscribeSubject` / `onKind` get stored records, from every
 * instance.
 */
export function createBusAdapter(options = {}) {
  if (!enabledByEnv(options)) {
    if (typeof options.legacy !== 'function') {
      throw argError('createBusAdapter({ legacy }) needs the legacy factory when LEAN_EVENTS is not 1')
    }
    return options.legacy()
  }
  const report = (what) => (err) => console.error(`[lean-events] ${what}:`, err && err.message)
  const local = localBus(options)
  // subscribing is asynchronous; the returned function unsubscribes whenever it is called
  const detach = (pending) => {
    let done = false
    pending.then(
      (sub) => {
        if (done) sub.unsubscribe().catch(() => {})
      },
      report('subscribe failed'),
    )
    return () => {
      if (done) return
      done = true
      pending.then((sub) => sub.unsubscribe()).catch(() => {})
    }
  }
  const publish = (event, ctx) => {
    const subject = isObject(event) ? (event.subject ?? present(event.runId) ?? (ctx && ctx.flowId)) : undefined
    // handed to the store before the local handlers run, so events they publish come after it
    let stored
    if (subject === undefined && isModuleEvent(event)) stored = Promise.resolve(null)
    else {
      stored = resolveBus(options).then(async (bus) => toModuleRecord(await bus.emit(toEventInput(event, subject))))
      stored.catch(report('publish failed'))
    }
    if (isObject(event)) {
      const handlerFailed = report('a bus handler failed')
      local.delivering.push({ event, subject, stored })
      try {
        deliverLocal(local.runId, event.runId ?? subject ?? '', event, handlerFailed)
        deliverLocal(local.type, event.type ?? event.kind, event, handlerFailed)
      } finally {
        local.delivering.pop()
      }
    }
    return stored
  }
  return {
    leanEvents: true,
    publish,
    /** The name the module's event manager calls it by (`setEventManager`). */
    publishBus: publish,
    subscribeRunId(runId, handler) {
      if (typeof runId !== 'string') throw argError('runId must be a string')
      return addLocal(local.runId, runId, handler)
    },
    onType(type, handler) {
      if (typeof type !== 'string') throw argError('type must be a string')
      return addLocal(local.type, type, handler)
    },
    subscribeSubject(subject, handler, opts = {}) {
      return detach(
        (async () => {
          const bus = await resolveBus(options)
          const ref = parseStreamName(subject, await resolvePrefix(options))
          if (opts.type) ref.type = opts.type
          return bus.subscribe(ref, typeof handler === 'function' ? (rec) => handler(toModuleRecord(rec)) : handler)
        })(),
      )
    },
    onKind(kind, handler) {
      const deliver = typeof handler === 'function' ? (rec) => handler(toModuleRecord(rec)) : handler
      return detach(resolveBus(options).then((bus) => bus.onKind(kind, deliver)))
    },
  }
}
