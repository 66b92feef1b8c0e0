// The bus the adapters run on: their own (connected on first use, closed by close()), or one
// the caller shares. A shared bus given with `closeBus: true` is closed once every adapter that
// holds it that way has closed (the Nuxt module's store and stream adapters share one).

import leanEvents from '../index.js'
import { redisUrl } from './runtime/config.js'

const { EventBus, LeanEventsError } = leanEvents

/** Adapters holding a shared bus with `closeBus: true`, per bus. */
const holders = new WeakMap()

function argError(message) {
  return new LeanEventsError('INVALID_ARGUMENT', message)
}

/** The bus of one adapter. */
export class BusHandle {
  /**
   * @param {object} options `bus` (an EventBus or a promise of one) and `closeBus`, or `url`,
   *   `prefix` and `connect` (more `EventBus.connect` options) for a bus of its own.
   */
  constructor(options) {
    this._shared = options.bus !== undefined
    this._closeShared = !!options.closeBus
    this._closed = false
    if (this._shared) {
      if (!options.bus || (typeof options.bus.then !== 'function' && typeof options.bus.keyspace !== 'object')) {
        throw argError('options.bus must be an EventBus (or a promise of one)')
      }
      this._promise = Promise.resolve(options.bus)
      if (this._closeShared) {
        this._promise.then((bus) => holders.set(bus, (holders.get(bus) || 0) + 1)).catch(() => {})
      }
    } else {
      this._connectOptions = { ...options.connect, url: options.url, prefix: options.prefix }
      this._promise = null
    }
  }

  /** The bus, connected on first use (a failed connect is tried again by the next call). */
  get() {
    if (this._closed) return Promise.reject(new LeanEventsError('BUS_CLOSED', 'the adapter is closed'))
    if (!this._promise) {
      this._promise = EventBus.connect(this._connectOptions)
      this._promise.catch(() => {
        this._promise = null
      })
    }
    return this._promise
  }

  /** Close the bus if it is this adapter's, or this was the last holder of a shared one. */
  async close() {
    if (this._closed) return
    this._closed = true
    const promise = this._promise
    if (!promise) return
    let bus
    try {
      bus = await promise
    } catch {
      return
    }
    if (!this._shared) return bus.close()
    if (!this._closeShared) return
    const left = (holders.get(bus) || 1) - 1
    holders.set(bus, left)
    if (left === 0) await bus.close()
  }
}
