// The JSON h3 handlers: a stream's reduced state, a flow's runs, firing a trigger.

import { defineEventHandler, getMethod, getQuery, setResponseHeader } from 'h3'
import { HttpError, sendError } from './errors.js'
import { checkAuthorized, checkId, checkType, intQuery, param, parsePayload, readBodyLimited } from './request.js'
import { resolveBus, resolveScheduler } from './shared.js'

const DEFAULT_MAX_BODY_BYTES = 1024 * 1024

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
