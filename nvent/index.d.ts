// Types of lean-events/nvent: the Nuxt module (a plain module function, as Nuxt accepts them).

export interface LeanEventsNventOptions {
  /** Take over without LEAN_EVENTS=1. */
  enabled?: boolean
  /** `redis://…`; else nvent's Redis connection settings, REDIS_URL, REDIS_HOST/…; none: the embedded store. */
  url?: string
  /** `{ host, port, username, password, db }`, as nvent's `connections.redis`. */
  connection?: { host?: string; port?: number; username?: string; password?: string; db?: number }
  /** Default: nvent's `store.prefix` (`nvent`). */
  prefix?: string
  /** `MAXLEN ~` of nvent's streams, default 10000 (0: no trimming). */
  streams?: { trim?: { maxLen?: number } }
}

/**
 * The Nuxt module: `modules: ['lean-events/nvent', 'nvent']`, options inline or under
 * `leanEvents`. With LEAN_EVENTS=1 (or `enabled`) at server start, lean-events is registered
 * as nvent's store and stream adapters under the names nvent's config selects.
 */
declare function leanEventsNvent(inlineOptions: LeanEventsNventOptions | undefined, nuxt: any): void
declare namespace leanEventsNvent {
  const meta: { name: string; configKey: string }
}
export default leanEventsNvent

/** Where nvent's adapter plugin is in Nitro's plugin list, ours goes right before it. */
export declare function placePlugin(plugins: string[]): string[]
