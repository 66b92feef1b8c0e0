// lean-events/nitro: wiring for Nitro 2 / h3 1.x apps.
//
// - useLeanEvents(): one EventBus + Scheduler per process (REDIS_URL / NUXT_QUEUE_REDIS_URL, or
//   the embedded store), closed by leanEventsPlugin on Nitro's `close` hook.
// - createStreamAdapter / createBusAdapter: the adapter shapes the Nitro module already calls
//   (the seed-era nuxt-queue 0.1.x's included), backed by lean-events when LEAN_EVENTS=1, else
//   the module's own (legacy) factory.
// - eventStreamHandler (SSE), stateHandler, runsHandler, triggerHandler, cancelTriggerHandler: h3 handlers, in this
//   package's format or (`format: 'nuxt-queue'`) in the seed-era module's.
// - metricsHandler: the bus's metrics for Prometheus (metrics.js).
//
// One file per job: shared.js (the per-process instance), adapters.js, sse.js (the event
// stream), handlers.js (state, runs, trigger), formats.js (the wire formats), nuxt-queue.js (the
// seed-era module's shapes), request.js (reading a request), errors.js (errors and their HTTP
// form).

export { configureLeanEvents, useLeanEvents, closeLeanEvents, leanEventsPlugin } from './shared.js'
export { parseStreamName, toEventInput, createStreamAdapter, createBusAdapter } from './adapters.js'
export { eventStreamHandler } from './sse.js'
export { stateHandler, runsHandler, triggerHandler, cancelTriggerHandler, FLOW_STATUSES, RUNS_MAX_SCAN } from './handlers.js'
export { metricsHandler } from './metrics.js'
export { HttpError, STATUS_BY_CODE } from './errors.js'
export { toModuleRecord } from './nuxt-queue.js'
