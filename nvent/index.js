// lean-events/nvent: a Nuxt module that makes lean-events nvent's store and stream adapters.
//
//   modules: ['lean-events/nvent', 'nvent']     (before nvent; options under `leanEvents`)
//
// It adds a Nitro plugin that, when LEAN_EVENTS=1 (or `enabled: true`) at server start,
// registers lean-events under the store and stream adapter names nvent's config selects (an
// app on `redis` needs no other change); otherwise the plugin registers nothing and opens no
// connection. No Nuxt imports: the module is a plain function, as Nuxt accepts them.

import { fileURLToPath } from 'node:url'

const PLUGIN = fileURLToPath(new URL('./runtime/plugin.js', import.meta.url))
const NVENT_ADAPTERS_PLUGIN = /[\\/]nitro[\\/]plugins[\\/]00\.adapters(\.[cm]?[jt]s)?$/

/**
 * Run our plugin right before nvent's adapter plugin: after every other adapter module's
 * plugin (so ours registers last under a shared name such as `redis`), and before nvent reads
 * the registry (it fires `nvent:register-adapters` first thing in that plugin).
 */
export function placePlugin(plugins) {
  const ours = plugins.indexOf(PLUGIN)
  const theirs = plugins.findIndex((p) => typeof p === 'string' && NVENT_ADAPTERS_PLUGIN.test(p))
  if (ours === -1 || theirs === -1) return plugins
  const rest = plugins.filter((_, i) => i !== ours)
  rest.splice(rest.indexOf(plugins[theirs]), 0, PLUGIN)
  return rest
}

/**
 * Nitro's externals matcher for this package: everything but the plugin's folder stays
 * external (traced into .output/server/node_modules, native addon included). Nuxt marks the
 * whole package for inlining because it is a module; Rollup would then parse the addon's
 * `.node` file. The plugin itself must be inlined: it imports `#imports`.
 */
export function externalLeanEvents(id) {
  const rel = String(id).replace(/\\/g, '/').split('node_modules/').pop()
  return (rel === 'lean-events' || rel.startsWith('lean-events/')) && !rel.startsWith('lean-events/nvent/runtime/')
}
externalLeanEvents.score = 1e5

/** Module options: `enabled`, `url`, `connection`, `prefix`, `streams.trim.maxLen`. */
export default function leanEventsNvent(inlineOptions, nuxt) {
  const options = { ...(nuxt.options.leanEvents || {}), ...(inlineOptions || {}) }
  const runtime = nuxt.options.runtimeConfig
  runtime.leanEventsNvent = {
    enabled: options.enabled === true,
    url: options.url || '',
    connection: options.connection || null,
    prefix: options.prefix || '',
    streams: options.streams || null,
  }
  nuxt.options.nitro = nuxt.options.nitro || {}
  nuxt.options.nitro.plugins = nuxt.options.nitro.plugins || []
  nuxt.options.nitro.plugins.push(PLUGIN)
  nuxt.hook('nitro:config', (config) => {
    if (Array.isArray(config.plugins)) config.plugins = placePlugin(config.plugins)
    config.externals = config.externals || {}
    config.externals.external = [...(config.externals.external || []), externalLeanEvents]
  })
}

leanEventsNvent.meta = { name: 'lean-events/nvent', configKey: 'leanEvents' }
leanEventsNvent.getMeta = () => Promise.resolve(leanEventsNvent.meta)
