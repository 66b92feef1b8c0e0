// lean-events/nvent/adapters: nvent 0.5's StoreAdapter and StreamAdapter on lean-events, with
// no Nuxt imports (the Nuxt module, lean-events/nvent, registers them).
//
// Keys, stream fields, index hashes, kv strings and Pub/Sub messages are those of nvent's Redis
// adapters, so lean and nvent-redis instances can share one Redis during a rollout. The hot
// path is one atomic step per call (index.update and index.increment run in Redis: nothing to
// retry, nothing lost to a concurrent writer). Files: codec.js (value encodings), store.js,
// stream.js, connection.js (the bus they share).

import { LeanStoreAdapter } from './store.js'
import { LeanStreamAdapter } from './stream.js'

export { redisUrl } from './runtime/config.js'
export { LeanStoreAdapter, LeanStreamAdapter }

/**
 * nvent's StoreAdapter. Options: `url` (no url and no `bus`: the embedded store), `prefix`
 * (default `nvent`), `bus` (share an existing EventBus; `closeBus: true` closes it once every
 * adapter holding it so has closed), `streams.trim.maxLen` (default 10000, 0: no trimming),
 * `connect` (more EventBus.connect options).
 */
export function createStoreAdapter(options) {
  return new LeanStoreAdapter(options)
}

/** nvent's StreamAdapter. Options: `url`, `prefix`, `bus`, `closeBus`, `connect` (as above). */
export function createStreamAdapter(options) {
  return new LeanStreamAdapter(options)
}
