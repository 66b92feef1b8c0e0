// The JSON h3 handlers: a stream's reduced state, a flow's runs, firing a trigger. With
// `format: 'nuxt-queue'`, the state and list routes answer in the seed-era module's shapes.

import { defineEventHandler, getMethod, getQuery, setResponseHeader } from 'h3'
import { HttpError, sendError } from './errors.js'
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
 * `GET /api/_flows/:name/runs?limit=&offset=`: `{ name, runs: [{ id, startedAt }] }`, newest
 * first; `?state=1` (or `withState: true`) adds each run's `status`.
 * `format: 'nuxt-queue'`: the module's `GET /api/_events/:type/list?name=&limit=` →
 * `{ type, name, count, items: [{ id, timestamp, createdAt }] }`.
 */
export function runsHandler(options = {}) {
  const format = formatOf(options, 'runsHandler')
  if (format.name === 'nuxt-queue') return moduleListHandler(options)
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
