// nvent 0.5's StreamAdapter on lean-events: Pub/Sub on the topic names and with the JSON
// messages of nvent's Redis stream adapter (PUBLISH topic JSON.stringify(event)), so both can
// serve one fleet. Every topic of a process shares one Pub/Sub subscription (lean-events'
// live connection, reference-counted per channel), resubscribed after a reconnect.

import { BusHandle } from './connection.js'

function report(err) {
  console.error('[lean-events/nvent] stream handler:', err)
}

/** nvent's StreamAdapter. See createStreamAdapter. */
export class LeanStreamAdapter {
  constructor(options = {}) {
    this._bus = new BusHandle({ ...options, prefix: options.prefix ?? 'nvent' })
    // topic → Set of handles, for listTopics and getSubscriptionCount (this process's)
    this._topics = new Map()
    this._next = 0
  }

  /** Connect (the first call would otherwise). */
  async init() {
    await this._bus.get()
  }

  /** PUBLISH topic JSON.stringify(event): any JSON value (the stats topics carry `{id, metadata}`). */
  async publish(topic, event) {
    const bus = await this._bus.get()
    const message = JSON.stringify(event)
    if (message === undefined) throw new TypeError('publish takes a JSON value')
    await bus.keyspace.publish(topic, message)
  }

  /**
   * Call `handler` with every message on `topic` (parsed JSON) while subscribed. Handlers are
   * not awaited, as with the Redis adapter: a slow one does not hold up the others. `opts`
   * (group, filter, fromBeginning) are ignored, as both nvent adapters ignore them.
   */
  async subscribe(topic, handler, _opts) {
    if (typeof handler !== 'function') throw new TypeError('handler must be a function')
    const bus = await this._bus.get()
    const deliver = (message) => {
      try {
        const r = handler(message)
        if (r && typeof r.then === 'function') r.then(undefined, report)
      } catch (err) {
        report(err)
      }
    }
    const sub = await bus.keyspace.listen(topic, deliver, { onError: report })
    const handle = {
      id: `${topic}-${++this._next}`,
      topic,
      unsubscribe: async () => {
        const set = this._topics.get(topic)
        if (set && set.delete(handle) && set.size === 0) this._topics.delete(topic)
        await sub.unsubscribe()
      },
    }
    if (!this._topics.has(topic)) this._topics.set(topic, new Set())
    this._topics.get(topic).add(handle)
    return handle
  }

  async unsubscribe(handle) {
    await handle.unsubscribe()
  }

  /** Topics this process has handlers on. */
  async listTopics() {
    return [...this._topics.keys()]
  }

  /** Handlers this process has on `topic`. */
  async getSubscriptionCount(topic) {
    return this._topics.get(topic)?.size ?? 0
  }

  /** End every subscription and release the bus. */
  async shutdown() {
    const handles = [...this._topics.values()].flatMap((set) => [...set])
    await Promise.all(handles.map((h) => h.unsubscribe().catch(() => {})))
    await this._bus.close()
  }
}
