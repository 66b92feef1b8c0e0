// lean-events/nitro: wiring for Nitro 2 / h3 1.x apps.
//
// - useLeanEvents(): one EventBus + Scheduler per process (REDIS_URL / NUXT_QUEUE_REDIS_URL, or
//   the embedded store), closed by leanEventsPlugin on Nitro's `close` hook.
// - createStreamAdapter / createBusAdapter: the adapter shapes the Nitro module already calls,
//   backed by lean-events when LEAN_EVENTS=1, else the module's own (legacy) factory.
// - eventStreamHandler (SSE), stateHandler, runsHandler, triggerHandler: h3 handlers.

// The package's own CommonJS entry (a relative import: nitro/ is an ESM package scope of its
// own, so the package cannot self-reference by name from here).
import leanEvents from '../index.js'
import {
  defineEventHandler,
  getMethod,
  getQuery,
  getRequestHeader,
  getRouterParam,
  readRawBody,
  setResponseHeader,
  setResponseStatus,
} from 'h3'

const { EventBus, Scheduler } = leanEvents

const SHARED = Symbol.for('lean-events.nitro.shared')
const DEFAULT_HEARTBEAT_MS = 15_000
const DEFAULT_MAX_BODY_BYTES = 1024 * 1024
const RESERVED_TYPES = new Set(['flows', 'triggers', 'kind', 'await', 'sched'])
const TYPE_RE = /^[a-z0-9_-]+$/
const CURSOR_RE = /^\d{1,20}(-\d{1,20})?$/
// eslint-disable-next-line no-control-regex
const BAD_ID_CHAR = /[\s\p{Cc}]/u

/** HTTP status for each library error code; anything else is a 500. */
const STATUS_BY_CODE = {
  INVALID_ARGUMENT: 400,
  EVENT_INVALID: 400,
  BODY_INVALID: 400,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  TRIGGER_NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  TRIGGER_RESOLVED: 409,
  TRIGGER_CANCELLED: 409,
  WRONG_TYPE: 409,
  NOT_REPLICATED: 503,
  PAYLOAD_TOO_LARGE: 413,
  STORE_UNAVAILABLE: 503,
  TIMEOUT: 503,
  BUS_CLOSED: 503,
}

const STATUS_TEXT = {
  400: 'Bad Request',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  413: 'Payload Too Large',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
}

/** An error that becomes an HTTP response. */
export class HttpError extends Error {
  constructor(statusCode, code, message) {
    super(message)
    this.name = 'HttpError'
    this.statusCode = statusCode
    this.code = code
  }
}

function argError(message) {
  return Object.assign(new TypeError(message), { code: 'INVALID_ARGUMENT' })
}

// ---------------------------------------------------------------------------------------------
// One bus + scheduler per process

function shared() {
  if (!globalThis[SHARED]) globalThis[SHARED] = { options: {}, promise: null }
  return globalThis[SHARED]
}

function envUrl() {
  return process.env.REDIS_URL || process.env.NUXT_QUEUE_REDIS_URL || undefined
}

/**
 * Options for the shared instance, before its first use: `url`, `prefix` and any
 * `EventBus.connect` option, plus `scheduler` (the `new Scheduler` options).
 */
export function configureLeanEvents(options = {}) {
  const s = shared()
  if (s.promise) throw argError('configureLeanEvents() must be called before the first useLeanEvents()')
  s.options = { ...options }
}

/**
 * The process's shared `{ bus, scheduler }`: connected on first use, to `REDIS_URL` (or
 * `NUXT_QUEUE_REDIS_URL`), or to the embedded in-memory store when neither is set.
 */
export function useLeanEvents() {
  const s = shared()
  if (!s.promise) {
    const { scheduler: schedulerOptions, ...connect } = s.options
    const url = 'url' in connect ? connect.url : envUrl()
    const prefix = connect.prefix ?? (process.env.LEAN_EVENTS_PREFIX || undefined)
    const p = (async () => {
      const bus = await EventBus.connect({ ...connect, url, prefix })
      const scheduler = new Scheduler(bus, schedulerOptions)
      return { bus, scheduler, prefix: prefix || 'nq' }
    })()
    s.promise = p
    // a failed connect is not cached: the next call tries again
    p.catch(() => {
      if (s.promise === p) s.promise = null
    })
  }
  return s.promise
}

/** Close the shared scheduler and bus (idempotent); the next useLeanEvents() reconnects. */
export async function closeLeanEvents() {
  const s = shared()
  const p = s.promise
  s.promise = null
  if (!p) return
  let instance
  try {
    instance = await p
  } catch {
    return
  }
  try {
    await instance.scheduler.close()
  } catch {
    // already closed
  }
  try {
    await instance.bus.close()
  } catch {
    // already closed
  }
}

/**
 * A Nitro plugin: `export default defineNitroPlugin(leanEventsPlugin)`. Connects at startup
 * (so steps awaiting timers are resumed) and closes on Nitro's `close` hook.
 */
export function leanEventsPlugin(nitroApp) {
  if (nitroApp && nitroApp.hooks && typeof nitroApp.hooks.hook === 'function') {
    nitroApp.hooks.hook('close', closeLeanEvents)
  }
  useLeanEvents().catch((err) => console.error('[lean-events] could not connect:', err && err.message))
}

async function resolveBus(options) {
  if (options && options.bus) return options.bus
  return (await useLeanEvents()).bus
}

/** The key prefix of stream names like `nq:flow:<id>`: the option, else the shared instance's. */
async function resolvePrefix(options) {
  if (options && options.prefix) return options.prefix
  if (options && options.bus) return 'nq'
  return (await useLeanEvents()).prefix
}

async function resolveScheduler(options) {
  if (options && options.scheduler) return options.scheduler
  return (await useLeanEvents()).scheduler
}

// ---------------------------------------------------------------------------------------------
// Adapters in the shapes the Nitro module calls

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

// ---------------------------------------------------------------------------------------------
// h3 handlers

function checkType(type) {
  if (typeof type !== 'string' || !TYPE_RE.test(type) || RESERVED_TYPES.has(type)) {
    throw new HttpError(400, 'INVALID_ARGUMENT', 'invalid stream type: [a-z0-9_-]+, not a reserved name')
  }
  return type
}

function checkId(id, what = 'id') {
  if (typeof id !== 'string' || id.length === 0 || [...id].length > 256 || BAD_ID_CHAR.test(id)) {
    throw new HttpError(400, 'INVALID_ARGUMENT', `invalid ${what}: 1-256 printable characters without whitespace`)
  }
  return id
}

function param(event, name) {
  try {
    return getRouterParam(event, name, { decode: true })
  } catch {
    throw new HttpError(400, 'INVALID_ARGUMENT', `invalid ${name}`)
  }
}

async function checkAuthorized(authorize, event, target) {
  if (typeof authorize !== 'function') return
  let ok
  try {
    ok = await authorize(event, target)
  } catch {
    ok = false
  }
  if (ok === false) throw new HttpError(403, 'FORBIDDEN', 'forbidden')
}

function isClientHttpError(err) {
  return !!err && Number.isInteger(err.statusCode) && err.statusCode >= 400 && err.statusCode < 500
}

/** The HTTP form of any error: library codes map to statuses; no stack ever leaves. */
function toHttpError(err) {
  if (err instanceof HttpError) return err
  // an h3 error (`createError({ statusCode: 404 })`) from a hook such as `id`: its 4xx stands
  if (isClientHttpError(err)) {
    const code = typeof err.code === 'string' ? err.code : `HTTP_${err.statusCode}`
    return new HttpError(err.statusCode, code, String(err.statusMessage || err.message || code))
  }
  const code = err && typeof err.code === 'string' ? err.code : undefined
  const status = code ? STATUS_BY_CODE[code] : undefined
  if (status && status < 500) return new HttpError(status, code, String(err.message || code))
  if (status) return new HttpError(status, code, 'the event store is unavailable, try again')
  console.error('[lean-events] internal error in a handler:', err)
  return new HttpError(500, 'INTERNAL', 'internal error')
}

function sendError(event, err) {
  const e = toHttpError(err)
  setResponseStatus(event, e.statusCode, STATUS_TEXT[e.statusCode])
  setResponseHeader(event, 'content-type', 'application/json; charset=utf-8')
  setResponseHeader(event, 'cache-control', 'no-store')
  if (e.statusCode === 405) setResponseHeader(event, 'allow', e.allow || 'POST')
  return { statusCode: e.statusCode, code: e.code, message: e.message }
}

function cursorOf(event) {
  const header = getRequestHeader(event, 'last-event-id')
  const query = getQuery(event).after
  const raw = header !== undefined && header !== '' ? header : Array.isArray(query) ? query[query.length - 1] : query
  if (raw === undefined || raw === '') return undefined
  const cursor = String(raw).trim()
  if (!CURSOR_RE.test(cursor)) throw new HttpError(400, 'INVALID_ARGUMENT', 'invalid cursor: Last-Event-ID / ?after= is a stream id "<ms>-<seq>"')
  return cursor
}

function heartbeatDefault() {
  const env = Number(process.env.LEAN_EVENTS_SSE_HEARTBEAT_MS)
  return Number.isFinite(env) && env > 0 ? env : DEFAULT_HEARTBEAT_MS
}

function sseMessage(e) {
  return `id: ${e.id}\nevent: ${e.kind}\ndata: ${JSON.stringify(e)}\n\n`
}

const STREAMS_OF_SERVER = Symbol.for('lean-events.nitro.eventStreams')

/**
 * Nitro's graceful shutdown closes the HTTP server, waits until every connection has ended and
 * only then calls the `close` hook; an open event stream would hold it up until its timeout
 * (30 s). So when the server starts closing, end the event streams it serves (the browsers
 * reconnect with Last-Event-ID to whichever instance is up).
 */
function trackStream(req, end) {
  const server = req.socket && req.socket.server
  if (!server || typeof server.close !== 'function') return () => {}
  let streams = server[STREAMS_OF_SERVER]
  if (!streams) {
    streams = new Set()
    server[STREAMS_OF_SERVER] = streams
    const close = server.close
    server.close = function closeAndEndEventStreams(...args) {
      for (const endStream of [...streams]) endStream()
      return close.apply(this, args)
    }
  }
  streams.add(end)
  return () => streams.delete(end)
}

/** Has the client gone (or the response ended) already? Its `close` event will not come again. */
function responseGone(req, res) {
  return res.destroyed || res.writableEnded || req.destroyed || !!(req.socket && req.socket.destroyed)
}

/** `event: gap`: entries between the client's cursor and `firstId` were trimmed, never sent. */
function sseGap(gap) {
  return `event: gap\ndata: ${JSON.stringify({ after: gap.after, firstId: gap.firstId })}\n\n`
}

/** Write the subscription to the response as SSE until either side ends. */
function pipeSse(event, sub, o, gaps) {
  const req = event.node.req
  const res = event.node.res
  if (responseGone(req, res)) {
    // the client left while authorize / subscribe were awaited
    sub.unsubscribe().catch(() => {})
    return undefined
  }
  const headers = {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    'x-accel-buffering': 'no',
  }
  if (!(req.httpVersionMajor >= 2)) headers.connection = 'keep-alive'
  res.writeHead(200, headers)
  if (req.socket) {
    req.socket.setNoDelay(true)
    req.socket.setTimeout(0)
  }
  res.write(`retry: ${o.retryMs ?? 1000}\n: lean-events\n\n`)
  gaps.write = (gap) => res.write(sseGap(gap))
  for (const gap of gaps.pending.splice(0)) gaps.write(gap)
  if (typeof res.flushHeaders === 'function') res.flushHeaders()

  return new Promise((resolve) => {
    let closed = false
    let corked = false
    const heartbeatMs = o.heartbeatMs ?? heartbeatDefault()
    const heartbeat = setInterval(() => {
      if (!closed) res.write(': ping\n\n')
    }, heartbeatMs)
    if (typeof heartbeat.unref === 'function') heartbeat.unref()
    let wakeWriter = null
    let untrack = () => {}
    const finish = () => {
      if (closed) return
      closed = true
      clearInterval(heartbeat)
      untrack()
      sub.unsubscribe().catch(() => {})
      if (wakeWriter) wakeWriter()
      if (!res.writableEnded) res.end()
      resolve()
    }
    res.on('close', finish)
    res.on('error', finish)
    untrack = trackStream(req, finish)
    const drained = () =>
      new Promise((r) => {
        const done = () => {
          res.off('drain', done)
          wakeWriter = null
          r()
        }
        wakeWriter = done
        res.on('drain', done)
      })
    ;(async () => {
      try {
        for await (const e of sub) {
          if (closed) break
          if (!corked) {
            corked = true
            res.cork()
            process.nextTick(() => {
              corked = false
              res.uncork()
            })
          }
          if (!res.write(sseMessage(e))) await drained()
        }
      } catch {
        // the subscription ended with an error (cut off as a slow client, bus closed): end the
        // response; the browser reconnects with Last-Event-ID and resumes after its last event
      }
      finish()
    })()
  })
}

/**
 * `GET /api/_events/:type/:id/stream`: Server-Sent Events, backfill then live. One message per
 * event (`id:` the stream id, `event:` the kind, `data:` the record as JSON). Resumes after the
 * `Last-Event-ID` header (or `?after=`); heartbeat comments every `heartbeatMs` (15 s).
 */
export function eventStreamHandler(options = {}) {
  for (const name of ['heartbeatMs', 'retryMs']) {
    const v = options[name]
    if (v !== undefined && !(Number.isInteger(v) && v > 0 && v <= 2 ** 31 - 1)) {
      throw argError(`eventStreamHandler({ ${name} }) must be a whole number of milliseconds above 0, got ${String(v)}`)
    }
  }
  return defineEventHandler(async (event) => {
    let sub
    const gaps = { pending: [], write: (gap) => gaps.pending.push(gap) }
    try {
      const type = checkType(options.type ?? param(event, 'type'))
      const id = checkId(typeof options.id === 'function' ? await options.id(event) : param(event, 'id'))
      await checkAuthorized(options.authorize, event, { type, id })
      const after = cursorOf(event)
      const bus = await resolveBus(options)
      const start = after !== undefined ? { after } : typeof options.backfill === 'number' ? { backfill: options.backfill } : { after: '0' }
      // a trimmed range is not an error: the client is told (`event: gap`) and delivery goes on
      sub = await bus.subscribe({ type, id }, { ...start, maxQueue: options.maxQueue, onGap: (gap) => gaps.write(gap) })
    } catch (err) {
      return sendError(event, err)
    }
    return pipeSse(event, sub, options, gaps)
  })
}

/** `GET /api/_events/:type/:id`: `{ type, id, state }`, the reduced state (404 when empty). */
export function stateHandler(options = {}) {
  return defineEventHandler(async (event) => {
    try {
      const type = checkType(options.type ?? param(event, 'type'))
      const id = checkId(param(event, 'id'))
      await checkAuthorized(options.authorize, event, { type, id })
      const bus = await resolveBus(options)
      const [state, first] = await Promise.all([bus.state({ type, id }), bus.read({ type, id }, { limit: 1 })])
      if (first.length === 0) throw new HttpError(404, 'NOT_FOUND', `no events in ${type} ${id}`)
      setResponseHeader(event, 'cache-control', 'no-store')
      return { type, id, state }
    } catch (err) {
      return sendError(event, err)
    }
  })
}

function intQuery(value, name, min, max) {
  if (value === undefined || value === '') return undefined
  const n = Number(Array.isArray(value) ? value[value.length - 1] : value)
  if (!Number.isInteger(n) || n < min || n > max) throw new HttpError(400, 'INVALID_ARGUMENT', `${name} must be an integer in ${min}..${max}`)
  return n
}

/**
 * `GET /api/_flows/:name/runs?limit=&offset=`: `{ name, runs: [{ id, startedAt }] }`, newest
 * first; `?state=1` (or `withState: true`) adds each run's `status`.
 */
export function runsHandler(options = {}) {
  return defineEventHandler(async (event) => {
    try {
      const name = checkId(options.name ?? param(event, 'name'), 'flow name')
      await checkAuthorized(options.authorize, event, { type: 'flows', id: name })
      const q = getQuery(event)
      const limit = intQuery(q.limit, 'limit', 1, 1000) ?? options.limit ?? 50
      const offset = intQuery(q.offset, 'offset', 0, 1e9) ?? 0
      const bus = await resolveBus(options)
      const runs = await bus.listRuns(name, { limit, offset })
      const withState = options.withState || q.state === '1' || q.state === 'true'
      if (withState) {
        await Promise.all(
          runs.map(async (run) => {
            const s = await bus.state({ type: 'flow', id: run.id })
            run.status = s.status
            if (s.completedAt) run.completedAt = s.completedAt
          }),
        )
      }
      setResponseHeader(event, 'cache-control', 'no-store')
      return { name, runs }
    } catch (err) {
      return sendError(event, err)
    }
  })
}

/** Read at most `limit` bytes of the request body; over it: 413 (without reading the rest). */
async function readBodyLimited(event, limit) {
  const req = event.node.req
  const declared = Number(req.headers['content-length'])
  if (Number.isFinite(declared) && declared > limit) {
    throw new HttpError(413, 'PAYLOAD_TOO_LARGE', `the body is larger than ${limit} bytes`)
  }
  const consumed = req.readableEnded || req.readableDidRead || event._requestBody || req.rawBody || req.body
  if (consumed) {
    const buf = await readRawBody(event, false)
    if (buf && buf.length > limit) throw new HttpError(413, 'PAYLOAD_TOO_LARGE', `the body is larger than ${limit} bytes`)
    return buf || Buffer.alloc(0)
  }
  return new Promise((resolve, reject) => {
    const chunks = []
    let size = 0
    const onData = (chunk) => {
      size += chunk.length
      if (size > limit) {
        cleanup()
        req.resume() // discard the rest
        reject(new HttpError(413, 'PAYLOAD_TOO_LARGE', `the body is larger than ${limit} bytes`))
        return
      }
      chunks.push(chunk)
    }
    const onEnd = () => {
      cleanup()
      resolve(Buffer.concat(chunks))
    }
    const onError = (err) => {
      cleanup()
      reject(new HttpError(400, 'BODY_INVALID', `could not read the body: ${err.message}`))
    }
    const cleanup = () => {
      req.off('data', onData)
      req.off('end', onEnd)
      req.off('error', onError)
    }
    req.on('data', onData)
    req.on('end', onEnd)
    req.on('error', onError)
  })
}

function parsePayload(event, buf) {
  if (buf.length === 0) return undefined
  const text = buf.toString('utf8')
  const type = String(getRequestHeader(event, 'content-type') || '').toLowerCase()
  if (type.startsWith('application/x-www-form-urlencoded')) {
    return Object.fromEntries(new URLSearchParams(text))
  }
  try {
    return JSON.parse(text)
  } catch {
    throw new HttpError(400, 'BODY_INVALID', 'the body must be JSON (the payload to fire the trigger with)')
  }
}

/**
 * `POST /api/_triggers/:id`: fires the trigger with the JSON body as payload.
 * 200 `{ id, status: 'fired' }`; 404 unknown or expired; 409 already resolved; 400 bad id or
 * body; 413 body over `maxBodyBytes` (1 MiB).
 */
export function triggerHandler(options = {}) {
  return defineEventHandler(async (event) => {
    try {
      if (getMethod(event) !== 'POST') {
        const e = new HttpError(405, 'METHOD_NOT_ALLOWED', 'use POST to fire a trigger')
        e.allow = 'POST'
        throw e
      }
      const id = checkId(param(event, 'id'), 'trigger id')
      await checkAuthorized(options.authorize, event, { type: 'trigger', id })
      const payload = parsePayload(event, await readBodyLimited(event, options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES))
      const scheduler = await resolveScheduler(options)
      await scheduler.fire(id, payload)
      setResponseHeader(event, 'cache-control', 'no-store')
      return { id, status: 'fired' }
    } catch (err) {
      return sendError(event, err)
    }
  })
}

export { STATUS_BY_CODE }
