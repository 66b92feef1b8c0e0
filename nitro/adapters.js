// Adapters in the shapes the Nitro module calls: lean-events behind them when LEAN_EVENTS=1, else
// the module's own (legacy) factory untouched.

import { argError } from './errors.js'
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

/**
 * An event as the module writes it (this envelope, or the older `type`/`runId`/`flowName`/
 * `stepName`/`attempt` fields) as an `EventInput` for `subject`.
 */
export function toEventInput(e, subject) {
  if (!isObject(e)) throw Object.assign(new TypeError('an event is an object like { kind, data }'), { code: 'EVENT_INVALID' })
  const kind = e.kind ?? e.type
  let data = e.data
  if (kind === 'flow.started' && e.flowName !== undefined && (data === undefined || (isObject(data) && data.name === undefined))) {
    data = { ...(data || {}), name: e.flowName }
  }
  const meta = compact({
    ...(isObject(e.meta) ? e.meta : {}),
    attempt: e.attempt,
    stepId: e.stepId,
    causationId: e.causationId,
  })
  return compact({
    kind,
    subject: subject ?? e.subject ?? e.runId,
    flow: e.flow ?? (e.runId !== undefined && e.runId !== subject ? e.runId : undefined),
    step: e.step ?? e.stepName,
    trigger: e.trigger ?? e.triggerId,
    correlationId: e.correlationId,
    data,
    meta: Object.keys(meta).length ? meta : undefined,
  })
}

/**
 * The stream adapter of the Nitro module: lean-events when `LEAN_EVENTS=1` (or
 * `enabled: true`), else `legacy()` untouched.
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
  const withStream = (stream, rec) => ({ ...rec, stream: typeof stream === 'string' ? stream : `${stream.type}:${stream.id}` })
  return {
    leanEvents: true,
    async append(stream, e) {
      const bus = await resolveBus(options)
      const ref = parseStreamName(stream, await prefixOf(), e && (e.kind ?? e.type))
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
    async close() {
      const all = [...subs]
      subs.clear()
      await Promise.all(all.map((s) => s.unsubscribe().catch(() => {})))
      if (!options.bus) await closeLeanEvents()
    },
  }
}

/**
 * The in-process event bus of the Nitro module (`publish`, `subscribeSubject`, `onKind`):
 * lean-events when `LEAN_EVENTS=1` (or `enabled: true`), else `legacy()` untouched. Here
 * `publish` stores the event, and subscribers on every instance receive it.
 */
export function createBusAdapter(options = {}) {
  if (!enabledByEnv(options)) {
    if (typeof options.legacy !== 'function') {
      throw argError('createBusAdapter({ legacy }) needs the legacy factory when LEAN_EVENTS is not 1')
    }
    return options.legacy()
  }
  const report = (what) => (err) => console.error(`[lean-events] ${what}:`, err && err.message)
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
  return {
    leanEvents: true,
    publish(event, ctx) {
      const p = resolveBus(options).then((bus) => {
        const input = toEventInput(event, event && (event.subject ?? event.runId ?? (ctx && ctx.flowId)))
        return bus.emit(input)
      })
      p.catch(report('publish failed'))
      return p
    },
    subscribeSubject(subject, handler, opts = {}) {
      return detach(
        (async () => {
          const bus = await resolveBus(options)
          const ref = parseStreamName(subject, await resolvePrefix(options))
          if (opts.type) ref.type = opts.type
          return bus.subscribe(ref, handler)
        })(),
      )
    },
    onKind(kind, handler) {
      return detach(resolveBus(options).then((bus) => bus.onKind(kind, handler)))
    },
  }
}
