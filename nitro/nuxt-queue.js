// The shapes of the seed-era Nitro module (nuxt-queue 0.1.x): its record fields beside this
// envelope, its run-index keys, and the bodies of its state and list routes.
//
// That module reads records as `{ id, ts, type, runId, flowName, data, stepName?, stepId?,
// attempt? }`. Stored, they are this envelope: `type` is the kind, `runId` the flow (or the
// subject), `stepName` the step; `flowName`, `stepId` and `attempt` live in `meta`.

import { argError } from './errors.js'

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v)

/** Kinds that start a run: the module's `flow.start`, and this envelope's `flow.started`. */
const RUN_STARTS = new Set(['flow.start', 'flow.started'])

/**
 * A record with the module's fields beside the envelope's: `type`, `runId`, `flowName` (`''`
 * when unknown, as the module's Redis adapter reads it), and `stepName`, `stepId`, `attempt`
 * when the event has them.
 */
export function toModuleRecord(rec) {
  const meta = isObject(rec.meta) ? rec.meta : {}
  const out = { ...rec, type: rec.kind, runId: rec.flow ?? rec.subject }
  let flowName = typeof meta.flowName === 'string' ? meta.flowName : undefined
  if (flowName === undefined && RUN_STARTS.has(rec.kind) && isObject(rec.data) && typeof rec.data.name === 'string') {
    flowName = rec.data.name
  }
  out.flowName = flowName ?? ''
  if (rec.step !== undefined) out.stepName = rec.step
  if (meta.stepId !== undefined && meta.stepId !== null) out.stepId = meta.stepId
  if (meta.attempt !== undefined && meta.attempt !== null) {
    // the module's Redis adapter stores the attempt as text and reads it back as an integer
    out.attempt = typeof meta.attempt === 'string' ? Number.parseInt(meta.attempt, 10) : meta.attempt
  }
  return out
}

/** Does the event use the module's field names (`type`, not `kind`)? */
export function isModuleEvent(e) {
  return isObject(e) && e.kind === undefined && e.type !== undefined
}

/**
 * The flow name of a run-index key as the module names it, `<prefix>:flows:<flowName>`. Those
 * are the only sorted sets lean-events keeps for it; any other key is `INVALID_ARGUMENT`.
 */
export function runIndexName(key, prefix) {
  const head = `${prefix}:flows:`
  if (typeof key !== 'string' || !key.startsWith(head) || key.length === head.length) {
    throw argError(`lean-events keeps run indexes only, named '${head}<flowName>' (got ${JSON.stringify(key)})`)
  }
  return key.slice(head.length)
}

/** `GET /api/_events/:type/:id` in the module's shape. */
export function stateBody(type, id, records) {
  return { type, id, eventCount: records.length, events: records.map(toModuleRecord) }
}

/** `GET /api/_events/:type/list` in the module's shape: runs newest first. */
export function listBody(type, name, runs) {
  const items = runs.map((r) => {
    const timestamp = Date.parse(r.startedAt)
    return { id: r.id, timestamp, createdAt: r.startedAt }
  })
  return { type, name, count: items.length, items }
}
