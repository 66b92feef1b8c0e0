// Types of lean-events/nuxt: the Nuxt module (a plain module function, as Nuxt accepts them).

export interface LeanEventsNuxtOptions {
  /** `redis://…` (or `redis+cluster://…`); at run time NUXT_LEAN_EVENTS_REDIS_URL overrides it. Empty: REDIS_URL, else the embedded store. */
  redisUrl?: string
  /** Key prefix (default `nq`, or LEAN_EVENTS_PREFIX). */
  prefix?: string
  /** `MAXLEN ~` of each stream. */
  maxLen?: number
  maxEventBytes?: number
  timeoutMs?: number
  durability?: 'local' | 'replicated'
  /** With `durability: 'replicated'`: how long to wait for a replica, ms (default 1000). */
  replicationTimeoutMs?: number
  /** Passed to `EventBus.connect` as it is (stream retention), when set. */
  retention?: { finishedRunsMs?: number }
  /** `new Scheduler` options (serializable ones: `concurrency`, `leaseMs`, `instanceId`). */
  scheduler?: { concurrency?: number; leaseMs?: number; instanceId?: string }
  /** Mount the event-stream, state, runs and trigger handlers under /api/_events, /api/_flows, /api/_triggers. */
  routes?: boolean
  /** The run dashboard at /_lean-events (and a Nuxt DevTools tab); `{ flows }` names the flows it offers. */
  dashboard?: boolean | { flows?: string[] }
  /** Flow names the dashboard offers (others can be typed in). */
  flows?: string[]
  /** Mount lean-events/nitro's metricsHandler (Prometheus text format) at /api/_metrics. */
  metrics?: boolean
  /** With `dashboard`, add the DevTools tab (default true). */
  devtools?: boolean
}

/**
 * The Nuxt module: `modules: ['lean-events/nuxt']`, options inline or under `leanEvents`.
 * Connects the shared bus + scheduler at server start (closed on Nitro's `close`), auto-imports
 * `useLeanEvents()` on the server and `useEventStream`, `useFlowRun`, `useRuns`, `fireTrigger`
 * in the app. The routes and the dashboard ask the app's `lean-events:authorize` Nitro hooks:
 * `(event, target: { type, id, route: 'api' | 'dashboard' }) => boolean | void` (false or a
 * throw → 403; without a hook the routes are open and the dashboard only in development).
 */
declare function leanEventsNuxt(inlineOptions: LeanEventsNuxtOptions | undefined, nuxt: any): Promise<void>
declare namespace leanEventsNuxt {
  const meta: { name: string; configKey: string; compatibility: { nuxt: string } }
}
export default leanEventsNuxt

/** The composables the module auto-imports from lean-events/vue. */
export declare const COMPOSABLES: string[]

declare module 'nitropack/types' {
  interface NitroRuntimeHooks {
    'lean-events:authorize': (
      event: import('h3').H3Event,
      target: { type: string; id: string; route: 'api' | 'dashboard' },
    ) => boolean | void | Promise<boolean | void>
  }
}

declare module '@nuxt/schema' {
  interface NuxtConfig {
    leanEvents?: LeanEventsNuxtOptions
  }
}
