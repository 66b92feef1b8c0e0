// The Nitro plugin of lean-events/nvent: with LEAN_EVENTS=1, registers lean-events as nvent's
// store and stream adapters (one bus shared by both, closed when nvent has closed both).
// Imported by package name, so that Nitro keeps the native addon external.

import { useRuntimeConfig, registerStoreAdapter, registerStreamAdapter } from '#imports'
import leanEvents from 'lean-events'
import { createStoreAdapter, createStreamAdapter } from 'lean-events/nvent/adapters'
import { isEnabled, pluginSettings } from './config.js'

export default function leanEventsNventPlugin(nitroApp) {
  const config = useRuntimeConfig()
  const own = config.leanEventsNvent || {}
  if (!isEnabled(own)) return
  nitroApp.hooks.hook('nvent:register-adapters', async () => {
    const s = pluginSettings(own, config.nvent || {})
    const bus = await leanEvents.EventBus.connect({ url: s.url, prefix: s.prefix })
    const shared = { bus, closeBus: true, prefix: s.prefix }
    registerStoreAdapter(s.storeName, createStoreAdapter({ ...shared, streams: { trim: { maxLen: s.maxLen } } }))
    registerStreamAdapter(s.streamName, createStreamAdapter(shared))
    const where = s.url ? s.url.replace(/\/\/[^@/]*@/, '//***@') : 'the embedded store'
    console.log(`[lean-events/nvent] store adapter '${s.storeName}' and stream adapter '${s.streamName}' run on lean-events (${where}, prefix '${s.prefix}')`)
  })
}
