'use strict'

// A live subscription: takes batches from the native queue, parses them once, and delivers them
// to a handler or to `for await`, keeping handler failures away from the process.

const { AsyncResource } = require('node:async_hooks')
const { LeanEventsError, argError } = require('./errors.js')

const TAKE_BATCH = 1024

function reportError(onError, err, event) {
  if (onError) {
    try {
      onError(err, event)
      return
    } catch (again) {
      err = again
    }
  }
  console.error('[lean-events] unhandled subscriber error:', err)
}

/**
 * A live subscription. Either pushes to a handler, or is consumed with `for await`.
 */
class Subscription {
  constructor(bus, handler, options) {
    this._bus = bus
    this._handler = handler
    this._onError = options.onError
    this._onGap = options.onGap
    this._native = null
    this._woken = false
    this._draining = false
    this._buffer = []
    this._waiters = []
    this._final = null // set when the native side has ended: { error }
    this._ended = false
    this._stopped = false // unsubscribed or closed: deliver nothing more
    this._error = null
    /** Id of the last event delivered. */
    this.lastId = options.after
    // the async context of the subscribe call: the handler runs in it (AsyncLocalStorage
    // values set around `subscribe` are seen by the handler), whatever woke the subscription
    this._scope = handler ? new AsyncResource('lean-events:subscription') : null
  }

  _attach(nativeSub) {
    this._native = nativeSub
    if (this._woken) this._wake()
  }

  _wake() {
    this._woken = true
    if (!this._native) return
    if (this._handler) this._scope.runInAsyncScope(this._drain, this)
    else this._release()
  }

  _release() {
    const waiters = this._waiters
    this._waiters = []
    for (const resolve of waiters) resolve()
  }

  /** Pull what the native queue holds into `this._buffer`. */
  _pull() {
    if (this._final || this._stopped) return
    this._woken = false
    const taken = this._native.take(TAKE_BATCH)
    if (taken.items.length > 2) {
      for (const item of JSON.parse(taken.items)) {
        if (item.gap === true) {
          if (this._onGap) {
            try {
              this._onGap({ after: item.after, firstId: item.firstId })
            } catch (err) {
              reportError(this._onError, err)
            }
          }
        } else {
          this._buffer.push(item)
        }
      }
    }
    // the end is reported only after every event queued before it was delivered
    if (taken.done) this._final = { error: taken.error }
    else if (this._buffer.length === 0 && taken.items.length > 2) this._pull()
  }

  /** End once the buffer is empty and the native side has ended. */
  _settle() {
    if (this._buffer.length === 0 && this._final) this._end(this._final.error)
  }

  _end(error) {
    if (this._ended) return
    this._ended = true
    this._bus._subs.delete(this)
    this._bus._byKey.delete(this._key)
    if (error) {
      this._error = new LeanEventsError(error.code, error.message, {
        lastId: error.lastId ?? this.lastId,
        firstId: error.firstId,
      })
      if (this._handler) reportError(this._onError, this._error)
    }
    this._release()
  }

  /**
   * Deliver buffered events to the handler, one at a time: when the handler returns a promise,
   * the next event waits until it settles (order kept, no handler runs twice at once; the
   * native queue meanwhile fills up to `maxQueue`, past which the subscription is cut off with
   * SUBSCRIBER_OVERFLOW).
   */
  _drain() {
    if (this._draining) return
    this._draining = true
    let parked = false
    try {
      while (!this._stopped) {
        if (this._buffer.length === 0) {
          this._pull()
          if (this._buffer.length === 0) break
        }
        const event = this._buffer.shift()
        this.lastId = event.id
        let r
        try {
          r = this._handler(event)
        } catch (err) {
          reportError(this._onError, err, event)
          continue
        }
        if (r && typeof r.then === 'function') {
          parked = true
          Promise.resolve(r)
            .then(undefined, (err) => reportError(this._onError, err, event))
            .then(() => {
              this._draining = false
              this._drain()
            })
          return
        }
      }
      this._settle()
    } finally {
      if (!parked) this._draining = false
    }
  }

  /** Next event for `for await`; rejects when the subscription ends with an error. */
  async next() {
    if (this._handler) throw argError('this subscription delivers to a handler; subscribe without one to iterate')
    for (;;) {
      if (this._buffer.length && !this._stopped) {
        const event = this._buffer.shift()
        this.lastId = event.id
        return { value: event, done: false }
      }
      this._settle()
      if (this._ended) {
        if (this._error) {
          const err = this._error
          this._error = null
          throw err
        }
        return { value: undefined, done: true }
      }
      if (this._native) this._pull()
      if (this._buffer.length || this._final) continue
      await new Promise((resolve) => {
        this._waiters.push(resolve)
        if (this._woken && this._native) this._wake()
      })
    }
  }

  async return() {
    await this.unsubscribe()
    return { value: undefined, done: true }
  }

  [Symbol.asyncIterator]() {
    return this
  }

  /** True once it has caught up with the stream and receives events as they are stored. */
  get live() {
    return !this._ended && !!this._native && this._native.live
  }

  /** True once the subscription has ended (unsubscribed, closed, or cut off). */
  get closed() {
    return this._ended
  }

  _stop() {
    this._stopped = true
    this._buffer = []
    this._end(null)
  }

  /** Stop delivery. Idempotent. */
  async unsubscribe() {
    if (this._native) this._native.unsubscribe()
    this._stop()
  }
}

module.exports = { Subscription, reportError }
