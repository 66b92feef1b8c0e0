// One bus + scheduler per process, shared by the handlers and adapters unless they are given
// their own.

// The package's own CommonJS entry (a relative import: nitro/ is an ESM package scope of its
// own, so the package cannot self-reference by name from here).
import cluster from 'node:cluster'
import leanEvents from '../index.js'
import { argError } from './errors.js'

const { EventBus, Scheduler } = leanEvents

const SHARED = Symbol.for('lean-events.nitro.shared')

function shared() {
  if (!globalThis[SHARED]) globalThis[SHARED] = { options: {}, promise: null }
  return globalThis[SHARED]
}

function envUrl() {
  return process.env.REDIS_URL || process.env.NUXT_QUEUE_REDIS_URL || undefined
}

/**
 * Options for the shared instance, before its first use: `url`, `prefix` and any
 * `EventBus.connect` option, plus `scheduler` (the `new Scheduler` options).
 */
export function configureLeanEvents(options = {}) {
  const s = shared()
  if (s.promise) throw argError('configureLeanEvents() must be called before the first useLeanEvents()')
  s.options = { ...options }
}

/**
 * The process's shared `{ bus, scheduler }`: connected on first use, to `REDIS_URL` (or
 * `NUXT_QUEUE_REDIS_URL`), or to the embedded in-memory store when neither is set.
 */
export function useLeanEvents() {
  const s = shared()
  if (!s.promise) {
    const { scheduler: schedulerOptions, ...connect } = s.options
    const url = 'url' in connect ? connect.url : envUrl()
    const prefix = connect.prefix ?? (process.env.LEAN_EVENTS_PREFIX || undefined)
    const p = (async () => {
      const bus = await EventBus.connect({ ...connect, url, prefix })
      if (isClusterPrimary()) {
        // the primary of a Node cluster (Nitro's node-cluster preset) only forks the workers
        // that serve the app: a scheduler instance here would take jobs no handler runs
        return { bus, scheduler: primaryScheduler(), prefix: prefix || 'nq' }
      }
      const scheduler = new Scheduler(bus, schedulerOptions)
      return { bus, scheduler, prefix: prefix || 'nq' }
    })()
    s.promise = p
    // a failed connect is not cached: the next call tries again
    p.catch(() => {
      if (s.promise === p) s.promise = null
    })
  }
  return s.promise
}

/**
 * The scheduler of a Node cluster's primary: Nitro runs the app's plugins there too, so the
 * step and flow definitions they make are accepted (and dropped: the workers run the steps); starting
 * work, firing or cancelling throws, as nothing here would run it.
 */
function primaryScheduler() {
  const refuse = () =>
    Promise.reject(
      argError('no scheduler runs in the primary process of a Node cluster: use useLeanEvents() in the workers, which serve the app'),
    )
  const scheduler = {
    instanceId: undefined,
    define: () => scheduler,
    defineFlow: () => scheduler,
    ready: () => Promise.resolve(scheduler),
    close: () => Promise.resolve(),
    run: refuse,
    fire: refuse,
    cancel: refuse,
    execute: refuse,
    startFlow: refuse,
    result: refuse,
    cancelFlow: refuse,
    rerunFlow: refuse,
  }
  return scheduler
}

/** True in the primary process of a Node cluster that has forked workers. */
function isClusterPrimary() {
  return cluster.isPrimary && !!cluster.workers && Object.keys(cluster.workers).length > 0
}

/** Close the shared scheduler and bus (idempotent); the next useLeanEvents() reconnects. */
export async function closeLeanEvents() {
  const s = shared()
  const p = s.promise
  s.promise = null
  if (!p) return
  let instance
  try {
    instance = await p
  } catch {
    return
  }
  try {
    await instance.scheduler.close()
  } catch {
    // already closed
  }
  try {
    await instance.bus.close()
  } catch {
    // already closed
  }
}

/**
 * A Nitro plugin: `export default defineNitroPlugin(leanEventsPlugin)`. Connects at startup
 * (so steps awaiting timers are resumed) and closes on Nitro's `close` hook.
 */
export function leanEventsPlugin(nitroApp) {
  if (nitroApp && nitroApp.hooks && typeof nitroApp.hooks.hook === 'function') {
    nitroApp.hooks.hook('close', closeLeanEvents)
  }
  useLeanEvents().catch((err) => console.error('[lean-events] could not connect:', err && err.message))
}

export async function resolveBus(options) {
  if (options && options.bus) return options.bus
  return (await useLeanEvents()).bus
}

/** The key prefix of stream names like `nq:flow:<id>`: the option, else the shared instance's. */
export async function resolvePrefix(options) {
  if (options && options.prefix) return options.prefix
  if (options && options.bus) return 'nq'
  return (await useLeanEvents()).prefix
}

export async function resolveScheduler(options) {
  if (options && options.scheduler) return options.scheduler
  return (await useLeanEvents()).scheduler
}
