'use strict'

// The scheduler over the native binding: runs step handlers in this process and reports their
// outcome to the store, which keeps the timers, awaits, triggers and retries.

const { withCode, native, argError } = require('./errors.js')
const { checkOptions, toJson } = require('./options.js')
const { EventBus } = require('./bus.js')

function errorInfo(err) {
  const info = { message: String(err && err.message !== undefined ? err.message : err) }
  if (err && typeof err === 'object') {
    if (typeof err.name === 'string') info.name = err.name
    if (typeof err.code === 'string' || typeof err.code === 'number') info.code = err.code
    if (typeof err.retriable === 'boolean') info.retriable = err.retriable
    if (typeof err.retryAfter === 'number' && Number.isFinite(err.retryAfter)) info.retryAfter = err.retryAfter
    else if (err.retryAfter instanceof Date && Number.isFinite(err.retryAfter.getTime())) info.retryAt = err.retryAfter.getTime()
  }
  return info
}

/**
 * Steps with retries and durable awaits. Handlers run here; timers, awaits and triggers live
 * in the store, so another instance that defines the same steps can resume them.
 */
class Scheduler {
  constructor(bus, options) {
    if (!(bus instanceof EventBus)) throw argError('new Scheduler(bus, options) needs an EventBus')
    const o = checkOptions(options, 'options', { instanceId: 'string', leaseMs: 'int', concurrency: 'int', dispatch: 'function' })
    this._bus = bus
    this._defs = new Map()
    this._dispatch = o.dispatch
    this._native = null
    this._closed = false
    const nativeOptions = { instanceId: o.instanceId, leaseMs: o.leaseMs, concurrency: o.concurrency }
    this._ready = native(bus._native.scheduler(nativeOptions, () => this._wake())).then(
      (n) => {
        this._native = n
        for (const [step, def] of this._defs) this._defineNative(step, def)
        this._wake()
        return n
      },
    )
    // the failure is reported by the first call that needs the scheduler
    this._ready.catch(() => {})
  }

  _defineNative(step, def) {
    try {
      this._native.define(step, def.policy)
      def.error = null
    } catch (err) {
      def.error = withCode(err)
    }
  }

  /** This instance's id (once started). */
  get instanceId() {
    return this._native ? this._native.instanceId : undefined
  }

  /** Resolves once the instance is registered in the store. */
  ready() {
    return this._ready.then(() => this)
  }

  /** Define a step: `handler(input, ctx)`, with an optional retry policy. */
  define(step, handler, options) {
    if (typeof step !== 'string') throw argError('step must be a string')
    if (typeof handler !== 'function') throw argError('handler must be a function')
    const o = checkOptions(options, 'options', { retry: 'object' })
    const def = { handler, policy: toJson(o.retry ?? null, 'retry'), error: null }
    this._defs.set(step, def)
    if (this._native) {
      this._defineNative(step, def)
      if (def.error) throw def.error
    }
    return this
  }

  /** Run one step for a flow: retries and awaits included. Resolves to the handler's result. */
  async run(step, options) {
    const o = checkOptions(options, 'options', { flow: 'string', input: 'any', jobId: 'string' })
    if (typeof o.flow !== 'string') throw argError('run(step, { flow }) needs the flow run id')
    const n = await this._ready
    const def = this._defs.get(step)
    if (def && def.error) throw def.error
    let result
    try {
      result = await native(n.run(step, o.flow, toJson(o.input, 'input'), o.jobId))
    } catch (err) {
      if (err.code === 'STEP_FAILED') {
        // what the handler threw, as plain data
        err.step = step
        err.cause = err.detail
      }
      throw err
    }
    return JSON.parse(result)
  }

  /** Fire a trigger (what the webhook endpoint calls). Rejects with `TRIGGER_NOT_FOUND` or `TRIGGER_RESOLVED`. */
  async fire(triggerId, payload) {
    if (typeof triggerId !== 'string') throw argError('triggerId must be a string')
    const n = await this._ready
    await native(n.fire(triggerId, toJson(payload, 'payload')))
  }

  /** Cancel a pending trigger; the waiting step's `wait()` rejects with `TRIGGER_CANCELLED`. */
  async cancel(triggerId, reason) {
    if (typeof triggerId !== 'string') throw argError('triggerId must be a string')
    const n = await this._ready
    await native(n.cancel(triggerId, reason === undefined ? 'cancelled' : String(reason)))
  }

  /** Stop this instance (its jobs can be resumed by another instance once its lease ends). */
  async close() {
    this._closed = true
    const n = await this._ready.catch(() => null)
    if (n) await native(n.close())
  }

  _wake() {
    if (!this._native || this._closed) return
    for (;;) {
      const items = JSON.parse(this._native.takeWork(1000))
      if (items.length === 0) return
      for (const work of items) {
        if (this._dispatch) {
          try {
            this._dispatch(work)
            continue
          } catch (err) {
            console.error('[lean-events] dispatch failed; running the work here:', err)
          }
        }
        this.execute(work)
      }
    }
  }

  /** Run one piece of work (what `dispatch` received), e.g. from a queue worker. */
  async execute(work) {
    const n = await this._ready
    const { jobId, step, flow, attempt } = work
    const def = this._defs.get(step)
    // After close() the outcome of an interrupted handler is not recorded (the job stays
    // resumable by another instance), so there is nothing to report.
    const report = (p) =>
      native(p).catch((err) => {
        if (!this._closed) console.error('[lean-events] could not record a step outcome:', err)
      })
    if (!def) {
      await report(n.fail(jobId, attempt, JSON.stringify({ message: `step '${step}' is not defined on this instance`, retriable: false })))
      return
    }
    let seq = 0
    const bus = this._bus
    const ctx = {
      flow,
      step,
      attempt,
      jobId,
      replay: !!work.replay,
      log: (level, msg, data) =>
        bus.emit({ kind: 'log', subject: flow, step, data: data === undefined ? { level, msg } : { level, msg, data } }),
      emit: (kind, data) => bus.emit(data === undefined ? { kind, subject: flow, step } : { kind, subject: flow, step, data }),
      await: {
        time: (when) => {
          // a delay counts from the first call of this await: a replay keeps its time
          const relative = typeof when === 'number'
          const ms = when instanceof Date ? when.getTime() : relative ? when : NaN
          if (!Number.isFinite(ms)) return Promise.reject(argError('await.time takes a number of ms or a Date'))
          return native(n.awaitTime(jobId, attempt, seq++, Math.max(0, ms), relative)).then(() => undefined)
        },
        event: (spec) => {
          const o = checkOptions(spec, 'await.event options', { kind: 'string', match: 'object', timeoutMs: 'int' })
          if (typeof o.kind !== 'string') return Promise.reject(argError('await.event needs { kind }'))
          return native(n.awaitEvent(jobId, attempt, seq++, o.kind, toJson(o.match ?? {}, 'match'), o.timeoutMs)).then(JSON.parse)
        },
        trigger: async (spec) => {
          const o = checkOptions(spec, 'await.trigger options', { type: 'string', payload: 'any', timeoutMs: 'int' })
          const s = seq++
          const payload = o.payload === undefined ? undefined : toJson(o.payload, 'payload')
          const id = await native(n.registerTrigger(jobId, attempt, s, o.type ?? 'webhook', payload, o.timeoutMs))
          return { id, wait: () => native(n.waitTrigger(id)).then(JSON.parse) }
        },
      },
    }
    let result
    try {
      result = await def.handler(work.input, ctx)
    } catch (err) {
      await report(n.fail(jobId, attempt, JSON.stringify(errorInfo(err))))
      return
    }
    let json
    try {
      json = toJson(result, 'the step result')
    } catch (err) {
      await report(n.fail(jobId, attempt, JSON.stringify({ message: err.message, retriable: false })))
      return
    }
    await report(n.complete(jobId, attempt, json))
  }
}

module.exports = { Scheduler }
