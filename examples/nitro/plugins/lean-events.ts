import { leanEventsPlugin } from 'lean-events/nitro'

// connects at startup, closes the bus and scheduler on Nitro's `close` hook
export default defineNitroPlugin((nitroApp) => {
  leanEventsPlugin(nitroApp)
  useExampleFlow().then(
    ({ bus }: any) => {
      const url = process.env.REDIS_URL || process.env.NUXT_QUEUE_REDIS_URL
      const where = bus.embedded ? 'the embedded in-memory store' : `Redis at ${String(url).replace(/\/\/[^@/]*@/, '//***@')}`
      console.log(`[example] lean-events on ${where}`)
    },
    (err: any) => console.error('[example] lean-events failed to start:', err?.message),
  )
})
