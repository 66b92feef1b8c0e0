// Where the Nitro plugin takes its settings from, apart from Nitro (so it can be tested alone).

/** `nvent.connections.redis`-style settings (host, port, username, password, db) as a url. */
export function redisUrl(connection) {
  if (!connection || typeof connection !== 'object') return undefined
  if (typeof connection.url === 'string' && connection.url) return connection.url
  const host = connection.host || '127.0.0.1'
  const port = connection.port || 6379
  const user = connection.username ? encodeURIComponent(connection.username) : ''
  const auth = connection.password ? `${user}:${encodeURIComponent(connection.password)}@` : user ? `${user}@` : ''
  const db = connection.db ? `/${Number(connection.db)}` : ''
  const h = String(host).includes(':') && !String(host).startsWith('[') ? `[${host}]` : host
  return `redis://${auth}${h}:${port}${db}`
}

/** True when lean-events should take over: LEAN_EVENTS=1 (or true), or `enabled: true`. */
export function isEnabled(own, env = process.env) {
  return own?.enabled === true || own?.enabled === 'true' || ['1', 'true'].includes(String(env.LEAN_EVENTS || '').toLowerCase())
}

/**
 * The Redis url: the module's `url`, then its `connection`, then where nvent's Redis adapters
 * look (`nvent.store`/`nvent.stream` connection, which nvent fills from `connections.redis`),
 * then REDIS_URL, then REDIS_HOST/REDIS_PORT/…; none: undefined (the embedded store).
 */
export function resolveUrl(own = {}, nvent = {}, env = process.env) {
  const candidates = [
    own.url,
    redisUrl(own.connection),
    redisUrl(nvent.store?.connection),
    redisUrl(nvent.store?.redis),
    redisUrl(nvent.stream?.connection),
    redisUrl(nvent.stream?.redis),
    redisUrl(nvent.connections?.redis),
    env.REDIS_URL,
  ]
  const url = candidates.find((c) => typeof c === 'string' && c !== '')
  if (url) return url
  if (env.REDIS_HOST || env.REDIS_PORT) {
    return redisUrl({
      host: env.REDIS_HOST,
      port: env.REDIS_PORT ? Number(env.REDIS_PORT) : undefined,
      username: env.REDIS_USERNAME,
      password: env.REDIS_PASSWORD,
      db: env.REDIS_DB ? Number(env.REDIS_DB) : undefined,
    })
  }
  return undefined
}

/** What the plugin registers: adapter names, prefix, url, trim. */
export function pluginSettings(own = {}, nvent = {}, env = process.env) {
  return {
    storeName: nvent.store?.adapter || 'file',
    streamName: nvent.stream?.adapter || 'memory',
    prefix: own.prefix || nvent.store?.prefix || 'nvent',
    url: resolveUrl(own, nvent, env),
    maxLen: own.streams?.trim?.maxLen ?? 10_000,
  }
}
