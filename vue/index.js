// lean-events/vue: Vue 3 composables over the event-stream, runs and trigger routes
// (lean-events/nitro's handlers, mounted by lean-events/nuxt with `routes: true`).
//
// The reactivity is Vue's own (vue is a peer dependency); the flow reducer is the one the
// server runs (lean-events/client). On the server (SSR) nothing connects: the composables
// return their empty state and the browser fills it after hydration. Each connection is closed
// when the component (or effect scope) that opened it goes away.

import { getCurrentScope, onScopeDispose, ref, shallowRef, toValue, triggerRef, watch } from 'vue'
import { applyFlowEvent, initialFlowState } from '../client/index.js'

const DEFAULT_BASE = '/api'
const RECONNECT_MIN_MS = 500
const RECONNECT_MAX_MS = 15_000

const inBrowser = () => typeof window !== 'undefined' && typeof globalThis.EventSource === 'function'

function trimBase(base) {
  return (base ?? DEFAULT_BASE).replace(/\/+$/, '')
}

/** `{ type, id }`, `'type/id'` or a getter/ref of either → `{ type, id }` (undefined: nothing to open). */
function streamRef(stream) {
  const s = toValue(stream)
  if (s === undefined || s === null || s === '') return undefined
  if (typeof s === 'string') {
    const i = s.indexOf('/')
    if (i <= 0 || i === s.length - 1) throw new TypeError(`a stream is { type, id } or 'type/id', got ${JSON.stringify(s)}`)
    return { type: s.slice(0, i), id: s.slice(i + 1) }
  }
  if (typeof s.type !== 'string' || typeof s.id !== 'string' || !s.type || !s.id) {
    throw new TypeError('a stream is { type, id } with two non-empty strings')
  }
  return { type: s.type, id: s.id }
}

function streamUrl(base, { type, id }, after) {
  const url = `${trimBase(base)}/_events/${encodeURIComponent(type)}/${encodeURIComponent(id)}/stream`
  return after ? `${url}?after=${encodeURIComponent(after)}` : url
}

// Every record an open stream of this page receives, for useRuns: a listed run follows its
// own flow.* events when a stream of that run is open anyway (a run page, useFlowRun), with
// no connection of its own.
const pageListeners = new Set()

function tellPage(ref_, record) {
  for (const listener of pageListeners) {
    try {
      listener(ref_, record)
    } catch {
      // one listener's fault is not the stream's
    }
  }
}

function disposeWithScope(fn) {
  if (getCurrentScope()) onScopeDispose(fn)
}

/**
 * A stream's events, live: `{ events, status, error, lastId, gap, close, reload }`, all refs
 * but the two functions.
 *
 * - `status`: `idle` (on the server, or no stream), `connecting`, `open`, `reconnecting`,
 *   `closed` (by `close()` or unmount).
 * - Reconnects after an error, from `lastId` (`?after=`), backing off from 0.5 s to 15 s; the
 *   browser's own reconnects resume with `Last-Event-ID`, the same cursor.
 * - `gap` (entries before the cursor were trimmed away): `gap` is set to `{ after, firstId }`
 *   and the stream is read again from its start, so `events` never silently misses some;
 *   `onReset` hears of it (useFlowRun starts its state over).
 * - `stream` may be a ref or getter: a new value closes the old connection and opens the new.
 *
 * Options: `after` (resume after this id instead of the start), `base` (the routes' prefix,
 * default `/api`), `onEvent(record)`, `onReset()`, `keep` (how many events `events` holds,
 * default all).
 */
export function useEventStream(stream, options = {}) {
  const events = shallowRef([])
  const status = ref('idle')
  const error = ref(null)
  const lastId = ref(options.after ?? null)
  const gap = ref(null)
  let source = null
  let timer = null
  let failures = 0
  let stopped = false
  let current

  const clearTimer = () => {
    if (timer !== null) clearTimeout(timer)
    timer = null
  }
  const closeSource = () => {
    if (source) {
      source.onopen = null
      source.onmessage = null
      source.onerror = null
      source.close()
    }
    source = null
  }

  function open(ref_, after) {
    closeSource()
    clearTimer()
    const Source = globalThis.EventSource
    const es = new Source(streamUrl(options.base, ref_, after), options.withCredentials ? { withCredentials: true } : undefined)
    source = es
    status.value = failures > 0 ? 'reconnecting' : 'connecting'
    const startedAt = after
    es.onopen = () => {
      if (source !== es) return
      status.value = 'open'
      error.value = null
      failures = 0
    }
    es.onmessage = (msg) => {
      if (source !== es) return
      let record
      try {
        record = JSON.parse(msg.data)
      } catch {
        return
      }
      if (msg.lastEventId) lastId.value = msg.lastEventId
      else if (record && typeof record.id === 'string') lastId.value = record.id
      const list = events.value
      list.push(record)
      if (options.keep > 0 && list.length > options.keep) list.splice(0, list.length - options.keep)
      triggerRef(events)
      if (typeof options.onEvent === 'function') options.onEvent(record)
      if (pageListeners.size > 0) tellPage(ref_, record)
    }
    es.addEventListener('gap', (msg) => {
      if (source !== es) return
      let info = null
      try {
        info = JSON.parse(msg.data)
      } catch {
        info = { after: startedAt ?? null, firstId: null }
      }
      gap.value = info
      // a read from the start misses nothing; a resumed one (by us with ?after=, or by the
      // browser with Last-Event-ID) starts over from the beginning of what is left
      if (!startedAt && !lastId.value) return
      events.value = []
      lastId.value = null
      if (typeof options.onReset === 'function') options.onReset(info)
      open(ref_, undefined)
    })
    es.onerror = () => {
      if (source !== es) return
      // CONNECTING: the browser reconnects by itself, with Last-Event-ID; CLOSED: it gave up
      // (an HTTP error, a network error on some browsers), so reconnect from lastId here
      if (es.readyState !== 2) {
        status.value = 'reconnecting'
        return
      }
      failures++
      error.value = Object.assign(new Error(`the event stream ${ref_.type}/${ref_.id} closed`), { code: 'STREAM_CLOSED' })
      closeSource()
      status.value = 'reconnecting'
      const delay = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** (failures - 1))
      timer = setTimeout(() => {
        timer = null
        if (!stopped && current === ref_) open(ref_, lastId.value ?? undefined)
      }, delay)
    }
  }

  function start(ref_) {
    closeSource()
    clearTimer()
    current = ref_
    failures = 0
    if (!ref_ || stopped || !inBrowser()) {
      status.value = 'idle'
      return
    }
    open(ref_, lastId.value ?? undefined)
  }

  function close() {
    stopped = true
    clearTimer()
    closeSource()
    status.value = 'closed'
  }

  /** Read the stream again from its start. */
  function reload() {
    events.value = []
    lastId.value = null
    gap.value = null
    if (typeof options.onReset === 'function') options.onReset(null)
    stopped = false
    start(current)
  }

  if (typeof stream === 'function' || (stream && typeof stream === 'object' && 'value' in stream)) {
    watch(
      () => streamRef(stream),
      (next, prev) => {
        if (next && prev && next.type === prev.type && next.id === prev.id) return
        if (prev !== undefined) {
          events.value = []
          lastId.value = options.after ?? null
          gap.value = null
          if (typeof options.onReset === 'function') options.onReset(null)
        }
        start(next)
      },
      { immediate: true },
    )
  } else {
    start(streamRef(stream))
  }
  disposeWithScope(close)

  return { events, status, error, lastId, gap, close, reload }
}

/**
 * A flow run's state, live: `{ state, events, status, error, lastId, gap, close, reload }`.
 * `state` is the run reduced by the same rules as the server's `bus.state()` (FlowState:
 * `status`, `steps`, `logs`, ...); `id` may be a ref or getter (a route parameter).
 */
export function useFlowRun(id, options = {}) {
  const state = shallowRef(initialFlowState())
  const stream = () => {
    const v = toValue(id)
    return v ? { type: 'flow', id: String(v) } : undefined
  }
  const live = useEventStream(stream, {
    ...options,
    onEvent(record) {
      state.value = applyFlowEvent(state.value, record)
      triggerRef(state)
      if (typeof options.onEvent === 'function') options.onEvent(record)
    },
    onReset(info) {
      state.value = initialFlowState()
      if (typeof options.onReset === 'function') options.onReset(info)
    },
  })
  return { state, ...live }
}

async function readJson(res, what) {
  const text = await res.text()
  let body
  try {
    body = text ? JSON.parse(text) : undefined
  } catch {
    body = undefined
  }
  if (!res.ok) {
    const message = (body && (body.message || body.statusMessage)) || `${what}: HTTP ${res.status}`
    throw Object.assign(new Error(message), { code: (body && body.code) || `HTTP_${res.status}`, status: res.status })
  }
  return body
}

/**
 * A flow's runs, newest first, with their status: `{ runs, nextOffset, status, error, refresh,
 * stop }`. Read from `GET <base>/_flows/:name/runs?state=1` now and every `intervalMs` (default
 * 2000; 0: only on `refresh()`), while the component is mounted. Options: `limit` (default 20),
 * `offset`, `status` (only runs with this status: the server reads its run index for them, up
 * to its cap per request; `nextOffset` is the `offset` that goes on, null at the end), `base`,
 * `intervalMs`. `flowName`, `limit`, `offset` and `status` may be refs or getters.
 * Between reads, a listed run whose own stream is open on the page (useFlowRun,
 * useEventStream) takes its `status` and `completedAt` from that stream's `flow.*` events at
 * once; useRuns opens no stream itself. (With `status`, a run that changed status leaves the
 * list at the next read.)
 */
export function useRuns(flowName, options = {}) {
  const runs = ref([])
  const nextOffset = ref(null)
  const status = ref('idle')
  const error = ref(null)
  const intervalMs = options.intervalMs ?? 2000
  let timer = null
  let stopped = false
  let seq = 0

  const follow = (stream, record) => {
    // the reducer decides which flow.* kinds change a run's status (flow.cancelled too)
    if (stream.type !== 'flow' || !record || typeof record.kind !== 'string' || !record.kind.startsWith('flow.')) return
    const list = runs.value
    const i = list.findIndex((r) => r.id === stream.id)
    if (i < 0) return
    // the server's reducer, on the fields a listed run has
    const folded = applyFlowEvent({ status: list[i].status ?? 'running', steps: {}, logs: [] }, record)
    if (folded.status === list[i].status && folded.completedAt === list[i].completedAt) return
    const run = { ...list[i], status: folded.status }
    if (folded.completedAt) run.completedAt = folded.completedAt
    runs.value = [...list.slice(0, i), run, ...list.slice(i + 1)]
  }

  async function refresh() {
    const name = toValue(flowName)
    if (!name || !inBrowser()) return runs.value
    const mine = ++seq
    const limit = toValue(options.limit) ?? 20
    const offset = toValue(options.offset) ?? 0
    const only = toValue(options.status)
    if (status.value === 'idle') status.value = 'loading'
    try {
      const filter = only ? `&status=${encodeURIComponent(only)}` : ''
      const url = `${trimBase(options.base)}/_flows/${encodeURIComponent(name)}/runs?state=1&limit=${limit}&offset=${offset}${filter}`
      const body = await readJson(await fetch(url, { headers: { accept: 'application/json' } }), `the runs of ${name}`)
      if (mine === seq) {
        runs.value = body.runs
        nextOffset.value = body.nextOffset ?? null
        status.value = 'ready'
        error.value = null
      }
    } catch (err) {
      if (mine === seq) {
        error.value = err
        status.value = 'error'
      }
    }
    return runs.value
  }

  const schedule = () => {
    if (stopped || !(intervalMs > 0)) return
    timer = setTimeout(async () => {
      timer = null
      await refresh()
      schedule()
    }, intervalMs)
  }

  function stop() {
    stopped = true
    pageListeners.delete(follow)
    if (timer !== null) clearTimeout(timer)
    timer = null
  }

  if (inBrowser()) {
    pageListeners.add(follow)
    watch(
      () => [toValue(flowName), toValue(options.limit), toValue(options.offset), toValue(options.status)],
      () => {
        refresh()
      },
      { immediate: true },
    )
    schedule()
  }
  disposeWithScope(stop)
  return { runs, nextOffset, status, error, refresh, stop }
}

/**
 * Fire a trigger: `POST <base>/_triggers/:id` with `payload` as JSON. Resolves to
 * `{ id, status: 'fired' }`; rejects with an Error whose `code` is the server's
 * (`TRIGGER_NOT_FOUND`, `TRIGGER_RESOLVED`, `FORBIDDEN`, ...) and `status` the HTTP status.
 */
export async function fireTrigger(id, payload, options = {}) {
  const res = await fetch(`${trimBase(options.base)}/_triggers/${encodeURIComponent(id)}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify(payload === undefined ? null : payload),
  })
  return readJson(res, `firing trigger ${id}`)
}
