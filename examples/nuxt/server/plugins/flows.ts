// The steps, defined at startup so that a run resumes after a restart. The order flow's `ship`
// packs the order (its first attempt fails, to show a retry), then waits for a person to
// approve the shipment (a trigger, fired from the dashboard or with POST /api/_triggers/:id).
// `nap` and `hold` (server/api/holds.post.ts) wait on a timer and on an event.
export default defineNitroPlugin(async () => {
  const { scheduler } = await useLeanEvents()
  scheduler.define(
    'ship',
    async (order: { item?: string }, ctx) => {
      await ctx.log('info', `packing ${order.item ?? 'the order'} (attempt ${ctx.attempt})`)
      if (ctx.attempt === 1) throw new Error('the packing station was busy')
      const approval = await ctx.await.trigger({ type: 'approval', payload: { question: `Ship ${order.item}?` } })
      await ctx.log('info', `waiting for approval: trigger ${approval.id}`)
      const decision = await approval.wait()
      return { shipped: true, decision }
    },
    { retry: { attempts: 3, backoff: { type: 'fixed', delayMs: 300 } } },
  )
  scheduler.define('nap', async (input: { ms: number }, ctx) => {
    await ctx.await.time(input.ms)
    return { napped: input.ms }
  })
  scheduler.define('hold', async (input: { id: string }, ctx) => {
    const released = await ctx.await.event({ kind: 'hold.released', match: { 'data.id': input.id }, timeoutMs: 3_600_000 })
    return { releasedBy: released.data }
  })
})
