// The Nitro plugin of lean-events/nuxt: configures the shared bus + scheduler from the
// runtime config, connects at startup (so steps waiting on timers resume) and closes on
// Nitro's `close` hook. Imports lean-events by package name, so the native addon stays external.

import { useRuntimeConfig } from '#imports'
import { configureLeanEvents, leanEventsPlugin } from 'lean-events/nitro'
import { connectOptions } from '../config.js'

export default function leanEventsNuxtPlugin(nitroApp) {
  try {
    configureLeanEvents(connectOptions(useRuntimeConfig().leanEvents))
  } catch {
    // already connected in this process (a dev-server reload): that instance stays in use
  }
  leanEventsPlugin(nitroApp)
}
