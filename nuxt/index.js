// lean-events/nuxt: the Nuxt module.
//
//   export default defineNuxtConfig({ modules: ['lean-events/nuxt'], leanEvents: { routes: true } })
//
// - runtime config `leanEvents` (redisUrl ← NUXT_LEAN_EVENTS_REDIS_URL, else REDIS_URL; prefix,
//   maxLen, …) and a Nitro plugin: the shared bus + scheduler connect at server start and
//   close on Nitro's `close` hook;
// - auto-imports: `useLeanEvents()` on the server, the lean-events/vue composables in the app;
// - `routes: true`: the event-stream, state, runs and trigger handlers under /api/_events,
//   /api/_flows, /api/_triggers; `dashboard: true`: the run dashboard at /_lean-events (and a
//   Nuxt DevTools tab); both asked through the app's `lean-events:authorize` Nitro hooks;
// - `metrics: true`: lean-events/nitro's metricsHandler (Prometheus text) at /api/_metrics;
// - Vite pre-bundles lean-events/client and lean-events/vue up front (no reload in dev the
//   first time a page imports them).
// No Nuxt imports: the module is a plain function with `meta`, as Nuxt accepts them.

import { fileURLToPath } from 'node:url'

const here = (p) => fileURLToPath(new URL(p, import.meta.url))
const RUNTIME = here('./runtime/')
const PLUGIN = here('./runtime/server/plugin.js')
const ROUTE = (name) => here(`./runtime/server/routes/${name}.js`)
const DASHBOARD_ASSETS = here('./runtime/dashboard/')
const CLIENT_DIR = here('../client/')
const PACKAGE_ROOT = here('../').replace(/\\/g, '/')

/** The composables the app gets without an import. */
export const COMPOSABLES = ['useEventStream', 'useFlowRun', 'useRuns', 'fireTrigger']

/** The API routes `routes: true` mounts under `prefix` (`/api`). */
export function apiRoutes(prefix = '/api') {
  return [
    { route: `${prefix}/_events/:type/:id/stream`, method: 'get', handler: ROUTE('stream') },
    { route: `${prefix}/_events/:type/:id`, method: 'get', handler: ROUTE('state') },
    { route: `${prefix}/_flows/:name/runs`, method: 'get', handler: ROUTE('runs') },
    { route: `${prefix}/_triggers/:id`, method: 'post', handler: ROUTE('trigger') },
    { route: `${prefix}/_triggers/:id/cancel`, method: 'post', handler: ROUTE('cancel') },
  ]
}

/** The dashboard: its page, and the same API under its own prefix (behind its own check). */
export function dashboardRoutes() {
  return [
    ...apiRoutes('/_lean-events/api'),
    { route: '/_lean-events/api/flows', method: 'get', handler: here('./runtime/server/dashboard-flows.js') },
    { route: '/_lean-events', handler: here('./runtime/server/dashboard-page.js') },
    { route: '/_lean-events/**', handler: here('./runtime/server/dashboard-page.js') },
  ]
}

/**
 * Nitro's externals matcher for this package: the native addon and its JS API stay external
 * (traced into .output/server/node_modules); the module's runtime files (they import
 * `#imports`) and the browser-safe entries (lean-events/vue must share the app's `vue`) are
 * bundled. Nuxt would inline the whole package, being a module's; Rollup would then parse
 * the addon's `.node` file.
 */
export function externalLeanEvents(id) {
  const rel = String(id).replace(/\\/g, '/').split('node_modules/').pop()
  if (!(rel === 'lean-events' || rel.startsWith('lean-events/'))) return false
  return !/^lean-events\/(nuxt\/runtime|vue|client)(\/|$)/.test(rel)
}
externalLeanEvents.score = 1e5

/**
 * A linked checkout of lean-events (file:, npm link) resolves outside node_modules, where
 * Nitro's externals never look: Rollup is told directly to leave its bare imports (the
 * addon's JS API) to Node at run time, which finds the link in the app's node_modules.
 * (An array: Nitro merges it with its own list.)
 */
export const LINKED_EXTERNAL = /^lean-events(?:$|\/(?!(?:nuxt\/runtime|vue|client)(?:\/|$)))/

/** The module's options, defaults applied (inline options win over `leanEvents`). */
export function resolveOptions(inlineOptions, nuxtOptions = {}) {
  const o = { ...(nuxtOptions.leanEvents || {}), ...(inlineOptions || {}) }
  const dashboard = o.dashboard === true || (o.dashboard && typeof o.dashboard === 'object')
  return {
    redisUrl: typeof o.redisUrl === 'string' ? o.redisUrl : '',
    prefix: o.prefix ?? '',
    maxLen: o.maxLen,
    maxEventBytes: o.maxEventBytes,
    timeoutMs: o.timeoutMs,
    durability: o.durability,
    replicationTimeoutMs: o.replicationTimeoutMs,
    retention: o.retention,
    scheduler: o.scheduler,
    routes: o.routes === true,
    dashboard,
    flows: [...(Array.isArray(o.flows) ? o.flows : []), ...((o.dashboard && o.dashboard.flows) || [])].map(String),
    metrics: o.metrics === true,
    devtools: o.devtools !== false,
  }
}

const defined = (obj) => Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined))

/** Module options: see index.d.ts (LeanEventsNuxtOptions). */
export default async function leanEventsNuxt(inlineOptions, nuxt) {
  const options = resolveOptions(inlineOptions, nuxt.options)
  const runtime = nuxt.options.runtimeConfig
  // server-only: NUXT_LEAN_EVENTS_REDIS_URL overrides redisUrl at run time
  runtime.leanEvents = {
    ...(runtime.leanEvents || {}),
    ...defined({
      redisUrl: options.redisUrl,
      prefix: options.prefix,
      maxLen: options.maxLen,
      maxEventBytes: options.maxEventBytes,
      timeoutMs: options.timeoutMs,
      durability: options.durability,
      replicationTimeoutMs: options.replicationTimeoutMs,
      retention: options.retention,
      scheduler: options.scheduler,
    }),
    flows: options.flows,
  }

  const handlers = []
  if (options.routes) handlers.push(...apiRoutes())
  if (options.dashboard) handlers.push(...dashboardRoutes())
  if (options.metrics) handlers.push({ route: '/api/_metrics', method: 'get', handler: here('./runtime/server/routes/metrics.js') })

  nuxt.hook('nitro:config', (config) => {
    config.plugins = [...(config.plugins || []), PLUGIN]
    config.handlers = [...(config.handlers || []), ...handlers]
    if (config.imports !== false) {
      config.imports = config.imports || {}
      config.imports.imports = [...(config.imports.imports || []), { name: 'useLeanEvents', from: 'lean-events/nitro' }]
    }
    config.externals = config.externals || {}
    config.externals.external = [...(config.externals.external || []), externalLeanEvents]
    config.externals.inline = [...(config.externals.inline || []), RUNTIME]
    if (!PACKAGE_ROOT.includes('/node_modules/')) {
      config.rollupConfig = config.rollupConfig || {}
      config.rollupConfig.external = [...[].concat(config.rollupConfig.external || []), LINKED_EXTERNAL]
    }
    if (options.dashboard) {
      config.publicAssets = [
        ...(config.publicAssets || []),
        { dir: CLIENT_DIR, baseURL: '/_lean-events/assets/client', maxAge: 0 },
        { dir: DASHBOARD_ASSETS, baseURL: '/_lean-events/assets', maxAge: 0 },
      ]
    }
  })

  nuxt.hook('imports:extend', (imports) => {
    for (const name of COMPOSABLES) imports.push({ name, from: 'lean-events/vue' })
  })

  // pre-bundled up front: else Vite finds them on the first page that imports them and reloads
  nuxt.options.vite = nuxt.options.vite || {}
  nuxt.options.vite.optimizeDeps = nuxt.options.vite.optimizeDeps || {}
  const include = nuxt.options.vite.optimizeDeps.include || []
  nuxt.options.vite.optimizeDeps.include = [...include, ...['lean-events/client', 'lean-events/vue'].filter((d) => !include.includes(d))]

  if (options.dashboard && options.devtools) {
    nuxt.hook('devtools:customTabs', (tabs) => {
      tabs.push({
        name: 'lean-events',
        title: 'lean-events',
        icon: 'carbon:flow-stream',
        view: { type: 'iframe', src: '/_lean-events' },
      })
    })
  }
}

leanEventsNuxt.meta = { name: 'lean-events/nuxt', configKey: 'leanEvents', compatibility: { nuxt: '>=3.10.0' } }
leanEventsNuxt.getMeta = () => Promise.resolve(leanEventsNuxt.meta)
leanEventsNuxt.getOptions = (inlineOptions, nuxt) => Promise.resolve(resolveOptions(inlineOptions, nuxt && nuxt.options))
