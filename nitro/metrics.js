// `GET /metrics` for Prometheus: the bus's counters and gauges (`bus.metrics()`) in the text
// exposition format. prom-client writes the format (escaping, HELP/TYPE lines, content type)
// into a Registry of this handler's own, so an app's global registry is left alone and can be
// served beside it.

import promClient from 'prom-client'
import { defineEventHandler, setResponseHeader } from 'h3'
import { sendError } from './errors.js'
import { checkAuthorized } from './request.js'
import { resolveBus } from './shared.js'

const { Registry, Counter, Gauge } = promClient

/** The quantiles of timer lateness, as `bus.metrics()` names them. */
const LATENESS_QUANTILES = [
  ['0.5', 'latenessP50Ms'],
  ['0.99', 'latenessP99Ms'],
]

/** Metrics of one handler, in its own registry; `timers` are registered while a scheduler runs. */
function createCollectors() {
  const registry = new Registry()
  const counter = (name, help, labelNames = []) => new Counter({ name, help, labelNames, registers: [registry] })
  const gauge = (name, help, labelNames = [], registers = [registry]) => new Gauge({ name, help, labelNames, registers })
  const bus = {
    emits: counter('lean_events_emits_total', 'Events stored by emits of this process'),
    emitErrors: counter('lean_events_emit_errors_total', 'Emit calls that failed, by error code', ['code']),
    deliveries: counter('lean_events_deliveries_total', 'Events queued to subscribers of this process (catch-up and live)'),
    liveSubscriptions: gauge('lean_events_live_subscriptions', 'Open subscriptions'),
    pendingEmits: gauge('lean_events_pending_emits', 'Emits handed to the store and not yet settled'),
    overflows: counter('lean_events_subscriber_overflows_total', 'Subscribers cut off for falling maxQueue behind'),
    warnings: counter('lean_events_warnings_total', 'Warnings raised by background work, by code', ['code']),
  }
  const timers = {
    pending: gauge('lean_events_timers_pending', 'Durable timers not yet carried out, of every instance', [], []),
    fired: new Counter({ name: 'lean_events_timers_fired_total', help: 'Timers this process carried out', registers: [] }),
    lateness: gauge(
      'lean_events_timer_lateness_seconds',
      'Lateness of the recent timers this process fired (fire time minus due time), by quantile',
      ['quantile'],
      [],
    ),
  }
  return { registry, bus, timers, timersRegistered: false }
}

/** Set a counter to a total taken from the bus (prom-client counters only go up by `inc`). */
function setTotal(counter, value, labels) {
  if (labels) counter.inc(labels, value)
  else counter.inc(value)
}

/** Copy one `bus.metrics()` snapshot into the collectors. */
function update(c, m) {
  const { bus, timers } = c
  for (const metric of [bus.emits, bus.emitErrors, bus.deliveries, bus.overflows, bus.warnings]) metric.reset()
  setTotal(bus.emits, m.emits)
  for (const [code, n] of Object.entries(m.emitErrors)) setTotal(bus.emitErrors, n, { code })
  setTotal(bus.deliveries, m.deliveries)
  bus.liveSubscriptions.set(m.liveSubscriptions)
  bus.pendingEmits.set(m.pendingEmits)
  setTotal(bus.overflows, m.subscriberOverflows)
  for (const [code, n] of Object.entries(m.warnings)) setTotal(bus.warnings, n, { code })

  const all = [timers.pending, timers.fired, timers.lateness]
  if (!m.timers) {
    if (c.timersRegistered) for (const metric of all) c.registry.removeSingleMetric(metric.name)
    c.timersRegistered = false
    return
  }
  if (!c.timersRegistered) for (const metric of all) c.registry.registerMetric(metric)
  c.timersRegistered = true
  // unknown (the store could not be asked): NaN, which Prometheus reads as "no value"
  timers.pending.set(m.timers.pending ?? Number.NaN)
  timers.fired.reset()
  setTotal(timers.fired, m.timers.fired)
  timers.lateness.reset()
  for (const [quantile, field] of LATENESS_QUANTILES) {
    const ms = m.timers[field]
    if (ms !== null && ms !== undefined) timers.lateness.set({ quantile }, ms / 1000)
  }
}

/**
 * `GET /metrics`: the bus's metrics (`bus.metrics()`) in Prometheus' text exposition format,
 * names prefixed `lean_events_`. Options: `bus` (default: the shared one), `authorize` (asked
 * with `{ type: 'metrics', id: 'bus' }`; `false` or a throw → 403).
 */
export function metricsHandler(options = {}) {
  const collectors = createCollectors()
  return defineEventHandler(async (event) => {
    try {
      await checkAuthorized(options.authorize, event, { type: 'metrics', id: 'bus' })
      const bus = await resolveBus(options)
      update(collectors, await bus.metrics())
      const body = await collectors.registry.metrics()
      setResponseHeader(event, 'content-type', collectors.registry.contentType)
      setResponseHeader(event, 'cache-control', 'no-store')
      return body
    } catch (err) {
      return sendError(event, err)
    }
  })
}
