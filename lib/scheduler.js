'use strict'

// The scheduler over the native binding: runs step handlers in this process and reports their
// outcome to the store, which keeps the timers, awaits, triggers and retries.

const { LeanEventsError, withCode, native, argError } = require('./errors.js')
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

function isFlowEnd(e) {
  return e.kind === 'flow.completed' || e.kind === 'flow.failed' || e.kind === 'flow.cancelled'
}

/** A `timeoutMs` of an await: none, or a whole number of ms, 0 or more. */
function checkTimeout(what, timeoutMs) {
  if (timeoutMs !== undefined && timeoutMs < 0) {
    throw argError(`${what}.timeoutMs must be 0 or more ms (got ${timeoutMs}); leave it out to wait without a timeout`)
  }
}

/**
 * `ctx.await`: durable awaits numbered by `next()` (call order, replayed after a take-over).
 * Bad arguments reject with `INVALID_ARGUMENT`; the calls that took a number before (a
 * negative timeout did) still take it, so later calls keep their numbers on a replay. A
 * negative delay or a Date in the past is a time that has come: it resolves at once.
 */
function awaits(n, jobId, attempt, next) {
  return {
    time: async (when) => {
      // a delay counts from the first call of this await: a replay keeps its time
      const relative = typeof when === 'number'
      const ms = when instanceof Date ? when.getTime() : relative ? when : NaN
      if (!Number.isFinite(ms)) throw argError('await.time takes a number of ms or a Date')
      // a negative delay is a time that has come, as a Date in the past is: it waits 0 ms
      // (a delay computed as `deadline - Date.now()` must not fail a replay after the deadline)
      await native(n.awaitTime(jobId, attempt, next(), Math.max(0, ms), relative))
    },
    event: async (spec) => {
      const o = checkOptions(spec, 'await.event options', { kind: 'string', match: 'object', timeoutMs: 'int' })
      if (typeof o.kind !== 'string') throw argError('await.event needs { kind }')
      const s = next()
      checkTimeout('await.event', o.timeoutMs)
      return JSON.parse(await native(n.awaitEvent(jobId, attempt, s, o.kind, toJson(o.match ?? {}, 'match'), o.timeoutMs)))
    },
    trigger: async (spec) => {
      const o = checkOptions(spec, 'await.trigger options', { type: 'string', payload: 'any', timeoutMs: 'int' })
      const s = next()
      checkTimeout('await.trigger', o.timeoutMs)
      const payload = o.payload === undefined ? undefined : toJson(o.payload, 'payload')
      const id = await native(n.registerTrigger(jobId, attempt, s, o.type ?? 'webhook', payload, o.timeoutMs))
      return { id, wait: () => native(n.waitTrigger(id)).then(JSON.parse) }
    },
  }
}

/**
 * The error a flow step that failed for good throws (also on a replay): a LeanEventsError
 * with the step's `message` and `code` (`STEP_FAILED` when it threw none), `step`, and what it
 * threw in `cause` (as `run()`'s `STEP_FAILED` has it).
 */
function stepError(step, error) {
  return new LeanEventsError(error?.code ?? 'STEP_FAILED', error?.message ?? `step '${step}' failed`, {
    step,
    retriable: false,
    cause: error ?? { message: `step '${step}' failed` },
  })
}

/** Step errors made by `stepError`: a flow that throws one fails with what the step threw. */
const stepErrors = new WeakSet()

/** `BUS_CLOSED`, as a pending `run()` rejects when the scheduler or the bus closes. */
function closedError(what) {
  return new LeanEventsError('BUS_CLOSED', `the ${what} is closed`)
}

/**
 * Steps with retries and durable awaits. Handlers run here; timers, awaits and triggers live
 * in the store, so another instance that defines the same steps can resume them.
 */
class Scheduler {
  constructor(bus, options) {
    if (!(bus instanceof EventBus)) throw argError('new Scheduler(bus, options) needs an EventBus')
    const o = checkOptions(options, 'options', { instanceId: 'string', leaseMs: 'int', concurrency: 'int', dispatch: 'function' })
    // what the native side would refuse later (in ready() and every call), refused now
    if (o.concurrency !== undefined && o.concurrency < 1) {
      throw argError(`options.concurrency must be an integer ≥ 1 (got ${o.concurrency})`)
    }
    if (o.leaseMs !== undefined && o.leaseMs < 100) {
      throw argError(`options.leaseMs must be at least 100 ms (got ${o.leaseMs})`)
    }
    this._bus = bus
    this._defs = new Map()
    this._dispatch = o.dispatch
    this._native = null
    this._closed = false
    // subscriptions of pending result() calls, ended by close()
    this._waits = new Set()
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
      if (def.flow) this._native.defineFlow(step)
      else this._native.define(step, def.policy)
      def.error = null
    } catch (err) {
      def.error = withCode(err)
    }
  }

  /**
   * Steps and flows share one namespace: defining a name again as the same kind replaces its
   * handler (and a step's policy); as the other kind it is refused.
   */
  _checkKind(name, flow) {
    const prev = this._defs.get(name)
    if (prev && !prev.error && !!prev.flow !== flow) {
      throw argError(
        `'${name}' is already defined as ${prev.flow ? 'a flow' : 'a step'} on this scheduler; ` +
          `it cannot be ${flow ? 'a flow' : 'a step'} too (steps and flows share one namespace: pick another name for ${flow ? 'defineFlow' : 'define'}())`,
      )
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
    this._checkKind(step, false)
    const def = { handler, policy: toJson(o.retry ?? null, 'retry'), error: null }
    this._defs.set(step, def)
    if (this._native) {
      this._defineNative(step, def)
      if (def.error) throw def.error
    }
    return this
  }

  /**
   * Define a durable flow: `fn(input, ctx)` calls `ctx.step(name, fn, { retry })`,
   * `ctx.parallel([...])` and `ctx.await.*`. After a crash, deploy or take-over the function
   * runs again on a live instance and each finished step or await returns its recorded result.
   */
  defineFlow(name, fn, options) {
    if (typeof name !== 'string') throw argError('name must be a string')
    if (typeof fn !== 'function') throw argError('the flow must be a function')
    checkOptions(options, 'options', {})
    this._checkKind(name, true)
    const def = { handler: fn, flow: true, policy: null, error: null }
    this._defs.set(name, def)
    if (this._native) {
      this._defineNative(name, def)
      if (def.error) throw def.error
    }
    return this
  }

  /** Start a run of a flow; resolves to its id once `flow.started` is stored. */
  async startFlow(name, options) {
    if (typeof name !== 'string') throw argError('name must be a string')
    const o = checkOptions(options, 'options', { id: 'string', input: 'any' })
    const n = await this._ready
    const def = this._defs.get(name)
    if (def && def.error) throw def.error
    if (def && !def.flow) throw argError(`'${name}' is a step, not a flow: use run()`)
    return native(n.startFlow(name, toJson(o.input, 'input'), o.id))
  }

  /**
   * Wait for a flow run to end (on any instance): resolves to its result; rejects with
   * `FLOW_FAILED` (`err.error` is what the flow threw), `FLOW_CANCELLED` (`err.reason`) or
   * `FLOW_NOT_FOUND`. Like a pending `run()`, it rejects with `BUS_CLOSED` when this scheduler
   * or its bus closes while it waits, and at once when called after that.
   */
  async result(runId) {
    if (typeof runId !== 'string') throw argError('runId must be a string')
    if (this._closed) throw closedError('scheduler')
    const stream = { type: 'flow', id: runId }
    const recent = await this._bus.read(stream, { reverse: true, limit: 100 })
    let end = recent.find(isFlowEnd)
    if (!end) {
      if (recent.length === 0) throw new LeanEventsError('FLOW_NOT_FOUND', `no flow run ${runId}`)
      end = await this._waitForEnd(stream, recent[0].id)
    }
    if (end.kind === 'flow.completed') return end.data?.result
    const error = end.data?.error
    if (end.kind === 'flow.cancelled') {
      const reason = end.data?.reason
      throw new LeanEventsError('FLOW_CANCELLED', `flow run ${runId} was cancelled: ${reason}`, { reason })
    }
    throw new LeanEventsError('FLOW_FAILED', `flow run ${runId} failed: ${error?.message}`, { error })
  }

  /**
   * The first flow end stored in `stream` after `after`. The subscription ends without one
   * only when the bus closes or close() ends it: then `BUS_CLOSED`.
   */
  async _waitForEnd(stream, after) {
    const sub = await this._bus.subscribe(stream, { after })
    this._waits.add(sub)
    try {
      // closed while subscribing: the loop below ends at once
      if (this._closed) await sub.unsubscribe()
      for await (const e of sub) if (isFlowEnd(e)) return e
    } finally {
      this._waits.delete(sub)
      await sub.unsubscribe().catch(() => {})
    }
    throw closedError(this._closed ? 'scheduler' : 'bus')
  }

  /** Cancel a running flow run: `flow.cancelled`, its pending awaits and triggers cancelled. */
  async cancelFlow(runId, reason) {
    if (typeof runId !== 'string') throw argError('runId must be a string')
    const n = await this._ready
    await native(n.cancelFlow(runId, reason === undefined ? 'cancelled' : String(reason)))
  }

  /** Start a new run with the input of `runId`, linked to it by `correlationId`; resolves to its id. */
  async rerunFlow(runId) {
    if (typeof runId !== 'string') throw argError('runId must be a string')
    const n = await this._ready
    return native(n.rerunFlow(runId))
  }

  /** Run one step for a flow: retries and awaits included. Resolves to the handler's result. */
  async run(step, options) {
    const o = checkOptions(options, 'options', { flow: 'string', input: 'any', jobId: 'string' })
    if (typeof o.flow !== 'string') throw argError('run(step, { flow }) needs the flow run id')
    const n = await this._ready
    const def = this._defs.get(step)
    if (def && def.error) throw def.error
    if (def && def.flow) throw argError(`'${step}' is a flow, not a step: use startFlow()`)
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
    // pending result() calls reject with BUS_CLOSED, as pending run() calls do
    for (const sub of [...this._waits]) sub.unsubscribe().catch(() => {})
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
    // Closing (this scheduler or the bus) interrupts handlers without failing their steps:
    // their outcome is refused with BUS_CLOSED and the job stays resumable by another
    // instance, so that refusal is expected and not reported; any other failure is.
    const report = (p) =>
      native(p).catch((err) => {
        if (err && err.code === 'BUS_CLOSED') return
        console.error('[lean-events] could not record a step outcome:', err)
      })
    if (!def) {
      await report(n.fail(jobId, attempt, JSON.stringify({ message: `step '${step}' is not defined on this instance`, retriable: false })))
      return
    }
    if (def.flow) return this._executeFlow(n, work, def, report)
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
      await: awaits(n, jobId, attempt, () => seq++),
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
  /** Run (or replay) a flow function: its steps and awaits are recorded in the store. */
  async _executeFlow(n, work, def, report) {
    const { jobId, flow, attempt } = work
    const bus = this._bus
    let seq = 0
    // a replay that no longer matches fails the run, whatever the function does with the error
    let mismatch = null
    const watch = (p) =>
      p.catch((err) => {
        if (err && err.code === 'REPLAY_MISMATCH') mismatch ??= err
        throw err
      })
    const step = (name, fn, options) => {
      if (typeof name !== 'string') return Promise.reject(argError('ctx.step needs a name'))
      if (typeof fn !== 'function') return Promise.reject(argError('ctx.step needs a function'))
      let o
      let policy
      try {
        o = checkOptions(options, 'step options', { retry: 'object' })
        policy = toJson(o.retry ?? null, 'retry')
      } catch (err) {
        return Promise.reject(err)
      }
      // numbered now, synchronously: steps started together keep their order on a replay
      const s = seq++
      return watch(
        (async () => {
          for (;;) {
            let state = JSON.parse(await native(n.stepBegin(jobId, attempt, s, name)))
            if (state.status === 'run') {
              let value
              let thrown = null
              try {
                value = await fn({ attempt: state.attempt, runId: flow, step: name })
              } catch (err) {
                thrown = err
              }
              if (thrown) {
                state = JSON.parse(await native(n.stepFail(jobId, attempt, s, state.attempt, JSON.stringify(errorInfo(thrown)), policy)))
              } else {
                let json
                try {
                  json = toJson(value, 'the step result')
                } catch (err) {
                  json = null
                  state = JSON.parse(
                    await native(n.stepFail(jobId, attempt, s, state.attempt, JSON.stringify({ message: err.message, retriable: false }), policy)),
                  )
                }
                if (json !== null) state = JSON.parse(await native(n.stepComplete(jobId, attempt, s, state.attempt, json)))
              }
            }
            if (state.status === 'done') return state.result
            if (state.status === 'failed') {
              const err = stepError(name, state.error)
              stepErrors.add(err)
              throw err
            }
            // 'retry': the next stepBegin waits for the back-off
          }
        })(),
      )
    }
    const flowAwaits = awaits(n, jobId, attempt, () => seq++)
    const ctx = {
      runId: flow,
      flow,
      name: work.step,
      replay: !!work.replay,
      log: (level, msg, data) => bus.emit({ kind: 'log', subject: flow, data: data === undefined ? { level, msg } : { level, msg, data } }),
      emit: (kind, data) => bus.emit(data === undefined ? { kind, subject: flow } : { kind, subject: flow, data }),
      step,
      parallel: (items) => {
        if (!Array.isArray(items)) return Promise.reject(argError('ctx.parallel takes an array'))
        return Promise.all(items.map((item) => (typeof item === 'function' ? item() : item)))
      },
      await: {
        time: (when) => watch(flowAwaits.time(when)),
        event: (spec) => watch(flowAwaits.event(spec)),
        trigger: (spec) =>
          watch(flowAwaits.trigger(spec)).then((t) => ({ id: t.id, wait: () => watch(t.wait()) })),
      },
    }
    let result
    let failure = null
    try {
      result = await def.handler(work.input, ctx)
    } catch (err) {
      failure = err
    }
    if (mismatch) failure = mismatch
    if (failure) {
      // a step's error the flow let through: flow.failed says what the step threw
      const info = stepErrors.has(failure)
        ? errorInfo({ name: failure.cause?.name ?? 'Error', code: failure.code, message: failure.message })
        : errorInfo(failure)
      info.retriable = false
      if (typeof failure?.step === 'string') info.step = failure.step
      await report(n.fail(jobId, attempt, JSON.stringify(info)))
      return
    }
    let json
    try {
      json = toJson(result, 'the flow result')
    } catch (err) {
      await report(n.fail(jobId, attempt, JSON.stringify({ message: err.message, retriable: false })))
      return
    }
    await report(n.complete(jobId, attempt, json))
  }
}

module.exports = { Scheduler }
