// The module's settings as the server reads them (runtime config + environment), apart from
// Nitro so they can be tested alone.

/** EventBus.connect options the module passes on as they are, when set. */
const PASSED = ['prefix', 'maxLen', 'maxEventBytes', 'timeoutMs', 'durability', 'replicationTimeoutMs', 'retention']

const isSet = (v) => v !== undefined && v !== null && v !== ''

/**
 * `configureLeanEvents()` options from the runtime config `leanEvents` (Nitro has already
 * applied `NUXT_LEAN_EVENTS_*` variables to it: NUXT_LEAN_EVENTS_REDIS_URL sets `redisUrl`).
 * No `redisUrl`: no `url` either, so lean-events/nitro falls back to REDIS_URL (or
 * NUXT_QUEUE_REDIS_URL), else the embedded store.
 */
export function connectOptions(config = {}) {
  const o = {}
  if (isSet(config.redisUrl)) o.url = String(config.redisUrl)
  for (const key of PASSED) {
    if (isSet(config[key])) o[key] = config[key]
  }
  if (config.scheduler && typeof config.scheduler === 'object' && Object.keys(config.scheduler).length > 0) {
    o.scheduler = { ...config.scheduler }
  }
  return o
}
