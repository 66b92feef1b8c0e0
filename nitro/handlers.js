// The JSON h3 handlers: a stream's reduced state, a flow's runs, firing a trigger. With
// `format: 'nuxt-queue'`, the state and list routes answer in the seed-era module's shapes.

import { defineEventHandler, getMethod, getQuery, setResponseHeader } from 'h3'
import { HttpError, argError, sendError } from './errors.js'
import { formatOf } from './formats.js'
import { listBody, stateBody } from './nuxt-queue.js'
import { checkAuthorized, checkCursor, checkId, checkType, intQuery, lastQueryValue, param, parsePayload, readBodyLimited } from './request.js'
import { resolveBus, resolveScheduler } from './shared.js'

const DEFAULT_MAX_BODY_BYTES = 1024 * 1024

/** The seed-era module's state route reads this many events when the request names no limit. */
const MODULE_STATE_LIMIT = 1000
/** Its list route: 50 runs unless asked, at most 100. */
const MODULE_LIST_LIMIT = 50
const MODULE_LIST_MAX = 100

/** A flow run's statuses, as the flow reducer sets them: the values `?status=` accepts. */
export const FLOW_STATUSES = ['running', 'completed', 'failed', 'cancelled']
/** With `?status=`, at most this many runs of the index are read per request (`maxScan`). */
export const RUNS_MAX_SCAN = 1000
/** ... in pages of this many, each page's states read together. */
const SCAN_PAGE = 100

/**
 * `GET /api/_events/:type/:id`: `{ type, id, state }`, the reduced state (404 when empty).
 * `format: 'nuxt-queue'`: `{ type, id, eventCount, events }`, the records oldest first (an
 * empty stream too), `?fromId=` (exclusive) and `?limit=` (default 1000) honoured.
 */
export function stateHandler(options = {}) {
  const format = formatOf(options, 'stateHandler')
  return defineEventHandler(async (event) => {
    try {
      const type = checkType(options.type ?? param(event, 'type'))
      const id = checkId(param(event, 'id'))
      await checkAuthorized(options.authorize, event, { type, id })
      const bus = await resolveBus(options)
      if (format.name === 'nuxt-queue') {
        const limit = intQuery(getQuery(event).limit, 'limit', 1, 10_000) ?? MODULE_STATE_LIMIT
        const fromId = lastQueryValue(event, 'fromId')
        const after = fromId === undefined || fromId === '' ? undefined : checkCursor(fromId, '?fromId=')
        const records = await bus.read({ type, id }, after === undefined ? { limit } : { after, limit })
        setResponseHeader(event, 'cache-control', 'no-store')
        return stateBody(type, id, records)
      }
      const [state, first] = await Promise.all([bus.state({ type, id }), bus.read({ type, id }, { limit: 1 })])
      if (first.length === 0) throw new HttpError(404, 'NOT_FOUND', `no events in ${type} ${id}`)
      setResponseHeader(event, 'cache-control', 'no-store')
      return { type, id, state }
    } catch (err) {
      return sendError(event, err)
    }
  })
}

/**
 * `GET /api/_flows/:name/runs?limit=&offset=`: `{ name, runs: [{ id, startedAt }], nextOffset }`,
 * newest first; `?state=1` (or `withState: true`) adds each run's `status`. `nextOffset`: the
 * `offset` of the next page, null when there is none.
 *
 * `?status=running|completed|failed|cancelled`: the newest runs with that status, from `offset` on. The
 * index is read newest first, a page at a time, until `limit` runs match or `maxScan` runs
 * (default 1000) were read; `scanned` says how many were, `nextOffset` where to go on (past the
 * last run read; null once the index is read to its end). A page may hold fewer than `limit`
 * runs, even none, while `nextOffset` is not null.
 * `format: 'nuxt-queue'`: the module's `GET /api/_events/:type/list?name=&limit=` →
 * `{ type, name, count, items: [{ id, timestamp, createdAt }] }`.
 */
export function runsHandler(options = {}) {
  const format = formatOf(options, 'runsHandler')
  if (format.name === 'nuxt-queue') return moduleListHandler(options)
  const maxScan = options.maxScan ?? RUNS_MAX_SCAN
  if (!Number.isInteger(maxScan) || maxScan < 1) throw argError(`runsHandler: maxScan is a whole number 1 or more (got ${String(maxScan)})`)
  return defineEventHandler(async (event) => {
    try {
      const name = checkId(options.name ?? param(event, 'name'), 'flow name')
      await checkAuthorized(options.authorize, event, { type: 'flows', id: name })
      const q = getQuery(event)
      const limit = intQuery(q.limit, 'limit', 1, 1000) ?? options.limit ?? 50
      const offset = intQuery(q.offset, 'offset', 0, 1e9) ?? 0
      const status = statusQuery(event)
      const bus = await resolveBus(options)
      let body
      if (status !== undefined) {
        body = { name, status, ...(await scanRuns(bus, name, status, { limit, offset, maxScan })) }
      } else {
        // one more than asked: is there a next page?
        const runs = await bus.listRuns(name, { limit: limit + 1, offset })
        const more = runs.length > limit
        if (more) runs.pop()
        if (options.withState || q.state === '1' || q.state === 'true') await addStatus(bus, runs)
        body = { name, runs, nextOffset: more ? offset + limit : null }
      }
      setResponseHeader(event, 'cache-control', 'no-store')
      return body
    } catch (err) {
      return sendError(event, err)
    }
  })
}

function statusQuery(event) {
  const value = lastQueryValue(event, 'status')
  if (value === undefined || value === '') return undefined
  if (!FLOW_STATUSES.includes(value)) {
    const shown = JSON.stringify(String(value).slice(0, 40))
    throw new HttpError(400, 'INVALID_ARGUMENT', `status must be one of ${FLOW_STATUSES.join(', ')} (got ${shown})`)
  }
  return value
}

/** Each run's `status` (and `completedAt`), from its reduced state. */
async function addStatus(bus, runs) {
  await Promise.all(
    runs.map(async (run) => {
      const s = await bus.state({ type: 'flow', id: run.id })
      run.status = s.status
      if (s.completedAt) run.completedAt = s.completedAt
    }),
  )
  return runs
}

/** The newest runs from `offset` on whose status is `status`, reading at most `maxScan` of them. */
async function scanRuns(bus, name, status, { limit, offset, maxScan }) {
  const runs = []
  let next = offset
  let end = false
  while (runs.length < limit && next - offset < maxScan && !end) {
    const size = Math.min(SCAN_PAGE, maxScan - (next - offset))
    const page = await addStatus(bus, await bus.listRuns(name, { limit: size, offset: next }))
    let read = 0
    for (const run of page) {
      read++
      if (run.status === status) runs.push(run)
      if (runs.length === limit) break
    }
    next += read
    end = read === page.length && page.length < size
  }
  return { runs, scanned: next - offset, nextOffset: end ? null : next }
}

/**
 * The module's list route. Runs are indexed per flow name, so `flow` with `?name=` lists them;
 * any other type, or no name, is an empty list (the module's index of it would be empty too).
 * `limit` is read as the module reads it: not a positive number → 50, at most 100.
 */
function moduleListHandler(options) {
  return defineEventHandler(async (event) => {
    try {
      const type = checkType(options.type ?? param(event, 'type'))
      const q = getQuery(event)
      const rawName = options.name ?? lastQueryValue(event, 'name')
      const name = rawName === undefined || rawName === '' ? undefined : checkId(String(rawName), 'name')
      await checkAuthorized(options.authorize, event, { type: 'flows', id: name ?? '' })
      const asked = Number.parseInt(Array.isArray(q.limit) ? q.limit[q.limit.length - 1] : q.limit, 10)
      const limit = Math.min(asked > 0 ? asked : MODULE_LIST_LIMIT, MODULE_LIST_MAX)
      const runs = type === 'flow' && name !== undefined ? await (await resolveBus(options)).listRuns(name, { limit }) : []
      setResponseHeader(event, 'cache-control', 'no-store')
      return listBody(type, name, runs)
    } catch (err) {
      return sendError(event, err)
    }
  })
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

const CANCEL_BODY_BYTES = 16 * 1024

/**
 * `POST /api/_triggers/:id/cancel`, optional JSON body `{ reason }`: cancels a pending trigger
 * (its waiting step's `wait()` rejects with `TRIGGER_CANCELLED`). 200 `{ id, status:
 * 'cancelled' }`; 404 unknown or expired; 409 already resolved; 400 bad id or body.
 */
export function cancelTriggerHandler(options = {}) {
  return defineEventHandler(async (event) => {
    try {
      if (getMethod(event) !== 'POST') {
        const e = new HttpError(405, 'METHOD_NOT_ALLOWED', 'use POST to cancel a trigger')
        e.allow = 'POST'
        throw e
      }
      const id = checkId(param(event, 'id'), 'trigger id')
      await checkAuthorized(options.authorize, event, { type: 'trigger', id })
      const body = parsePayload(event, await readBodyLimited(event, CANCEL_BODY_BYTES))
      const reason = body && typeof body === 'object' && typeof body.reason === 'string' ? body.reason : 'cancelled over HTTP'
      const scheduler = await resolveScheduler(options)
      await scheduler.cancel(id, reason)
      setResponseHeader(event, 'cache-control', 'no-store')
      return { id, status: 'cancelled' }
    } catch (err) {
      return sendError(event, err)
    }
  })
}
